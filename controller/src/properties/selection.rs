//! The networks annotation: any string parses or fails with an error, never a panic; the
//! canonical comma and JSON forms of any valid selection list parse back to that list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::any_json;
use crate::addr::MacAddr;
use crate::names::{IfName, Namespace, NetworkRef, ObjectName};
use crate::selection::{Bandwidth, IpRequest, PortMapping, Protocol, Selection, parse_networks};

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
}

fn object_name() -> impl Strategy<Value = ObjectName> {
    (dns_label(), prop::option::of(dns_label())).prop_map(|(first, second)| {
        let name = match second {
            Some(second) => format!("{first}.{second}"),
            None => first,
        };
        ObjectName::parse(&name).expect("generated names are valid")
    })
}

fn network_ref() -> impl Strategy<Value = NetworkRef> {
    (prop::option::of(dns_label()), object_name()).prop_map(|(namespace, name)| NetworkRef {
        namespace: namespace.map(|n| Namespace::parse(&n).expect("a valid label")),
        name,
    })
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn ip_request() -> impl Strategy<Value = IpRequest> {
    (ip(), any::<Option<u8>>()).prop_map(|(addr, prefix)| {
        let max = if addr.is_ipv4() { 33 } else { 129 };
        IpRequest {
            addr,
            prefix: prefix.map(|p| p % max),
        }
    })
}

fn port_mapping() -> impl Strategy<Value = PortMapping> {
    (
        1..=u16::MAX,
        1..=u16::MAX,
        prop_oneof![
            Just(Protocol::Tcp),
            Just(Protocol::Udp),
            Just(Protocol::Sctp)
        ],
        prop::option::of(ip()),
    )
        .prop_map(
            |(host_port, container_port, protocol, host_ip)| PortMapping {
                host_port,
                container_port,
                protocol,
                host_ip,
            },
        )
}

fn bandwidth() -> impl Strategy<Value = Bandwidth> {
    let rate = || prop::option::of(1..u64::MAX / 2);
    (rate(), rate(), rate(), rate())
        .prop_filter("a rate is needed", |(i, _, e, _)| {
            i.is_some() || e.is_some()
        })
        .prop_map(
            |(ingress_rate, ingress_burst, egress_rate, egress_burst)| Bandwidth {
                ingress_rate,
                ingress_burst: ingress_burst.filter(|_| ingress_rate.is_some()),
                egress_rate,
                egress_burst: egress_burst.filter(|_| egress_rate.is_some()),
            },
        )
}

/// cni-args values as users write them (floats left out: their text form need not
/// round-trip bit for bit, which is JSON's business, not the parser's).
fn cni_args() -> impl Strategy<Value = Map<String, Value>> {
    let value = prop_oneof![
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        prop::collection::vec("[a-z]{0,6}", 0..3).prop_map(|v| json!(v)),
    ];
    prop::collection::btree_map("[a-zA-Z_]{1,8}", value, 0..4)
        .prop_map(|map| map.into_iter().collect())
}

/// A valid selection with every key the JSON form has; `index` keeps interfaces unique.
fn json_selection(index: usize) -> impl Strategy<Value = Selection> {
    let guid = any::<[u8; 8]>().prop_map(|o| {
        o.iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    });
    (
        network_ref(),
        any::<bool>(),
        prop::collection::vec(ip_request(), 0..3),
        prop::option::of(any::<[u8; 6]>().prop_map(MacAddr)),
        prop::option::of(cni_args()),
        prop::collection::vec(port_mapping(), 0..3),
        prop::option::of(bandwidth()),
        prop::option::of(guid),
        prop::option::of("[a-zA-Z0-9:._-]{1,16}"),
        prop::option::of(object_name()),
    )
        .prop_map(
            move |(
                network,
                named,
                ips,
                mac,
                cni_args,
                port_mappings,
                bandwidth,
                guid,
                device_id,
                claim,
            )| {
                Selection {
                    interface: named
                        .then(|| IfName::parse(&format!("if{index}")).expect("a valid name")),
                    // ips and ipam-claim-reference exclude each other.
                    ipam_claim_reference: claim.filter(|_| ips.is_empty()).map(|c| c.to_string()),
                    ips,
                    mac,
                    cni_args,
                    port_mappings,
                    bandwidth,
                    infiniband_guid: guid,
                    device_id,
                    ..Selection::new(network)
                }
            },
        )
}

fn json_selections() -> impl Strategy<Value = Vec<Selection>> {
    (0usize..5)
        .prop_flat_map(|len| (0..len).map(json_selection).collect::<Vec<_>>())
        .prop_flat_map(|selections| {
            let len = selections.len();
            // At most one element may set default-route (NPWG §4.1.2.1.9).
            (
                Just(selections),
                prop::option::of((0..len.max(1), prop::collection::vec(ip(), 0..3))),
            )
        })
        .prop_map(|(mut selections, route)| {
            if let Some((at, gateways)) = route
                && let Some(selection) = selections.get_mut(at)
            {
                selection.default_route = Some(gateways);
            }
            selections
        })
}

/// The JSON form a user would write for `selection`.
fn to_json_form(selection: &Selection) -> Value {
    let mut object = Map::new();
    object.insert("name".into(), selection.network.name.to_string().into());
    if let Some(namespace) = &selection.network.namespace {
        object.insert("namespace".into(), namespace.to_string().into());
    }
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            object.insert(key.into(), value);
        }
    };
    put(
        "interface",
        selection.interface.as_ref().map(|i| i.to_string().into()),
    );
    put(
        "ips",
        (!selection.ips.is_empty()).then(|| json!(selection.ips)),
    );
    put("mac", selection.mac.map(|m| m.to_string().into()));
    put(
        "default-route",
        selection.default_route.as_ref().map(|g| json!(g)),
    );
    put("cni-args", selection.cni_args.clone().map(Value::Object));
    put(
        "portMappings",
        (!selection.port_mappings.is_empty()).then(|| json!(selection.port_mappings)),
    );
    put("bandwidth", selection.bandwidth.map(|b| json!(b)));
    put(
        "infiniband-guid",
        selection.infiniband_guid.clone().map(Value::from),
    );
    put("device-id", selection.device_id.clone().map(Value::from));
    put(
        "ipam-claim-reference",
        selection.ipam_claim_reference.clone().map(Value::from),
    );
    Value::Object(object)
}

