//! Which of a running pod's attachments stay, go and come when its annotation changes. Pure:
//! the record and the annotation in, the change out.
//!
//! An attachment is identified by its network (the NAD as `namespace/name`) and its interface
//! name. Interfaces that stay are never renamed or renumbered; a new selection that names an
//! interface gets it, or is refused when another attachment holds it; a new selection that
//! names none gets the lowest `netN` no attachment holds.

use std::collections::BTreeMap;

use crate::names::IfName;

/// What an attachment of the record is to hot-plug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Made for an entry of the annotation: it follows the annotation.
    Selected,
    /// The cluster network or one of plexusd's default networks: never touched.
    Fixed,
    /// Its removal is under way (or failed and is retried): it holds its interface name
    /// until it is gone, but no selection can keep it.
    Leaving,
}

/// One attachment of the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub network: String,
    pub ifname: IfName,
    pub role: Role,
}

/// One entry of the annotation: its network (`namespace/name`) and the interface it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub network: String,
    pub interface: Option<IfName>,
}

/// A new entry whose interface another attachment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its index in the annotation.
    pub wanted: usize,
    pub ifname: IfName,
    /// The network holding the interface.
    pub holder: String,
}

/// The change that brings the record to the annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Indexes (into the record's attachments) of the selected attachments no entry keeps.
    pub detach: Vec<usize>,
    /// New entries (index in the annotation) and their interfaces, in annotation order.
    pub attach: Vec<(usize, IfName)>,
    pub refused: Vec<Refused>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.detach.is_empty() && self.attach.is_empty() && self.refused.is_empty()
    }
}

/// Compares what the record holds with what the annotation wants.
pub fn plan(held: &[Held], wanted: &[Wanted]) -> Plan {
    let mut kept = vec![false; held.len()];
    let mut fresh: Vec<usize> = Vec::new();
    // Entries naming their interface first, so that an entry without one never takes the
    // attachment another entry names exactly.
    let (named, unnamed): (Vec<usize>, Vec<usize>) =
        (0..wanted.len()).partition(|&w| wanted[w].interface.is_some());
    for w in named.iter().chain(&unnamed).copied() {
        let entry = &wanted[w];
        let same = |h: &Held| {
            h.role == Role::Selected
                && h.network == entry.network
                && entry.interface.as_ref().is_none_or(|i| *i == h.ifname)
        };
        match (0..held.len()).find(|&h| !kept[h] && same(&held[h])) {
            Some(h) => kept[h] = true,
            None => fresh.push(w),
        }
    }
    let detach: Vec<usize> = (0..held.len())
        .filter(|&h| held[h].role == Role::Selected && !kept[h])
        .collect();
    // Interface names stay taken by everything that is not being detached now.
    let mut taken: BTreeMap<IfName, String> = held
        .iter()
        .enumerate()
        .filter(|(h, _)| !detach.contains(h))
        .map(|(_, h)| (h.ifname.clone(), h.network.clone()))
        .collect();
    let mut plan = Plan {
        detach,
        ..Plan::default()
    };
    fresh.sort_by_key(|&w| wanted[w].interface.is_none());
    for w in fresh {
        let entry = &wanted[w];
        let ifname = match &entry.interface {
            Some(ifname) => ifname.clone(),
            None => lowest_free(&taken),
        };
        if let Some(holder) = taken.get(&ifname) {
            plan.refused.push(Refused {
                wanted: w,
                ifname,
                holder: holder.clone(),
            });
            continue;
        }
        taken.insert(ifname.clone(), entry.network.clone());
        plan.attach.push((w, ifname));
    }
    plan.attach.sort_by_key(|(w, _)| *w);
    plan.refused.sort_by_key(|r| r.wanted);
    plan
}

