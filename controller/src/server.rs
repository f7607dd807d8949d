//! The HTTP side of plexusd: the CNI endpoint the shim calls, health and readiness, and the
//! network-status read-back. The only place that turns errors into CNI answers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::UnixListener;
use tracing::Instrument;

use crate::cni::{CniError, CniVersion, Command, code};
use crate::inspect::Filter;
use crate::metrics::Metrics;
use crate::names::ContainerId;
use crate::request::{CniRequest, WireRequest, requested_version};
use crate::service::Plexus;
use crate::socket::{self, Gate, InFlight};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub plexus: Arc<Plexus>,
    pub metrics: Arc<Metrics>,
}

/// Health, readiness and metrics: served on the socket and on the optional TCP address.
fn observability() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The socket's routes: the CNI endpoint and the network-status read-back, plus the above.
pub fn router(state: AppState) -> Router {
    let in_flight = (
        InFlight::new(state.plexus.config().socket_max_requests),
        Arc::clone(&state.metrics),
    );
    observability()
        .route(
            "/v1/cni",
            post(cni).layer(middleware::from_fn_with_state(in_flight, limit_in_flight)),
        )
        .route("/v1/network-status/{container_id}", get(network_status))
        .route("/v1/inspect", get(inspect))
        .with_state(state)
}

/// Serves on the unix socket until `shutdown` completes; the socket file is removed after.
/// Only the callers and as many connections as the config allows get through (`socket`).
pub async fn serve(
    path: &Path,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let gate = Gate::from_config(state.plexus.config());
    let listener = bind(path, socket::socket_mode(&gate.allowed_uids))?;
    tracing::info!(socket = %path.display(), "listening");
    let metrics = Arc::clone(&state.metrics);
    socket::serve(listener, router(state), gate, metrics, shutdown).await;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Answers "try again later" once `socketMaxRequests` CNI requests are being served.
async fn limit_in_flight(
    State((in_flight, metrics)): State<(InFlight, Arc<Metrics>)>,
    request: Request,
    next: Next,
) -> Response {
    match in_flight.enter() {
        Ok(_slot) => next.run(request).await,
        Err(error) => {
            metrics.count_error(error.code, "busy");
            error_reply(&error, CniVersion::LATEST.as_str())
        }
    }
}

/// Serves health, readiness and metrics (never CNI) on a TCP address, for Prometheus and
/// kubelet probes.
pub async fn serve_http(
    address: std::net::SocketAddr,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Socket {
            path: address.to_string().into(),
            source,
        })?;
    tracing::info!(%address, "serving health and metrics");
    axum::serve(listener, observability().with_state(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)
}

fn bind(path: &Path, mode: u32) -> Result<UnixListener, ServerError> {
    let socket_err = |source| ServerError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(socket_err)?;
    }
    // A socket file left by a previous plexusd that died; nobody can be listening on it, or
    // bind would not be the way to find out, so check by connecting first.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(socket_err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another plexusd is listening",
            )));
        }
        std::fs::remove_file(path).map_err(socket_err)?;
    }
    let listener = UnixListener::bind(path).map_err(socket_err)?;
    // Only root may ask plexusd to plumb namespaces, unless the config lets other uids call;
    // then the peer check on every connection is what keeps the rest out.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(socket_err)?;
    Ok(listener)
}

