//! The shim towards the runtime when plexusd is not there.

use plexus_integration::{Node, Pod};

#[test]
fn the_shim_reports_code_11_with_the_socket_path_when_plexusd_is_down() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder().start();
    node.stop_plexusd();
    let error = node.add(&web).error();
    assert_eq!(error["code"], 11);
    assert!(
        error
            .to_string()
            .contains(&node.socket().display().to_string()),
        "{error}"
    );
    // VERSION needs no daemon.
    let version = node
        .cni("VERSION", &web, &node.plexus_conf("1.0.0"))
        .result();
    assert_eq!(version["cniVersion"], "1.0.0");
    assert!(
        version["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "1.1.0")
    );
}

#[test]
fn missing_cni_variables_are_named_in_a_code_4_error() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder().start();
    let env = plexus_integration::shim::CniEnv {
        command: "ADD".into(),
        container_id: web.container_id.clone(),
        ..Default::default()
    };
    let error =
        plexus_integration::shim::exec(&env, &node.plexus_conf("1.1.0").to_string()).error();
    assert_eq!(error["code"], 4);
    assert!(
        error["msg"].as_str().unwrap().contains("CNI_IFNAME"),
        "{error}"
    );
}

#[test]
fn status_succeeds_when_the_source_and_cluster_network_are_ready() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder().start();
    let status = node.cni("STATUS", &web, &node.plexus_conf("1.1.0"));
    assert!(status.success() && status.stdout.is_empty(), "{status:?}");
}
