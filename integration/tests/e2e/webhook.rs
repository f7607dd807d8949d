//! `plexusd webhook` over real HTTPS, driven with AdmissionReviews as the API server sends
//! them: every NAD rule allowed and denied, NAD updates, pod warnings (and denials under
//! `--pod-policy deny`), a certificate rotated while serving, and bodies that are not reviews.

use std::time::{Duration, Instant};

use plexus_integration::webhook::review::{self, Kind};
use plexus_integration::webhook::{SERVICE_NAME, TestCa, Webhook};
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// The response part of a 200 answer, checked against the request it answers.
fn answer(webhook: &Webhook, request: &Value) -> Value {
    let reply = webhook.review(request);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    assert_eq!(
        answer["response"]["uid"], request["request"]["uid"],
        "{answer}"
    );
    answer["response"].clone()
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect()
}

fn create_nad(webhook: &Webhook, config: Option<&str>) -> Value {
    let nad = review::nad("tenant", "east", config);
    answer(webhook, &review::review(Kind::Nad, "CREATE", &nad, None))
}

fn assert_denied(response: &Value, wanted: &str) {
    assert_eq!(response["allowed"], false, "{response}");
    let status = &response["status"];
    assert_eq!(status["code"], 400, "{response}");
    assert_eq!(status["reason"], "BadRequest", "{response}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains(wanted), "wanted {wanted:?} in {message:?}");
}

#[test]
fn every_nad_rule_denies_a_broken_config_with_the_problem_and_where_it_is() {
    let webhook = Webhook::builder().start();
    let cases: &[(&str, &str)] = &[
        (
            "{\"cniVersion\": \"1.0.0\",\n \"name\": \"east\"\n \"type\": \"macvlan\"}",
            "network tenant/east: invalid config: network configuration could not be decoded: expected `,` or `}` at line 3 column 2",
        ),
        (
            "\"just a string\"",
            "the configuration is not a JSON object",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "east", "master": "eth1"}"#,
            "the configuration has neither a plugins list nor a type",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "east", "plugins": [{"type": "bridge"}, {"capabilities": {"mac": true}}]}"#,
            "plugins[1] has no type",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "east/1", "type": "macvlan"}"#,
            "network name \"east/1\"",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "east", "type": "/opt/cni/bin/macvlan"}"#,
            "the plugin type \"/opt/cni/bin/macvlan\" contains a path separator; it must be a plain file name",
        ),
        (
            r#"{"cniVersion": "0.2.0", "name": "east", "type": "macvlan"}"#,
            "incompatible CNI version \"0.2.0\": Plexus supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
        ),
        (
            r#"{"cniVersion": "1.0", "name": "east", "type": "macvlan"}"#,
            "\"1.0\" is not a CNI version (expected X.Y.Z)",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "east", "plugins": [{"type": "macvlan"}, {"type": "tuning", "cniVersion": "0.3.1"}]}"#,
            "plugins[1] says cniVersion \"0.3.1\" but the list says \"1.0.0\"",
        ),
    ];
    for (config, wanted) in cases {
        let response = create_nad(&webhook, Some(config));
        assert_denied(&response, wanted);
    }
}