async fn cni(State(state): State<AppState>, body: Body) -> Response {
    let AppState { plexus, metrics } = state;
    let config = plexus.config();
    let body = match socket::read_body(
        body,
        config.socket_max_request_bytes,
        config.socket_read_timeout(),
    )
    .await
    {
        Ok(body) => body,
        Err(error) => {
            metrics.count_error(error.code, "request");
            return error_reply(&error, CniVersion::LATEST.as_str());
        }
    };
    let wire: WireRequest = match serde_json::from_slice(&body) {
        Ok(wire) => wire,
        Err(e) => {
            let error = CniError::new(
                code::DECODING_FAILURE,
                "cannot decode the request from the shim",
                e.to_string(),
            );
            metrics.count_error(error.code, "request");
            return error_reply(&error, CniVersion::LATEST.as_str());
        }
    };
    let version = requested_version(&wire.config);
    let span = tracing::info_span!(
        "cni",
        command = %wire.command,
        container = %wire.container_id,
        ifname = %wire.ifname,
        pod = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let request = match CniRequest::parse(&wire) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "rejected request");
                metrics.observe_request(&wire.command, started, false);
                metrics.count_error(error.code, "request");
                return error_reply(&error, &version);
            }
        };
        if let Ok(Some(pod)) = request.args.pod() {
            tracing::Span::current().record("pod", tracing::field::display(pod));
        }
        let outcome = dispatch(&plexus, &request).await;
        crate::memory::answered();
        let elapsed_us = started.elapsed().as_micros() as u64;
        metrics.observe_request(request.command.as_str(), started, outcome.is_ok());
        match outcome {
            Ok(body) => {
                tracing::info!(elapsed_us, "done");
                (StatusCode::OK, body).into_response()
            }
            Err(error) => {
                tracing::warn!(elapsed_us, kind = error.metric_label(), %error, "failed");
                let answer = error.to_cni();
                metrics.count_error(answer.code, error.metric_label());
                error_reply(&answer, &version)
            }
        }
    }
    .instrument(span)
    .await
}

async fn dispatch(plexus: &Plexus, request: &CniRequest) -> crate::service::Result<Vec<u8>> {
    match request.command {
        Command::Add => plexus.add(request).await,
        Command::Del => plexus.del(request).await.map(|()| Vec::new()),
        Command::Check => plexus.check(request).await.map(|()| Vec::new()),
        Command::Status => plexus.status().await.map(|()| Vec::new()),
        Command::Gc => plexus.gc(request).await.map(|()| Vec::new()),
        Command::Version => Ok(version_answer(request.conf.cni_version)),
    }
}

fn version_answer(asked: CniVersion) -> Vec<u8> {
    let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
    serde_json::json!({ "cniVersion": asked.as_str(), "supportedVersions": supported })
        .to_string()
        .into_bytes()
}

/// An error answer: the CNI error object, with a status that tells the shim to exit non-zero.
/// Requests the caller got wrong are 400; failures on plexusd's side of the call are 500.
fn error_reply(error: &CniError, cni_version: &str) -> Response {
    let status = match error.code {
        code::INVALID_ENVIRONMENT
        | code::DECODING_FAILURE
        | code::INCOMPATIBLE_VERSION
        | code::INVALID_CONFIG => StatusCode::BAD_REQUEST,
        code::TRY_AGAIN_LATER | code::NOT_AVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        [("content-type", "application/json")],
        error.to_bytes(cni_version),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.plexus.source().readiness();
    // Disconnected but synced still serves ADD from the caches; readiness says so, so the
    // operator sees it, while STATUS (ability to serve ADD) stays green.
    let (status, state) = match (readiness.ready, readiness.connected) {
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: serving from cache",
        ),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the source has not loaded",
        ),
    };
    let mut text = format!("{state} {}\n", readiness.summary());
    for problem in &readiness.problems {
        text.push_str(&format!("problem: {problem}\n"));
    }
    (status, text).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let records = state.plexus.record_count();
    let cached = state.plexus.source().readiness().counts;
    let text = state.metrics.render(records, &cached);
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn network_status(
    State(AppState { plexus, .. }): State<AppState>,
    UrlPath(container_id): UrlPath<String>,
) -> Response {
    let Ok(id) = ContainerId::parse(&container_id) else {
        return (StatusCode::BAD_REQUEST, "invalid container id\n").into_response();
    };
    match plexus.network_status(&id).await {
        Ok(Some(status)) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            serde_json::to_vec(&status).unwrap_or_default(),
        )
            .into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no record for container {id}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `plexusd inspect`'s report: read-only, from the records and the recent failures.
async fn inspect(
    State(AppState { plexus, .. }): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    let filter = match Filter::from_query(query.as_deref()) {
        Ok(filter) => filter,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match plexus.inspect(&filter).await {
        Ok(report) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            serde_json::to_vec(&report).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
