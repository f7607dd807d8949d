//! The Prometheus endpoint after real work.

use plexus_integration::{Node, Pod};

use crate::fixtures::{bridge, metric, nad, pod};

/// The value of the sample whose name and labels start with `prefix`.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metric(metrics, prefix).unwrap_or_else(|| panic!("no sample {prefix} in:\n{metrics}"))
}

#[test]
fn metrics_count_requests_delegates_errors_and_records() {
    let web = Pod::new("tenant", "web");
    let lost = Pod::new("tenant", "lost");
    let node = Node::builder()
        .manifest(
            "n.yaml",
            &nad(
                "tenant",
                "east",
                &bridge("east", "br-east", "198.18.32.0/24"),
            ),
        )
        .manifest("a.yaml", &pod(&web, "east"))
        .manifest("b.yaml", &pod(&lost, "ghost"))
        .start();
    node.add(&web).result();
    node.add(&lost).error();

    let (status, metrics) = node.get("/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &metrics,
            r#"plexus_cni_request_duration_seconds_count{command="ADD",result="success"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"plexus_cni_request_duration_seconds_count{command="ADD",result="error"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"plexus_cni_errors_total{code="7",kind="unknown_network"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"plexus_delegate_duration_seconds_count{network="tenant/east",plugin="bridge",command="ADD"}"#
        ),
        1.0
    );
    // Resolution refused the second pod before any delegate ran, so the cluster network ran once.
    assert_eq!(
        sample(
            &metrics,
            r#"plexus_delegate_duration_seconds_count{network="cluster",plugin="bridge",command="ADD"}"#
        ),
        1.0
    );
    assert_eq!(sample(&metrics, "plexus_records "), 1.0);
    assert_eq!(
        sample(&metrics, r#"plexus_cached_objects{kind="nads"}"#),
        1.0
    );
    assert_eq!(
        sample(&metrics, r#"plexus_cached_objects{kind="pods"}"#),
        2.0
    );
    assert!(metrics.contains("plexus_build_info{version="), "{metrics}");

    assert!(node.del(&web).success());
    let (_, metrics) = node.get("/metrics").unwrap();
    assert_eq!(sample(&metrics, "plexus_records "), 0.0);
    assert_eq!(
        sample(
            &metrics,
            r#"plexus_cni_request_duration_seconds_count{command="DEL",result="success"}"#
        ),
        1.0
    );
}
