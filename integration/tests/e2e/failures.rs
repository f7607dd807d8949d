//! Bad input and failing delegates: a clear CNI error, and nothing left behind.

use plexus_integration::{Node, Pod};
use serde_json::json;

use crate::fixtures::{bridge, macvlan, nad, pod};

/// Asserts that nothing of the pod is left: no interface, no IP, no record, no veth.
fn assert_nothing_left(node: &Node, web: &Pod) {
    assert!(
        web.link_names().is_empty(),
        "interfaces left: {:?}",
        web.link_names()
    );
    node.assert_clean();
}

#[test]
fn an_unknown_nad_fails_with_its_name_and_leaves_nothing() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .manifest("p.yaml", &pod(&web, "ghost"))
        .start();
    let error = node.add(&web).error();
    assert_eq!(error["code"], 7);
    let msg = error["msg"].as_str().unwrap();
    assert!(
        msg.contains("tenant/ghost") && msg.contains("tenant/web"),
        "{msg}"
    );
    assert_nothing_left(&node, &web);
    assert!(node.del(&web).success());
}

#[test]
fn a_failing_second_delegate_rolls_back_the_first_and_its_ip() {
    let web = Pod::new("tenant", "web");
    let mut broken = macvlan("broken", "198.18.11.0/24");
    broken["master"] = json!("no-such-if");
    let node = Node::builder()
        .manifest(
            "a.yaml",
            &nad(
                "tenant",
                "good",
                &bridge("good", "br-good", "198.18.12.0/24"),
            ),
        )
        .manifest("b.yaml", &nad("tenant", "broken", &broken))
        .manifest(
            "c.yaml",
            &nad(
                "tenant",
                "never",
                &bridge("never", "br-never", "198.18.13.0/24"),
            ),
        )
        .manifest("p.yaml", &pod(&web, "good,broken,never"))
        .start();
    let error = node.add(&web).error();
    let msg = error["msg"].as_str().unwrap();
    assert!(
        msg.contains("tenant/broken") && msg.contains("macvlan") && msg.contains("net2"),
        "{msg}"
    );
    assert_nothing_left(&node, &web);
    // The network after the failing one was never tried.
    assert!(!node.netns.links().contains(&"br-never".to_owned()));
    assert!(
        node.del(&web).success(),
        "the runtime's DEL after a failed ADD must succeed"
    );
}

#[test]
fn a_plugin_type_that_is_a_path_is_rejected() {
    let web = Pod::new("tenant", "web");
    let evil = json!({"cniVersion": "1.0.0", "name": "evil", "type": "../../bin/sh"});
    let node = Node::builder()
        .manifest("n.yaml", &nad("tenant", "evil", &evil))
        .manifest("p.yaml", &pod(&web, "evil"))
        .start();
    let error = node.add(&web).error();
    assert_eq!(error["code"], 7);
    assert!(
        error["msg"].as_str().unwrap().contains("tenant/evil"),
        "{error}"
    );
    assert_nothing_left(&node, &web);
}

