//! Identifiers parsed once at the edge, so the rest of plexusd never sees an unchecked string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier of the given kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {why}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl NameError {
    fn new(kind: &'static str, value: &str, why: &'static str) -> Self {
        Self {
            kind,
            value: value.to_owned(),
            why,
        }
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, NameError> {
                $check(value).map_err(|why| NameError::new($kind, value, why))?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// `CNI_CONTAINERID`: what CNI allows for network names (CNI §2 Parameters).
    ContainerId,
    "container id",
    check_cni_name
);
string_newtype!(
    /// A CNI network name (CNI §1): it also names record and IPAM directories, hence the rule.
    NetworkName,
    "network name",
    check_cni_name
);
string_newtype!(
    /// A Linux interface name: what the kernel accepts in `IFNAMSIZ`.
    IfName,
    "interface name",
    check_ifname
);
string_newtype!(
    /// A Kubernetes namespace (DNS-1123 label).
    Namespace,
    "namespace",
    check_dns_label
);
string_newtype!(
    /// A Kubernetes object name such as a NAD's or a pod's (DNS-1123 subdomain).
    ObjectName,
    "object name",
    check_dns_subdomain
);

string_newtype!(
    /// An extended resource name such as a device plugin advertises (`intel.com/sriov_vf`),
    /// as a NAD's `k8s.v1.cni.cncf.io/resourceName` annotation names it.
    ResourceName,
    "resource name",
    check_resource_name
);

string_newtype!(
    /// A DNS-1123 label that names something inside an object: a pod's resource claim entry,
    /// a ResourceClaim's request.
    Label,
    "DNS label",
    check_dns_label
);

impl Namespace {
    /// A namespace name written in plexusd's own code; it must be valid (tests check each).
    pub(crate) fn well_known(name: &'static str) -> Self {
        debug_assert!(
            check_dns_label(name).is_ok(),
            "{name} is not a namespace name"
        );
        Self(name.to_owned())
    }
}

impl IfName {
    /// The name Multus gives the attachment at `position` in the pod's delegate list.
    pub fn numbered(position: usize) -> Self {
        Self(format!("net{position}"))
    }
}

fn check_cni_name(value: &str) -> Result<(), &'static str> {
    let mut chars = value.chars();
    match chars.next() {
        None => return Err("must not be empty"),
        Some(c) if !c.is_ascii_alphanumeric() => return Err("must start with a letter or digit"),
        Some(_) => {}
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err("may only contain letters, digits, '_', '.' and '-'")
    }
}

fn check_ifname(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    // IFNAMSIZ is 16 including the trailing NUL.
    if value.len() > 15 {
        return Err("is longer than 15 bytes");
    }
    if value == "." || value == ".." {
        return Err("must not be '.' or '..'");
    }
    if value
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("must not contain '/', ':' or whitespace");
    }
    Ok(())
}

fn check_dns_label(value: &str) -> Result<(), &'static str> {
    if value.len() > 63 {
        return Err("is longer than 63 characters");
    }
    check_dns_part(value)
}

fn check_dns_subdomain(value: &str) -> Result<(), &'static str> {
    if value.len() > 253 {
        return Err("is longer than 253 characters");
    }
    value.split('.').try_for_each(check_dns_part)
}

fn check_dns_part(part: &str) -> Result<(), &'static str> {
    let bytes = part.as_bytes();
    match (bytes.first(), bytes.last()) {
        (None, _) | (_, None) => Err("must not be empty"),
        (Some(first), Some(last))
            if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() =>
        {
            Err("must start and end with a lowercase letter or digit")
        }
        _ if bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-') =>
        {
            Ok(())
        }
        _ => Err("may only contain lowercase letters, digits and '-'"),
    }
}