#[test]
fn good_nads_are_allowed_and_what_nodes_fill_in_is_a_warning() {
    let webhook = Webhook::builder().start();
    let good = r#"{"cniVersion": "1.0.0", "name": "east", "plugins": [{"type": "macvlan", "master": "eth1", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}}, {"type": "tuning", "capabilities": {"mac": true}}]}"#;
    let response = create_nad(&webhook, Some(good));
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("warnings").is_none(), "{response}");

    for (config, wanted) in [
        (
            None,
            "spec.config is empty: each node uses the conf file in its CNI conf dir whose JSON name is \"east\"",
        ),
        (
            Some(r#"{"name": "east", "type": "macvlan"}"#),
            "the config has no cniVersion",
        ),
        (
            Some(r#"{"cniVersion": "1.0.0", "type": "macvlan"}"#),
            "the config has no name: nodes use the NAD's name \"east\"",
        ),
    ] {
        let response = create_nad(&webhook, config);
        assert_eq!(response["allowed"], true, "{response}");
        let warnings = warnings(&response);
        assert!(
            warnings.iter().any(|w| w.contains(wanted)),
            "{wanted:?} not in {warnings:?}"
        );
    }
}

#[test]
fn the_resource_name_annotation_must_name_an_extended_resource() {
    let webhook = Webhook::builder().start();
    let config = r#"{"cniVersion": "1.0.0", "name": "east", "type": "sriov"}"#;
    for (resource, allowed) in [
        ("intel.com/intel_sriov_netdevice", true),
        ("intel_sriov_netdevice", false),
    ] {
        let mut nad = review::nad("tenant", "east", Some(config));
        nad["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/resourceName": resource});
        let response = answer(&webhook, &review::review(Kind::Nad, "CREATE", &nad, None));
        assert_eq!(response["allowed"], allowed, "{resource}: {response}");
        if !allowed {
            assert_denied(
                &response,
                "k8s.v1.cni.cncf.io/resourceName annotation: invalid resource name \"intel_sriov_netdevice\": must be domain/name",
            );
        }
    }
}

#[test]
fn an_update_that_breaks_a_nad_is_denied_and_a_good_change_says_who_it_reaches() {
    let webhook = Webhook::builder().start();
    let old = review::nad(
        "tenant",
        "east",
        Some(r#"{"cniVersion": "1.0.0", "name": "east", "type": "macvlan", "master": "eth1"}"#),
    );
    let broken = review::nad(
        "tenant",
        "east",
        Some(r#"{"cniVersion": "1.0.0", "name": "east", "type": "macvlan/v2"}"#),
    );
    let response = answer(
        &webhook,
        &review::review(Kind::Nad, "UPDATE", &broken, Some(&old)),
    );
    assert_denied(&response, "contains a path separator");

    let changed = review::nad(
        "tenant",
        "east",
        Some(r#"{"cniVersion": "1.0.0", "name": "east", "type": "macvlan", "master": "eth2"}"#),
    );
    let response = answer(
        &webhook,
        &review::review(Kind::Nad, "UPDATE", &changed, Some(&old)),
    );
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        warnings(&response),
        [
            "network tenant/east: pods attached already keep the config they were attached with; the new one applies to pods attached from now on"
        ]
    );

    // Labels only: nothing to say.
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"] = json!({"team": "a"});
    let response = answer(
        &webhook,
        &review::review(Kind::Nad, "UPDATE", &relabelled, Some(&old)),
    );
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("warnings").is_none(), "{response}");
}

/// NADs in the API server the webhook looks pods' networks up in.
fn publish_nads(webhook: &Webhook) {
    for (name, config) in [
        (
            "east",
            json!({"cniVersion": "1.0.0", "name": "east", "type": "macvlan", "master": "eth1"}),
        ),
        (
            "static",
            json!({"cniVersion": "1.0.0", "name": "static", "plugins": [
            {"type": "macvlan", "master": "eth1", "capabilities": {"ips": true}, "ipam": {"type": "static"}},
            {"type": "tuning", "capabilities": {"mac": true}}]}),
        ),
    ] {
        webhook.cluster().apply(json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": "tenant"},
            "spec": {"config": config.to_string()}
        }));
    }
}

fn create_pod(webhook: &Webhook, networks: &str) -> Value {
    let pod = review::pod("tenant", "web", json!({NETWORKS: networks}));
    answer(webhook, &review::review(Kind::Pod, "CREATE", &pod, None))
}

