//! The CNI ADD result: one internal model for every supported version, parsing from any of them
//! and printing for any of them (SPECS §12).
//!
//! Storage: the structs derive `Serialize`/`Deserialize` in the CNI 1.1.0 wire shape minus the
//! `cniVersion` key (camelCase keys, `pciID`, empty optional fields and empty lists left out),
//! so `serde_json::to_value(&r)` plus `"cniVersion": "1.1.0"` equals `r.to_json(V1_1_0)`.
//! On-disk records can embed a `CniResult` directly. Delegate output must go through
//! [`CniResult::parse`], which also accepts the older shapes and validates them.
//!
//! Like libcni's `omitempty`, an empty string in an optional string field and a zero `mtu`,
//! `advmss` or `priority` mean "unset"; route `table` and `scope` are kept even when 0
//! (scope 0 is "global").

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::version::{CniVersion, VersionError};
use crate::addr::IpPrefix;

/// Why a delegate's stdout is not a usable result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// Not JSON, or not a JSON object (CNI code 6).
    #[error("delegate result could not be decoded: {0}")]
    Decode(String),
    /// `cniVersion` is malformed (code 6) or not one Plexus speaks (code 1).
    #[error("delegate result has an unusable cniVersion: {0}")]
    Version(#[source] VersionError),
    /// The 0.1.0/0.2.0 `ip4`/`ip6` shape (CNI code 1); `version` is the declared
    /// `cniVersion`, or "none".
    #[error(
        "delegate result is in the CNI 0.1.0/0.2.0 format (ip4/ip6; declared cniVersion {version}), \
         which Plexus does not support; set the network's cniVersion to 0.3.0 or later"
    )]
    LegacyFormat { version: String },
    /// A field has the wrong type or value (CNI code 6).
    #[error("delegate result field {field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl ResultError {
    /// The CNI error code: 1 (incompatible version) or 6 (decoding failure).
    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Decode(_) | Self::Invalid { .. } => 6,
            Self::Version(e) => e.cni_code(),
            Self::LegacyFormat { .. } => 1,
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ResultError {
    ResultError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn none_or_empty(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

fn none_or_zero(n: &Option<u32>) -> bool {
    n.is_none_or(|n| n == 0)
}

/// A CNI ADD result, independent of the version it was written in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// One interface the attachment created; `sandbox` is set for those inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(skip_serializing_if = "none_or_empty")]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "none_or_empty")]
    pub sandbox: Option<String>,
    /// 1.1.0 only.
    #[serde(skip_serializing_if = "none_or_zero")]
    pub mtu: Option<u32>,
    /// 1.1.0 only.
    #[serde(skip_serializing_if = "none_or_empty")]
    pub socket_path: Option<String>,
    /// 1.1.0 only.
    #[serde(rename = "pciID", skip_serializing_if = "none_or_empty")]
    pub pci_id: Option<String>,
}

/// One address; `interface` indexes [`CniResult::interfaces`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpPrefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route. The fields after `gw` are 1.1.0 additions; like libcni they are printed in every
/// version (older readers ignore them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpPrefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// 0 global, 253 link, 254 host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

/// The result's `dns` (not the `dns` capability, whose keys differ).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "none_or_empty")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && none_or_empty(&self.domain)
            && self.search.is_empty()
            && self.options.is_empty()
    }

    /// Adds other's entries that are not there yet; the domain is taken only if unset.
    fn merge(&mut self, other: Dns) {
        fn extend_unique(into: &mut Vec<String>, from: Vec<String>) {
            for item in from {
                if !into.contains(&item) {
                    into.push(item);
                }
            }
        }
        extend_unique(&mut self.nameservers, other.nameservers);
        extend_unique(&mut self.search, other.search);
        extend_unique(&mut self.options, other.options);
        if none_or_empty(&self.domain) && !none_or_empty(&other.domain) {
            self.domain = other.domain;
        }
    }

    fn to_json(&self) -> Value {
        let mut out = Map::new();
        put_list(&mut out, "nameservers", &self.nameservers);
        put_str(&mut out, "domain", &self.domain);
        put_list(&mut out, "search", &self.search);
        put_list(&mut out, "options", &self.options);
        Value::Object(out)
    }
}

