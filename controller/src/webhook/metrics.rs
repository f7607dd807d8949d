//! The webhook's Prometheus metrics: reviews by kind and outcome, how long they took, and
//! bodies that were not reviews.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    kind: String,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    malformed: Counter,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to about 3 s: a NAD review is microseconds, a pod's waits for NAD lookups.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("plexus_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let malformed = Counter::default();
        registry.register(
            "reviews",
            "Admission reviews answered, by kind, operation and outcome",
            reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to answer one admission review",
            durations.clone(),
        );
        registry.register(
            "malformed_reviews",
            "Request bodies that were not an AdmissionReview (answered 400)",
            malformed.clone(),
        );
        Self {
            registry,
            reviews,
            durations,
            malformed,
        }
    }
}

impl Metrics {
    pub fn reviewed(
        &self,
        kind: &str,
        operation: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        self.reviews
            .get_or_create(&ReviewLabels {
                kind: kind.to_owned(),
                operation,
                outcome,
            })
            .inc();
        self.durations
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(seconds);
    }

    pub fn malformed(&self) {
        self.malformed.inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
