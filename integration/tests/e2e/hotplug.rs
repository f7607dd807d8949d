//! Networks that follow a running pod (`dynamicNetworks`): the pod's annotation is edited,
//! through the manifest directory (`files` source) or the API server (`kube` source), and
//! the interfaces inside the pod's namespace and the host-local allocations follow.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use plexus_integration::{Node, NodeBuilder, Pod, binaries};
use serde_json::{Value, json};

use crate::fixtures::{bare, bridge, events_for, macvlan, metric, nad};

/// Where the test edits pods and NADs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Files,
    Kube,
}

/// One test per source for a scenario: through the manifest directory and through the API
/// server.
macro_rules! both_sources {
    ($scenario:ident: $files:ident, $kube:ident) => {
        #[test]
        fn $files() {
            $scenario(Via::Files);
        }

        #[test]
        fn $kube() {
            $scenario(Via::Kube);
        }
    };
}

/// How long a change may take to show: generous, for a loaded machine; the bench times it.
const FOLLOW: Duration = Duration::from_secs(60);

/// A node with hot-plug on (unless a test turns it off), NADs `tenant/a`, `b` and `c` (bridges
/// on 198.18.5x.0/24), and the means to edit pods and NADs the way `via` says.
struct World {
    node: Node,
    via: Via,
    nads: BTreeSet<String>,
    pods: BTreeSet<String>,
}

fn subnet(name: &str) -> String {
    let third = 50 + name.bytes().map(u32::from).sum::<u32>() % 40;
    format!("198.18.{third}.0/24")
}

/// A bridge NAD named `name`, on `br-<name>`, with a subnet of its own.
fn bridge_nad(name: &str) -> Value {
    bridge(name, &format!("br-{name}"), &subnet(name))
}

fn world(via: Via) -> World {
    world_with(via, |builder| builder.config_line("dynamicNetworks: true"))
}

fn world_with(via: Via, setup: impl FnOnce(NodeBuilder) -> NodeBuilder) -> World {
    let mut builder = setup(
        Node::builder()
            .uplink()
            .plugin("hold-bridge", &hold_bridge()),
    );
    if via == Via::Kube {
        builder = builder.kube();
    }
    let mut world = World {
        node: builder.start(),
        via,
        nads: BTreeSet::new(),
        pods: BTreeSet::new(),
    };
    for name in ["a", "b", "c"] {
        world.nad(name, &bridge_nad(name));
    }
    world
}

/// The bridge plugin, except that when @DIR@/hold names the command, it stays in the call
/// after doing its work (writing its PID to @DIR@/held) until the file is removed: a plugin
/// caught in the middle of a hot-plug change.
fn hold_bridge() -> String {
    format!(
        r#"out=$({bin}/bridge); code=$?
if [ -e @DIR@/hold ] && [ "$CNI_COMMAND" = "$(cat @DIR@/hold)" ]; then
  echo $$ > @DIR@/held.tmp && mv @DIR@/held.tmp @DIR@/held
  while [ -e @DIR@/hold ]; do sleep 0.02; done
fi
printf '%s' "$out"
exit $code"#,
        bin = binaries::CNI_BIN_DIR
    )
}

impl World {
    /// Creates or replaces NAD `tenant/<name>`, and waits until plexusd holds it.
    fn nad(&mut self, name: &str, config: &Value) {
        match self.via {
            Via::Files => self
                .node
                .write_manifest(&format!("nad-{name}.yaml"), &nad("tenant", name, config)),
            Via::Kube => self.node.apply_nad("tenant", name, config),
        }
        self.nads.insert(name.to_owned());
        self.wait_for_source();
    }

    /// Creates the pod, or sets its annotation, and waits until plexusd holds it.
    fn annotate(&mut self, pod: &Pod, networks: &str) {
        self.annotate_later(pod, networks);
        self.wait_for_source();
    }