#[test]
fn malformed_annotations_name_the_entry_and_the_problem() {
    let cases = [
        ("net-a,,net-b", "entry 2"),
        (r#"[{"name":"net-a","mac":"zz:zz"}]"#, "zz:zz"),
        (r#"[{"name":"net-a","ips":[]}]"#, "ips"),
        (
            r#"[{"name":"a","default-route":[]},{"name":"b","default-route":[]}]"#,
            "default-route",
        ),
        (r#"[{"name": "net-a""#, "JSON"),
        ("Bad_Name", "Bad_Name"),
    ];
    for (annotation, expected) in cases {
        let web = Pod::new("tenant", "web");
        let node = Node::builder()
            .manifest("p.yaml", &pod(&web, annotation))
            .start();
        let error = node.add(&web).error();
        let msg = error["msg"].as_str().unwrap();
        assert!(
            msg.contains("tenant/web") && msg.contains(expected),
            "{annotation}: {msg}"
        );
        assert_nothing_left(&node, &web);
    }
}

#[test]
fn a_nad_config_that_is_not_json_is_a_decoding_error_naming_the_nad() {
    let web = Pod::new("tenant", "web");
    let manifest = r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
        "metadata":{"name":"broken","namespace":"tenant"},"spec":{"config":"{not json"}}"#;
    let node = Node::builder()
        .manifest("n.yaml", manifest)
        .manifest("p.yaml", &pod(&web, "broken"))
        .start();
    let error = node.add(&web).error();
    assert_eq!(error["code"], 6);
    assert!(
        error["msg"].as_str().unwrap().contains("tenant/broken"),
        "{error}"
    );
    assert_nothing_left(&node, &web);
}

#[test]
fn a_capability_the_network_does_not_declare_fails_the_attachment() {
    let web = Pod::new("tenant", "web");
    let annotation = json!([{"name": "plain", "mac": "c2:00:00:00:00:01"}]);
    let node = Node::builder()
        .manifest(
            "n.yaml",
            &nad(
                "tenant",
                "plain",
                &bridge("plain", "br-plain", "198.18.14.0/24"),
            ),
        )
        .manifest("p.yaml", &pod(&web, &annotation.to_string()))
        .start();
    let error = node.add(&web).error();
    let msg = error["msg"].as_str().unwrap();
    assert!(
        msg.contains("tenant/plain") && msg.contains("\"mac\""),
        "{msg}"
    );
    assert_nothing_left(&node, &web);
}

#[test]
fn a_delegates_own_error_code_and_stderr_reach_the_runtime() {
    let web = Pod::new("tenant", "web");
    // bridge refuses an IPAM type that does not exist; its error names the missing binary.
    let mut bad = bridge("bad-ipam", "br-bad", "198.18.15.0/24");
    bad["ipam"]["type"] = json!("no-such-ipam");
    let node = Node::builder()
        .manifest("n.yaml", &nad("tenant", "bad-ipam", &bad))
        .manifest("p.yaml", &pod(&web, "bad-ipam"))
        .start();
    let error = node.add(&web).error();
    let text = error.to_string();
    assert!(
        text.contains("tenant/bad-ipam")
            && text.contains("bridge")
            && text.contains("no-such-ipam"),
        "{text}"
    );
    assert_nothing_left(&node, &web);
}

#[test]
fn an_attachment_whose_rollback_failed_stays_recorded_until_a_del_succeeds() {
    let web = Pod::new("tenant", "web");
    // `sticky` attaches nothing but refuses DEL until @DIR@/release exists, like a plugin
    // whose cleanup hits a transient error.
    let sticky = r#"cat >/dev/null
case "$CNI_COMMAND" in
  ADD) echo '{"cniVersion":"1.0.0","interfaces":[],"ips":[]}' ;;
  DEL) [ -e @DIR@/release ] && exit 0
       echo '{"cniVersion":"1.0.0","code":11,"msg":"cleanup busy"}'; exit 1 ;;
esac"#;
    let mut broken = macvlan("broken", "198.18.19.0/24");
    broken["master"] = json!("no-such-if");
    let node = Node::builder()
        .plugin("sticky", sticky)
        .manifest(
            "a.yaml",
            &nad(
                "tenant",
                "sticky",
                &json!({"cniVersion": "1.0.0", "name": "sticky", "type": "sticky"}),
            ),
        )
        .manifest("b.yaml", &nad("tenant", "broken", &broken))
        .manifest("p.yaml", &pod(&web, "sticky,broken"))
        .start();

    let error = node.add(&web).error();
    assert!(
        error["msg"].as_str().unwrap().contains("tenant/broken"),
        "{error}"
    );
    // The cluster network was rolled back; the sticky attachment could not be and is kept.
    assert!(web.link_names().is_empty());
    assert!(node.ipam_allocations().is_empty());
    assert_eq!(node.records().len(), 1);

    let error = node.del(&web).error();
    assert_eq!(error["code"], 11, "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("tenant/sticky"),
        "{error}"
    );

    std::fs::write(node.dir().join("release"), "").unwrap();
    assert!(node.del(&web).success());
    assert!(node.records().is_empty());
}
