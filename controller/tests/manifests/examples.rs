//! The example NADs and pods are what plexusd itself accepts: every NAD's `spec.config` parses
//! as a CNI network config, every pod's annotations parse as selections, and the standalone
//! demo's cluster network renders a conflist.

use std::path::Path;

use plexus_controller::cni::NetworkConfig;
use plexus_controller::names::NetworkRef;
use plexus_controller::selection::{NETWORKS_ANNOTATION, parse_networks};
use plexus_controller::service::DEFAULT_NETWORK_ANNOTATION;
use serde_json::Value;

use crate::yaml::{documents_in, repo};

const DIRS: &[&str] = &[
    "examples/nads",
    "examples/pods",
    "examples/flannel2",
    "examples/standalone/manifests",
    "examples/standalone/later",
];

/// Every document of `kind` in every YAML file in `DIRS`, with `file#n` to name it.
fn documents_of(kind: &str) -> Vec<(String, Value)> {
    DIRS.iter()
        .flat_map(|dir| documents_in(dir))
        .filter(|(_, doc)| doc["kind"] == kind)
        .collect()
}

#[test]
fn every_example_nad_config_is_one_plexusd_accepts() {
    let mut checked = 0;
    for (at, doc) in documents_of("NetworkAttachmentDefinition") {
        let Some(config) = doc["spec"]["config"]
            .as_str()
            .filter(|c| !c.trim().is_empty())
        else {
            continue;
        };
        let parsed =
            NetworkConfig::parse(config.as_bytes()).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(
            parsed.name.as_deref(),
            doc["metadata"]["name"].as_str(),
            "{at}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} NAD configs found");
}

#[test]
fn every_example_pod_annotation_is_one_plexusd_accepts() {
    let mut checked = 0;
    for (at, doc) in documents_of("Pod") {
        let annotations = &doc["metadata"]["annotations"];
        if let Some(networks) = annotations[NETWORKS_ANNOTATION].as_str() {
            let selections = parse_networks(networks).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert!(!selections.is_empty(), "{at}");
            checked += 1;
        }
        if let Some(default) = annotations[DEFAULT_NETWORK_ANNOTATION].as_str() {
            NetworkRef::parse(default.trim()).unwrap_or_else(|e| panic!("{at}: {e}"));
        }
    }
    assert!(checked >= 7, "only {checked} pod annotations found");
}

#[test]
fn the_demo_cluster_network_renders_a_conflist_the_shim_can_use() {
    let dir = repo().join("examples/standalone/net.d");
    let cluster = plexus_controller::confdir::cluster_network(&dir, Some("cluster")).unwrap();
    let conflist =
        plexus_controller::conflist::render(&cluster.config, Path::new("/run/plexus/plexus.sock"));
    assert_eq!(conflist["cniVersion"], "1.0.0");
    assert_eq!(conflist["plugins"][0]["type"], "plexus");
    assert_eq!(
        conflist["plugins"][0]["socketPath"],
        "/run/plexus/plexus.sock"
    );
}

#[test]
fn the_deploy_config_map_is_a_config_plexusd_loads() {
    let text = std::fs::read_to_string(repo().join("examples/deploy/30-configmap.yaml")).unwrap();
    let config_map: Value = serde_saphyr::from_str(&text).unwrap();
    let yaml = config_map["data"]["plexusd.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plexusd.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = plexus_controller::config::Config::load(Some(&path))
        .unwrap_or_else(|e| panic!("examples/deploy/30-configmap.yaml: {e}"));
    assert_eq!(config.source, plexus_controller::config::SourceKind::Kube);
}
