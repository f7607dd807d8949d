//! `plexusd probe`: kubelet's exec probe. One GET of `/healthz` or `/readyz` on plexusd's unix
//! socket, so the DaemonSet needs no TCP port on the node and the image no curl.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach plexusd at {socket}: {source}")]
    Unreachable { socket: PathBuf, source: io::Error },
    #[error("plexusd answered {path} with an unreadable reply: {problem}")]
    BadReply { path: String, problem: String },
    #[error("plexusd answered {path} with {status}: {body}")]
    NotOk {
        path: String,
        status: u16,
        body: String,
    },
}

/// GETs `path` on the socket; the body of a 2xx answer, or why there was none.
pub fn probe(socket: &Path, path: &str, timeout: Duration) -> Result<String, ProbeError> {
    let unreachable = |source| ProbeError::Unreachable {
        socket: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(unreachable)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: plexus\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(unreachable)?;
    let reply = String::from_utf8_lossy(&reply);

    let bad = |problem: &str| ProbeError::BadReply {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let status: u16 = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let body = body.trim().to_owned();
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(ProbeError::NotOk {
            path: path.to_owned(),
            status,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// Serves one connection with `reply` and returns the request it got.
    fn serve_once(socket: &Path, reply: &'static str) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(reply.as_bytes()).unwrap();
            String::from_utf8(request).unwrap()
        })
    }

    #[test]
    fn a_200_answer_is_healthy_and_its_body_returned() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("plexus.sock");
        let server = serve_once(
            &socket,
            "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n",
        );
        let body = probe(&socket, "/readyz", Duration::from_secs(5)).unwrap();
        assert_eq!(body, "ready");
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
    }

    #[test]
    fn a_503_answer_is_unhealthy_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("plexus.sock");
        let server = serve_once(
            &socket,
            "HTTP/1.1 503 Service Unavailable\r\n\r\nsource not synced",
        );
        let err = probe(&socket, "/readyz", Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, ProbeError::NotOk { status: 503, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("source not synced"), "{err}");
    }

    #[test]
    fn no_daemon_is_unreachable_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("absent.sock");
        let err = probe(&socket, "/healthz", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ProbeError::Unreachable { .. }));
        assert!(err.to_string().contains("absent.sock"), "{err}");
    }
}
