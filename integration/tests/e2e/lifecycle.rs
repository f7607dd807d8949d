//! DEL, CHECK and GC from the records alone.

use plexus_integration::{Node, Pod};
use serde_json::json;

use crate::fixtures::{bridge, macvlan, nad, pod};

fn node_with_data_network(pods: &[&Pod]) -> Node {
    let mut builder = Node::builder().uplink().manifest(
        "nad.yaml",
        &nad("tenant", "data", &macvlan("data", "198.18.16.0/24")),
    );
    for (i, p) in pods.iter().enumerate() {
        builder = builder.manifest(&format!("pod{i}.yaml"), &pod(p, "data"));
    }
    builder.start()
}

#[test]
fn del_works_after_the_nad_was_deleted() {
    let web = Pod::new("tenant", "web");
    let node = node_with_data_network(&[&web]);
    node.add(&web).result();
    node.remove_manifest("nad.yaml");
    node.wait_for_nads(0);
    assert!(node.del(&web).success());
    assert!(web.link_names().is_empty());
    assert!(node.ipam_allocations().is_empty());
    assert!(node.records().is_empty());
}

#[test]
fn del_twice_and_del_of_an_unknown_container_succeed() {
    let web = Pod::new("tenant", "web");
    let stranger = Pod::new("tenant", "stranger");
    let node = node_with_data_network(&[&web]);
    node.add(&web).result();
    let first = node.del(&web);
    assert!(first.success() && first.stdout.is_empty(), "{first:?}");
    assert!(node.del(&web).success());
    assert!(node.del(&stranger).success());
}

#[test]
fn del_without_a_netns_still_releases_the_addresses() {
    let web = Pod::new("tenant", "web");
    let node = node_with_data_network(&[&web]);
    node.add(&web).result();
    let mut conf = node.plexus_conf("1.1.0");
    conf["prevResult"] = serde_json::Value::Null;
    let env = plexus_integration::shim::CniEnv {
        command: "DEL".into(),
        container_id: web.container_id.clone(),
        netns: String::new(),
        ifname: "eth0".into(),
        args: web.cni_args(),
        path: "/usr/lib/cni".into(),
    };
    assert!(plexus_integration::shim::exec(&env, &conf.to_string()).success());
    assert!(node.ipam_allocations().is_empty());
    assert!(node.records().is_empty());
}

#[test]
fn del_after_a_plexusd_restart_cleans_everything() {
    let web = Pod::new("tenant", "web");
    let node = node_with_data_network(&[&web]);
    node.add(&web).result();
    node.kill_plexusd();
    node.restart_plexusd();
    assert!(node.del(&web).success());
    assert!(web.link_names().is_empty());
    assert!(node.ipam_allocations().is_empty());
    assert!(node.veths().is_empty());
}

#[test]
fn check_passes_after_add_and_names_the_network_whose_interface_vanished() {
    let web = Pod::new("tenant", "web");
    let node = node_with_data_network(&[&web]);
    node.add(&web).result();
    let ok = node.check(&web);
    assert!(ok.success() && ok.stdout.is_empty(), "{ok:?}");
    web.netns.ip(&["link", "del", "net1"]);
    let error = node.check(&web).error();
    assert!(
        error["msg"].as_str().unwrap().contains("tenant/data"),
        "{error}"
    );
    assert!(node.del(&web).success());
}

#[test]
fn check_of_an_unknown_container_is_an_error() {
    let stranger = Pod::new("tenant", "stranger");
    let node = Node::builder().start();
    assert_eq!(node.check(&stranger).error()["code"], 3);
}

#[test]
fn gc_deletes_the_attachments_missing_from_the_valid_list() {
    let keep = Pod::new("tenant", "keep");
    let stale = Pod::new("tenant", "stale");
    let node = Node::builder()
        .manifest(
            "nad.yaml",
            &nad(
                "tenant",
                "east",
                &bridge("east", "br-east", "198.18.17.0/24"),
            ),
        )
        .manifest("k.yaml", &pod(&keep, "east"))
        .manifest("s.yaml", &pod(&stale, "east"))
        .start();
    node.add(&keep).result();
    node.add(&stale).result();
    assert_eq!(node.ipam_allocations().len(), 4);

    assert!(node.gc(&[&keep]).success());

    assert_eq!(node.records(), [format!("{}.json", keep.container_id)]);
    assert_eq!(node.ipam_allocations().len(), 2);
    assert!(stale.link_names().is_empty());
    assert_eq!(keep.link_names(), ["eth0", "net1"]);
    assert!(node.del(&keep).success());
}

