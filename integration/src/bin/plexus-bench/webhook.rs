//! The admission webhook's latency per review: `plexusd webhook` (release) in its own
//! namespace, reviews POSTed over one kept-alive HTTPS connection as the API server sends
//! them. A NAD review is the rules alone; a pod review also GETs its NAD from the test API
//! server, as every pod review in a cluster does.

use std::time::Instant;

use plexus_integration::webhook::Webhook;
use plexus_integration::webhook::review::{self, Kind};
use serde_json::{Value, json};

use crate::measure::Result;
use crate::stats::{Summary, Table, ms, summarize};

pub struct WebhookResult {
    pub reviews: usize,
    pub nad: Summary,
    pub pod: Summary,
}

/// `reviews` reviews of each kind, after a few to warm the connection and the caches.
pub fn measure(reviews: usize) -> Result<WebhookResult> {
    let webhook = Webhook::builder().rust_log("warn").start();
    let config = json!({"cniVersion": "1.0.0", "name": "east", "plugins": [
        {"type": "macvlan", "master": "eth1", "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.9.0/24"}]]}},
        {"type": "tuning", "capabilities": {"mac": true}}]})
    .to_string();
    webhook.cluster().apply(json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "east", "namespace": "tenant"},
        "spec": {"config": config}
    }));
    let nad = review::review(
        Kind::Nad,
        "CREATE",
        &review::nad("tenant", "east", Some(&config)),
        None,
    );
    let pod = review::review(
        Kind::Pod,
        "CREATE",
        &review::pod(
            "tenant",
            "web",
            json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name": "east", "mac": "c2:00:00:00:00:01"}]"#}),
        ),
        None,
    );
    Ok(WebhookResult {
        reviews,
        nad: summarize(&timed(&webhook, &nad, reviews)?),
        pod: summarize(&timed(&webhook, &pod, reviews)?),
    })
}

/// Milliseconds per review, each checked to be a clean allow.
fn timed(webhook: &Webhook, body: &Value, reviews: usize) -> Result<Vec<f64>> {
    let bytes = body.to_string();
    let mut samples = Vec::with_capacity(reviews);
    for i in 0..reviews + 20 {
        let started = Instant::now();
        let reply = webhook.client().post("/validate", bytes.as_bytes())?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let answer: Value = serde_json::from_str(&reply.body).map_err(|e| e.to_string())?;
        if reply.status != 200
            || answer["response"]["allowed"] != true
            || answer["response"].get("warnings").is_some()
        {
            return Err(format!(
                "unexpected review answer: {} {}",
                reply.status, reply.body
            ));
        }
        if i >= 20 {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

pub fn json(result: &WebhookResult) -> Value {
    json!({
        "reviews": result.reviews,
        "nad_review_ms": result.nad.json(),
        "pod_review_ms": result.pod.json(),
    })
}

pub fn print(result: &WebhookResult) {
    let mut table = Table::new(
        &format!(
            "Admission webhook, {} reviews each, one kept-alive HTTPS connection",
            result.reviews
        ),
        &["review", "median", "p90", "p99"],
    );
    for (name, summary) in [
        ("NAD CREATE (rules only)", &result.nad),
        ("pod CREATE (one NAD GET)", &result.pod),
    ] {
        table.row(vec![
            name.into(),
            ms(summary.median),
            ms(summary.p90),
            ms(summary.p99),
        ]);
    }
    table.print();
}