fn put_str(out: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
        out.insert(key.to_owned(), Value::from(v));
    }
}

fn put_nonzero(out: &mut Map<String, Value>, key: &str, value: Option<u32>) {
    if let Some(v) = value.filter(|v| *v != 0) {
        out.insert(key.to_owned(), Value::from(v));
    }
}

fn put_list(out: &mut Map<String, Value>, key: &str, list: &[String]) {
    if !list.is_empty() {
        out.insert(key.to_owned(), Value::from(list.to_vec()));
    }
}

impl Interface {
    fn to_json(&self, version: CniVersion) -> Value {
        let mut out = Map::new();
        out.insert("name".to_owned(), Value::from(self.name.as_str()));
        put_str(&mut out, "mac", &self.mac);
        put_str(&mut out, "sandbox", &self.sandbox);
        if version >= CniVersion::V1_1_0 {
            put_nonzero(&mut out, "mtu", self.mtu);
            put_str(&mut out, "socketPath", &self.socket_path);
            put_str(&mut out, "pciID", &self.pci_id);
        }
        Value::Object(out)
    }
}

impl IpConfig {
    fn to_json(&self, version: CniVersion) -> Value {
        let mut out = Map::new();
        if version < CniVersion::V1_0_0 {
            let family = if self.address.is_ipv4() { "4" } else { "6" };
            out.insert("version".to_owned(), Value::from(family));
        }
        if let Some(index) = self.interface {
            out.insert("interface".to_owned(), Value::from(index));
        }
        out.insert("address".to_owned(), Value::from(self.address.to_string()));
        if let Some(gw) = self.gateway {
            out.insert("gateway".to_owned(), Value::from(gw.to_string()));
        }
        Value::Object(out)
    }
}

impl Route {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("dst".to_owned(), Value::from(self.dst.to_string()));
        if let Some(gw) = self.gw {
            out.insert("gw".to_owned(), Value::from(gw.to_string()));
        }
        put_nonzero(&mut out, "mtu", self.mtu);
        put_nonzero(&mut out, "advmss", self.advmss);
        put_nonzero(&mut out, "priority", self.priority);
        if let Some(table) = self.table {
            out.insert("table".to_owned(), Value::from(table));
        }
        if let Some(scope) = self.scope {
            out.insert("scope".to_owned(), Value::from(scope));
        }
        Value::Object(out)
    }
}

// The wire shapes, lenient the way Go's encoding/json is: missing and null mean unset.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireInterface {
    name: Option<String>,
    mac: Option<String>,
    sandbox: Option<String>,
    mtu: Option<u32>,
    socket_path: Option<String>,
    #[serde(rename = "pciID")]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    version: Option<String>,
    address: Option<String>,
    gateway: Option<String>,
    interface: Option<i64>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: Option<String>,
    gw: Option<String>,
    mtu: Option<u32>,
    advmss: Option<u32>,
    priority: Option<u32>,
    table: Option<u32>,
    scope: Option<u8>,
}

#[derive(Deserialize)]
struct WireDns {
    nameservers: Option<Vec<String>>,
    domain: Option<String>,
    search: Option<Vec<String>>,
    options: Option<Vec<String>>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn non_zero(n: Option<u32>) -> Option<u32> {
    n.filter(|n| *n != 0)
}

/// Deserializes every element of the list under `key` (missing or null: empty list).
fn list<T: DeserializeOwned>(obj: &Map<String, Value>, key: &str) -> Result<Vec<T>, ResultError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                T::deserialize(item).map_err(|e| invalid(format!("{key}[{i}]"), e.to_string()))
            })
            .collect(),
        Some(_) => Err(invalid(key, "expected a list")),
    }
}