#[test]
fn a_crash_after_the_intent_was_written_is_cleaned_by_del() {
    let web = Pod::new("tenant", "web");
    let node = node_with_data_network(&[&web]);
    node.add(&web).result();
    // The results are recorded just after the reply; the read-back waits for that.
    node.network_status(&web);
    // Simulate a crash between the intent and the result: results gone from the record.
    let path = node
        .records_dir()
        .join(format!("{}.json", web.container_id));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for attachment in record["attachments"].as_array_mut().unwrap() {
        attachment.as_object_mut().unwrap().remove("result");
    }
    std::fs::write(&path, record.to_string()).unwrap();
    node.kill_plexusd();
    node.restart_plexusd();
    assert!(node.del(&web).success());
    assert!(web.link_names().is_empty());
    assert!(node.ipam_allocations().is_empty());
    assert!(node.records().is_empty());
}

#[test]
fn the_first_plugin_is_fed_once_the_intent_is_on_disk_and_a_crash_then_is_cleaned_by_del() {
    let web = Pod::new("tenant", "web");
    let seen = tempfile::tempdir().unwrap();
    let copy = seen.path().join("record-when-fed.json");
    // The cluster network's plugin: once it has its config, it keeps the record as it finds
    // it and kills plexusd (its parent), as a crash right after the first delegate started.
    let spy = format!(
        r#"cat >/dev/null
[ "$CNI_COMMAND" = ADD ] || exit 0
cp "$PLEXUS_DELEGATE_OF/$CNI_CONTAINERID.json" {copy}
kill -9 $PPID"#,
        copy = copy.display()
    );
    let node = Node::builder()
        .uplink()
        .plugin("spy", &spy)
        .cluster(json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "spy"}]}))
        .manifest(
            "nad.yaml",
            &nad("tenant", "data", &macvlan("data", "198.18.17.0/24")),
        )
        .manifest("pod.yaml", &pod(&web, "data"))
        .start();

    assert!(!node.add(&web).success(), "plexusd died during the ADD");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&copy).expect("the spy ran")).unwrap();
    let networks: Vec<&str> = record["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["delegate"]["network"].as_str().unwrap())
        .collect();
    assert_eq!(networks, ["cluster", "tenant/data"], "{record}");
    assert!(
        record["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.get("result").is_none()),
        "{record}"
    );

    node.kill_plexusd();
    node.start_plexusd();
    assert_eq!(node.records().len(), 1, "the intent survived the crash");
    assert!(node.del(&web).success());
    assert!(web.link_names().is_empty());
    node.assert_clean();
}

/// A machine crash, as far as Plexus sees it: the record file an ADD's intent wrote was only
/// in the page cache and is gone, while host-local's allocation, written after the intent,
/// is on disk. The intent journal, fdatasynced before the first plugin was fed, brings the
/// record back when plexusd starts, and the runtime's DEL releases the address.
#[test]
fn an_intent_whose_record_a_machine_crash_lost_comes_back_from_the_journal() {
    let web = Pod::new("tenant", "web");
    // The cluster chain's second plugin: the first (bridge + host-local) has allocated an
    // address; this one dies with plexusd, as the machine would, before the ADD ends.
    let crash = r#"cat >/dev/null
[ "$CNI_COMMAND" = ADD ] || exit 0
kill -9 $PPID"#;
    let node = Node::builder()
        .plugin("crash", crash)
        .cluster(json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.18.0/24"}]], "dataDir": "@IPAM@"}},
            {"type": "crash"}
        ]}))
        .start();

    assert!(!node.add(&web).success(), "plexusd died during the ADD");
    node.kill_plexusd();
    assert_eq!(node.ipam_allocations().len(), 1);
    let record = format!("{}.json", web.container_id);
    assert_eq!(node.records(), std::slice::from_ref(&record));
    std::fs::remove_file(node.records_dir().join(&record)).unwrap();

    node.start_plexusd();
    assert_eq!(node.records(), [record], "restored from the journal");
    assert!(
        node.log()
            .contains("record restored from the intent journal"),
        "{}",
        node.log()
    );
    assert!(node.del(&web).success());
    assert!(web.link_names().is_empty());
    node.assert_clean();
}