    /// Sets the pod's annotation without waiting for plexusd to see it.
    fn annotate_later(&mut self, pod: &Pod, networks: &str) {
        match self.via {
            Via::Files => self
                .node
                .write_manifest(&format!("pod-{}.yaml", pod.name), &pod.manifest(networks)),
            Via::Kube => self
                .node
                .apply_pod(pod, json!({"k8s.v1.cni.cncf.io/networks": networks})),
        }
        self.pods.insert(pod.name.clone());
    }

    fn delete_pod(&mut self, pod: &Pod) {
        match self.via {
            Via::Files => self.node.remove_manifest(&format!("pod-{}.yaml", pod.name)),
            Via::Kube => {
                self.node.cluster().delete("Pod", &pod.namespace, &pod.name);
            }
        }
        self.pods.remove(&pod.name);
        self.wait_for_source();
    }

    fn wait_for_source(&self) {
        let counts = format!("nads={} pods={}", self.nads.len(), self.pods.len());
        self.node.wait_for_readyz(&counts, FOLLOW);
    }

    /// The pod selecting `networks`, ADDed as the runtime would.
    fn start_pod(&mut self, pod: &Pod, networks: &str) {
        self.annotate(pod, networks);
        self.node.add(pod).result();
    }

    /// Waits until the pod's interfaces (besides lo) are exactly `names` and plexusd has
    /// finished the change that made them so (its network-status, read under the pod's lock,
    /// lists the same ones): from then on addresses and host-local's allocations are final.
    fn wait_for_links(&self, pod: &Pod, names: &[&str]) {
        let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        want.sort();
        wait_for(&format!("interfaces {want:?} in {}", pod.name), || {
            let mut recorded: Vec<String> = status_pairs(&self.node.network_status(pod))
                .into_iter()
                .map(|(_, interface)| interface)
                .collect();
            recorded.sort();
            (pod.link_names() == want && recorded == want).then_some(())
        });
    }

    /// The `plexus_hotplug_failures_total` sample for `network` and `operation`.
    fn failures(&self, network: &str, operation: &str) -> f64 {
        let (_, metrics) = self.node.get("/metrics").expect("GET /metrics");
        let prefix = format!(
            r#"plexus_hotplug_failures_total{{network="{network}",operation="{operation}"}}"#
        );
        metric(&metrics, &prefix).unwrap_or(0.0)
    }

    /// Waits until hot-plug has failed on `network` at least `times` times, and, with the API
    /// server, until a Warning event on the pod names it and `cause`.
    fn wait_for_warning(&self, pod: &Pod, network: &str, cause: &str, times: f64) {
        wait_for(&format!("{times} hot-plug failures of {network}"), || {
            (self.failures(network, "attach") >= times).then_some(())
        });
        if self.via == Via::Kube {
            let warning = wait_for(&format!("a Warning event naming {network}"), || {
                events_for(&self.node, pod).into_iter().find(|e| {
                    e["type"] == "Warning"
                        && e["reason"] == "NetworkAttachFailed"
                        && e["note"]
                            .as_str()
                            .is_some_and(|n| n.contains(network) && n.contains(cause))
                })
            });
            assert_eq!(warning["action"], "Attach", "{warning}");
        }
    }

