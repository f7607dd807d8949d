//! `plexusd inspect` on real pods: what it prints is what the pod's namespace holds, and a
//! failed ADD is there to say why a pod has no net1.

use std::os::unix::process::CommandExt;

use plexus_integration::{Node, Pod, binaries};
use serde_json::Value;

use crate::fixtures::{bridge, macvlan, nad, pod};

/// An attachment as the test compares it: interface, network, addresses, MAC, plugins.
type Row = (String, String, Vec<String>, String, Vec<String>);

fn node_with(pods: &[(&Pod, &str)]) -> Node {
    let mut builder = Node::builder().uplink().manifest(
        "nads.yaml",
        &[
            nad("tenant", "east", &bridge("east", "br-east", "198.18.44.0/24")),
            nad("tenant", "data", &macvlan("data", "198.18.45.0/24")),
            nad("tenant", "broken", &serde_json::json!({
                "cniVersion": "1.0.0", "name": "broken", "type": "macvlan", "master": "nosuch0",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.46.0/24"}]], "dataDir": "@IPAM@"}
            })),
        ]
        .join("\n---\n"),
    );
    for (i, (p, networks)) in pods.iter().enumerate() {
        builder = builder.manifest(&format!("pod{i}.yaml"), &pod(p, networks));
    }
    builder.start()
}

#[test]
fn inspect_shows_each_attachment_of_a_pod_with_three_networks() {
    let web = Pod::new("tenant", "web");
    let node = node_with(&[(&web, "east,data@data0")]);
    node.add(&web).result();

    let report = node.inspect_json(&web);
    let container = &report["containers"][0];
    assert_eq!(report["containers"].as_array().unwrap().len(), 1);
    assert_eq!(container["containerId"], web.container_id.as_str());
    assert_eq!(
        container["pod"],
        serde_json::json!({"namespace": "tenant", "name": "web"})
    );
    assert_eq!(container["uid"], web.uid().as_str());
    assert_eq!(container["netns"], web.netns.path().as_str());
    assert_eq!(container["state"], "attached");
    assert!(container.get("lastError").is_none(), "{container}");
    let rows: Vec<Row> = container["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert!(
                a["attachedAt"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{a}"
            );
            assert!(a["tookUs"].as_u64().is_some_and(|us| us > 0), "{a}");
            (
                a["interface"].as_str().unwrap().to_owned(),
                a["network"].as_str().unwrap().to_owned(),
                strings(&a["ips"]),
                a["mac"].as_str().unwrap().to_owned(),
                strings(&a["plugins"]),
            )
        })
        .collect();
    let expected: Vec<Row> = [
        ("eth0", "cluster", "bridge"),
        ("net1", "tenant/east", "bridge"),
        ("data0", "tenant/data", "macvlan"),
    ]
    .iter()
    .map(|(ifname, network, plugin)| {
        let link = web.link(ifname).unwrap();
        (
            ifname.to_string(),
            network.to_string(),
            link.addresses,
            link.mac,
            vec![plugin.to_string()],
        )
    })
    .collect();
    assert_eq!(rows, expected);

    let text = node.inspect(&["--pod", "tenant/web"]).unwrap();
    eprintln!("plexusd inspect --pod tenant/web:\n{text}");
    let header = format!(
        "tenant/web  uid {}  container {}  netns {}",
        web.uid(),
        &web.container_id[..13.min(web.container_id.len())],
        web.netns.path()
    );
    assert!(text.starts_with(&header), "{text}");
    for (ifname, network, addresses, mac, _) in &expected {
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(ifname.as_str()))
            .unwrap();
        for cell in [network, &addresses[0], mac] {
            assert!(row.contains(cell.as_str()), "{row}");
        }
    }
    assert!(text.contains("last error: none"), "{text}");
    let wide = node
        .inspect(&["--container", &web.container_id, "-o", "wide"])
        .unwrap();
    assert!(
        wide.contains(&format!("container {}", web.container_id)),
        "{wide}"
    );
    assert!(
        wide.contains("state attached  runtime interface eth0"),
        "{wide}"
    );
    assert!(node.del(&web).success());
    assert_eq!(node.inspect(&[]).unwrap(), "no containers\n");
}

#[test]
fn inspect_says_why_a_pod_has_no_net1() {
    let web = Pod::new("tenant", "web");
    let db = Pod::new("tenant", "db");
    let node = node_with(&[(&web, "broken"), (&db, "east")]);
    let error = node.add(&web).error();
    assert!(node.records().is_empty(), "the rollback left nothing");
    node.add(&db).result();

    let report = node.inspect_json(&web);
    let container = &report["containers"][0];
    assert_eq!(
        report["containers"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(container["state"], "failed");
    assert_eq!(container["attachments"], serde_json::json!([]));
    let last = &container["lastError"];
    assert_eq!(last["message"], error["msg"]);
    assert_eq!(last["code"], error["code"]);
    let message = last["message"].as_str().unwrap();
    assert!(
        message.contains("tenant/broken") && message.contains("macvlan"),
        "{message}"
    );

    let text = node.inspect(&["--pod", "tenant/web"]).unwrap();
    assert!(text.contains("no attachments"), "{text}");
    assert!(
        text.contains(&format!("failed (CNI error {}): {message}", error["code"])),
        "{text}"
    );
    let everything = node.inspect(&["-o", "json"]).unwrap();
    let everything: Value = serde_json::from_str(&everything).unwrap();
    let states: Vec<(&str, &str)> = everything["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["pod"]["name"].as_str().unwrap(),
                c["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("db", "attached"), ("web", "failed")]);
    assert!(node.del(&db).success());
}

#[test]
fn inspect_is_for_root_only_and_names_a_bad_filter() {
    let node = Node::builder().start();
    let as_nobody = std::process::Command::new(binaries::plexusd())
        .args(["inspect", "--socket"])
        .arg(node.socket())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!as_nobody.status.success());
    let stderr = String::from_utf8_lossy(&as_nobody.stderr);
    assert!(stderr.contains("needs root"), "{stderr}");

    let error = node.inspect(&["--pod", "web"]).unwrap_err();
    assert!(error.contains("NAMESPACE/NAME"), "{error}");
    let error = node.inspect(&["-o", "yaml"]).unwrap_err();
    assert!(error.contains("json") && error.contains("wide"), "{error}");
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}
