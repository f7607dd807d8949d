//! `plexusd webhook`: the NAD and pod checks at the moment a user runs `kubectl create`, as a
//! validating admission webhook. It answers admission.k8s.io/v1 AdmissionReviews over HTTPS
//! (rustls; the certificate is re-read when its files change), refuses a NAD plexusd could
//! not run, and warns about pods whose network annotations would fail on their node (refuses
//! them with `--pod-policy deny`). Deployed with failurePolicy Ignore: when it is down, the
//! cluster carries on without it.

mod listener;
mod lookup;
mod metrics;
mod review;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};

use crate::checks::PodRules;
use crate::config::Config;
use crate::source::kube::ClientError;

pub use listener::TlsListener;
pub use lookup::KubeNads;
pub use review::{BadReview, Outcome, Reviewer};
pub use tls::{Certificates, TlsError};

/// Where the API server sends reviews (the ValidatingWebhookConfiguration's `path`).
pub const REVIEW_PATH: &str = "/validate";
/// 200 once a certificate is served (the Deployment's probes).
pub const HEALTH_PATH: &str = "/healthz";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// An object and its old version, as JSON, fit well within this (etcd takes 1.5 MiB each).
const MAX_REVIEW_BYTES: usize = 8 << 20;

/// What a problem in a pod's network annotations does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PodPolicy {
    /// The pod is created; kubectl prints the problems as warnings.
    Warn,
    /// The pod is refused (pod templates of workloads are still only warned about).
    Deny,
}

/// `plexusd webhook`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// The HTTPS address (`[::]:8443` for IPv6).
    #[arg(long, env = "PLEXUS_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// The certificate chain (PEM), re-read when it changes.
    #[arg(
        long,
        env = "PLEXUS_WEBHOOK_CERT",
        default_value = "/etc/plexus-webhook/tls.crt"
    )]
    pub cert: PathBuf,
    /// The certificate's private key (PEM), re-read when it changes.
    #[arg(
        long,
        env = "PLEXUS_WEBHOOK_KEY",
        default_value = "/etc/plexus-webhook/tls.key"
    )]
    pub key: PathBuf,
    /// What a problem in a pod's network annotations does: `warn` or `deny`.
    #[arg(long, env = "PLEXUS_WEBHOOK_POD_POLICY", value_enum, default_value_t = PodPolicy::Warn)]
    pub pod_policy: PodPolicy,
    /// How long a pod review waits for the API server to say whether the NADs it names exist,
    /// in milliseconds; keep it below the webhook's timeoutSeconds.
    #[arg(long, env = "PLEXUS_WEBHOOK_LOOKUP_TIMEOUT_MS", default_value_t = 1500)]
    pub lookup_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// What every request shares.
struct AppState {
    reviewer: Reviewer,
    metrics: metrics::Metrics,
    certificates: Arc<Certificates>,
}

/// Serves reviews until `shutdown` completes. The API server is reached with plexusd's
/// `kubeconfig` setting, or the pod's service account.
pub async fn run(
    args: WebhookArgs,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = Arc::new(Certificates::new(
        args.cert.clone(),
        args.key.clone(),
        Arc::clone(&provider),
    ));
    certificates.reload_and_log();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(
            Arc::clone(&certificates) as Arc<dyn rustls::server::ResolvesServerCert>
        );
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let client = crate::source::kube::client(config.kubeconfig.as_deref()).await?;
    let lookup = Arc::new(KubeNads::new(
        client,
        Duration::from_millis(args.lookup_timeout_ms),
    ));
    let rules = PodRules::new(config).map_err(WebhookError::Config)?;
    let state = Arc::new(AppState {
        reviewer: Reviewer::new(rules, lookup, args.pod_policy),
        metrics: metrics::Metrics::default(),
        certificates: Arc::clone(&certificates),
    });
    let listener = TlsListener::bind(args.listen, Arc::new(tls))
        .await
        .map_err(|source| WebhookError::Bind {
            address: args.listen,
            source,
        })?;
    let watcher = tokio::spawn(Arc::clone(&certificates).keep_current());
    tracing::info!(address = %args.listen, path = REVIEW_PATH, pod_policy = ?args.pod_policy, "serving admission reviews");
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    watcher.abort();
    served.map_err(WebhookError::Serve)
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(REVIEW_PATH, post(review))
        .route(HEALTH_PATH, get(health))
        .route(METRICS_PATH, get(metrics))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

async fn review(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let started = Instant::now();
    match state.reviewer.review(&body).await {
        Ok(answer) => {
            let seconds = started.elapsed().as_secs_f64();
            state.metrics.reviewed(
                &answer.kind,
                answer.operation,
                answer.outcome.as_str(),
                seconds,
            );
            let span = tracing::info_span!("review", kind = %answer.kind, operation = answer.operation, object = %answer.object);
            let _entered = span.enter();
            match answer.outcome {
                Outcome::Allowed => tracing::debug!(seconds, "allowed"),
                outcome => {
                    tracing::info!(outcome = outcome.as_str(), messages = ?answer.messages, seconds, "reviewed")
                }
            }
            (StatusCode::OK, Json(answer.review)).into_response()
        }
        Err(error) => {
            state.metrics.malformed();
            tracing::warn!(%error, "not a review; answered 400");
            (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response()
        }
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.certificates.is_loaded() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no certificate\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