#[test]
fn del_of_a_pod_attached_before_plexus_releases_its_cluster_address() {
    let old = Pod::new("tenant", "old");
    let node = Node::builder().start();
    // What the runtime alone did before Plexus took over: the cluster network's plugins ran
    // directly, and Plexus has no record of it.
    let conf = std::fs::read_to_string(node.dir().join("net.d/10-cluster.conflist")).unwrap();
    let conf: serde_json::Value = serde_json::from_str(&conf).unwrap();
    plexus_integration::multus::run_conf(&node.netns, &old, "eth0", &conf);
    assert_eq!(node.ipam_allocations().len(), 1);

    assert!(node.del(&old).success());
    assert!(
        node.ipam_allocations().is_empty(),
        "{:?}",
        node.ipam_allocations()
    );
    assert!(old.link_names().is_empty());
}

/// A node whose NAD `slow` runs `script` as its plugin, with `pod` selecting it.
fn node_with_slow_delegate(pod_: &Pod, script: &str) -> plexus_integration::Node {
    plexus_integration::Node::builder()
        .delegate_timeout_seconds(3)
        .plugin("slow", script)
        .manifest(
            "n.yaml",
            &nad(
                "tenant",
                "slow",
                &serde_json::json!({"cniVersion": "1.0.0", "name": "slow", "type": "slow"}),
            ),
        )
        .manifest("p.yaml", &pod(pod_, "slow"))
        .start()
}

/// Runs the pod's ADD and kills plexusd once `marker` exists (the delegate is running).
fn kill_plexusd_during_add(node: &plexus_integration::Node, web: &Pod, marker: &std::path::Path) {
    std::thread::scope(|scope| {
        let add = scope.spawn(|| node.add(web));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !marker.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the delegate never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        node.kill_plexusd();
        assert!(!add.join().unwrap().success());
    });
}

fn gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_delegate_that_hangs_while_plexusd_is_killed_is_killed_at_its_deadline_by_the_next_plexusd() {
    // Found by the soak: a delegate hanging while plexusd was SIGKILLed ran on forever.
    let web = Pod::new("tenant", "web");
    let stuck = r#"cat >/dev/null
case "$CNI_COMMAND" in
  ADD) echo $$ > @DIR@/stuck.pid; exec sleep 120 ;;
esac"#;
    let node = node_with_slow_delegate(&web, stuck);
    let pid_file = node.dir().join("stuck.pid");
    kill_plexusd_during_add(&node, &web, &pid_file);
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    node.start_plexusd();
    let killed = (0..3000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        gone(&pid)
    });
    assert!(
        killed,
        "delegate {pid} outlived its deadline: {}",
        node.log()
    );
    assert!(
        node.log().contains("a delegate of the previous plexusd"),
        "{}",
        node.log()
    );
    // The cluster network's ADD had run before: the intent lets DEL undo it.
    assert!(node.del(&web).success());
    assert!(web.link_names().is_empty());
    node.assert_clean();
}

#[test]
fn a_delegate_working_while_plexusd_is_killed_finishes_before_the_next_plexusd_serves() {
    // Found by the soak, twice: killing delegates with plexusd stopped plugins halfway (a
    // veth left under its temporary name, which their DEL cannot find); letting them finish
    // while the next plexusd already served let a GC delete the attachment before the old
    // ADD had made it.
    let web = Pod::new("tenant", "web");
    let slow = r#"cat >/dev/null
case "$CNI_COMMAND" in
  ADD) touch @DIR@/started; sleep 1; touch @DIR@/finished
       echo '{"cniVersion":"1.0.0"}' ;;
esac"#;
    let node = node_with_slow_delegate(&web, slow);
    kill_plexusd_during_add(&node, &web, &node.dir().join("started"));
    node.start_plexusd();
    assert!(
        node.dir().join("finished").exists(),
        "plexusd served before the delegate of its predecessor had finished"
    );
    assert!(node.del(&web).success());
    assert!(web.link_names().is_empty());
    node.assert_clean();
}