    /// network-status as plexusd serves it, and with the API server as written on the pod:
    /// `(network, interface)` per entry, once both agree with the pod's interfaces.
    fn wait_for_status(&self, pod: &Pod, expected: &[(&str, &str)]) {
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(n, i)| ((*n).to_owned(), (*i).to_owned()))
            .collect();
        wait_for("network-status to follow", || {
            (status_pairs(&self.node.network_status(pod)) == want).then_some(())
        });
        if self.via == Via::Kube {
            wait_for("the network-status annotation to follow", || {
                let object = self
                    .node
                    .cluster()
                    .object("Pod", &pod.namespace, &pod.name)?;
                let text = object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
                    .as_str()?
                    .to_owned();
                let status: Value = serde_json::from_str(&text).ok()?;
                (status_pairs(&status) == want).then_some(())
            });
        }
    }

    /// Asserts that the event `reason` names `interface` and `network`, with the API server.
    fn assert_event(&self, pod: &Pod, reason: &str, interface: &str, network: &str) {
        if self.via != Via::Kube {
            return;
        }
        wait_for(&format!("{reason} for {interface}"), || {
            events_for(&self.node, pod).into_iter().find(|e| {
                e["reason"] == reason
                    && e["type"] == "Normal"
                    && e["note"].as_str().is_some_and(|n| {
                        n.contains(&format!(" {interface} ")) && n.ends_with(network)
                    })
            })
        });
    }

    /// DEL of the pod, and nothing of it is left: no interface inside it, no allocation, no
    /// record, no veth.
    fn del_and_assert_clean(&self, pod: &Pod) {
        assert!(self.node.del(pod).success());
        assert!(pod.link_names().is_empty(), "{:?}", pod.link_names());
        self.node.assert_clean();
    }
}

