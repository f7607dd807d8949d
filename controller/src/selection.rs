//! The pod's network-selection annotation, `k8s.v1.cni.cncf.io/networks` (NPWG §4.1), parsed and
//! checked once, so resolution only ever sees typed requests.
//!
//! Policy (DESIGN.md, "Decisions where the specs leave a choice"): an invalid annotation is an
//! error that fails the ADD and names the entry, where NPWG §4.1.2.1.x would ignore the whole
//! annotation. A pod silently missing the network it asked for is worse for its owner, and Multus
//! users expect the failure.
//!
//! Where the spec and Multus differ on what is valid, the spec wins: `ips: []`,
//! `portMappings: []` and empty strings for `interface`, `mac` and the like are errors (Multus
//! treats them as "not given"). The exception is `namespace: ""`, which the spec itself defines
//! as "the pod's namespace". A JSON `null` counts as "not given", as it does for Multus's Go
//! decoder, since templating tools emit it for unset values.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::addr::{AddrError, IpPrefix, MacAddr};
use crate::names::{IfName, Label, NameError, Namespace, NetworkRef, ObjectName};

pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

/// Plexus's own (dotted, so implementation-specific: NPWG §4.1.2.1) selection key naming the DRA
/// claim request that supplies an attachment's device: `{"claimName": ..., "requestName": ...}`,
/// the shape KubeVirt's VEP-427 gives a network's claim reference.
pub const RESOURCE_CLAIM_KEY: &str = "plexus.dev/resource-claim";

/// One element of the annotation: one attachment request (NPWG §4.2: even the same network
/// twice makes two attachments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// `namespace` is `None` when the annotation gave none (or `""`): resolution applies the
    /// pod's namespace, which this module does not know.
    pub network: NetworkRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<IfName>,
    /// Empty means "not requested"; the annotation itself cannot ask for an empty list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// `Some(vec![])` is a valid request: the spec allows the empty list without defining it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Vec<IpAddr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// Empty means "not requested"; the annotation itself cannot ask for an empty list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Kept as written: it goes to `runtimeConfig.infinibandGUID` unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infiniband_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The name of an IPAMClaim (NPWG v1.3 §4.1.2.1.11); checked as a Kubernetes object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_claim_reference: Option<String>,
    /// The DRA claim request the attachment's device must come from ([`RESOURCE_CLAIM_KEY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_claim: Option<ClaimRequest>,
}

/// One request of one of the pod's resource claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    /// The claim's name in the pod's `spec.resourceClaims` (or the ResourceClaim's own name).
    pub claim_name: Label,
    /// The request within the claim; without it, any request of the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_name: Option<Label>,
}

impl fmt::Display for ClaimRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.request_name {
            Some(request) => write!(f, "{}/{request}", self.claim_name),
            None => write!(f, "{}", self.claim_name),
        }
    }
}

impl Selection {
    /// A request for `network` and nothing else, which is all the comma form can say.
    pub fn new(network: NetworkRef) -> Self {
        Self {
            network,
            interface: None,
            ips: Vec::new(),
            mac: None,
            default_route: None,
            cni_args: None,
            port_mappings: Vec::new(),
            bandwidth: None,
            infiniband_guid: None,
            device_id: None,
            ipam_claim_reference: None,
            resource_claim: None,
        }
    }
}

/// An address from `ips`, with the prefix only if the user gave one: `runtimeConfig.ips` must
/// carry the same strings (NPWG §4.1.2.1.3), and a plugin may reject a missing prefix itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRequest {
    pub addr: IpAddr,
    pub prefix: Option<u8>,
}

impl FromStr for IpRequest {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| AddrError::BadAddress(s.to_owned()))?;
        let prefix = match prefix {
            Some(text) => {
                Some(parse_prefix(text, &addr).ok_or_else(|| AddrError::BadPrefix(s.to_owned()))?)
            }
            None => None,
        };
        Ok(Self { addr, prefix })
    }
}

fn parse_prefix(text: &str, addr: &IpAddr) -> Option<u8> {
    // `u8::from_str` takes a leading '+', which no address notation allows.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = text.parse().ok()?;
    (prefix <= IpPrefix::max_prefix(addr)).then_some(prefix)
}

impl fmt::Display for IpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix {
            Some(prefix) => write!(f, "{}/{prefix}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl Serialize for IpRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A port mapping's protocol. Printed lowercase because that is what the CNI `portmap` plugin
/// matches on; read case-insensitively because NPWG §4.1.2.1.7 says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A protocol name other than TCP, UDP or SCTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of TCP, UDP or SCTP")]
pub struct ProtocolError(pub String);

impl FromStr for Protocol {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        [Self::Tcp, Self::Udp, Self::Sctp]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ProtocolError(s.to_owned()))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One `portMappings` entry, serialized exactly as `runtimeConfig.portMappings` wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// A `bandwidth` request, serialized exactly as `runtimeConfig.bandwidth` wants it. Every value
/// is non-zero, and a burst only comes with its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// Why the annotation is invalid. The text leaves out the annotation's name: callers say which
/// pod and annotation (`pod ns/p: invalid k8s.v1.cni.cncf.io/networks annotation: {this}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("must be a JSON list of objects, but it is {found}")]
    NotAList { found: &'static str },
    #[error("{entry}: {problem}")]
    Entry { entry: EntryId, problem: Problem },
}

impl SelectionError {
    /// The element at fault, when the error is about one.
    pub fn entry(&self) -> Option<&EntryId> {
        match self {
            Self::Entry { entry, .. } => Some(entry),
            Self::Json(_) | Self::NotAList { .. } => None,
        }
    }
}

/// Which element of the annotation an error is about, as the user can find it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryId {
    /// 1-based, in annotation order.
    pub position: usize,
    /// The element as written (comma form) or its `name` (JSON form), when there is one.
    pub name: Option<String>,
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}", self.position)?;
        match &self.name {
            Some(name) => write!(f, " ({})", quoted(name)),
            None => Ok(()),
        }
    }
}