fn parse_prefix(field: String, value: Option<String>) -> Result<IpPrefix, ResultError> {
    match value {
        None => Err(invalid(field, "missing")),
        Some(s) => s
            .parse()
            .map_err(|e: crate::addr::AddrError| invalid(field, e.to_string())),
    }
}

fn parse_ip(field: String, value: Option<String>) -> Result<Option<IpAddr>, ResultError> {
    match non_empty(value) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(field, format!("{s:?} is not an IP address"))),
    }
}

impl CniResult {
    /// Parses a delegate's stdout. A missing or empty `cniVersion` is taken to be
    /// `request_version` (libcni `fixupResultVersion`). Accepts the 0.3.0 to 1.1.0 shapes, with
    /// or without `ips[].version`; when present it must be "4" or "6" and match the address.
    /// Returns the result and the version it was written in.
    pub fn parse(
        stdout: &[u8],
        request_version: CniVersion,
    ) -> Result<(Self, CniVersion), ResultError> {
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Err(ResultError::Decode(
                "the delegate printed nothing".to_owned(),
            ));
        }
        let value: Value =
            serde_json::from_slice(stdout).map_err(|e| ResultError::Decode(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(ResultError::Decode(
                "the result is not a JSON object".to_owned(),
            ));
        };

        let declared = match obj.get("cniVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(invalid("cniVersion", "expected a string")),
        };
        let legacy_shape = (obj.contains_key("ip4") || obj.contains_key("ip6"))
            && !obj.contains_key("ips")
            && !obj.contains_key("interfaces");
        let version = match declared {
            Some(v @ ("0.1.0" | "0.2.0")) => {
                return Err(ResultError::LegacyFormat {
                    version: v.to_owned(),
                });
            }
            _ if legacy_shape => {
                return Err(ResultError::LegacyFormat {
                    version: declared.unwrap_or("none").to_owned(),
                });
            }
            Some(v) => CniVersion::parse(v).map_err(ResultError::Version)?,
            None => request_version,
        };

        let interfaces = list::<WireInterface>(&obj, "interfaces")?
            .into_iter()
            .map(|w| Interface {
                name: w.name.unwrap_or_default(),
                mac: non_empty(w.mac),
                sandbox: non_empty(w.sandbox),
                mtu: non_zero(w.mtu),
                socket_path: non_empty(w.socket_path),
                pci_id: non_empty(w.pci_id),
            })
            .collect();

        let ips = list::<WireIp>(&obj, "ips")?
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let address = parse_prefix(format!("ips[{i}].address"), w.address)?;
                match w.version.as_deref() {
                    None | Some("") => {}
                    Some(family @ ("4" | "6")) => {
                        if (family == "4") != address.is_ipv4() {
                            return Err(invalid(
                                format!("ips[{i}].version"),
                                format!(
                                    "is {family:?} but the address {address} is IPv{}",
                                    if address.is_ipv4() { 4 } else { 6 }
                                ),
                            ));
                        }
                    }
                    Some(other) => {
                        return Err(invalid(
                            format!("ips[{i}].version"),
                            format!("{other:?} is neither \"4\" nor \"6\""),
                        ));
                    }
                }
                let interface = match w.interface {
                    None => None,
                    Some(n) => Some(usize::try_from(n).map_err(|_| {
                        invalid(
                            format!("ips[{i}].interface"),
                            format!("{n} is not a valid index"),
                        )
                    })?),
                };
                Ok(IpConfig {
                    address,
                    gateway: parse_ip(format!("ips[{i}].gateway"), w.gateway)?,
                    interface,
                })
            })
            .collect::<Result<_, _>>()?;

        let routes = list::<WireRoute>(&obj, "routes")?
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                Ok(Route {
                    dst: parse_prefix(format!("routes[{i}].dst"), w.dst)?,
                    gw: parse_ip(format!("routes[{i}].gw"), w.gw)?,
                    mtu: non_zero(w.mtu),
                    advmss: non_zero(w.advmss),
                    priority: non_zero(w.priority),
                    table: w.table,
                    scope: w.scope,
                })
            })
            .collect::<Result<_, ResultError>>()?;

        let dns = match obj.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(v) => {
                let w = WireDns::deserialize(v).map_err(|e| invalid("dns", e.to_string()))?;
                Dns {
                    nameservers: w.nameservers.unwrap_or_default(),
                    domain: non_empty(w.domain),
                    search: w.search.unwrap_or_default(),
                    options: w.options.unwrap_or_default(),
                }
            }
        };

        Ok((
            Self {
                interfaces,
                ips,
                routes,
                dns,
            },
            version,
        ))
    }

    /// The result as a delegate of `version` would print it (SPECS §12 conversion rules):
    /// `ips[].version` only below 1.0.0; interface `mtu`/`socketPath`/`pciID` only from 1.1.0;
    /// route extras in every version (as libcni); empty lists, empty optional fields and an
    /// empty `dns` left out.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".to_owned(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let list = self.interfaces.iter().map(|i| i.to_json(version)).collect();
            out.insert("interfaces".to_owned(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list = self.ips.iter().map(|ip| ip.to_json(version)).collect();
            out.insert("ips".to_owned(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list = self.routes.iter().map(Route::to_json).collect();
            out.insert("routes".to_owned(), Value::Array(list));
        }
        if !self.dns.is_empty() {
            out.insert("dns".to_owned(), self.dns.to_json());
        }
        Value::Object(out)
    }

    /// [`Self::to_json`] as bytes, ready to print.
    pub fn to_bytes(&self, version: CniVersion) -> Vec<u8> {
        // Serializing a Value into a Vec cannot fail (string keys, no I/O).
        serde_json::to_vec(&self.to_json(version)).unwrap_or_default()
    }

    /// Index of the first interface with a non-empty `sandbox`, i.e. the one inside the
    /// container (NPWG §5.1.1).
    pub fn first_sandbox_interface(&self) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| !none_or_empty(&i.sandbox))
    }

    /// Appends `other`'s interfaces, and with `keep_addresses` also its ips (their `interface`
    /// index shifted past the interfaces already here), routes and DNS (new entries appended,
    /// the domain taken only if unset here). An `ips[].interface` that pointed outside `other`'s
    /// own interface list becomes `None`, so it cannot point at someone else's interface.
    pub fn append(&mut self, other: CniResult, keep_addresses: bool) {
        let offset = self.interfaces.len();
        let other_len = other.interfaces.len();
        self.interfaces.extend(other.interfaces);
        if !keep_addresses {
            return;
        }
        self.ips.extend(other.ips.into_iter().map(|ip| IpConfig {
            interface: ip.interface.filter(|i| *i < other_len).map(|i| i + offset),
            ..ip
        }));
        self.routes.extend(other.routes);
        self.dns.merge(other.dns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CniVersion::*;

    fn parse(json: &Value, request: CniVersion) -> Result<(CniResult, CniVersion), ResultError> {
        CniResult::parse(&serde_json::to_vec(json).unwrap(), request)
    }

    fn parse_ok(json: &Value) -> CniResult {
        parse(json, V1_1_0).unwrap().0
    }

    /// The same attachment as a delegate of each version prints it. Route extras appear in all
    /// (libcni keeps them); the interface extras exist only in 1.1.0.
    fn golden(version: CniVersion) -> Value {
        let v = version < V1_0_0;
        let mut ips = vec![
            json!({"interface": 1, "address": "198.18.0.5/24", "gateway": "198.18.0.1"}),
            json!({"interface": 1, "address": "fd00::5/64"}),
        ];
        if v {
            ips[0]["version"] = json!("4");
            ips[1]["version"] = json!("6");
        }
        let mut pod =
            json!({"name": "net1", "mac": "c2:11:22:33:44:55", "sandbox": "/var/run/netns/pod"});
        if version >= V1_1_0 {
            pod["mtu"] = json!(1450);
            pod["socketPath"] = json!("/run/vhost.sock");
            pod["pciID"] = json!("0000:03:00.1");
        }
        json!({
            "cniVersion": version.as_str(),
            "interfaces": [{"name": "veth0abc", "mac": "3a:00:00:00:00:01"}, pod],
            "ips": ips,
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "198.18.0.1"},
                {"dst": "203.0.113.0/24", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 253},
                {"dst": "fd00:1::/64", "table": 0, "scope": 0},
            ],
            "dns": {"nameservers": ["198.18.0.53"], "domain": "example.test", "search": ["svc.example.test"], "options": ["ndots:5"]},
        })
    }

    fn without_interface_extras(mut v: Value) -> Value {
        for iface in v["interfaces"].as_array_mut().unwrap() {
            let obj = iface.as_object_mut().unwrap();
            obj.remove("mtu");
            obj.remove("socketPath");
            obj.remove("pciID");
        }
        v
    }

    #[test]
    fn every_version_pair_converts_like_libcni() {
        let versions = [V0_3_1, V0_4_0, V1_0_0, V1_1_0];
        for from in versions {
            let (result, written) = parse(&golden(from), V1_1_0).unwrap();
            assert_eq!(written, from);
            for to in versions {
                // The interface extras survive only 1.1.0 -> 1.1.0; older inputs never had them.
                let expected = if from == V1_1_0 || to < V1_1_0 {
                    golden(to)
                } else {
                    without_interface_extras(golden(to))
                };
                assert_eq!(result.to_json(to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn version_030_reads_and_writes_like_031() {
        let mut input = golden(V0_3_1);
        input["cniVersion"] = json!("0.3.0");
        let (result, written) = parse(&input, V1_1_0).unwrap();
        assert_eq!(written, V0_3_0);
        assert_eq!(result.to_json(V0_3_0), input);
    }

    #[test]
    fn ips_get_a_version_from_their_address_family_below_1_0_0() {
        let r = parse_ok(
            &json!({"cniVersion": "1.0.0", "ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/16"}]}),
        );
        let out = r.to_json(V0_4_0);
        assert_eq!(out["ips"][0]["version"], "6");
        assert_eq!(out["ips"][1]["version"], "4");
        assert_eq!(
            out["ips"][1]["address"], "10.1.0.5/16",
            "prefix kept with the host address"
        );
        assert!(r.to_json(V1_0_0)["ips"][0].get("version").is_none());
    }

    #[test]
    fn ips_version_is_optional_but_must_match_the_address_when_present() {
        let cases = [
            ("4", "10.1.0.5/16", true),
            ("6", "fd00::5/64", true),
            ("", "10.1.0.5/16", true),
            ("6", "10.1.0.5/16", false),
            ("4", "fd00::5/64", false),
            ("5", "10.1.0.5/16", false),
            ("v4", "10.1.0.5/16", false),
        ];
        for (family, address, ok) in cases {
            let input =
                json!({"cniVersion": "0.4.0", "ips": [{"version": family, "address": address}]});
            match parse(&input, V0_4_0) {
                Ok(_) => assert!(ok, "{family} {address} accepted"),
                Err(e) => {
                    assert!(!ok, "{family} {address} rejected: {e}");
                    assert_eq!(e.cni_code(), 6);
                    assert!(e.to_string().contains("ips[0].version"), "{e}");
                }
            }
        }
        let no_version = json!({"cniVersion": "0.3.1", "ips": [{"address": "10.1.0.5/16"}]});
        assert!(parse(&no_version, V0_3_1).is_ok());
    }

    #[test]
    fn a_missing_or_empty_cni_version_takes_the_request_version() {
        for input in [
            json!({"ips": [{"address": "10.1.0.5/16"}]}),
            json!({"cniVersion": "", "ips": [{"address": "10.1.0.5/16"}]}),
            json!({"cniVersion": null, "ips": [{"address": "10.1.0.5/16"}]}),
        ] {
            for request in CniVersion::ALL {
                let (r, v) = parse(&input, request).unwrap();
                assert_eq!(v, request, "{input}");
                assert_eq!(r.ips.len(), 1);
            }
        }
    }

    #[test]
    fn results_in_the_0_2_0_shape_are_rejected_as_incompatible() {
        let cases = [
            (
                json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16"}}),
                "0.2.0",
            ),
            (
                json!({"cniVersion": "0.1.0", "ip4": {"ip": "10.1.0.5/16"}}),
                "0.1.0",
            ),
            (json!({"ip4": {"ip": "10.1.0.5/16"}, "dns": {}}), "none"),
            (
                json!({"cniVersion": "1.0.0", "ip6": {"ip": "fd00::5/64"}}),
                "1.0.0",
            ),
        ];
        for (input, version) in cases {
            let err = parse(&input, V1_0_0).unwrap_err();
            assert_eq!(
                err,
                ResultError::LegacyFormat {
                    version: version.to_owned()
                }
            );
            assert_eq!(err.cni_code(), 1);
            let msg = err.to_string();
            assert!(
                msg.contains("ip4/ip6") && msg.contains("0.3.0 or later"),
                "{msg}"
            );
        }
    }

    #[test]
    fn unknown_result_versions_are_rejected() {
        let err = parse(&json!({"cniVersion": "2.0.0"}), V1_1_0).unwrap_err();
        assert_eq!(err.cni_code(), 1);
        assert!(err.to_string().contains("\"2.0.0\""), "{err}");
        let err = parse(&json!({"cniVersion": "latest"}), V1_1_0).unwrap_err();
        assert_eq!(err.cni_code(), 6);
        let err = parse(&json!({"cniVersion": 1}), V1_1_0).unwrap_err();
        assert_eq!(err.cni_code(), 6);
        assert!(err.to_string().contains("cniVersion"), "{err}");
    }

    #[test]
    fn output_that_is_not_a_json_object_is_a_decoding_failure() {
        for bytes in [
            &b""[..],
            b"  \n",
            b"not json",
            b"[1,2]",
            b"\"1.0.0\"",
            b"{\"cniVersion\": \"1.0.0\"",
            b"\xff\xfe",
        ] {
            let err = CniResult::parse(bytes, V1_0_0).unwrap_err();
            assert!(matches!(err, ResultError::Decode(_)), "{bytes:?}: {err:?}");
            assert_eq!(err.cni_code(), 6);
        }
    }

    #[test]
    fn bad_fields_are_rejected_naming_the_field() {
        let cases = [
            (json!({"ips": [{"address": "10.1.0.5"}]}), "ips[0].address"),
            (json!({"ips": [{"gateway": "10.1.0.1"}]}), "ips[0].address"),
            (
                json!({"ips": [{"address": "10.1.0.5/16"}, {"address": "10.1.0.6/16", "gateway": "nope"}]}),
                "ips[1].gateway",
            ),
            (
                json!({"ips": [{"address": "10.1.0.5/16", "interface": -1}]}),
                "ips[0].interface",
            ),
            (
                json!({"ips": [{"address": "10.1.0.5/16", "interface": "0"}]}),
                "ips[0]",
            ),
            (json!({"ips": {"address": "10.1.0.5/16"}}), "ips"),
            (json!({"routes": [{"gw": "10.1.0.1"}]}), "routes[0].dst"),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}),
                "routes[0].gw",
            ),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "scope": 300}]}),
                "routes[0]",
            ),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "mtu": -1}]}),
                "routes[0]",
            ),
            (
                json!({"interfaces": [{"name": "eth0", "mtu": "1500"}]}),
                "interfaces[0]",
            ),
            (json!({"interfaces": [null]}), "interfaces[0]"),
            (json!({"dns": {"nameservers": "10.0.0.53"}}), "dns"),
            (json!({"dns": []}), "dns"),
        ];
        for (input, field) in cases {
            let err = parse(&input, V1_0_0).unwrap_err();
            assert_eq!(err.cni_code(), 6, "{input}");
            match &err {
                ResultError::Invalid { field: f, .. } => assert_eq!(f, field, "{input}: {err}"),
                other => panic!("{input}: unexpected {other:?}"),
            }
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn a_bridge_plugin_result_finds_the_pod_side_interface() {
        // What the reference bridge plugin prints: bridge, host veth, then the pod's interface.
        let stdout = br#"{
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "6e:5d:a1:0b:33:01"},
                {"name": "veth3a7c9f21", "mac": "9a:4c:0e:2d:11:7b"},
                {"name": "eth0", "mac": "be:21:7f:5c:90:0a", "sandbox": "/var/run/netns/cni-6e1b2c3d"}
            ],
            "ips": [{"interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
            "dns": {}
        }"#;
        let (r, v) = CniResult::parse(stdout, V1_0_0).unwrap();
        assert_eq!(v, V1_0_0);
        assert_eq!(r.first_sandbox_interface(), Some(2));
        assert_eq!(
            r.interfaces[2].sandbox.as_deref(),
            Some("/var/run/netns/cni-6e1b2c3d")
        );
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.ips[0].gateway, Some("10.244.1.1".parse().unwrap()));
        assert!(r.dns.is_empty());
        let out = r.to_json(V1_0_0);
        assert!(out.get("dns").is_none(), "empty dns left out: {out}");
        let mut expected: Value = serde_json::from_slice(stdout).unwrap();
        expected.as_object_mut().unwrap().remove("dns");
        assert_eq!(out, expected);
    }

    #[test]
    fn no_interface_in_a_sandbox_means_none() {
        let r = parse_ok(&json!({"interfaces": [{"name": "host0"}, {"name": "x", "sandbox": ""}]}));
        assert_eq!(r.first_sandbox_interface(), None);
        assert_eq!(CniResult::default().first_sandbox_interface(), None);
    }

    #[test]
    fn an_ipam_result_without_interfaces_round_trips() {
        let input = json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1"}], "routes": [{"dst": "0.0.0.0/0"}]});
        let r = parse_ok(&input);
        assert!(r.interfaces.is_empty());
        assert_eq!(r.to_json(V0_4_0), input);
        assert_eq!(
            r.to_json(V1_0_0),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1"}], "routes": [{"dst": "0.0.0.0/0"}]})
        );
    }

    #[test]
    fn empty_and_null_optional_fields_are_left_out() {
        let input = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "", "sandbox": null, "mtu": 0, "socketPath": "", "pciID": null}],
            "ips": [{"address": "10.1.0.5/16", "gateway": "", "interface": null}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "", "mtu": 0, "advmss": null, "priority": 0}],
            "dns": {"nameservers": null, "domain": "", "search": [], "options": null},
        });
        let r = parse_ok(&input);
        assert_eq!(
            r.to_json(V1_1_0),
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0"}],
                "ips": [{"address": "10.1.0.5/16"}],
                "routes": [{"dst": "0.0.0.0/0"}],
            })
        );
        let empty = parse_ok(
            &json!({"cniVersion": "1.0.0", "interfaces": [], "ips": null, "routes": [], "dns": {}}),
        );
        assert_eq!(empty, CniResult::default());
        assert_eq!(empty.to_json(V1_0_0), json!({"cniVersion": "1.0.0"}));
    }

    #[test]
    fn unknown_result_keys_are_ignored() {
        let r = parse_ok(
            &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16", "extra": 1}], "vendor": {"x": 1}}),
        );
        assert_eq!(r.ips.len(), 1);
    }

    #[test]
    fn to_bytes_prints_the_json_of_that_version() {
        let r = parse_ok(&golden(V1_1_0));
        for v in CniVersion::ALL {
            let printed: Value = serde_json::from_slice(&r.to_bytes(v)).unwrap();
            assert_eq!(printed, r.to_json(v));
        }
    }

    #[test]
    fn stored_form_is_the_1_1_0_shape_without_cni_version() {
        let r = parse_ok(&golden(V1_1_0));
        let mut stored = serde_json::to_value(&r).unwrap();
        stored["cniVersion"] = json!("1.1.0");
        assert_eq!(stored, r.to_json(V1_1_0));
        let back: CniResult = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let (reparsed, _) = CniResult::parse(&r.to_bytes(V1_1_0), V0_3_1).unwrap();
        assert_eq!(reparsed, r);
        let empty: CniResult = serde_json::from_str("{}").unwrap();
        assert_eq!(serde_json::to_value(&empty).unwrap(), json!({}));
    }

    fn attachment(ifname: &str, host: bool, addr: &str, ns: &str) -> CniResult {
        let mut interfaces = Vec::new();
        if host {
            interfaces.push(Interface {
                name: format!("veth-{ifname}"),
                ..Interface::default()
            });
        }
        interfaces.push(Interface {
            name: ifname.to_owned(),
            sandbox: Some("/var/run/netns/pod".into()),
            ..Interface::default()
        });
        CniResult {
            ips: vec![IpConfig {
                address: addr.parse().unwrap(),
                gateway: None,
                interface: Some(interfaces.len() - 1),
            }],
            interfaces,
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            }],
            dns: Dns {
                nameservers: vec![ns.to_owned(), "10.0.0.10".to_owned()],
                domain: Some(format!("{ifname}.test")),
                ..Dns::default()
            },
        }
    }

    #[test]
    fn append_reindexes_the_other_results_ips() {
        let mut merged = attachment("eth0", true, "10.244.1.5/24", "10.96.0.10");
        merged.append(
            attachment("net1", true, "198.18.0.5/24", "198.18.0.53"),
            true,
        );
        let names: Vec<&str> = merged.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["veth-eth0", "eth0", "veth-net1", "net1"]);
        assert_eq!(merged.ips.len(), 2);
        assert_eq!(merged.ips[0].interface, Some(1));
        assert_eq!(merged.ips[1].interface, Some(3));
        assert_eq!(
            merged.interfaces[merged.ips[1].interface.unwrap()].name,
            "net1"
        );
        assert_eq!(merged.routes.len(), 2);
        assert_eq!(
            merged.dns.nameservers,
            ["10.96.0.10", "10.0.0.10", "198.18.0.53"],
            "duplicates dropped"
        );
        assert_eq!(
            merged.dns.domain.as_deref(),
            Some("eth0.test"),
            "first domain wins"
        );
        assert_eq!(merged.first_sandbox_interface(), Some(1));
    }

    #[test]
    fn append_without_addresses_takes_only_interfaces() {
        let mut merged = attachment("eth0", false, "10.244.1.5/24", "10.96.0.10");
        let before = merged.clone();
        merged.append(
            attachment("net1", true, "198.18.0.5/24", "198.18.0.53"),
            false,
        );
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips, before.ips);
        assert_eq!(merged.routes, before.routes);
        assert_eq!(merged.dns, before.dns);
    }

    #[test]
    fn append_drops_indexes_that_pointed_nowhere() {
        let mut merged = attachment("eth0", false, "10.244.1.5/24", "10.96.0.10");
        let mut other = attachment("net1", false, "198.18.0.5/24", "198.18.0.53");
        other.ips.push(IpConfig {
            address: "198.18.0.6/24".parse().unwrap(),
            gateway: None,
            interface: Some(7),
        });
        other.ips.push(IpConfig {
            address: "198.18.0.7/24".parse().unwrap(),
            gateway: None,
            interface: None,
        });
        merged.append(other, true);
        let indexes: Vec<Option<usize>> = merged.ips.iter().map(|ip| ip.interface).collect();
        assert_eq!(indexes, [Some(0), Some(1), None, None]);
    }

    #[test]
    fn append_onto_an_empty_result_keeps_indexes_and_takes_the_domain() {
        let mut merged = CniResult::default();
        let other = attachment("eth0", true, "10.244.1.5/24", "10.96.0.10");
        merged.append(other.clone(), true);
        assert_eq!(merged, other);
    }
}
