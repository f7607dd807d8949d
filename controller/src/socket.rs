//! The unix socket's gate: who may call plexusd (the peer's uid, from SO_PEERCRED), how many
//! connections may be open at once, and how long a client may take to send its request.
//!
//! A connection that passes is served by hyper with the router. One that does not is answered
//! at once with a CNI error object and closed, without a task of its own, so a flood of
//! connections costs plexusd nothing it has to remember.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::cni::{CniError, CniVersion, code};
use crate::config::Config;
use crate::metrics::Metrics;

/// What the socket admits; from plexusd's config.
#[derive(Debug, Clone)]
pub struct Gate {
    pub allowed_uids: Vec<u32>,
    pub max_connections: usize,
    pub read_timeout: Duration,
}

impl Gate {
    pub fn from_config(config: &Config) -> Self {
        Self {
            allowed_uids: config.socket_allowed_uids.clone(),
            max_connections: config.socket_max_connections,
            read_timeout: config.socket_read_timeout(),
        }
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// The peer's uid is not in `socketAllowedUids` (or its credentials could not be read).
    Forbidden { uid: Option<u32>, pid: Option<i32> },
    /// `socketMaxConnections` connections are open already.
    Busy,
}

impl Refusal {
    fn answer(&self, gate: &Gate) -> (u16, &'static str, CniError) {
        match self {
            Self::Forbidden { uid, .. } => {
                let who = uid.map_or_else(|| "an unknown uid".to_owned(), |u| format!("uid {u}"));
                let allowed: Vec<String> =
                    gate.allowed_uids.iter().map(ToString::to_string).collect();
                (
                    403,
                    "Forbidden",
                    CniError::new(
                        code::INVALID_ENVIRONMENT,
                        format!("plexusd does not take calls from {who}"),
                        format!(
                            "only uids {} may call it (socketAllowedUids)",
                            allowed.join(", ")
                        ),
                    ),
                )
            }
            Self::Busy => (
                503,
                "Service Unavailable",
                CniError::new(
                    code::TRY_AGAIN_LATER,
                    "plexusd is busy, try again later",
                    format!(
                        "{} connections are open on its socket (socketMaxConnections)",
                        gate.max_connections
                    ),
                ),
            ),
        }
    }

    fn metric_label(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::Busy => "busy",
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the open connections
/// finish what they are doing (an ADD in flight writes its record) and returns.
pub async fn serve(
    listener: UnixListener,
    router: Router,
    gate: Gate,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(gate.max_connections));
    let (closing, closed) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: pause instead of spinning.
                    tracing::warn!(%error, "accept on the socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match admit(&stream, &gate, &slots) {
            Ok(slot) => serve_connection(stream, router.clone(), &gate, slot, closed.clone()),
            Err(refusal) => refuse(stream, &refusal, &gate, &metrics),
        }
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds a slot until it is done; all slots back means all done.
    let _ = slots.acquire_many(gate.max_connections as u32).await;
}

fn admit(
    stream: &UnixStream,
    gate: &Gate,
    slots: &Arc<Semaphore>,
) -> Result<OwnedSemaphorePermit, Refusal> {
    let (uid, pid) = match stream.peer_cred() {
        Ok(cred) => (Some(cred.uid()), cred.pid()),
        Err(_) => (None, None),
    };
    if !uid.is_some_and(|uid| gate.allowed_uids.contains(&uid)) {
        return Err(Refusal::Forbidden { uid, pid });
    }
    Arc::clone(slots)
        .try_acquire_owned()
        .map_err(|_| Refusal::Busy)
}

fn serve_connection(
    stream: UnixStream,
    router: Router,
    gate: &Gate,
    slot: OwnedSemaphorePermit,
    mut closing: watch::Receiver<bool>,
) {
    let read_timeout = gate.read_timeout;
    tokio::spawn(async move {
        let _slot = slot;
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The header timeout runs from the moment the connection is open and again whenever
        // a kept-alive connection waits for its next request: a client that connects and says
        // nothing is dropped after it.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(read_timeout);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
        tokio::pin!(connection);
        let stop = async move {
            let _ = closing.wait_for(|closing| *closing).await;
        };
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, "socket connection ended");
                }
            }
            () = stop => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    });
}