/// What is wrong with one element. Keys are written as the user wrote them, with a JSON-path
/// suffix (`portMappings[0].hostPort`, 0-based like the JSON itself) inside lists and objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("is empty (a stray comma?)")]
    Empty,
    #[error("contains more than one {0:?}")]
    RepeatedSeparator(char),
    #[error("is {found}, not an object")]
    NotAnObject { found: &'static str },
    // NameError's own text would repeat a huge value in full.
    #[error("{key}: invalid {} {}: {}", .error.kind, quoted(&.error.value), .error.why)]
    Name { key: &'static str, error: NameError },
    #[error("{key} must be {expected}: {detail}")]
    WrongType {
        key: String,
        expected: &'static str,
        detail: String,
    },
    #[error("{key} is missing")]
    Missing { key: String },
    /// `value` is already formatted: quoted when it was a string.
    #[error("{key} {value} is not {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{key} is an empty list; leave it out or give at least one entry")]
    EmptyList { key: &'static str },
    #[error("{key} is {first} but {alias} is {second}; give one of them")]
    Conflict {
        key: &'static str,
        alias: &'static str,
        first: String,
        second: String,
    },
    #[error("ips and ipam-claim-reference cannot both be given")]
    IpsWithClaim,
    #[error("{burst} is given without {rate}")]
    BurstWithoutRate {
        burst: &'static str,
        rate: &'static str,
    },
    #[error("bandwidth sets neither ingressRate nor egressRate")]
    NoRate,
    #[error("interface {interface:?} is already requested by {earlier}")]
    DuplicateInterface { interface: String, earlier: EntryId },
    #[error("default-route is already set by {earlier}; only one element may set it")]
    DefaultRouteTwice { earlier: EntryId },
}

/// Parses the value of [`NETWORKS_ANNOTATION`]: the comma form (`name`, `ns/name`, and Multus's
/// `name@ifname`, `ns/name@ifname`) or the JSON list form.
pub fn parse_networks(annotation: &str) -> Result<Vec<Selection>, SelectionError> {
    let text = annotation.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let entries = if looks_like_json(text) {
        parse_json_form(text)?
    } else {
        parse_comma_form(text)?
    };
    check_across_entries(&entries)?;
    Ok(entries
        .into_iter()
        .map(|(_, selection)| selection)
        .collect())
}

/// The spec gives no rule; this is Multus's, so the same values land in the same parser.
fn looks_like_json(text: &str) -> bool {
    text.contains(['[', '{', '"'])
}

fn entry_error(entry: EntryId, problem: Problem) -> SelectionError {
    SelectionError::Entry { entry, problem }
}

fn parse_comma_form(text: &str) -> Result<Vec<(EntryId, Selection)>, SelectionError> {
    text.split(',')
        .enumerate()
        .map(|(index, element)| {
            let element = element.trim();
            let entry = EntryId {
                position: index + 1,
                name: (!element.is_empty()).then(|| element.to_owned()),
            };
            match parse_comma_element(element) {
                Ok(selection) => Ok((entry, selection)),
                Err(problem) => Err(entry_error(entry, problem)),
            }
        })
        .collect()
}

fn parse_comma_element(element: &str) -> Result<Selection, Problem> {
    if element.is_empty() {
        return Err(Problem::Empty);
    }
    let (reference, ifname) = split_once_only(element, '@')?;
    let network = match split_once_only(reference, '/')? {
        (name, None) => NetworkRef {
            namespace: None,
            name: object_name("name", name)?,
        },
        (namespace, Some(name)) => NetworkRef {
            namespace: Some(namespace_name(namespace)?),
            name: object_name("name", name)?,
        },
    };
    let interface = ifname
        .map(|name| interface_name("interface", name))
        .transpose()?;
    Ok(Selection {
        interface,
        ..Selection::new(network)
    })
}

/// Splits at `separator`, trimming both sides as Multus does, and refuses a second one.
fn split_once_only(text: &str, separator: char) -> Result<(&str, Option<&str>), Problem> {
    match text.split_once(separator) {
        None => Ok((text.trim(), None)),
        Some((_, rest)) if rest.contains(separator) => Err(Problem::RepeatedSeparator(separator)),
        Some((left, right)) => Ok((left.trim(), Some(right.trim()))),
    }
}

fn object_name(key: &'static str, value: &str) -> Result<ObjectName, Problem> {
    ObjectName::parse(value).map_err(|error| Problem::Name { key, error })
}

fn namespace_name(value: &str) -> Result<Namespace, Problem> {
    Namespace::parse(value).map_err(|error| Problem::Name {
        key: "namespace",
        error,
    })
}

fn interface_name(key: &'static str, value: &str) -> Result<IfName, Problem> {
    IfName::parse(value).map_err(|error| Problem::Name { key, error })
}

fn parse_json_form(text: &str) -> Result<Vec<(EntryId, Selection)>, SelectionError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| SelectionError::Json(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(_) => {
            return Err(SelectionError::NotAList {
                found: "a single object; put it in a list: [{...}]",
            });
        }
        other => {
            return Err(SelectionError::NotAList {
                found: json_kind(&other),
            });
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| parse_json_entry(index + 1, item))
        .collect()
}

fn parse_json_entry(position: usize, item: Value) -> Result<(EntryId, Selection), SelectionError> {
    let object = match item {
        Value::Object(object) => object,
        other => {
            let entry = EntryId {
                position,
                name: None,
            };
            return Err(entry_error(
                entry,
                Problem::NotAnObject {
                    found: json_kind(&other),
                },
            ));
        }
    };
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let entry = EntryId { position, name };
    match RawSelection::from_object(object).and_then(RawSelection::validate) {
        Ok(selection) => Ok((entry, selection)),
        Err(problem) => Err(entry_error(entry, problem)),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A JSON object whose keys are taken out one by one with their expected types, so a type error
/// names its key (serde_json's own errors carry no path).
struct Fields {
    object: Map<String, Value>,
    /// Prepended to keys in errors: `""` at the top, `"portMappings[0]."` inside a list.
    path: String,
}

impl Fields {
    fn new(object: Map<String, Value>, path: String) -> Self {
        Self { object, path }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.path)
    }

    fn take<T: DeserializeOwned>(
        &mut self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<T>, Problem> {
        match self.object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|e| Problem::WrongType {
                    key: self.key(key),
                    expected,
                    // serde echoes the offending value, which may be huge.
                    detail: shortened(&e.to_string(), 200),
                }),
        }
    }
}

const STRING: &str = "a string";
const STRINGS: &str = "a list of strings";
const OBJECT: &str = "an object";
const OBJECTS: &str = "a list of objects";
const PORT: &str = "an integer from 1 to 65535";
const RATE: &str = "a positive integer";

/// One JSON element with every known key taken out at its JSON type, before any value checks.
struct RawSelection {
    name: Option<String>,
    namespace: Option<String>,
    interface: Option<String>,
    interface_request: Option<String>,
    ips: Option<Vec<String>>,
    mac: Option<String>,
    default_route: Option<Vec<String>>,
    cni_args: Option<Map<String, Value>>,
    port_mappings: Option<Vec<Map<String, Value>>>,
    bandwidth: Option<Map<String, Value>>,
    infiniband_guid: Option<String>,
    device_id_multus: Option<String>,
    device_id: Option<String>,
    ipam_claim_reference: Option<String>,
    resource_claim: Option<Map<String, Value>>,
}

impl RawSelection {
    // Keys left over are ignored. Dotted ones are implementation-specific by definition
    // (NPWG §4.1.2.1). Undotted unknown ones are ignored too, as Multus does, so an annotation
    // written for Multus or for a later spec version still starts the pod.
    fn from_object(object: Map<String, Value>) -> Result<Self, Problem> {
        let mut f = Fields::new(object, String::new());
        Ok(Self {
            name: f.take("name", STRING)?,
            namespace: f.take("namespace", STRING)?,
            interface: f.take("interface", STRING)?,
            interface_request: f.take("interfaceRequest", STRING)?,
            ips: f.take("ips", STRINGS)?,
            mac: f.take("mac", STRING)?,
            default_route: f.take("default-route", STRINGS)?,
            cni_args: f.take("cni-args", OBJECT)?,
            port_mappings: f.take("portMappings", OBJECTS)?,
            bandwidth: f.take("bandwidth", OBJECT)?,
            infiniband_guid: f.take("infiniband-guid", STRING)?,
            device_id_multus: f.take("deviceID", STRING)?,
            device_id: f.take("device-id", STRING)?,
            ipam_claim_reference: f.take("ipam-claim-reference", STRING)?,
            resource_claim: f.take(RESOURCE_CLAIM_KEY, OBJECT)?,
        })
    }

    fn validate(self) -> Result<Selection, Problem> {
        let network = network_ref(self.name, self.namespace)?;
        if self.ips.is_some() && self.ipam_claim_reference.is_some() {
            return Err(Problem::IpsWithClaim);
        }
        let interface = one_of(
            ("interface", self.interface),
            ("interfaceRequest", self.interface_request),
        )?;
        let device_id = one_of(
            ("deviceID", self.device_id_multus),
            ("device-id", self.device_id),
        )?;
        Ok(Selection {
            network,
            interface: interface
                .map(|(key, name)| interface_name(key, &name))
                .transpose()?,
            ips: self.ips.map(ip_requests).transpose()?.unwrap_or_default(),
            mac: self.mac.map(|mac| mac_addr(&mac)).transpose()?,
            default_route: self.default_route.map(gateways).transpose()?,
            cni_args: self.cni_args,
            port_mappings: self
                .port_mappings
                .map(port_mappings)
                .transpose()?
                .unwrap_or_default(),
            bandwidth: self.bandwidth.map(bandwidth).transpose()?,
            infiniband_guid: self.infiniband_guid.map(infiniband_guid).transpose()?,
            device_id: device_id.map(|(key, id)| non_empty(key, id)).transpose()?,
            ipam_claim_reference: self.ipam_claim_reference.map(claim_name).transpose()?,
            resource_claim: self.resource_claim.map(claim_request).transpose()?,
        })
    }
}

/// Picks between a key and its alias, which may both be given only when they agree.
fn one_of(
    (key, value): (&'static str, Option<String>),
    (alias, alias_value): (&'static str, Option<String>),
) -> Result<Option<(&'static str, String)>, Problem> {
    match (value, alias_value) {
        (Some(first), Some(second)) if first != second => Err(Problem::Conflict {
            key,
            alias,
            first: quoted(&first),
            second: quoted(&second),
        }),
        (Some(value), _) => Ok(Some((key, value))),
        (None, Some(value)) => Ok(Some((alias, value))),
        (None, None) => Ok(None),
    }
}

fn network_ref(name: Option<String>, namespace: Option<String>) -> Result<NetworkRef, Problem> {
    let name = name.ok_or_else(|| Problem::Missing {
        key: "name".to_owned(),
    })?;
    let namespace = match namespace.as_deref() {
        None | Some("") => None,
        Some(namespace) => Some(namespace_name(namespace)?),
    };
    Ok(NetworkRef {
        namespace,
        name: object_name("name", &name)?,
    })
}

fn invalid(key: impl Into<String>, value: &str, expected: &'static str) -> Problem {
    Problem::Invalid {
        key: key.into(),
        value: quoted(value),
        expected,
    }
}

fn ip_requests(ips: Vec<String>) -> Result<Vec<IpRequest>, Problem> {
    if ips.is_empty() {
        return Err(Problem::EmptyList { key: "ips" });
    }
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            ip.parse().map_err(|_| {
                invalid(
                    format!("ips[{i}]"),
                    ip,
                    "an IP address with an optional /prefix length",
                )
            })
        })
        .collect()
}

fn mac_addr(mac: &str) -> Result<MacAddr, Problem> {
    const EXPECTED: &str = "a MAC address (six hex octets separated by ':')";
    // The octet parser underneath takes a leading '+'; only hex digits are a MAC.
    if !mac.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
        return Err(invalid("mac", mac, EXPECTED));
    }
    mac.parse().map_err(|_| invalid("mac", mac, EXPECTED))
}

fn gateways(gateways: Vec<String>) -> Result<Vec<IpAddr>, Problem> {
    gateways
        .iter()
        .enumerate()
        .map(|(i, gw)| {
            gw.parse()
                .map_err(|_| invalid(format!("default-route[{i}]"), gw, "an IP address"))
        })
        .collect()
}

fn infiniband_guid(guid: String) -> Result<String, Problem> {
    let octets: Vec<&str> = guid.split(':').collect();
    let valid = octets.len() == 8
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if valid {
        Ok(guid)
    } else {
        Err(invalid(
            "infiniband-guid",
            &guid,
            "a GUID (eight hex octets separated by ':')",
        ))
    }
}

fn non_empty(key: &'static str, value: String) -> Result<String, Problem> {
    if value.is_empty() {
        Err(invalid(key, &value, "a non-empty string"))
    } else {
        Ok(value)
    }
}

fn claim_name(name: String) -> Result<String, Problem> {
    object_name("ipam-claim-reference", &name)?;
    Ok(name)
}

fn claim_request(object: Map<String, Value>) -> Result<ClaimRequest, Problem> {
    let mut f = Fields::new(object, format!("{RESOURCE_CLAIM_KEY}."));
    let claim = f.take::<String>("claimName", STRING)?;
    let request = f.take::<String>("requestName", STRING)?;
    let label = |key: &'static str, value: &str| {
        Label::parse(value).map_err(|error| Problem::Name { key, error })
    };
    let claim = claim.ok_or_else(|| Problem::Missing {
        key: f.key("claimName"),
    })?;
    Ok(ClaimRequest {
        claim_name: label("plexus.dev/resource-claim.claimName", &claim)?,
        request_name: request
            .map(|r| label("plexus.dev/resource-claim.requestName", &r))
            .transpose()?,
    })
}