fn status_pairs(status: &Value) -> Vec<(String, String)> {
    status
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["interface"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + FOLLOW;
    while Instant::now() < deadline {
        if let Some(found) = check() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("never happened: {what}");
}

/// The pod's interfaces and their addresses, to compare before and after.
fn interfaces(pod: &Pod) -> Vec<(String, Vec<String>)> {
    pod.links()
        .into_iter()
        .map(|l| (l.name, l.addresses))
        .collect()
}

/// The address (CIDR) of `ifname` in the pod, and its MAC.
fn addressed(pod: &Pod, ifname: &str) -> (String, String) {
    let link = pod
        .link(ifname)
        .unwrap_or_else(|| panic!("no {ifname} in {}: {:?}", pod.name, pod.link_names()));
    let address = link.addresses.first().cloned().unwrap_or_default();
    (address, link.mac)
}

/// The host-local allocations are exactly the addresses inside these pods: nothing leaked,
/// nothing released that is still in use.
fn assert_allocations_match(node: &Node, pods: &[&Pod]) {
    let mut in_pods: Vec<String> = pods
        .iter()
        .flat_map(|p| p.links())
        .flat_map(|l| l.addresses)
        .map(|a| bare(&a).to_owned())
        .collect();
    in_pods.sort();
    assert_eq!(
        node.allocated_addresses(),
        in_pods,
        "host-local allocations against the pods' addresses"
    );
}

/// The record of the pod's container, as JSON.
fn record_of(node: &Node, pod: &Pod) -> Value {
    let path = node
        .records_dir()
        .join(format!("{}.json", pod.container_id));
    serde_json::from_slice(&std::fs::read(&path).expect("the record")).expect("record JSON")
}

fn adds_a_secondary_to_a_running_pod(via: Via) {
    let web = Pod::new("tenant", "web");
    let mut w = world(via);
    w.start_pod(&web, "a");
    let eth0 = addressed(&web, "eth0");
    let net1 = addressed(&web, "net1");

    w.annotate(&web, "a,b");
    w.wait_for_links(&web, &["eth0", "net1", "net2"]);
    let (net2, _) = addressed(&web, "net2");
    assert!(net2.starts_with(&subnet("b")[..10]), "{net2}");
    assert_eq!(
        (addressed(&web, "eth0"), addressed(&web, "net1")),
        (eth0, net1)
    );
    assert_allocations_match(&w.node, &[&web]);
    w.wait_for_status(
        &web,
        &[
            ("cluster", "eth0"),
            ("tenant/a", "net1"),
            ("tenant/b", "net2"),
        ],
    );
    w.assert_event(&web, "AddedInterface", "net2", "tenant/b");

    // CHECK covers the hot-plugged attachment: it fails, naming it, once net2 is gone.
    assert!(w.node.check(&web).success());
    web.netns.ip(&["link", "del", "net2"]);
    let error = w.node.check(&web).error();
    assert!(
        error["msg"].as_str().unwrap().contains("tenant/b"),
        "{error}"
    );
    w.del_and_assert_clean(&web);
}

both_sources!(adds_a_secondary_to_a_running_pod: files_a_secondary_added_to_the_annotation_appears_in_the_running_pod, kube_a_secondary_added_to_the_annotation_appears_in_the_running_pod);

fn removes_one_from_the_middle(via: Via) {
    let web = Pod::new("tenant", "web");
    let mut w = world(via);
    w.start_pod(&web, "a,b,c");
    let net1 = addressed(&web, "net1");
    let net3 = addressed(&web, "net3");
    let (net2, _) = addressed(&web, "net2");

    w.annotate(&web, "a,c");
    w.wait_for_links(&web, &["eth0", "net1", "net3"]);
    // The others keep their names and addresses; b's address is released.
    assert_eq!(
        (addressed(&web, "net1"), addressed(&web, "net3")),
        (net1, net3)
    );
    assert!(
        !w.node
            .ipam_allocations()
            .iter()
            .any(|a| a.ends_with(bare(&net2)))
    );
    assert_allocations_match(&w.node, &[&web]);
    w.wait_for_status(
        &web,
        &[
            ("cluster", "eth0"),
            ("tenant/a", "net1"),
            ("tenant/c", "net3"),
        ],
    );
    w.assert_event(&web, "RemovedInterface", "net2", "tenant/b");
    assert!(w.node.check(&web).success());
    w.del_and_assert_clean(&web);
}

both_sources!(removes_one_from_the_middle: files_removing_a_selection_from_the_middle_leaves_the_others_as_they_were, kube_removing_a_selection_from_the_middle_leaves_the_others_as_they_were);

fn swaps_one_for_another(via: Via) {
    let web = Pod::new("tenant", "web");
    let mut w = world(via);
    w.start_pod(&web, "a,b");
    let net1 = addressed(&web, "net1");

    w.annotate(&web, "a,c");
    let prefix = subnet("c");
    wait_for("net2 on network c", || {
        addressed_if(&web, "net2").filter(|a| a.starts_with(&prefix[..10]))
    });
    w.wait_for_links(&web, &["eth0", "net1", "net2"]);
    assert_eq!(addressed(&web, "net1"), net1);
    assert_allocations_match(&w.node, &[&web]);
    w.wait_for_status(
        &web,
        &[
            ("cluster", "eth0"),
            ("tenant/a", "net1"),
            ("tenant/c", "net2"),
        ],
    );
    w.del_and_assert_clean(&web);
}

fn addressed_if(pod: &Pod, ifname: &str) -> Option<String> {
    pod.link(ifname).and_then(|l| l.addresses.first().cloned())
}

both_sources!(swaps_one_for_another: files_swapping_one_network_for_another_reuses_its_interface_name, kube_swapping_one_network_for_another_reuses_its_interface_name);

fn an_unknown_nad_waits_until_it_exists(via: Via) {
    let web = Pod::new("tenant", "web");
    let mut w = world(via);
    w.start_pod(&web, "a");
    let before = interfaces(&web);

    w.annotate(&web, "a,ghost");
    w.wait_for_warning(&web, "tenant/ghost", "not found", 1.0);
    // Nothing changed.
    assert_eq!(interfaces(&web), before);
    assert_allocations_match(&w.node, &[&web]);

    // The NAD is created: a retry attaches it, without the pod changing again.
    w.nad("ghost", &bridge_nad("ghost"));
    w.wait_for_links(&web, &["eth0", "net1", "net2"]);
    assert_allocations_match(&w.node, &[&web]);
    w.wait_for_status(
        &web,
        &[
            ("cluster", "eth0"),
            ("tenant/a", "net1"),
            ("tenant/ghost", "net2"),
        ],
    );
    w.del_and_assert_clean(&web);
}

both_sources!(an_unknown_nad_waits_until_it_exists: files_an_unknown_nad_is_warned_about_and_attached_once_it_exists, kube_an_unknown_nad_is_warned_about_and_attached_once_it_exists);

fn a_failing_delegate_is_rolled_back_and_retried(via: Via) {
    let web = Pod::new("tenant", "web");
    let mut w = world(via);
    let mut broken = macvlan("broken", "198.18.49.0/24");
    broken["master"] = json!("no-such-if");
    w.nad("broken", &broken);
    w.start_pod(&web, "a,b");
    let before = interfaces(&web);

    w.annotate(&web, "a,b,broken");
    w.wait_for_warning(&web, "tenant/broken", "macvlan", 1.0);
    // Rolled back: the other interfaces are as they were and no address was kept for it.
    assert_eq!(interfaces(&web), before);
    assert_allocations_match(&w.node, &[&web]);
    // Retried with backoff while the annotation asks for it.
    w.wait_for_warning(&web, "tenant/broken", "macvlan", 2.0);
    assert_eq!(interfaces(&web), before);
    if via == Via::Kube {
        // The same failure again is one event with a count, not one event per retry.
        let series = wait_for("the Warning's series to count the retry", || {
            let warnings: Vec<Value> = events_for(&w.node, &web)
                .into_iter()
                .filter(|e| e["type"] == "Warning")
                .collect();
            let count = warnings.first()?["series"]["count"].as_i64()?;
            (warnings.len() == 1 && count >= 2).then_some(count)
        });
        assert!(series >= 2);
    }

    // The NAD is fixed: the next retry attaches it.
    w.nad("broken", &macvlan("broken", "198.18.49.0/24"));
    w.wait_for_links(&web, &["eth0", "net1", "net2", "net3"]);
    assert!(addressed(&web, "net3").0.starts_with("198.18.49."));
    assert_allocations_match(&w.node, &[&web]);
    w.del_and_assert_clean(&web);
}

both_sources!(a_failing_delegate_is_rolled_back_and_retried: files_a_nad_whose_delegate_fails_is_rolled_back_and_retried, kube_a_nad_whose_delegate_fails_is_rolled_back_and_retried);

/// From now on the `hold-bridge` plugin stays in every `command` call until [`release`].
fn hold(w: &World, command: &str) {
    std::fs::write(w.node.dir().join("hold"), command).expect("write hold");
}

/// Waits until a held plugin has done its work and sits in the call; returns its PID.
fn wait_until_held(w: &World) -> u32 {
    let held = w.node.dir().join("held");
    let pid = wait_for("the plugin to be held", || {
        std::fs::read_to_string(&held)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    });
    std::fs::remove_file(&held).expect("remove held");
    pid
}

/// Lets a held plugin go, and waits until its process has exited.
fn release(w: &World, pid: u32) {
    let _ = std::fs::remove_file(w.node.dir().join("hold"));
    wait_for("the held plugin to exit", || {
        // Gone, or a zombie whose parent (a killed plexusd) is no longer there to reap it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        matches!(state, None | Some("Z" | "X")).then_some(())
    });
}

fn pending_marks(record: &Value) -> Vec<String> {
    record["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let pending = a["pending"].as_str()?;
            Some(format!("{} {pending}", a["delegate"]["network"].as_str()?))
        })
        .collect()
}

fn a_crash_in_the_middle_of_a_change_is_finished_after_restart(via: Via) {
    let web = Pod::new("tenant", "web");
    let mut w = world(via);
    w.nad("slow", &slow_nad());
    w.start_pod(&web, "a");
    let net1 = addressed(&web, "net1");

    // Attaching: killed after the plugin made net2, before plexusd recorded its result.
    hold(&w, "ADD");
    w.annotate(&web, "a,slow");
    let pid = wait_until_held(&w);
    assert!(web.link("net2").is_some());
    assert_eq!(
        pending_marks(&record_of(&w.node, &web)),
        ["tenant/slow attach"]
    );
    w.node.kill_plexusd();
    release(&w, pid);
    w.node.restart_plexusd();
    wait_for("plexusd to undo the interrupted ADD", || {
        w.node
            .log()
            .contains("undoing a hot-plug ADD that was interrupted")
            .then_some(())
    });
    // Undone and made again: the pod matches its annotation, and the first attempt's
    // address is not left allocated.
    wait_for("the change to be finished", || {
        let record = record_of(&w.node, &web);
        (pending_marks(&record).is_empty() && record["attachments"].as_array()?.len() == 3)
            .then_some(())
    });
    w.wait_for_links(&web, &["eth0", "net1", "net2"]);
    assert_eq!(addressed(&web, "net1"), net1);
    assert_allocations_match(&w.node, &[&web]);

    // Detaching: killed after the plugin removed net2, before plexusd recorded it gone.
    hold(&w, "DEL");
    w.annotate(&web, "a");
    let pid = wait_until_held(&w);
    assert_eq!(
        pending_marks(&record_of(&w.node, &web)),
        ["tenant/slow detach"]
    );
    w.node.kill_plexusd();
    release(&w, pid);
    w.node.restart_plexusd();
    wait_for("the removal to be finished", || {
        let record = record_of(&w.node, &web);
        (record["attachments"].as_array()?.len() == 2).then_some(())
    });
    w.wait_for_links(&web, &["eth0", "net1"]);
    assert_eq!(addressed(&web, "net1"), net1);
    assert_allocations_match(&w.node, &[&web]);
    w.wait_for_status(&web, &[("cluster", "eth0"), ("tenant/a", "net1")]);
    w.del_and_assert_clean(&web);
}

/// NAD `slow`: a bridge through the `hold-bridge` plugin.
fn slow_nad() -> Value {
    let mut slow = bridge_nad("slow");
    slow["type"] = json!("hold-bridge");
    slow
}

both_sources!(a_crash_in_the_middle_of_a_change_is_finished_after_restart: files_plexusd_killed_in_the_middle_of_a_change_finishes_it_after_restart, kube_plexusd_killed_in_the_middle_of_a_change_finishes_it_after_restart);

fn a_del_racing_a_change_removes_everything(via: Via) {
    let web = Pod::new("tenant", "web");
    let mut w = world(via);
    w.nad("slow", &slow_nad());
    w.start_pod(&web, "a");

    hold(&w, "ADD");
    w.annotate(&web, "a,slow");
    let pid = wait_until_held(&w);
    // The runtime's DEL arrives while the change holds the pod: it waits for the change,
    // then deletes everything, the hot-plugged attachment included.
    let deleted = std::thread::scope(|scope| {
        let del = scope.spawn(|| w.node.del(&web));
        release(&w, pid);
        del.join().expect("DEL thread")
    });
    assert!(deleted.success(), "{deleted:?}");
    assert!(web.link_names().is_empty(), "{:?}", web.link_names());
    w.node.assert_clean();
    // Another edit finds no record: the pod's networks are the runtime's to set up again.
    w.annotate(&web, "a,slow,b");
    assert!(web.link_names().is_empty());
    w.node.assert_clean();
}

both_sources!(a_del_racing_a_change_removes_everything: files_a_del_racing_a_change_removes_everything, kube_a_del_racing_a_change_removes_everything);

fn a_recreated_pod_never_reaches_the_old_sandbox(via: Via) {
    let old = Pod::new("tenant", "web");
    let mut w = world(via);
    w.start_pod(&old, "a");
    let before = interfaces(&old);

    // The pod is deleted and created again under its name (another uid), while the old
    // sandbox still runs, as when kubelet has not torn it down yet.
    w.delete_pod(&old);
    let new = Pod::new("tenant", "web");
    assert_ne!(new.uid(), old.uid());
    w.start_pod(&new, "a,b");
    w.annotate(&new, "a,b,c");
    w.wait_for_links(&new, &["eth0", "net1", "net2", "net3"]);
    // One more change, so that the run that handled the previous one (both containers of
    // tenant/web) has surely finished.
    w.annotate(&new, "a");
    w.wait_for_links(&new, &["eth0", "net1"]);

    let after = interfaces(&old);
    assert_eq!(after, before, "the old sandbox was touched");
    assert_allocations_match(&w.node, &[&old, &new]);
    assert!(w.node.del(&old).success());
    w.del_and_assert_clean(&new);
}

both_sources!(a_recreated_pod_never_reaches_the_old_sandbox: files_a_pod_recreated_under_the_same_name_never_reaches_the_old_sandbox, kube_a_pod_recreated_under_the_same_name_never_reaches_the_old_sandbox);

fn nothing_happens_with_the_setting_off(via: Via) {
    let web = Pod::new("tenant", "web");
    let mut w = world_with(via, |builder| builder);
    w.start_pod(&web, "a,b");
    let before = interfaces(&web);
    wait_for("plexusd to say hot-plug is off", || {
        w.node.log().contains("dynamic networks off").then_some(())
    });

    w.annotate(&web, "a,c");
    // A second pod after the change: once plexusd holds it, it has seen the change too
    // (one manifest directory, one watch).
    let other = Pod::new("tenant", "other");
    w.annotate(&other, "a");
    assert_eq!(interfaces(&web), before);
    // Nor after a restart, when plexusd would look at every recorded pod.
    w.node.restart_plexusd();
    w.wait_for_source();
    assert_eq!(interfaces(&web), before);
    assert_allocations_match(&w.node, &[&web]);
    let (_, metrics) = w.node.get("/metrics").expect("GET /metrics");
    assert!(
        !metrics.contains("plexus_hotplug_operations_total{"),
        "{metrics}"
    );
    w.del_and_assert_clean(&web);
}

both_sources!(nothing_happens_with_the_setting_off: files_with_dynamic_networks_off_a_running_pod_keeps_its_networks, kube_with_dynamic_networks_off_a_running_pod_keeps_its_networks);

#[test]
fn a_removed_default_route_carrier_gives_the_route_back_to_the_cluster_network() {
    let web = Pod::new("tenant", "web");
    let mut w = world_with(Via::Files, |builder| {
        builder
            .config_line("dynamicNetworks: true")
            .cluster(json!({
                "cniVersion": "1.0.0", "name": "cluster",
                "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.0.0/24", "gateway": "198.18.0.1"}]], "dataDir": "@IPAM@"}}]
            }))
    });
    let mut routed = bridge_nad("b");
    routed["isGateway"] = json!(true);
    w.nad("b", &routed);
    w.start_pod(&web, "a");
    let default_via = || {
        web.routes()
            .into_iter()
            .find(|r| r["dst"] == "default")
            .map(|r| {
                (
                    r["gateway"].as_str().unwrap_or_default().to_owned(),
                    r["dev"].as_str().unwrap_or_default().to_owned(),
                )
            })
    };
    assert_eq!(
        default_via(),
        Some(("198.18.0.1".to_owned(), "eth0".to_owned()))
    );

    let gateway = subnet("b").replace(".0/24", ".1");
    w.annotate(
        &web,
        &json!([{"name": "a"}, {"name": "b", "default-route": [gateway]}]).to_string(),
    );
    wait_for("the default route via net2", || {
        (default_via()? == (gateway.clone(), "net2".to_owned())).then_some(())
    });
    w.annotate(&web, "a");
    w.wait_for_links(&web, &["eth0", "net1"]);
    wait_for("the default route back via eth0", || {
        (default_via()? == ("198.18.0.1".to_owned(), "eth0".to_owned())).then_some(())
    });
    w.del_and_assert_clean(&web);
}
