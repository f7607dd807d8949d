//! CNI results between every pair of supported versions: what a delegate printed in one
//! version, converted to another, keeps its interfaces, IPs, routes and DNS wherever both
//! versions can express them; and any JSON parses or fails without a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::any_json;
use crate::addr::IpPrefix;
use crate::cni::CniVersion;
use crate::cni::result::{CniResult, Dns, Interface, IpConfig, Route};

fn version() -> impl Strategy<Value = CniVersion> {
    prop::sample::select(CniVersion::ALL.to_vec())
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn prefix() -> impl Strategy<Value = IpPrefix> {
    (ip(), any::<u8>()).prop_map(|(addr, p)| IpPrefix {
        addr,
        prefix: p % (IpPrefix::max_prefix(&addr) + 1),
    })
}

/// Optional text as a result carries it: absent, never empty (empty means absent).
fn text() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[a-zA-Z0-9:/._-]{1,20}")
}

fn non_zero() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(1..=u32::MAX)
}

fn interface() -> impl Strategy<Value = Interface> {
    ("[a-z0-9]{0,15}", text(), text(), non_zero(), text(), text()).prop_map(
        |(name, mac, sandbox, mtu, socket_path, pci_id)| Interface {
            name,
            mac,
            sandbox,
            mtu,
            socket_path,
            pci_id,
        },
    )
}

fn ip_config() -> impl Strategy<Value = IpConfig> {
    (
        prefix(),
        prop::option::of(ip()),
        prop::option::of(0usize..8),
    )
        .prop_map(|(address, gateway, interface)| IpConfig {
            address,
            gateway,
            interface,
        })
}

fn route() -> impl Strategy<Value = Route> {
    (
        prefix(),
        prop::option::of(ip()),
        non_zero(),
        non_zero(),
        non_zero(),
        any::<Option<u32>>(),
        any::<Option<u8>>(),
    )
        .prop_map(|(dst, gw, mtu, advmss, priority, table, scope)| Route {
            dst,
            gw,
            mtu,
            advmss,
            priority,
            table,
            scope,
        })
}

fn dns() -> impl Strategy<Value = Dns> {
    let list = || prop::collection::vec("[a-z0-9.:-]{1,12}", 0..3);
    (list(), text(), list(), list()).prop_map(|(nameservers, domain, search, options)| Dns {
        nameservers,
        domain,
        search,
        options,
    })
}

fn result() -> impl Strategy<Value = CniResult> {
    (
        prop::collection::vec(interface(), 0..4),
        prop::collection::vec(ip_config(), 0..4),
        prop::collection::vec(route(), 0..4),
        dns(),
    )
        .prop_map(|(interfaces, ips, routes, dns)| CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
}

/// `result` as far as `version` can say it: interface mtu, socketPath and pciID are 1.1.0's.
fn expressible(result: &CniResult, version: CniVersion) -> CniResult {
    let mut result = result.clone();
    if version < CniVersion::V1_1_0 {
        for interface in &mut result.interfaces {
            interface.mtu = None;
            interface.socket_path = None;
            interface.pci_id = None;
        }
    }
    result
}

proptest! {
    #![proptest_config(super::cases(256))]

    #[test]
    fn a_result_converted_between_any_two_versions_keeps_what_both_express(
        original in result(),
        from in version(),
        to in version(),
    ) {
        let printed = original.to_bytes(from);
        let (read, written_in) = CniResult::parse(&printed, to).expect("a printed result parses");
        prop_assert_eq!(written_in, from);
        prop_assert_eq!(&read, &expressible(&original, from));
        let converted = read.to_bytes(to);
        let (again, again_in) = CniResult::parse(&converted, from).expect("a converted result parses");
        prop_assert_eq!(again_in, to);
        prop_assert_eq!(again, expressible(&expressible(&original, from), to));
    }

    #[test]
    fn a_result_without_cni_version_is_read_in_the_request_version(
        original in result(),
        asked in version(),
    ) {
        let mut printed = original.to_json(asked);
        printed.as_object_mut().expect("an object").remove("cniVersion");
        let (read, written_in) =
            CniResult::parse(printed.to_string().as_bytes(), asked).expect("parses");
        prop_assert_eq!(written_in, asked);
        prop_assert_eq!(read, expressible(&original, asked));
    }

    #[test]
    fn any_json_parses_as_a_result_or_fails_without_panicking(
        value in any_json(),
        asked in version(),
    ) {
        if let Ok((result, _)) = CniResult::parse(value.to_string().as_bytes(), asked) {
            // Whatever was accepted can be printed in every version.
            for version in CniVersion::ALL {
                let _ = result.to_bytes(version);
            }
        }
    }

    #[test]
    fn any_bytes_parse_as_a_result_or_fail_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        asked in version(),
    ) {
        let _ = CniResult::parse(&bytes, asked);
    }
}