fn port_mappings(mappings: Vec<Map<String, Value>>) -> Result<Vec<PortMapping>, Problem> {
    if mappings.is_empty() {
        return Err(Problem::EmptyList {
            key: "portMappings",
        });
    }
    mappings
        .into_iter()
        .enumerate()
        .map(|(i, object)| port_mapping(Fields::new(object, format!("portMappings[{i}]."))))
        .collect()
}

fn port_mapping(mut f: Fields) -> Result<PortMapping, Problem> {
    let host_port = f.take::<i64>("hostPort", PORT)?;
    let container_port = f.take::<i64>("containerPort", PORT)?;
    let protocol = f.take::<String>("protocol", STRING)?;
    let host_ip = f.take::<String>("hostIP", STRING)?;
    Ok(PortMapping {
        host_port: port(&f, "hostPort", host_port)?,
        container_port: port(&f, "containerPort", container_port)?,
        protocol: match protocol {
            Some(p) => p
                .parse()
                .map_err(|_| invalid(f.key("protocol"), &p, "one of TCP, UDP or SCTP"))?,
            None => Protocol::default(),
        },
        host_ip: match host_ip.as_deref() {
            // The portmap plugin reads an empty hostIP as "every address", like an absent one.
            None | Some("") => None,
            Some(ip) => Some(
                ip.parse()
                    .map_err(|_| invalid(f.key("hostIP"), ip, "an IP address"))?,
            ),
        },
    })
}

fn port(f: &Fields, key: &str, value: Option<i64>) -> Result<u16, Problem> {
    let value = value.ok_or_else(|| Problem::Missing { key: f.key(key) })?;
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(Problem::Invalid {
            key: f.key(key),
            value: value.to_string(),
            expected: PORT,
        }),
    }
}

fn bandwidth(object: Map<String, Value>) -> Result<Bandwidth, Problem> {
    let mut f = Fields::new(object, "bandwidth.".to_owned());
    let bandwidth = Bandwidth {
        ingress_rate: rate(&mut f, "ingressRate")?,
        ingress_burst: rate(&mut f, "ingressBurst")?,
        egress_rate: rate(&mut f, "egressRate")?,
        egress_burst: rate(&mut f, "egressBurst")?,
    };
    if bandwidth.ingress_burst.is_some() && bandwidth.ingress_rate.is_none() {
        return Err(Problem::BurstWithoutRate {
            burst: "bandwidth.ingressBurst",
            rate: "bandwidth.ingressRate",
        });
    }
    if bandwidth.egress_burst.is_some() && bandwidth.egress_rate.is_none() {
        return Err(Problem::BurstWithoutRate {
            burst: "bandwidth.egressBurst",
            rate: "bandwidth.egressRate",
        });
    }
    if bandwidth.ingress_rate.is_none() && bandwidth.egress_rate.is_none() {
        return Err(Problem::NoRate);
    }
    Ok(bandwidth)
}

fn rate(f: &mut Fields, key: &str) -> Result<Option<u64>, Problem> {
    match f.take::<u64>(key, RATE)? {
        Some(0) => Err(Problem::Invalid {
            key: f.key(key),
            value: "0".to_owned(),
            expected: RATE,
        }),
        other => Ok(other),
    }
}

