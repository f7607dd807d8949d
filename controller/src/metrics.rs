//! Prometheus metrics: how long CNI requests and delegates take, which errors happen, and what
//! plexusd holds (records, cached objects).

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::cni::{DelegateCall, Executor, Outcome, Pending};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    command: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DelegateLabels {
    network: String,
    plugin: String,
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    code: u32,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HotplugLabels {
    network: String,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric plexusd exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram>,
    delegates: Family<DelegateLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    records: Gauge,
    cached: Family<CacheLabels, Gauge>,
    hotplug: Family<HotplugLabels, Counter>,
    hotplug_failures: Family<HotplugLabels, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to about 6.5 s: plexusd's own work sits at the bottom, delegates further up.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("plexus");
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let delegates = Family::<DelegateLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        let records = Gauge::default();
        let cached = Family::<CacheLabels, Gauge>::default();
        let hotplug = Family::<HotplugLabels, Counter>::default();
        let hotplug_failures = Family::<HotplugLabels, Counter>::default();
        registry.register(
            "cni_request_duration_seconds",
            "Time plexusd took to answer a CNI request",
            requests.clone(),
        );
        registry.register(
            "delegate_duration_seconds",
            "Time one delegate plugin call took",
            delegates.clone(),
        );
        registry.register(
            "cni_errors",
            "CNI errors answered, by CNI code and kind of failure",
            errors.clone(),
        );
        registry.register(
            "records",
            "Containers with attachment records on this node",
            records.clone(),
        );
        registry.register(
            "cached_objects",
            "Objects in the source's caches",
            cached.clone(),
        );
        registry.register(
            "hotplug_operations",
            "Attachments hot-plug added to or removed from running pods, failed ones included",
            hotplug.clone(),
        );
        registry.register(
            "hotplug_failures",
            "Hot-plug attachments and removals that failed",
            hotplug_failures.clone(),
        );
        registry.register(
            "build",
            "plexusd's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Self {
            registry,
            requests,
            delegates,
            errors,
            records,
            cached,
            hotplug,
            hotplug_failures,
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, command: &str, started: Instant, ok: bool) {
        let labels = RequestLabels {
            command: command.to_owned(),
            result: if ok { "success" } else { "error" },
        };
        self.requests
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn count_error(&self, code: u32, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { code, kind }).inc();
    }

    /// One hot-plug operation (`attach` or `detach`) on `network`, and whether it failed.
    pub fn count_hotplug(&self, network: &str, operation: &'static str, failed: bool) {
        let labels = HotplugLabels {
            network: network.to_owned(),
            operation,
        };
        self.hotplug.get_or_create(&labels).inc();
        if failed {
            self.hotplug_failures.get_or_create(&labels).inc();
        }
    }

    fn observe_delegate(&self, labels: &DelegateLabels, started: Instant) {
        self.delegates
            .get_or_create(labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// The text exposition, with the gauges set to what plexusd holds right now.
    pub fn render(&self, records: usize, cached: &[(&'static str, usize)]) -> String {
        self.records.set(i64::try_from(records).unwrap_or(i64::MAX));
        for (kind, count) in cached {
            self.cached
                .get_or_create(&CacheLabels { kind })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// An executor that times every delegate call into the metrics.
pub struct Metered {
    inner: Arc<dyn Executor>,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Executor>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

fn labels(call: &DelegateCall) -> DelegateLabels {
    DelegateLabels {
        network: call.network.clone(),
        plugin: call.plugin_type.clone(),
        command: call.command.to_string(),
    }
}

/// A delegate's time runs from its turn to its exit: what the pod waited for it. A plugin
/// started ahead of its turn shows without the start-up it hid.
impl Executor for Metered {
    fn run(&self, call: DelegateCall) -> Outcome<'_> {
        let labels = labels(&call);
        Box::pin(async move {
            let started = Instant::now();
            let outcome = self.inner.run(call).await;
            self.metrics.observe_delegate(&labels, started);
            outcome
        })
    }

    fn start(&self, call: DelegateCall) -> Pending<'_> {
        let labels = labels(&call);
        let inner = self.inner.start(call);
        Pending::new(move |stdin, turn| {
            Box::pin(async move {
                let outcome = inner.run_since(stdin, turn).await;
                self.metrics.observe_delegate(&labels, turn);
                outcome
            })
        })
    }

    fn supported_versions<'a>(&'a self, plugin_type: &'a str) -> BoxFuture<'a, Vec<String>> {
        self.inner.supported_versions(plugin_type)
    }
}
