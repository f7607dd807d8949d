//! An HTTPS client for the webhook, as the API server is one: it trusts only the CA it is
//! given, checks the Service's DNS name, and keeps its connection alive between requests.
//! Connections are opened inside the webhook's network namespace.

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::apiserver::in_netns;

/// A status and a body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub struct HttpsClient {
    runtime: tokio::runtime::Runtime,
    netns_path: String,
    port: u16,
    server_name: &'static str,
    trust: Mutex<Arc<rustls::ClientConfig>>,
    connection: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

fn client_config(ca_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("CA certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

impl HttpsClient {
    pub fn new(netns_path: &str, port: u16, server_name: &'static str, ca_der: &[u8]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        Self {
            runtime,
            netns_path: netns_path.to_owned(),
            port,
            server_name,
            trust: Mutex::new(client_config(ca_der)),
            connection: Mutex::new(None),
        }
    }

    /// Trusts only `ca_der` from the next connection on (as after a caBundle update).
    pub fn trust(&self, ca_der: &[u8]) {
        *self.trust.lock().expect("trust") = client_config(ca_der);
    }

    /// Drops the kept-alive connection; the next request opens a new one.
    pub fn reconnect(&self) {
        self.connection.lock().expect("connection").take();
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Result<Reply, String> {
        self.request("POST", path, body)
    }

    pub fn get(&self, path: &str) -> Result<Reply, String> {
        self.request("GET", path, &[])
    }

    /// A new connection's TLS handshake under the current trust: the DER of the certificate
    /// the webhook presented, or why the handshake failed.
    pub fn handshake(&self) -> Result<Vec<u8>, String> {
        self.runtime.block_on(async {
            let tls = self.tls_connect().await?;
            let (_, session) = tls.get_ref();
            session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.to_vec())
                .ok_or_else(|| "no certificate presented".to_owned())
        })
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, String> {
        let mut slot = self.connection.lock().expect("connection");
        self.runtime.block_on(async {
            let mut sender = match slot.take() {
                Some(sender) if !sender.is_closed() => sender,
                _ => self.connect().await?,
            };
            let request = hyper::Request::builder()
                .method(method)
                .uri(format!("https://{}{path}", self.server_name))
                .header("host", self.server_name)
                .header("content-type", "application/json")
                .header("accept", "application/json, */*")
                .body(Full::new(Bytes::copy_from_slice(body)))
                .map_err(|e| e.to_string())?;
            sender.ready().await.map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            *slot = Some(sender);
            Ok(Reply {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        })
    }

    async fn tls_connect(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let port = self.port;
        let tcp = in_netns(&self.netns_path, move || {
            TcpStream::connect(("127.0.0.1", port))
        })
        .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())?;
        let config = Arc::clone(&self.trust.lock().expect("trust"));
        let name = ServerName::try_from(self.server_name).map_err(|e| e.to_string())?;
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tls = self.tls_connect().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}