/// The comma form of a selection that names only a network and an interface.
fn to_comma_form(selection: &Selection) -> String {
    let mut text = match &selection.network.namespace {
        Some(namespace) => format!("{namespace}/{}", selection.network.name),
        None => selection.network.name.to_string(),
    };
    if let Some(interface) = &selection.interface {
        text.push('@');
        text.push_str(interface.as_str());
    }
    text
}

fn comma_selections() -> impl Strategy<Value = Vec<Selection>> {
    prop::collection::vec((network_ref(), any::<bool>()), 1..6).prop_map(|entries| {
        entries
            .into_iter()
            .enumerate()
            .map(|(i, (network, named))| Selection {
                interface: named.then(|| IfName::parse(&format!("data{i}")).expect("valid")),
                ..Selection::new(network)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(super::cases(512))]

    #[test]
    fn any_string_parses_or_fails_without_panicking(text in any::<String>()) {
        let _ = parse_networks(&text);
    }

    #[test]
    fn annotation_like_strings_parse_or_fail_without_panicking(
        text in r#"[\[\]{}",:@/ a-z0-9.\\-]{0,48}"#
    ) {
        let _ = parse_networks(&text);
    }

    #[test]
    fn any_json_list_parses_or_fails_without_panicking(
        items in prop::collection::vec(any_json(), 0..4)
    ) {
        let _ = parse_networks(&Value::Array(items).to_string());
    }
}

proptest! {
    #![proptest_config(super::cases(256))]

    #[test]
    fn the_json_form_of_valid_selections_round_trips(selections in json_selections()) {
        let text = Value::Array(selections.iter().map(to_json_form).collect()).to_string();
        let parsed = parse_networks(&text);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&selections), "{} -> {:?}", text, parsed);
    }

    #[test]
    fn the_comma_form_of_valid_selections_round_trips(selections in comma_selections()) {
        let text = selections.iter().map(to_comma_form).collect::<Vec<_>>().join(", ");
        let parsed = parse_networks(&text);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&selections), "{} -> {:?}", text, parsed);
    }

    #[test]
    fn a_valid_json_form_cut_short_or_spliced_fails_without_panicking(
        selections in json_selections(),
        cut in any::<prop::sample::Index>(),
        insert in any::<char>(),
    ) {
        let text = Value::Array(selections.iter().map(to_json_form).collect()).to_string();
        let chars: Vec<char> = text.chars().collect();
        let at = cut.index(chars.len() + 1);
        let truncated: String = chars[..at].iter().collect();
        let _ = parse_networks(&truncated);
        let mut spliced = chars.clone();
        spliced.insert(at, insert);
        let _ = parse_networks(&spliced.into_iter().collect::<String>());
    }
}