/// Answers with the refusal's CNI error and closes. The socket's send buffer is empty on a
/// fresh connection, so the answer is written without waiting; a client that already sent
/// its request still finds the answer in its receive buffer after the close.
fn refuse(stream: UnixStream, refusal: &Refusal, gate: &Gate, metrics: &Metrics) {
    let (status, reason, error) = refusal.answer(gate);
    match refusal {
        Refusal::Forbidden { uid, pid } => {
            tracing::warn!(
                ?uid,
                ?pid,
                "refused a caller of the socket: not in socketAllowedUids"
            );
        }
        Refusal::Busy => tracing::debug!("refused a connection: socketMaxConnections reached"),
    }
    metrics.count_error(error.code, refusal.metric_label());
    let _ = stream.try_write(&http_answer(status, reason, &error));
}

fn http_answer(status: u16, reason: &str, error: &CniError) -> Vec<u8> {
    let body = error.to_bytes(CniVersion::LATEST.as_str());
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// Reads a request body of at most `limit` bytes within `timeout`, as a CNI error otherwise.
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: Duration,
) -> Result<axum::body::Bytes, CniError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => Err(CniError::new(
            code::DECODING_FAILURE,
            format!("the request is larger than {limit} bytes (socketMaxRequestBytes)"),
            error.to_string(),
        )),
        Err(_) => Err(CniError::new(
            code::DECODING_FAILURE,
            format!(
                "the request was not received within {} s (socketReadTimeoutSeconds)",
                timeout.as_secs()
            ),
            "",
        )),
    }
}

/// How many CNI requests may be served at once; the rest are answered "try again later".
#[derive(Clone)]
pub struct InFlight {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A slot for one request, held until it is dropped; `Err` when all are taken.
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, CniError> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                "plexusd is busy, try again later",
                format!(
                    "{} CNI requests are in flight (socketMaxRequests)",
                    self.limit
                ),
            )
        })
    }
}

/// The mode of the socket file: root only, unless other uids may call, in which case anyone
/// may connect and the peer check decides.
pub fn socket_mode(allowed_uids: &[u32]) -> u32 {
    if allowed_uids.iter().all(|&uid| uid == 0) {
        0o600
    } else {
        0o666
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate {
            allowed_uids: vec![0, 1000],
            max_connections: 2,
            read_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_refused_caller_is_told_who_may_call() {
        let refusal = Refusal::Forbidden {
            uid: Some(65534),
            pid: Some(42),
        };
        let (status, _, error) = refusal.answer(&gate());
        assert_eq!(status, 403);
        assert!(error.msg.contains("uid 65534"), "{error}");
        assert!(error.details.contains("0, 1000"), "{error}");
    }

    #[test]
    fn a_busy_answer_is_try_again_later_in_a_complete_http_reply() {
        let (status, reason, error) = Refusal::Busy.answer(&gate());
        assert_eq!(error.code, code::TRY_AGAIN_LATER);
        let answer = String::from_utf8(http_answer(status, reason, &error)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let object: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(object["code"], 11);
    }

    #[test]
    fn the_socket_is_root_only_unless_other_uids_may_call() {
        assert_eq!(socket_mode(&[0]), 0o600);
        assert_eq!(socket_mode(&[0, 1000]), 0o666);
    }

    #[test]
    fn in_flight_slots_run_out_and_come_back() {
        let in_flight = InFlight::new(1);
        let first = in_flight.enter().unwrap();
        let error = in_flight.enter().unwrap_err();
        assert_eq!(error.code, code::TRY_AGAIN_LATER);
        assert!(error.details.contains("socketMaxRequests"), "{error}");
        drop(first);
        assert!(in_flight.enter().is_ok());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_decoding_error_naming_the_setting() {
        let body = axum::body::Body::from(vec![b'x'; 100]);
        let error = read_body(body, 10, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(error.code, code::DECODING_FAILURE);
        assert!(error.msg.contains("socketMaxRequestBytes"), "{error}");
    }
}
