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

/// The shim the DaemonSet installs runs in the node's own root, whatever glibc that has (a
/// dynamically linked one would need glibc 2.34 or newer there): it needs no shared library.
/// Here, a root that holds nothing but the shim.
#[test]
fn the_shipped_shim_runs_in_a_root_without_any_library() {
    let shim = plexus_integration::binaries::static_shim();
    assert!(
        shim.is_file(),
        "{} is missing: `make test` builds it (see the Makefile's static_shim)",
        shim.display()
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(&shim, root.path().join("plexus")).unwrap();
    let output = std::process::Command::new("/usr/sbin/chroot")
        .arg(root.path())
        .arg("/plexus")
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["cniVersion"], "1.1.0");
}