/// A delegate that logs when it starts, when it has its config and when it exits. With
/// `"waitADD": true` (or `"waitDEL"`) in its config it waits, once fed, up to 5 s for another
/// plugin to have started: one started ahead of its turn while this one runs.
const SEQUENCE_SPY: &str = r#"log=@DIR@/sequence.log
echo "start $CNI_COMMAND $CNI_IFNAME" >> $log
config=$(cat)
echo "fed $CNI_COMMAND $CNI_IFNAME" >> $log
case "$config" in *"\"wait$CNI_COMMAND\":true"*)
  for i in $(seq 250); do
    [ "$(grep -c ^start $log)" -gt "$(( $(grep -c ^exit $log) + 1 ))" ] && break
    sleep 0.02
  done;;
esac
echo "exit $CNI_COMMAND $CNI_IFNAME" >> $log
[ "$CNI_COMMAND" = ADD ] && printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}]}' "$CNI_IFNAME" "$CNI_NETNS"
exit 0"#;

/// Runs ADD and DEL of a pod on the cluster network and two secondaries, all of them the
/// sequence spy; returns the spy's log as (event, command, ifname) lines.
fn spy_on_sequence(start_ahead: bool) -> Vec<(String, String, String)> {
    let web = Pod::new("tenant", "web");
    // Each plugin that has a successor waits to see it started ahead (with start-ahead on).
    let spy = |name: &str, waits: &[&str]| {
        let mut config = json!({"cniVersion": "1.0.0", "name": name, "type": "spy"});
        for command in waits.iter().filter(|_| start_ahead) {
            config[format!("wait{command}")] = json!(true);
        }
        config
    };
    let cluster = spy("cluster", &["ADD"]);
    let node = Node::builder()
        .plugin("spy", SEQUENCE_SPY)
        .config_line(&format!("delegateStartAhead: {start_ahead}"))
        .cluster(json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [cluster]}))
        .manifest("a.yaml", &nad("tenant", "a", &spy("a", &["ADD", "DEL"])))
        .manifest("b.yaml", &nad("tenant", "b", &spy("b", &["DEL"])))
        .manifest("pod.yaml", &pod(&web, "a,b"))
        .start();
    assert!(node.add(&web).success());
    assert!(node.del(&web).success());
    std::fs::read_to_string(node.dir().join("sequence.log"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut words = line.split(' ').map(str::to_owned);
            let mut word = || words.next().unwrap();
            (word(), word(), word())
        })
        .collect()
}

/// Where `event` of `command` on `ifname` is in the log.
fn at(log: &[(String, String, String)], event: &str, command: &str, ifname: &str) -> usize {
    log.iter()
        .position(|(e, c, i)| e == event && c == command && i == ifname)
        .unwrap_or_else(|| panic!("no {event} {command} {ifname} in {log:?}"))
}

/// ADD runs eth0, net1, net2; DEL the reverse. Each plugin gets its config only after the one
/// before it has exited (NPWG §7.3), whether or not it was started ahead.
fn assert_fed_one_after_another(log: &[(String, String, String)]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (command, order) in [
        ("ADD", ["eth0", "net1", "net2"]),
        ("DEL", ["net2", "net1", "eth0"]),
    ] {
        for turn in order.windows(2) {
            let (before, next) = (turn[0], turn[1]);
            assert!(
                at(log, "fed", command, next) > at(log, "exit", command, before),
                "{command} {next} was fed before {before} exited: {log:?}"
            );
            pairs.push((
                at(log, "start", command, next),
                at(log, "exit", command, before),
            ));
        }
    }
    pairs
}

#[test]
fn each_delegate_starts_while_the_one_before_it_runs_but_gets_its_config_only_after_it() {
    let log = spy_on_sequence(true);
    for (started, before_exited) in assert_fed_one_after_another(&log) {
        assert!(
            started < before_exited,
            "a plugin was not started ahead: {log:?}"
        );
    }
}

#[test]
fn with_start_ahead_off_no_delegate_starts_before_the_one_before_it_exited() {
    let log = spy_on_sequence(false);
    for (started, before_exited) in assert_fed_one_after_another(&log) {
        assert!(started > before_exited, "a plugin started ahead: {log:?}");
    }
}