#[test]
fn a_pod_is_warned_about_every_mistake_in_its_networks_and_still_created() {
    let webhook = Webhook::builder().start();
    publish_nads(&webhook);
    for networks in [
        "east",
        "east@data, static",
        r#"[{"name": "static", "interface": "data", "ips": ["198.18.5.5/24"], "mac": "c2:00:00:00:00:05"}]"#,
    ] {
        let response = create_pod(&webhook, networks);
        assert_eq!(response["allowed"], true, "{response}");
        assert!(response.get("warnings").is_none(), "{networks}: {response}");
    }
    let cases: &[(&str, &str)] = &[
        (
            "eats",
            "pod tenant/web: network tenant/eats not found: no NetworkAttachmentDefinition tenant/eats",
        ),
        (
            "east,",
            "pod tenant/web: invalid k8s.v1.cni.cncf.io/networks annotation: entry 2: is empty (a stray comma?)",
        ),
        (
            "[{\"name\": \"east\"",
            "pod tenant/web: invalid k8s.v1.cni.cncf.io/networks annotation: not valid JSON",
        ),
        (
            "east@eth1:0",
            "interface: invalid interface name \"eth1:0\": must not contain '/', ':' or whitespace",
        ),
        (
            "east,static@net1",
            "pod tenant/web: network tenant/static: interface net1 is already used by network tenant/east",
        ),
        (
            "east@eth0",
            "interface eth0 is already used by network (cluster network)",
        ),
        (
            r#"[{"name": "static", "ips": ["198.18.5.300/24"]}]"#,
            "ips[0] \"198.18.5.300/24\" is not an IP address",
        ),
        (
            r#"[{"name": "static", "mac": "c2:00:00:00:05"}]"#,
            "mac \"c2:00:00:00:05\" is not",
        ),
        (
            r#"[{"name": "east", "ips": ["198.18.5.5/24"]}]"#,
            "network tenant/east: the selection asks for ips but no plugin of the network declares the \"ips\" capability",
        ),
    ];
    for (networks, wanted) in cases {
        let response = create_pod(&webhook, networks);
        assert_eq!(response["allowed"], true, "{networks}: {response}");
        let warnings = warnings(&response);
        assert!(
            warnings.iter().any(|w| w.contains(wanted)),
            "{networks}: {wanted:?} not in {warnings:?}"
        );
    }
}

#[test]
fn under_pod_policy_deny_a_pod_with_a_typo_is_refused_and_a_template_only_warned() {
    let webhook = Webhook::builder().arg("--pod-policy=deny").start();
    publish_nads(&webhook);
    assert_eq!(create_pod(&webhook, "east")["allowed"], true);
    assert_denied(
        &create_pod(&webhook, "eats"),
        "pod tenant/web: network tenant/eats not found",
    );

    let deployment = review::deployment("tenant", "web", json!({NETWORKS: "eats"}));
    let response = answer(
        &webhook,
        &review::review(Kind::Deployment, "CREATE", &deployment, None),
    );
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        warnings(&response),
        [
            "pod tenant/web (Deployment's pod template): network tenant/eats not found: no NetworkAttachmentDefinition tenant/eats"
        ]
    );
    // An update that leaves the template's networks alone says nothing again.
    let mut scaled = deployment.clone();
    scaled["spec"]["replicas"] = json!(5);
    let response = answer(
        &webhook,
        &review::review(Kind::Deployment, "UPDATE", &scaled, Some(&deployment)),
    );
    assert!(response.get("warnings").is_none(), "{response}");
}

#[test]
fn a_pod_update_is_never_refused() {
    // plexusd's own network-status patch is an UPDATE of the pod.
    let webhook = Webhook::builder().arg("--pod-policy=deny").start();
    let old = review::pod("tenant", "web", json!({NETWORKS: "eats"}));
    let mut new = old.clone();
    new["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] = json!("[]");
    let response = answer(
        &webhook,
        &review::review(Kind::Pod, "UPDATE", &new, Some(&old)),
    );
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("warnings").is_none(), "{response}");
}

#[test]
fn an_api_server_that_does_not_answer_never_blocks_a_pod() {
    let webhook = Webhook::builder().arg("--pod-policy=deny").start();
    let Some(api) = webhook.cluster().fixture() else {
        eprintln!("skipped against a real cluster: this test pauses the test API server");
        return;
    };
    api.pause();
    let response = create_pod(&webhook, "east");
    api.resume();
    assert_eq!(response["allowed"], true, "{response}");
    let warnings = warnings(&response);
    assert!(
        warnings.iter().any(|w| w
            .contains("pod tenant/web: network tenant/east was not checked: looking it up failed")),
        "{warnings:?}"
    );
}

/// Waits until `check` holds: the webhook notices new files on its own time.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("never happened: {what}");
}