/// Rules that span elements: explicit interface names must differ (NPWG §4.1.2.1.5; names
/// generated later are resolution's to check), and only one element may carry `default-route`
/// (NPWG §4.1.2.1.9).
fn check_across_entries(entries: &[(EntryId, Selection)]) -> Result<(), SelectionError> {
    let mut interfaces: HashMap<&IfName, &EntryId> = HashMap::new();
    let mut default_route: Option<&EntryId> = None;
    for (entry, selection) in entries {
        if let Some(interface) = &selection.interface {
            if let Some(earlier) = interfaces.get(interface) {
                let problem = Problem::DuplicateInterface {
                    interface: interface.as_str().to_owned(),
                    earlier: (*earlier).clone(),
                };
                return Err(entry_error(entry.clone(), problem));
            }
            interfaces.insert(interface, entry);
        }
        if selection.default_route.is_some() {
            if let Some(earlier) = default_route {
                return Err(entry_error(
                    entry.clone(),
                    Problem::DefaultRouteTwice {
                        earlier: earlier.clone(),
                    },
                ));
            }
            default_route = Some(entry);
        }
    }
    Ok(())
}

/// A user's string, quoted and escaped for an error message, and cut short so one huge value
/// cannot flood a log line or an event.
fn quoted(value: &str) -> String {
    const LIMIT: usize = 64;
    match value.char_indices().nth(LIMIT) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}...", &value[..end]),
    }
}