fn lowest_free(taken: &BTreeMap<IfName, String>) -> IfName {
    (1..)
        .map(IfName::numbered)
        .find(|name| !taken.contains_key(name))
        .unwrap_or_else(|| IfName::numbered(taken.len() + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifname(name: &str) -> IfName {
        IfName::parse(name).unwrap()
    }

    /// `(network, ifname)` pairs the record holds for selections.
    type Selected<'a> = &'a [(&'a str, &'a str)];

    /// The cluster network on eth0, then the attachments made for selections.
    fn record(selected: Selected<'_>) -> Vec<Held> {
        let mut held = vec![Held {
            network: "cluster".into(),
            ifname: ifname("eth0"),
            role: Role::Fixed,
        }];
        held.extend(selected.iter().map(|(network, name)| Held {
            network: (*network).into(),
            ifname: ifname(name),
            role: Role::Selected,
        }));
        held
    }

    /// `ns/a` (positional) or `ns/a@foo` (named), as in the comma form.
    fn annotation(entries: &[&str]) -> Vec<Wanted> {
        entries
            .iter()
            .map(|e| match e.split_once('@') {
                Some((network, name)) => Wanted {
                    network: network.into(),
                    interface: Some(ifname(name)),
                },
                None => Wanted {
                    network: (*e).into(),
                    interface: None,
                },
            })
            .collect()
    }

    /// The plan as (detached "network@if", attached "network@if") for readable asserts.
    fn summary(held: &[Held], wanted: &[Wanted]) -> (Vec<String>, Vec<String>) {
        let plan = plan(held, wanted);
        assert!(plan.refused.is_empty(), "{:?}", plan.refused);
        let detached = plan
            .detach
            .iter()
            .map(|&h| format!("{}@{}", held[h].network, held[h].ifname))
            .collect();
        let attached = plan
            .attach
            .iter()
            .map(|(w, i)| format!("{}@{i}", wanted[*w].network))
            .collect();
        (detached, attached)
    }

    #[test]
    fn an_unchanged_annotation_changes_nothing() {
        let cases: [(Selected, &[&str]); 4] = [
            (&[], &[]),
            (&[("ns/a", "net1"), ("ns/b", "net2")], &["ns/a", "ns/b"]),
            (
                &[("ns/a", "net1"), ("ns/b", "data0")],
                &["ns/a", "ns/b@data0"],
            ),
            // The same network twice is two attachments.
            (&[("ns/a", "net1"), ("ns/a", "net2")], &["ns/a", "ns/a"]),
        ];
        for (held, wanted) in cases {
            let plan = plan(&record(held), &annotation(wanted));
            assert!(plan.is_empty(), "{wanted:?}: {plan:?}");
        }
    }

    #[test]
    fn a_new_entry_takes_the_lowest_free_net_n() {
        let cases: [(Selected, &[&str], &[&str]); 4] = [
            (&[], &["ns/a"], &["ns/a@net1"]),
            (&[("ns/a", "net1")], &["ns/a", "ns/b"], &["ns/b@net2"]),
            // net1 went away earlier: its name is free again.
            (&[("ns/b", "net2")], &["ns/b", "ns/c"], &["ns/c@net1"]),
            // Named interfaces that look like net<N> count as taken.
            (
                &[("ns/a", "net1"), ("ns/b", "net2")],
                &["ns/a", "ns/b", "ns/c@net3", "ns/d"],
                &["ns/c@net3", "ns/d@net4"],
            ),
        ];
        for (held, wanted, attached) in cases {
            let (detached, got) = summary(&record(held), &annotation(wanted));
            assert!(detached.is_empty(), "{wanted:?}: {detached:?}");
            assert_eq!(got, attached, "{wanted:?}");
        }
    }

    #[test]
    fn removing_an_entry_from_the_middle_keeps_the_others_as_they_are() {
        let held = record(&[("ns/a", "net1"), ("ns/b", "net2"), ("ns/c", "net3")]);
        let (detached, attached) = summary(&held, &annotation(&["ns/a", "ns/c"]));
        assert_eq!(detached, ["ns/b@net2"]);
        assert!(attached.is_empty(), "{attached:?}");
    }

    #[test]
    fn a_swap_detaches_the_old_network_and_reuses_its_name() {
        let held = record(&[("ns/a", "net1"), ("ns/b", "net2")]);
        let (detached, attached) = summary(&held, &annotation(&["ns/a", "ns/c"]));
        assert_eq!(detached, ["ns/b@net2"]);
        assert_eq!(attached, ["ns/c@net2"]);
        // A named interface moves from one network to another the same way.
        let held = record(&[("ns/a", "data0")]);
        let (detached, attached) = summary(&held, &annotation(&["ns/b@data0"]));
        assert_eq!(
            (detached, attached),
            (vec!["ns/a@data0".into()], vec!["ns/b@data0".into()])
        );
    }

    #[test]
    fn identity_is_the_network_and_the_interface_name() {
        // Naming the interface an entry already has keeps it.
        let held = record(&[("ns/a", "net1")]);
        assert!(plan(&held, &annotation(&["ns/a@net1"])).is_empty());
        // Another name for the same network is another attachment.
        let (detached, attached) = summary(&held, &annotation(&["ns/a@data0"]));
        assert_eq!(
            (detached, attached),
            (vec!["ns/a@net1".into()], vec!["ns/a@data0".into()])
        );
        // An entry without a name keeps any attachment of its network, named or not.
        let held = record(&[("ns/a", "data0")]);
        assert!(plan(&held, &annotation(&["ns/a"])).is_empty());
        // Of two attachments of one network, the one in the record first stays.
        let held = record(&[("ns/a", "net1"), ("ns/a", "net2")]);
        let (detached, _) = summary(&held, &annotation(&["ns/a"]));
        assert_eq!(detached, ["ns/a@net2"]);
        // A named entry is matched before an unnamed one could take its attachment.
        let held = record(&[("ns/a", "net1"), ("ns/a", "net2")]);
        assert!(plan(&held, &annotation(&["ns/a", "ns/a@net1"])).is_empty());
    }

    #[test]
    fn a_named_interface_that_is_taken_is_refused_naming_the_holder() {
        let cases: [(Selected, &[&str], &str, &str); 3] = [
            (&[("ns/a", "net1")], &["ns/a", "ns/b@net1"], "net1", "ns/a"),
            (&[], &["ns/b@eth0"], "eth0", "cluster"),
            // Two new entries naming one interface: the first gets it.
            (&[], &["ns/a@data0", "ns/b@data0"], "data0", "ns/a"),
        ];
        for (held, wanted, name, holder) in cases {
            let wanted = annotation(wanted);
            let plan = plan(&record(held), &wanted);
            assert_eq!(plan.refused.len(), 1, "{wanted:?}: {plan:?}");
            let refused = &plan.refused[0];
            assert_eq!(
                (
                    wanted[refused.wanted].network.as_str(),
                    refused.ifname.as_str(),
                    refused.holder.as_str()
                ),
                ("ns/b", name, holder),
                "{wanted:?}"
            );
            assert!(plan.detach.is_empty(), "{plan:?}");
        }
    }

    #[test]
    fn fixed_attachments_are_never_detached_nor_matched() {
        // plexusd's default network ns/d on net1; the pod's own selection of ns/d is another.
        let mut held = record(&[]);
        held.push(Held {
            network: "ns/d".into(),
            ifname: ifname("net1"),
            role: Role::Fixed,
        });
        let (detached, attached) = summary(&held, &annotation(&["ns/d"]));
        assert!(detached.is_empty());
        assert_eq!(attached, ["ns/d@net2"]);
        assert!(plan(&held, &annotation(&[])).is_empty());
    }

    #[test]
    fn a_leaving_attachment_keeps_its_name_until_it_is_gone() {
        let mut held = record(&[("ns/a", "net1")]);
        held.push(Held {
            network: "ns/b".into(),
            ifname: ifname("net2"),
            role: Role::Leaving,
        });
        // Asked for again while its removal failed: a new attachment, on another name.
        let (detached, attached) = summary(&held, &annotation(&["ns/a", "ns/b"]));
        assert!(detached.is_empty(), "{detached:?}");
        assert_eq!(attached, ["ns/b@net3"]);
        let plan = plan(&held, &annotation(&["ns/a", "ns/c@net2"]));
        assert_eq!(plan.refused[0].holder, "ns/b");
    }

    #[test]
    fn an_empty_annotation_detaches_every_selection_in_record_order() {
        let held = record(&[("ns/a", "net1"), ("ns/b", "data0")]);
        let (detached, attached) = summary(&held, &annotation(&[]));
        assert_eq!(detached, ["ns/a@net1", "ns/b@data0"]);
        assert!(attached.is_empty());
    }
}