/// Kubernetes' rule for extended resources: a qualified name whose prefix is a domain outside
/// kubernetes.io, the only names a device plugin can register.
fn check_resource_name(value: &str) -> Result<(), &'static str> {
    let Some((domain, name)) = value.split_once('/') else {
        return Err("must be domain/name, e.g. intel.com/sriov_netdevice");
    };
    if name.contains('/') {
        return Err("must contain exactly one '/'");
    }
    if check_dns_subdomain(domain).is_err() {
        return Err("its domain must be a DNS name of lowercase letters, digits, '-' and '.'");
    }
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return Err("the kubernetes.io domain is reserved for Kubernetes' own resources");
    }
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return Err("its name part must be 1 to 63 characters");
    }
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok =
        bytes[0].is_ascii_alphanumeric() && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if inner_ok && ends_ok {
        Ok(())
    } else {
        Err(
            "its name part may only contain letters, digits, '-', '_' and '.', and must start and end with a letter or digit",
        )
    }
}

/// A pod, as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodKey {
    pub namespace: Namespace,
    pub name: ObjectName,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A reference to a NetworkAttachmentDefinition: `name` or `namespace/name`.
///
/// The namespace stays optional here because the selection's namespace rules
/// (NPWG §4.1.2.1.1) are applied in resolution, where the pod's namespace is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
    pub name: ObjectName,
}

impl NetworkRef {
    /// Parses `name` or `namespace/name`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        match value.split_once('/') {
            Some((namespace, name)) => Ok(Self {
                namespace: Some(Namespace::parse(namespace)?),
                name: ObjectName::parse(name)?,
            }),
            None => Ok(Self {
                namespace: None,
                name: ObjectName::parse(value)?,
            }),
        }
    }

    /// The namespace this reference means for a pod in `pod_namespace`.
    pub fn in_namespace(&self, pod_namespace: &Namespace) -> (Namespace, ObjectName) {
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| pod_namespace.clone());
        (namespace, self.name.clone())
    }
}

impl fmt::Display for NetworkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(self.name.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_follow_the_cni_name_rule() {
        assert!(ContainerId::parse("abc-123_x.y").is_ok());
        assert!(ContainerId::parse("").is_err());
        assert!(ContainerId::parse("-abc").is_err());
        assert!(ContainerId::parse("a/b").is_err());
    }

    #[test]
    fn interface_names_fit_ifnamsiz_and_have_no_separators() {
        assert!(IfName::parse("net1").is_ok());
        assert!(IfName::parse("0123456789abcde").is_ok());
        assert!(IfName::parse("0123456789abcdef").is_err());
        for bad in ["", ".", "..", "a/b", "a:b", "a b"] {
            assert!(IfName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kubernetes_names_are_dns_1123() {
        assert!(Namespace::parse("kube-system").is_ok());
        assert!(Namespace::parse("Kube").is_err());
        assert!(Namespace::parse("a.b").is_err());
        assert!(ObjectName::parse("macvlan.conf-1").is_ok());
        assert!(ObjectName::parse("bad_name").is_err());
        assert!(ObjectName::parse("-x").is_err());
    }

    #[test]
    fn resource_names_are_extended_resource_names() {
        for good in [
            "intel.com/intel_sriov_netdevice",
            "nvidia.com/gpu",
            "example.com/a.b-c_D9",
        ] {
            assert!(ResourceName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "sriov",
            "intel.com/",
            "/sriov",
            "intel.com/a/b",
            "Intel.com/sriov",
            "intel.com/-sriov",
            "intel.com/sriov_",
            "intel.com/sri ov",
            "kubernetes.io/sriov",
            "x.kubernetes.io/sriov",
        ] {
            let error = ResourceName::parse(bad).unwrap_err();
            assert!(
                error.to_string().starts_with("invalid resource name"),
                "{error}"
            );
        }
        assert!(ResourceName::parse(&format!("a.com/{}", "x".repeat(64))).is_err());
    }

    #[test]
    fn network_refs_take_an_optional_namespace() {
        let r = NetworkRef::parse("ns1/net-a").unwrap();
        assert_eq!(r.namespace.as_ref().map(Namespace::as_str), Some("ns1"));
        assert_eq!(r.name.as_str(), "net-a");
        let bare = NetworkRef::parse("net-a").unwrap();
        assert_eq!(bare.namespace, None);
        assert_eq!(
            bare.in_namespace(&Namespace::parse("pods").unwrap())
                .0
                .as_str(),
            "pods"
        );
        assert!(NetworkRef::parse("a/b/c").is_err());
    }
}