fn shortened(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}...", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_ok(annotation: &str) -> Vec<Selection> {
        parse_networks(annotation).unwrap_or_else(|e| panic!("{annotation:?} rejected: {e}"))
    }

    fn parse_err(annotation: &str) -> SelectionError {
        match parse_networks(annotation) {
            Ok(selections) => panic!("{annotation:?} accepted as {selections:?}"),
            Err(e) => e,
        }
    }

    fn network(namespace: Option<&str>, name: &str) -> NetworkRef {
        NetworkRef {
            namespace: namespace.map(|ns| Namespace::parse(ns).unwrap()),
            name: ObjectName::parse(name).unwrap(),
        }
    }

    fn ifname(name: &str) -> IfName {
        IfName::parse(name).unwrap()
    }

    /// The selection `{"name": "a", <body>}` would give, built by hand from `Selection::new`.
    fn a_with(edit: fn(&mut Selection)) -> Selection {
        let mut selection = Selection::new(network(None, "a"));
        edit(&mut selection);
        selection
    }

    /// Parses a one-element JSON annotation whose element is `{"name": "a", <body>}`.
    fn parse_one(body: &str) -> Result<Selection, SelectionError> {
        let annotation = format!(r#"[{{"name": "a", {body}}}]"#);
        let mut selections = parse_networks(&annotation)?;
        assert_eq!(selections.len(), 1);
        Ok(selections.remove(0))
    }

    #[test]
    fn empty_or_blank_annotations_select_no_networks() {
        for annotation in ["", " ", "\n\t ", "[]", " [ ] "] {
            assert_eq!(parse_ok(annotation), vec![], "{annotation:?}");
        }
    }

    #[test]
    fn comma_form_elements_give_a_network_and_an_optional_interface() {
        type Expected = &'static [(Option<&'static str>, &'static str, Option<&'static str>)];
        let cases: &[(&str, Expected)] = &[
            ("a", &[(None, "a", None)]),
            (
                "a,b,ns2/c",
                &[
                    (None, "a", None),
                    (None, "b", None),
                    (Some("ns2"), "c", None),
                ],
            ),
            ("a@foo", &[(None, "a", Some("foo"))]),
            ("ns/a@foo", &[(Some("ns"), "a", Some("foo"))]),
            (
                " a , ns2/b@net5 ,c ",
                &[
                    (None, "a", None),
                    (Some("ns2"), "b", Some("net5")),
                    (None, "c", None),
                ],
            ),
            (
                "net-a,net-a",
                &[(None, "net-a", None), (None, "net-a", None)],
            ),
            ("macvlan.conf", &[(None, "macvlan.conf", None)]),
            ("ns / a @ foo", &[(Some("ns"), "a", Some("foo"))]),
            ("a@0123456789abcde", &[(None, "a", Some("0123456789abcde"))]),
            ("a@foo,b", &[(None, "a", Some("foo")), (None, "b", None)]),
        ];
        for (annotation, expected) in cases {
            let got = parse_ok(annotation);
            let want: Vec<Selection> = expected
                .iter()
                .map(|(ns, name, ifn)| Selection {
                    interface: ifn.map(ifname),
                    ..Selection::new(network(*ns, name))
                })
                .collect();
            assert_eq!(got, want, "{annotation:?}");
        }
    }

    #[test]
    fn comma_form_errors_name_the_position_and_the_element() {
        let cases: &[(&str, usize, Option<&str>, &str)] = &[
            ("Bad", 1, Some("Bad"), "name: invalid object name \"Bad\""),
            ("a,b_c", 2, Some("b_c"), "invalid object name \"b_c\""),
            ("a b", 1, Some("a b"), "invalid object name \"a b\""),
            ("a,,b", 2, None, "is empty"),
            ("a,", 2, None, "is empty"),
            (",a", 1, None, "is empty"),
            ("a, ,b", 2, None, "is empty"),
            (
                "a@0123456789abcdef",
                1,
                Some("a@0123456789abcdef"),
                "is longer than 15 bytes",
            ),
            (
                "a@",
                1,
                Some("a@"),
                "interface: invalid interface name \"\": must not be empty",
            ),
            (
                "a@eth 0",
                1,
                Some("a@eth 0"),
                "invalid interface name \"eth 0\"",
            ),
            ("a@b@c", 1, Some("a@b@c"), "contains more than one '@'"),
            ("x/y/z", 1, Some("x/y/z"), "contains more than one '/'"),
            ("/a", 1, Some("/a"), "namespace: invalid namespace \"\""),
            ("Ns/a", 1, Some("Ns/a"), "invalid namespace \"Ns\""),
            ("ns/", 1, Some("ns/"), "name: invalid object name \"\""),
            ("@foo", 1, Some("@foo"), "name: invalid object name \"\""),
            (
                "a,b@foo,c@foo",
                3,
                Some("c@foo"),
                "interface \"foo\" is already requested by entry 2 (\"b@foo\")",
            ),
        ];
        for (annotation, position, label, fragment) in cases {
            let error = parse_err(annotation);
            let entry = error
                .entry()
                .unwrap_or_else(|| panic!("{annotation:?}: no entry in {error}"));
            assert_eq!(entry.position, *position, "{annotation:?}: {error}");
            assert_eq!(entry.name.as_deref(), *label, "{annotation:?}: {error}");
            assert!(
                error.to_string().contains(fragment),
                "{annotation:?}: {error:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn json_form_takes_every_key_of_the_spec_and_of_multus() {
        let annotation = r#"[
            {"name": "macvlan-conf", "namespace": "net", "interface": "data0",
             "ips": ["198.18.0.5/24", "fd00::5"], "mac": "C2:11:22:33:44:55",
             "default-route": ["198.18.0.1", "fd00::1"], "cni-args": {"foo": "bar", "n": 1},
             "portMappings": [{"hostPort": 8080, "containerPort": 80},
                              {"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"}],
             "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000},
             "infiniband-guid": "00:11:22:33:44:55:66:77", "deviceID": "0000:03:00.1"},
            {"name": "claimed", "ipam-claim-reference": "my-claim", "interfaceRequest": "data1"}
        ]"#;
        let expected = vec![
            Selection {
                network: network(Some("net"), "macvlan-conf"),
                interface: Some(ifname("data0")),
                ips: vec![
                    IpRequest {
                        addr: "198.18.0.5".parse().unwrap(),
                        prefix: Some(24),
                    },
                    IpRequest {
                        addr: "fd00::5".parse().unwrap(),
                        prefix: None,
                    },
                ],
                mac: Some(MacAddr([0xc2, 0x11, 0x22, 0x33, 0x44, 0x55])),
                default_route: Some(vec![
                    "198.18.0.1".parse().unwrap(),
                    "fd00::1".parse().unwrap(),
                ]),
                cni_args: Some(json!({"foo": "bar", "n": 1}).as_object().unwrap().clone()),
                port_mappings: vec![
                    PortMapping {
                        host_port: 8080,
                        container_port: 80,
                        protocol: Protocol::Tcp,
                        host_ip: None,
                    },
                    PortMapping {
                        host_port: 5353,
                        container_port: 53,
                        protocol: Protocol::Udp,
                        host_ip: Some("10.0.0.1".parse().unwrap()),
                    },
                ],
                bandwidth: Some(Bandwidth {
                    ingress_rate: Some(1000),
                    ingress_burst: Some(2000),
                    egress_rate: Some(3000),
                    egress_burst: None,
                }),
                infiniband_guid: Some("00:11:22:33:44:55:66:77".to_owned()),
                device_id: Some("0000:03:00.1".to_owned()),
                ipam_claim_reference: None,
                resource_claim: None,
            },
            Selection {
                interface: Some(ifname("data1")),
                ipam_claim_reference: Some("my-claim".to_owned()),
                ..Selection::new(network(None, "claimed"))
            },
        ];
        assert_eq!(parse_ok(annotation), expected);
    }

    #[test]
    fn json_values_that_are_accepted() {
        type Edit = fn(&mut Selection);
        let cases: &[(&str, Edit)] = &[
            (r#""namespace": """#, |_| {}),
            (r#""namespace": null"#, |_| {}),
            (r#""namespace": "ns1""#, |s| {
                s.network.namespace = Some(Namespace::parse("ns1").unwrap())
            }),
            (r#""interface": "net-x""#, |s| {
                s.interface = Some(ifname("net-x"))
            }),
            (r#""interfaceRequest": "net-x""#, |s| {
                s.interface = Some(ifname("net-x"))
            }),
            (
                r#""interface": "net-x", "interfaceRequest": "net-x""#,
                |s| s.interface = Some(ifname("net-x")),
            ),
            (r#""ips": ["10.1.1.1"]"#, |s| {
                s.ips = vec!["10.1.1.1".parse().unwrap()]
            }),
            (r#""ips": ["10.1.1.1/32"]"#, |s| {
                s.ips = vec!["10.1.1.1/32".parse().unwrap()]
            }),
            (r#""ips": ["10.1.1.1/0"]"#, |s| {
                s.ips = vec!["10.1.1.1/0".parse().unwrap()]
            }),
            (r#""ips": ["fd00::1/128", "fd00::2"]"#, |s| {
                s.ips = vec!["fd00::1/128".parse().unwrap(), "fd00::2".parse().unwrap()]
            }),
            (r#""ips": null"#, |_| {}),
            (r#""mac": "02:00:00:00:00:0a""#, |s| {
                s.mac = Some("02:00:00:00:00:0a".parse().unwrap())
            }),
            (r#""default-route": []"#, |s| s.default_route = Some(vec![])),
            (r#""default-route": ["10.0.0.1"]"#, |s| {
                s.default_route = Some(vec!["10.0.0.1".parse().unwrap()])
            }),
            (r#""cni-args": {}"#, |s| s.cni_args = Some(Map::new())),
            (r#""cni-args": {"a": [1, {"b": null}]}"#, |s| {
                s.cni_args = Some(json!({"a": [1, {"b": null}]}).as_object().unwrap().clone())
            }),
            (
                r#""portMappings": [{"hostPort": 1, "containerPort": 65535, "protocol": "udp"}]"#,
                |s| {
                    s.port_mappings = vec![PortMapping {
                        host_port: 1,
                        container_port: 65535,
                        protocol: Protocol::Udp,
                        host_ip: None,
                    }]
                },
            ),
            (
                r#""portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "Sctp", "hostIP": ""}]"#,
                |s| {
                    s.port_mappings = vec![PortMapping {
                        host_port: 80,
                        container_port: 80,
                        protocol: Protocol::Sctp,
                        host_ip: None,
                    }]
                },
            ),
            (
                r#""portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "fd00::1"}]"#,
                |s| {
                    s.port_mappings = vec![PortMapping {
                        host_port: 80,
                        container_port: 80,
                        protocol: Protocol::Tcp,
                        host_ip: Some("fd00::1".parse().unwrap()),
                    }]
                },
            ),
            (r#""bandwidth": {"egressRate": 5, "egressBurst": 6}"#, |s| {
                s.bandwidth = Some(Bandwidth {
                    egress_rate: Some(5),
                    egress_burst: Some(6),
                    ..Bandwidth::default()
                })
            }),
            (
                r#""bandwidth": {"ingressRate": 18446744073709551615}"#,
                |s| {
                    s.bandwidth = Some(Bandwidth {
                        ingress_rate: Some(u64::MAX),
                        ..Bandwidth::default()
                    })
                },
            ),
            (r#""infiniband-guid": "AA:bb:CC:dd:00:11:22:33""#, |s| {
                s.infiniband_guid = Some("AA:bb:CC:dd:00:11:22:33".to_owned())
            }),
            (r#""deviceID": "0000:03:00.1""#, |s| {
                s.device_id = Some("0000:03:00.1".to_owned())
            }),
            (r#""device-id": "0000:03:00.1""#, |s| {
                s.device_id = Some("0000:03:00.1".to_owned())
            }),
            (
                r#""plexus.dev/resource-claim": {"claimName": "nics", "requestName": "vf"}"#,
                |s| {
                    s.resource_claim = Some(ClaimRequest {
                        claim_name: Label::parse("nics").unwrap(),
                        request_name: Some(Label::parse("vf").unwrap()),
                    })
                },
            ),
            (
                r#""plexus.dev/resource-claim": {"claimName": "nics"}"#,
                |s| {
                    s.resource_claim = Some(ClaimRequest {
                        claim_name: Label::parse("nics").unwrap(),
                        request_name: None,
                    })
                },
            ),
            (r#""deviceID": "x", "device-id": "x""#, |s| {
                s.device_id = Some("x".to_owned())
            }),
            (r#""ipam-claim-reference": "claim.v1""#, |s| {
                s.ipam_claim_reference = Some("claim.v1".to_owned())
            }),
            (r#""org.example.foo": {"anything": [1, 2]}"#, |_| {}),
            (r#""k8s.v1.cni.cncf.io/whatever": 5"#, |_| {}),
            (r#""someFutureKey": "ignored like Multus does""#, |_| {}),
            (
                r#""mac": null, "interface": null, "bandwidth": null, "portMappings": null"#,
                |_| {},
            ),
        ];
        for (body, edit) in cases {
            match parse_one(body) {
                Ok(selection) => assert_eq!(selection, a_with(*edit), "{body}"),
                Err(e) => panic!("{body} rejected: {e}"),
            }
        }
    }

    #[test]
    fn json_values_that_are_rejected_name_the_key_and_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                r#""plexus.dev/resource-claim": {"requestName": "vf"}"#,
                "plexus.dev/resource-claim.claimName is missing",
            ),
            (
                r#""plexus.dev/resource-claim": {"claimName": "Nics"}"#,
                "plexus.dev/resource-claim.claimName: invalid DNS label \"Nics\"",
            ),
            (
                r#""plexus.dev/resource-claim": "nics/vf""#,
                "plexus.dev/resource-claim must be an object",
            ),
            (
                r#""namespace": "Bad_NS""#,
                "namespace: invalid namespace \"Bad_NS\"",
            ),
            (
                r#""interface": """#,
                "interface: invalid interface name \"\": must not be empty",
            ),
            (
                r#""interface": "0123456789abcdef""#,
                "is longer than 15 bytes",
            ),
            (
                r#""interfaceRequest": "a/b""#,
                "interfaceRequest: invalid interface name \"a/b\"",
            ),
            (
                r#""interface": "x", "interfaceRequest": "y""#,
                "interface is \"x\" but interfaceRequest is \"y\"",
            ),
            (r#""ips": []"#, "ips is an empty list"),
            (
                r#""ips": ["10.0.0.1", "10.0.0"]"#,
                "ips[1] \"10.0.0\" is not an IP address",
            ),
            (r#""ips": ["10.0.0.1/33"]"#, "ips[0] \"10.0.0.1/33\" is not"),
            (r#""ips": ["fd00::1/129"]"#, "ips[0] \"fd00::1/129\" is not"),
            (r#""ips": ["10.0.0.1/"]"#, "ips[0] \"10.0.0.1/\" is not"),
            (r#""ips": ["10.0.0.1/+8"]"#, "ips[0] \"10.0.0.1/+8\" is not"),
            (
                r#""ips": ["10.0.0.1/8/8"]"#,
                "ips[0] \"10.0.0.1/8/8\" is not",
            ),
            (r#""ips": [""]"#, "ips[0] \"\" is not"),
            (
                r#""mac": "zz:11:22:33:44:55""#,
                "mac \"zz:11:22:33:44:55\" is not a MAC address",
            ),
            (
                r#""mac": "+1:11:22:33:44:55""#,
                "mac \"+1:11:22:33:44:55\" is not a MAC address",
            ),
            (r#""mac": "c2:11:22:33:44""#, "is not a MAC address"),
            (
                r#""mac": "00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00""#,
                "is not a MAC address",
            ),
            (r#""mac": """#, "mac \"\" is not a MAC address"),
            (
                r#""default-route": ["10.0.0.1/24"]"#,
                "default-route[0] \"10.0.0.1/24\" is not an IP address",
            ),
            (
                r#""default-route": ["gw"]"#,
                "default-route[0] \"gw\" is not an IP address",
            ),
            (r#""portMappings": []"#, "portMappings is an empty list"),
            (
                r#""portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]"#,
                "portMappings[0].protocol \"icmp\" is not one of TCP, UDP or SCTP",
            ),
            (
                r#""portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": ""}]"#,
                "portMappings[0].protocol \"\" is not",
            ),
            (
                r#""portMappings": [{"hostPort": 0, "containerPort": 80}]"#,
                "portMappings[0].hostPort 0 is not an integer from 1 to 65535",
            ),
            (
                r#""portMappings": [{"hostPort": 80, "containerPort": 65536}]"#,
                "portMappings[0].containerPort 65536 is not an integer from 1 to 65535",
            ),
            (
                r#""portMappings": [{"hostPort": -1, "containerPort": 80}]"#,
                "portMappings[0].hostPort -1 is not",
            ),
            (
                r#""portMappings": [{"hostPort": 80}]"#,
                "portMappings[0].containerPort is missing",
            ),
            (
                r#""portMappings": [{"hostPort": 1, "containerPort": 1}, {"containerPort": 80}]"#,
                "portMappings[1].hostPort is missing",
            ),
            (
                r#""portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "localhost"}]"#,
                "portMappings[0].hostIP \"localhost\" is not an IP address",
            ),
            (
                r#""bandwidth": {"ingressBurst": 10}"#,
                "bandwidth.ingressBurst is given without bandwidth.ingressRate",
            ),
            (
                r#""bandwidth": {"ingressRate": 10, "egressBurst": 10}"#,
                "bandwidth.egressBurst is given without bandwidth.egressRate",
            ),
            (
                r#""bandwidth": {"ingressRate": 0}"#,
                "bandwidth.ingressRate 0 is not a positive integer",
            ),
            (
                r#""bandwidth": {"egressRate": 1, "egressBurst": 0}"#,
                "bandwidth.egressBurst 0 is not a positive integer",
            ),
            (
                r#""bandwidth": {}"#,
                "bandwidth sets neither ingressRate nor egressRate",
            ),
            (
                r#""infiniband-guid": "00:11:22:33:44:55""#,
                "infiniband-guid \"00:11:22:33:44:55\" is not a GUID",
            ),
            (
                r#""infiniband-guid": "00:11:22:33:44:55:66:7g""#,
                "is not a GUID",
            ),
            (
                r#""infiniband-guid": "00:11:22:33:44:55:66:+7""#,
                "is not a GUID",
            ),
            (
                r#""infiniband-guid": "0011:2233:4455:6677""#,
                "is not a GUID",
            ),
            (
                r#""deviceID": "x", "device-id": "y""#,
                "deviceID is \"x\" but device-id is \"y\"",
            ),
            (
                r#""device-id": """#,
                "device-id \"\" is not a non-empty string",
            ),
            (
                r#""ipam-claim-reference": "Bad Claim""#,
                "ipam-claim-reference: invalid object name \"Bad Claim\"",
            ),
            (
                r#""ips": ["10.0.0.1"], "ipam-claim-reference": "claim""#,
                "ips and ipam-claim-reference cannot both be given",
            ),
        ];
        for (body, fragment) in cases {
            let error = match parse_one(body) {
                Ok(selection) => panic!("{body} accepted as {selection:?}"),
                Err(e) => e,
            };
            let entry = error
                .entry()
                .unwrap_or_else(|| panic!("{body}: no entry in {error}"));
            assert_eq!(
                (entry.position, entry.name.as_deref()),
                (1, Some("a")),
                "{body}"
            );
            let text = error.to_string();
            assert!(text.starts_with(r#"entry 1 ("a"): "#), "{text}");
            assert!(
                text.contains(fragment),
                "{body}: {text:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn json_values_of_the_wrong_type_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (r#""namespace": 5"#, "namespace must be a string"),
            (r#""interface": ["eth1"]"#, "interface must be a string"),
            (
                r#""interfaceRequest": true"#,
                "interfaceRequest must be a string",
            ),
            (r#""ips": "1.2.3.4""#, "ips must be a list of strings"),
            (r#""ips": [1]"#, "ips must be a list of strings"),
            (r#""mac": 12"#, "mac must be a string"),
            (
                r#""default-route": "10.0.0.1""#,
                "default-route must be a list of strings",
            ),
            (r#""cni-args": "a=b""#, "cni-args must be an object"),
            (r#""cni-args": []"#, "cni-args must be an object"),
            (
                r#""portMappings": {"hostPort": 1, "containerPort": 1}"#,
                "portMappings must be a list of objects",
            ),
            (
                r#""portMappings": [80]"#,
                "portMappings must be a list of objects",
            ),
            (
                r#""portMappings": [{"hostPort": "80", "containerPort": 80}]"#,
                "portMappings[0].hostPort must be an integer",
            ),
            (
                r#""portMappings": [{"hostPort": 80.5, "containerPort": 80}]"#,
                "portMappings[0].hostPort must be an integer",
            ),
            (
                r#""portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": 6}]"#,
                "portMappings[0].protocol must be a string",
            ),
            (
                r#""portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": 1}]"#,
                "portMappings[0].hostIP must be a string",
            ),
            (r#""bandwidth": [1]"#, "bandwidth must be an object"),
            (
                r#""bandwidth": {"ingressRate": "1M"}"#,
                "bandwidth.ingressRate must be a positive integer",
            ),
            (
                r#""bandwidth": {"ingressRate": -5}"#,
                "bandwidth.ingressRate must be a positive integer",
            ),
            (
                r#""bandwidth": {"egressRate": 1e6}"#,
                "bandwidth.egressRate must be a positive integer",
            ),
            (
                r#""infiniband-guid": 1"#,
                "infiniband-guid must be a string",
            ),
            (r#""deviceID": {}"#, "deviceID must be a string"),
            (r#""device-id": 3"#, "device-id must be a string"),
            (
                r#""ipam-claim-reference": ["c"]"#,
                "ipam-claim-reference must be a string",
            ),
        ];
        for (body, fragment) in cases {
            let error = match parse_one(body) {
                Ok(selection) => panic!("{body} accepted as {selection:?}"),
                Err(e) => e,
            };
            assert!(
                matches!(
                    &error,
                    SelectionError::Entry {
                        problem: Problem::WrongType { .. },
                        ..
                    }
                ),
                "{error:?}"
            );
            assert!(
                error.to_string().contains(fragment),
                "{body}: {error} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn json_elements_need_a_name() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (r#"[{"namespace": "ns"}]"#, None, "name is missing"),
            (r#"[{"name": null}]"#, None, "name is missing"),
            (
                r#"[{"name": ""}]"#,
                Some(""),
                "name: invalid object name \"\": must not be empty",
            ),
            (r#"[{"name": 7}]"#, None, "name must be a string"),
            (
                r#"[{"name": "ns/a"}]"#,
                Some("ns/a"),
                "invalid object name \"ns/a\"",
            ),
            (
                r#"[{"name": "a@eth1"}]"#,
                Some("a@eth1"),
                "invalid object name \"a@eth1\"",
            ),
            (
                r#"[{"name": "Upper"}]"#,
                Some("Upper"),
                "invalid object name \"Upper\"",
            ),
        ];
        for (annotation, label, fragment) in cases {
            let error = parse_err(annotation);
            let entry = error
                .entry()
                .unwrap_or_else(|| panic!("{annotation}: {error}"));
            assert_eq!(entry.name.as_deref(), *label, "{annotation}");
            assert!(
                error.to_string().contains(fragment),
                "{annotation}: {error} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn json_list_elements_must_be_objects() {
        for (annotation, found) in [
            ("[1]", "a number"),
            ("[null]", "null"),
            (r#"["a"]"#, "a string"),
            ("[[]]", "a list"),
        ] {
            let error = parse_err(annotation);
            assert_eq!(
                error.to_string(),
                format!("entry 1: is {found}, not an object")
            );
        }
        let error = parse_err(r#"[{"name": "a"}, 2]"#);
        assert_eq!(error.entry().map(|e| e.position), Some(2));
    }

    #[test]
    fn a_single_json_object_is_rejected_as_not_a_list() {
        let error = parse_err(r#"{"name": "a"}"#);
        assert_eq!(
            error,
            SelectionError::NotAList {
                found: "a single object; put it in a list: [{...}]"
            }
        );
        assert_eq!(
            error.to_string(),
            "must be a JSON list of objects, but it is a single object; put it in a list: [{...}]"
        );
    }

    #[test]
    fn other_json_values_that_are_not_lists_are_rejected() {
        for (annotation, found) in [
            (r#""a""#, "a string"),
            (r#""a,b""#, "a string"),
            ("[1] ", ""),
        ] {
            let result = parse_networks(annotation);
            if found.is_empty() {
                assert!(
                    matches!(result, Err(SelectionError::Entry { .. })),
                    "{annotation}: {result:?}"
                );
            } else {
                assert_eq!(
                    result,
                    Err(SelectionError::NotAList { found }),
                    "{annotation}"
                );
            }
        }
    }

    #[test]
    fn invalid_json_is_an_error_with_the_parser_position() {
        for annotation in [
            r#"[{"name": "a"}"#,
            r#"[{"name": "a",}]"#,
            r#"[{name: "a"}]"#,
            "a,\"b\"",
            "{",
            "[",
        ] {
            let error = parse_err(annotation);
            assert!(
                matches!(error, SelectionError::Json(_)),
                "{annotation}: {error:?}"
            );
            let text = error.to_string();
            assert!(text.starts_with("not valid JSON: "), "{text}");
            assert!(text.contains("line 1 column"), "{text}");
        }
    }

    #[test]
    fn values_with_brackets_braces_or_quotes_are_read_as_json() {
        assert!(looks_like_json(r#"[{"name":"a"}]"#));
        assert!(looks_like_json("a,{b"));
        assert!(looks_like_json("\"a\""));
        assert!(!looks_like_json("ns/a@foo, b"));
        // Only `[`, `{` and `"` count, as in Multus: a stray `]` is a bad comma-form name.
        assert!(
            parse_err("a,b]")
                .to_string()
                .contains("entry 2 (\"b]\"): name: invalid object name \"b]\"")
        );
    }

    #[test]
    fn default_route_on_two_elements_fails_naming_both() {
        let error = parse_err(
            r#"[{"name": "a", "default-route": ["10.0.0.1"]}, {"name": "b"}, {"name": "c", "default-route": []}]"#,
        );
        assert_eq!(
            error.to_string(),
            "entry 3 (\"c\"): \
             default-route is already set by entry 1 (\"a\"); only one element may set it"
        );
    }

    #[test]
    fn the_same_explicit_interface_twice_fails_naming_both_entries() {
        let error = parse_err(
            r#"[{"name": "a", "interface": "foo"}, {"name": "b"}, {"name": "a", "interfaceRequest": "foo"}]"#,
        );
        assert_eq!(
            error,
            SelectionError::Entry {
                entry: EntryId {
                    position: 3,
                    name: Some("a".to_owned())
                },
                problem: Problem::DuplicateInterface {
                    interface: "foo".to_owned(),
                    earlier: EntryId {
                        position: 1,
                        name: Some("a".to_owned())
                    },
                },
            }
        );
        assert_eq!(
            error.to_string(),
            "entry 3 (\"a\"): interface \"foo\" is already requested by entry 1 (\"a\")"
        );
    }

    #[test]
    fn the_same_network_twice_without_interfaces_is_two_requests() {
        let selections =
            parse_ok(r#"[{"name": "a"}, {"name": "a", "interface": "foo"}, {"name": "a"}]"#);
        assert_eq!(selections.len(), 3);
        assert_eq!(selections[1].interface, Some(ifname("foo")));
    }

    #[test]
    fn the_first_invalid_entry_is_the_one_reported() {
        let error =
            parse_err(r#"[{"name": "a"}, {"name": "b", "mac": "x"}, {"name": "c", "ips": []}]"#);
        assert_eq!(error.entry().map(|e| e.position), Some(2));
    }

    #[test]
    fn error_messages_read_as_one_line_for_an_operator() {
        let error =
            parse_err(r#"[{"name": "a"}, {"name": "macvlan-conf", "mac": "zz:11:22:33:44:55"}]"#);
        assert_eq!(
            error.to_string(),
            "entry 2 (\"macvlan-conf\"): \
             mac \"zz:11:22:33:44:55\" is not a MAC address (six hex octets separated by ':')"
        );
        let error = parse_err(r#"[{"name": "a", "ips": "1.2.3.4"}]"#);
        assert_eq!(
            error.to_string(),
            "entry 1 (\"a\"): \
             ips must be a list of strings: invalid type: string \"1.2.3.4\", expected a sequence"
        );
        let error = parse_err("a,,b");
        assert_eq!(error.to_string(), "entry 2: is empty (a stray comma?)");
    }

    #[test]
    fn long_values_are_cut_short_in_error_labels() {
        let name = "x".repeat(10_000);
        let error = parse_err(&format!(r#"[{{"name": "{name}", "mac": "{name}"}}]"#));
        let text = error.to_string();
        assert!(text.len() < 400, "{} bytes", text.len());
        assert!(
            text.contains(&format!("(\"{}\"...)", "x".repeat(64))),
            "{text}"
        );
        let error = parse_err(&format!(r#"[{{"name": "a", "ips": "{name}"}}]"#));
        assert!(error.to_string().len() < 400, "{error}");
        let error = parse_err(&format!("a@{name}"));
        assert!(error.to_string().len() < 400, "{error}");
        assert_eq!(
            quoted("é".repeat(65).as_str()),
            format!("{:?}...", "é".repeat(64))
        );
        assert_eq!(
            quoted("é".repeat(64).as_str()),
            format!("{:?}", "é".repeat(64))
        );
    }

    #[test]
    fn port_mappings_serialize_in_runtime_config_shape() {
        let mappings = vec![
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            },
            PortMapping {
                host_port: 5353,
                container_port: 53,
                protocol: Protocol::Udp,
                host_ip: Some("10.0.0.1".parse().unwrap()),
            },
            PortMapping {
                host_port: 9,
                container_port: 9,
                protocol: Protocol::Sctp,
                host_ip: Some("fd00::1".parse().unwrap()),
            },
        ];
        assert_eq!(
            serde_json::to_value(&mappings).unwrap(),
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "10.0.0.1"},
                {"hostPort": 9, "containerPort": 9, "protocol": "sctp", "hostIP": "fd00::1"},
            ])
        );
        assert_eq!(
            serde_json::to_string(&mappings[0]).unwrap(),
            r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp"}"#
        );
    }

    #[test]
    fn bandwidth_serializes_in_runtime_config_shape_without_absent_values() {
        let full = Bandwidth {
            ingress_rate: Some(1),
            ingress_burst: Some(2),
            egress_rate: Some(3),
            egress_burst: Some(4),
        };
        assert_eq!(
            serde_json::to_string(&full).unwrap(),
            r#"{"ingressRate":1,"ingressBurst":2,"egressRate":3,"egressBurst":4}"#
        );
        let egress = Bandwidth {
            egress_rate: Some(1_000_000),
            ..Bandwidth::default()
        };
        assert_eq!(
            serde_json::to_string(&egress).unwrap(),
            r#"{"egressRate":1000000}"#
        );
    }

    #[test]
    fn a_full_selection_survives_a_serde_round_trip() {
        let annotation = r#"[{"name": "macvlan-conf", "namespace": "net", "interface": "data0",
            "ips": ["198.18.0.5/24", "fd00::5"], "mac": "c2:11:22:33:44:55", "default-route": ["198.18.0.1"],
            "cni-args": {"foo": {"bar": [1, true]}},
            "portMappings": [{"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"}],
            "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000}, "infiniband-guid": "00:11:22:33:44:55:66:77",
            "device-id": "0000:03:00.1"}, {"name": "b", "ipam-claim-reference": "claim"}]"#;
        let selections = parse_ok(annotation);
        let stored = serde_json::to_string(&selections).unwrap();
        let restored: Vec<Selection> = serde_json::from_str(&stored).unwrap();
        assert_eq!(restored, selections);
    }

    #[test]
    fn a_bare_selection_is_stored_compactly() {
        let selection = Selection::new(network(None, "a"));
        let stored = serde_json::to_value(&selection).unwrap();
        assert_eq!(stored, json!({"network": {"name": "a"}}));
        assert_eq!(
            serde_json::from_value::<Selection>(stored).unwrap(),
            selection
        );
    }

    #[test]
    fn ip_requests_print_as_written_with_or_without_prefix() {
        for text in [
            "10.0.0.1",
            "10.0.0.1/24",
            "fd00::1",
            "fd00::1/64",
            "0.0.0.0/0",
        ] {
            let ip: IpRequest = text.parse().unwrap();
            assert_eq!(ip.to_string(), text);
            assert_eq!(serde_json::to_value(ip).unwrap(), json!(text));
            assert_eq!(
                serde_json::from_value::<IpRequest>(json!(text)).unwrap(),
                ip
            );
        }
        for bad in [
            "",
            "/24",
            "10.0.0.1/",
            "10.0.0.1/33",
            "fd00::1/129",
            "10.0.0.1/-1",
            "10.0.0.1/ 8",
            "fe80::1%eth0",
        ] {
            assert!(bad.parse::<IpRequest>().is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_value::<IpRequest>(json!("10.0.0.1/99")).is_err());
    }

    #[test]
    fn protocols_parse_case_insensitively_and_print_lowercase() {
        for (text, protocol) in [
            ("tcp", Protocol::Tcp),
            ("TCP", Protocol::Tcp),
            ("Udp", Protocol::Udp),
            ("sCtP", Protocol::Sctp),
        ] {
            assert_eq!(text.parse::<Protocol>(), Ok(protocol));
            assert_eq!(protocol.to_string(), text.to_ascii_lowercase());
        }
        assert_eq!(
            "icmp".parse::<Protocol>(),
            Err(ProtocolError("icmp".to_owned()))
        );
        assert_eq!(Protocol::default(), Protocol::Tcp);
        assert_eq!(
            serde_json::from_value::<Protocol>(json!("udp")).unwrap(),
            Protocol::Udp
        );
    }

    #[test]
    fn garbage_input_never_panics() {
        let deep_list = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_object = format!("[{}1{}]", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
        let deep_args = format!(
            r#"[{{"name":"a","cni-args":{}1{}}}]"#,
            r#"{"a":"#.repeat(200),
            "}".repeat(200)
        );
        let long = "a".repeat(1_000_000);
        let long_json = format!(r#"[{{"name":"{long}","interface":"{long}","ips":["{long}"]}}]"#);
        let inputs = [
            deep_list,
            deep_object,
            deep_args,
            long.clone(),
            format!("{long}@{long}"),
            long_json,
            ",".repeat(10_000),
            "123".to_owned(),
            "-1".to_owned(),
            "1e999".to_owned(),
            "[1e999]".to_owned(),
            r#"[{"name":"a","portMappings":[{"hostPort":1e999,"containerPort":99999999999999999999999}]}]"#.to_owned(),
            r#"[{"name":"a","bandwidth":{"ingressRate":99999999999999999999999}}]"#.to_owned(),
            "ñ,🙂,\u{0}, \u{200b}".to_owned(),
            "a@\u{1F600}\u{1F600}\u{1F600}\u{1F600}".to_owned(),
            "[\"\u{0}\"]".to_owned(),
            r#"[{"name":"\ud800"}]"#.to_owned(),
            "\u{feff}[]".to_owned(),
            "null".to_owned(),
            "true".to_owned(),
            "@/,/@".to_owned(),
        ];
        for input in &inputs {
            let _ = parse_networks(input);
        }
    }

    #[test]
    fn pseudo_random_input_never_panics() {
        const PIECES: &[&str] = &[
            "[",
            "]",
            "{",
            "}",
            "\"",
            ",",
            ":",
            "/",
            "@",
            " ",
            "a",
            "ns",
            "name",
            "ips",
            "mac",
            "interface",
            "default-route",
            "portMappings",
            "bandwidth",
            "hostPort",
            "1",
            "0",
            "-",
            ".",
            "é",
            "🙂",
            "\\",
            "null",
            "10.0.0.1/24",
            "ingressRate",
            "\"name\":\"a\"",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = next() % 24;
            let input: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let _ = parse_networks(&input);
        }
    }
}
