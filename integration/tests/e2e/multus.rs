//! Pods Multus attached before the switch: plexusd adopts them from Multus's cache (written
//! here in Multus 4.3's format, after the real plugins ran as Multus would have run them), and
//! DEL, CHECK, GC and the network-status read-back then work for them as for its own.

use plexus_integration::multus::{MultusCacheDir, MultusDelegate};
use plexus_integration::{Node, NodeBuilder, Pod};
use serde_json::Value;

use crate::fixtures::{bare, bridge, macvlan, nad};

const EAST: &str = "198.18.40.0/24";
const DATA: &str = "198.18.41.0/24";

/// A node whose plexusd adopts from `<dir>/multus`, with NADs tenant/east (bridge) and
/// tenant/data (macvlan on the uplink).
fn builder() -> NodeBuilder {
    Node::builder()
        .uplink()
        .config_line("multusCacheDir: @DIR@/multus")
        .manifest(
            "nads.yaml",
            &format!(
                "{}\n---\n{}",
                nad("tenant", "east", &bridge("east", "br-east", EAST)),
                nad("tenant", "data", &macvlan("data", DATA))
            ),
        )
}

fn node() -> Node {
    builder().start()
}

fn multus(node: &Node) -> MultusCacheDir {
    MultusCacheDir::new(&node.dir().join("multus"))
}

fn filled(node: &Node, config: Value) -> Value {
    let ipam = node.ipam_dir().display().to_string();
    serde_json::from_str(&config.to_string().replace("@IPAM@", &ipam)).unwrap()
}

/// What Multus ran for a pod with `tenant/east,tenant/data@data0`: cluster, net1, data0.
fn delegates(node: &Node) -> Vec<MultusDelegate> {
    let cluster = std::fs::read_to_string(node.dir().join("net.d/10-cluster.conflist")).unwrap();
    vec![
        MultusDelegate::cluster(&serde_json::from_str(&cluster).unwrap()),
        MultusDelegate::nad(
            "tenant/east",
            &filled(node, bridge("east", "br-east", EAST)),
        ),
        MultusDelegate::nad("tenant/data", &filled(node, macvlan("data", DATA))).on("data0"),
    ]
}

/// Asserts nothing of the pod is left: its namespace has only lo, and the node has no veth, no
/// host-local allocation and no record.
fn assert_gone(node: &Node, pod: &Pod) {
    assert!(pod.link_names().is_empty(), "{:?}", pod.link_names());
    node.assert_clean();
}

#[test]
fn a_pod_multus_attached_is_adopted_at_start_checked_and_deleted_through_plexus() {
    let web = Pod::new("tenant", "web");
    let node = node();
    node.stop_plexusd();
    let cache = multus(&node);
    cache.attach(&node.netns, &web, &delegates(&node));
    assert_eq!(web.link_names(), ["data0", "eth0", "net1"]);
    let multus_files = cache.snapshot();

    node.restart_plexusd();
    assert_eq!(node.records(), [format!("{}.json", web.container_id)]);
    let status = node.network_status(&web);
    let expected: Vec<(String, String, String)> = [
        ("cluster", "eth0"),
        ("tenant/east", "net1"),
        ("tenant/data", "data0"),
    ]
    .iter()
    .map(|(network, ifname)| {
        let link = web.link(ifname).unwrap();
        (
            network.to_string(),
            ifname.to_string(),
            bare(&link.addresses[0]).to_owned(),
        )
    })
    .collect();
    let got: Vec<(String, String, String)> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["interface"].as_str().unwrap().to_owned(),
                s["ips"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[2]["mac"], web.link("data0").unwrap().mac.as_str());

    let check = node.check(&web);
    assert!(check.success(), "{check:?}");
    let inspect = node.inspect_json(&web);
    let container = &inspect["containers"][0];
    assert_eq!(
        container["adoptedFrom"],
        cache.file(&web).display().to_string()
    );
    assert_eq!(container["uid"], web.uid().as_str());
    assert_eq!(container["state"], "attached");

    let del = node.del(&web);
    assert!(del.success(), "{del:?}");
    assert_gone(&node, &web);
    assert_eq!(
        cache.snapshot(),
        multus_files,
        "Multus's files are left alone"
    );

    // Deleted once is deleted: the next start does not adopt it again.
    node.restart_plexusd();
    assert!(node.records().is_empty(), "{:?}", node.records());
}