#[test]
fn a_certificate_rotated_while_serving_is_served_from_the_next_handshake() {
    let webhook = Webhook::builder().start();
    let client = webhook.client();
    let first = client.handshake().expect("the first certificate verifies");
    // A connection kept alive across the rotation.
    let nad = review::nad(
        "tenant",
        "east",
        Some(r#"{"cniVersion": "1.0.0", "name": "east", "type": "macvlan"}"#),
    );
    let request = review::review(Kind::Nad, "CREATE", &nad, None);
    assert_eq!(webhook.review(&request).status, 200);

    // cert-manager renews with a new CA: the API server gets the new caBundle.
    let next_ca = TestCa::new("plexus-test-ca-2");
    let next = next_ca.issue(&[SERVICE_NAME]);
    webhook.install_certificate(&next);
    client.trust(&next_ca.der());
    eventually("the new certificate is served", || {
        client.handshake().is_ok_and(|der| der == next.der)
    });
    assert_ne!(first, next.der);
    // The connection opened before the rotation still answers.
    let response = webhook.review(&request).json();
    assert_eq!(response["response"]["allowed"], true, "{response}");
    // The old CA no longer verifies what is served.
    client.trust(&webhook.ca.der());
    let refused = client
        .handshake()
        .expect_err("the old CA must not verify the new certificate");
    assert!(refused.contains("TLS"), "{refused}");

    // A half-done rotation (a key that is not the certificate's) keeps the current one.
    client.trust(&next_ca.der());
    let stray = next_ca.issue(&[SERVICE_NAME]);
    webhook.install_files(&next.cert_pem, &stray.key_pem);
    eventually("the mismatch is noticed", || {
        webhook
            .log()
            .contains("still serving the previous certificate")
    });
    assert_eq!(client.handshake().expect("still verifies"), next.der);
    client.reconnect();
    assert_eq!(client.get("/healthz").map(|r| r.status), Ok(200));
}

#[test]
fn a_body_that_is_not_a_review_is_a_400_and_the_webhook_keeps_serving() {
    let mut webhook = Webhook::builder().start();
    let nad = review::nad(
        "tenant",
        "east",
        Some(r#"{"cniVersion": "1.0.0", "name": "east", "type": "macvlan"}"#),
    );
    let good = review::review(Kind::Nad, "CREATE", &nad, None);
    let mut no_request = good.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut v1beta1 = good.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_object = good.clone();
    no_object["request"]["object"] = Value::Null;
    let mut no_uid = good.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut bad_operation = good.clone();
    bad_operation["request"]["operation"] = json!("MERGE");
    let mut wrong_shape = good.clone();
    wrong_shape["request"]["object"] = json!("a string, not an object");
    let bodies: Vec<(String, &str)> = vec![
        (String::new(), "not an AdmissionReview"),
        ("not json".into(), "not an AdmissionReview"),
        ("[]".into(), "not an AdmissionReview"),
        ("{}".into(), "not an AdmissionReview"),
        (no_request.to_string(), "carries no request"),
        (
            v1beta1.to_string(),
            "this webhook answers admission.k8s.io/v1 AdmissionReview",
        ),
        (no_object.to_string(), "carries no object"),
        (no_uid.to_string(), "not an AdmissionReview"),
        (bad_operation.to_string(), "not an AdmissionReview"),
        (wrong_shape.to_string(), "not an AdmissionReview"),
        (
            good.to_string()[..good.to_string().len() / 2].to_owned(),
            "not an AdmissionReview",
        ),
    ];
    for (body, wanted) in &bodies {
        let reply = webhook
            .client()
            .post("/validate", body.as_bytes())
            .expect("an answer");
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert!(reply.body.contains(wanted), "{body}: {}", reply.body);
        // And a real review right after is answered.
        assert_eq!(answer(&webhook, &good)["allowed"], true);
    }
    assert!(webhook.is_running(), "{}", webhook.log());
    assert!(!webhook.log().contains("panicked"), "{}", webhook.log());

    let metrics = webhook.client().get("/metrics").expect("metrics").body;
    assert!(
        metrics.contains(&format!(
            "plexus_webhook_malformed_reviews_total {}",
            bodies.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"plexus_webhook_reviews_total{kind="NetworkAttachmentDefinition",operation="CREATE",outcome="allowed"}"#),
        "{metrics}"
    );
}
