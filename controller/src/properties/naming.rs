//! Multus-style interface names: the cluster network gets the runtime's interface, the n-th
//! selection `net<n>` unless it names its own; a name used twice fails the ADD, naming both.

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::Map;

use crate::names::{IfName, NetworkRef, ObjectName};
use crate::resolve::{Network, PodContext, ResolveError, plan};
use crate::selection::Selection;
use crate::testing::chain;

/// Names that collide with the generated ones now and then.
fn requested_name() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec![
        "eth0", "net1", "net2", "net3", "net4", "data0", "data1", "x",
    ]))
    .prop_map(|n| n.map(str::to_owned))
}

fn selections() -> impl Strategy<Value = (String, Vec<Option<String>>)> {
    (
        prop::sample::select(vec!["eth0", "net1", "cluster0"]),
        prop::collection::vec(requested_name(), 0..6),
    )
        .prop_map(|(runtime, names)| (runtime.to_owned(), names))
}

proptest! {
    #![proptest_config(super::cases(512))]

    #[test]
    fn interfaces_are_named_as_multus_does_and_a_name_is_never_used_twice(
        (runtime, requested) in selections()
    ) {
        let secondaries: Vec<(Selection, Network)> = requested
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let network = format!("n{i}");
                let selection = Selection {
                    interface: name.as_deref().map(|n| IfName::parse(n).expect("valid")),
                    ..Selection::new(NetworkRef {
                        namespace: None,
                        name: ObjectName::parse(&network).expect("valid"),
                    })
                };
                let config = chain(&network, "1.0.0", &["macvlan"]);
                (selection, Network::test(&format!("ns/{network}"), config))
            })
            .collect();
        let runtime_ifname = IfName::parse(&runtime).expect("valid");
        let runtime_config = Map::new();
        let pod = PodContext {
            runtime_ifname: &runtime_ifname,
            runtime_config: &runtime_config,
            cni_args: "IgnoreUnknown=1",
        };

        let mut expected = vec![runtime.clone()];
        expected.extend(
            requested
                .iter()
                .enumerate()
                .map(|(i, name)| name.clone().unwrap_or_else(|| format!("net{}", i + 1))),
        );
        let unique = expected.iter().collect::<HashSet<_>>().len() == expected.len();

        match plan(Network::test("cluster", chain("cluster", "1.0.0", &["bridge"])), secondaries, &pod) {
            Ok(delegates) => {
                prop_assert!(unique, "{expected:?} has a duplicate, yet the plan succeeded");
                let names: Vec<&str> = delegates.iter().map(|d| d.ifname.as_str()).collect();
                prop_assert_eq!(names, expected.iter().map(String::as_str).collect::<Vec<_>>());
            }
            Err(ResolveError::DuplicateInterface { ifname, network, other }) => {
                prop_assert!(!unique, "{expected:?} is unique, yet {ifname} was refused");
                // The first name used twice, and both networks that wanted it.
                let first_duplicate = expected
                    .iter()
                    .enumerate()
                    .find(|(i, name)| expected[..*i].contains(name))
                    .map(|(_, name)| name.clone());
                prop_assert_eq!(Some(ifname.to_string()), first_duplicate);
                prop_assert!(network.starts_with("ns/n"), "{network}");
                prop_assert!(other == "cluster" || other.starts_with("ns/n"), "{other}");
            }
            Err(other) => prop_assert!(false, "unexpected error: {other}"),
        }
    }
}