#[test]
fn gc_deletes_the_adopted_pods_the_runtime_no_longer_lists() {
    let keep = Pod::new("tenant", "keep");
    let stale = Pod::new("tenant", "stale");
    let node = node();
    node.stop_plexusd();
    let cache = multus(&node);
    cache.attach(&node.netns, &keep, &delegates(&node));
    cache.attach(&node.netns, &stale, &delegates(&node));
    node.restart_plexusd();
    assert_eq!(node.ipam_allocations().len(), 6);

    let gc = node.gc(&[&keep]);
    assert!(gc.success(), "{gc:?}");
    assert!(stale.link_names().is_empty(), "{:?}", stale.link_names());
    assert_eq!(node.ipam_allocations().len(), 3);
    assert_eq!(node.records(), [format!("{}.json", keep.container_id)]);
    assert_eq!(keep.link_names(), ["data0", "eth0", "net1"]);

    assert!(node.del(&keep).success());
    assert_gone(&node, &keep);
}

#[test]
fn a_del_for_a_pod_plexusd_has_not_adopted_yet_reads_multus_cache_first() {
    let web = Pod::new("tenant", "web");
    let node = node();
    // Multus attached it while plexusd was already running (the switch is under way).
    let cache = multus(&node);
    cache.attach(&node.netns, &web, &delegates(&node));
    assert!(node.records().is_empty());

    let del = node.del(&web);
    assert!(del.success(), "{del:?}");
    assert_gone(&node, &web);
    assert!(
        node.log().contains("adopted a pod Multus attached"),
        "{}",
        node.log()
    );
    assert!(node.del(&web).success(), "a second DEL is fine too");
}

#[test]
fn unreadable_multus_caches_are_logged_and_skipped_and_nothing_else_stops() {
    let good = Pod::new("tenant", "good");
    let garbage = Pod::new("tenant", "garbage");
    let future = Pod::new("tenant", "future");
    let node = node();
    node.stop_plexusd();
    let cache = multus(&node);
    cache.attach(&node.netns, &good, &delegates(&node));
    std::fs::write(cache.file(&garbage), b"[{\"Bytes\": ").unwrap();
    let unknown = serde_json::json!([{"Name": "", "Bytes": base64_of(r#"{"cniVersion":"7.0.0","name":"x","type":"bridge"}"#)}]);
    std::fs::write(cache.file(&future), unknown.to_string()).unwrap();
    let before = cache.snapshot();

    node.restart_plexusd();
    assert_eq!(node.records(), [format!("{}.json", good.container_id)]);
    let log = node.log();
    for (pod, why) in [(&garbage, "malformed"), (&future, "does not know")] {
        assert!(
            log.lines()
                .any(|l| l.contains(&cache.file(pod).display().to_string()) && l.contains(why)),
            "{log}"
        );
    }
    // DEL of a container whose cache is unreadable still succeeds, as every DEL must.
    assert!(node.del(&garbage).success());
    assert!(node.del(&future).success());
    assert!(node.del(&good).success());
    assert_gone(&node, &good);
    assert_eq!(cache.snapshot(), before);
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The config the runtime uses: the first file of the conf dir, as libcni picks it, turned
/// into the stdin of its first plugin.
fn runtime_conf(node: &Node) -> (String, Value) {
    let mut files: Vec<String> = std::fs::read_dir(node.dir().join("net.d"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json"))
        .collect();
    files.sort();
    let first = files.first().expect("a CNI config").clone();
    let config: Value =
        serde_json::from_slice(&std::fs::read(node.dir().join("net.d").join(&first)).unwrap())
            .unwrap();
    let mut plugin = config["plugins"]
        .get(0)
        .cloned()
        .unwrap_or_else(|| config.clone());
    plugin["name"] = config["name"].clone();
    plugin["cniVersion"] = config["cniVersion"].clone();
    (first, plugin)
}

/// README "Moving from Multus", on one node, in namespaces: pods Multus attached keep running
/// while the node switches; new pods come up through Plexus; the old ones are deleted cleanly.
#[test]
fn switching_a_node_from_multus_without_draining() {
    let old_a = Pod::new("tenant", "old-a");
    let old_b = Pod::new("tenant", "old-b");
    let new_c = Pod::new("tenant", "new-c");
    let node = builder().config_line("writeConflist: true").start();
    // Before the switch: Multus on the node, its config first in the conf dir, pods attached.
    node.stop_plexusd();
    let _ = std::fs::remove_file(node.dir().join("net.d/00-plexus.conflist"));
    node.write_conf(
        "00-multus.conf",
        r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim","socketDir":"/run/multus/"}"#,
    );
    let cache = multus(&node);
    cache.attach(&node.netns, &old_a, &delegates(&node));
    cache.attach(&node.netns, &old_b, &delegates(&node)[..2]);
    assert_eq!(node.ipam_allocations().len(), 5);

    // Step 1: plexusd starts on the node (the DaemonSet's pod): it adopts Multus's pods and
    // writes its conflist, which Multus's config still shadows.
    node.restart_plexusd();
    assert_eq!(node.records().len(), 2, "{:?}", node.records());
    wait_for(|| node.dir().join("net.d/00-plexus.conflist").exists());
    assert_eq!(runtime_conf(&node).0, "00-multus.conf");
    wait_for(|| node.log().contains("sorts before Plexus's"));

    // Step 2: Multus's config goes; the runtime now calls Plexus.
    std::fs::remove_file(node.dir().join("net.d/00-multus.conf")).unwrap();
    let (file, conf) = runtime_conf(&node);
    assert_eq!(
        (file.as_str(), conf["type"].as_str()),
        ("00-plexus.conflist", Some("plexus"))
    );

    // Step 3: a new pod comes up through Plexus, on the same networks as the old ones.
    node.write_manifest("new-c.yaml", &new_c.manifest("east"));
    node.wait_for_readyz("nads=2 pods=1", std::time::Duration::from_secs(10));
    let add = node.cni("ADD", &new_c, &conf);
    assert!(add.success(), "{add:?}");
    assert_eq!(new_c.link_names(), ["eth0", "net1"]);
    let old_net1 = bare(&old_a.link("net1").unwrap().addresses[0]).to_owned();
    assert!(
        new_c.ping("net1", &old_net1),
        "new pod reaches an old one over net1"
    );
    let adopted: Vec<bool> = [&old_a, &old_b, &new_c]
        .iter()
        .map(|p| node.inspect_json(p)["containers"][0]["adoptedFrom"].is_string())
        .collect();
    assert_eq!(adopted, [true, true, false]);

    // Step 4: the old pods are deleted as their owners roll them: nothing of them is left.
    for old in [&old_a, &old_b] {
        let del = node.cni("DEL", old, &conf);
        assert!(del.success(), "{del:?}");
        assert!(old.link_names().is_empty(), "{:?}", old.link_names());
    }
    assert_eq!(
        node.ipam_allocations().len(),
        2,
        "only the new pod's addresses"
    );
    assert_eq!(node.records(), [format!("{}.json", new_c.container_id)]);
    assert!(node.cni("DEL", &new_c, &conf).success());
    assert_gone(&node, &new_c);

    // Step 5: once no pod Multus attached is left, the operator removes Multus's cache; the
    // marks Plexus kept for it go at the next start.
    std::fs::remove_dir_all(&cache.dir).unwrap();
    node.restart_plexusd();
    let marks = std::fs::read_dir(node.records_dir().join("adopted"))
        .unwrap()
        .count();
    assert_eq!(marks, 0);
}

/// Waits (up to 10 s) until `check` holds: plexusd's file and log writes are asynchronous.
fn wait_for(mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("never happened");
}
