//! A webhook world: `plexusd webhook` in a network namespace of its own, serving a certificate
//! from a CA made for the test, looking NADs up in the test API server (or, with
//! `PLEXUS_TEST_KUBECONFIG`, a real cluster), and an HTTPS client that trusts only that CA,
//! as the API server does with the webhook's caBundle.

pub mod client;
pub mod pki;
pub mod review;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::cluster::Cluster;
use crate::{Netns, binaries};
pub use client::{HttpsClient, Reply};
pub use pki::{Issued, TestCa};

/// The name the API server checks the certificate against: `<service>.<namespace>.svc`.
pub const SERVICE_NAME: &str = "plexus-webhook.kube-system.svc";

pub struct WebhookBuilder {
    args: Vec<String>,
    config: Vec<String>,
    rust_log: String,
}

impl WebhookBuilder {
    /// An extra argument of `plexusd webhook`, e.g. `--pod-policy=deny`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// A line of plexusd's config file, e.g. `namespaceIsolation: true`.
    pub fn config_line(mut self, line: &str) -> Self {
        self.config.push(line.to_owned());
        self
    }

    /// The webhook's `RUST_LOG`; `debug` unless set.
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_owned();
        self
    }

    pub fn start(self) -> Webhook {
        let netns = Netns::new("hook");
        let dir = tempfile::Builder::new()
            .prefix("plexus-webhook-")
            .tempdir()
            .expect("temp dir");
        let cluster = Cluster::for_node(&netns.path());
        let token = dir.path().join("token");
        std::fs::write(&token, "token-1").expect("write token");
        if let Some(api) = cluster.fixture() {
            api.set_token(Some("token-1"));
        }
        let kubeconfig = cluster.write_kubeconfig(&dir.path().join("kubeconfig"), &token);
        let mut config = format!("kubeconfig: {}\n", kubeconfig.display());
        for line in &self.config {
            config.push_str(line);
            config.push('\n');
        }
        std::fs::write(dir.path().join("plexusd.yaml"), config).expect("write config");

        let ca = TestCa::new("plexus-test-ca");
        let port = free_port(&netns.path());
        let client = HttpsClient::new(&netns.path(), port, SERVICE_NAME, &ca.der());
        let mut webhook = Webhook {
            process: None,
            client,
            ca,
            args: self.args,
            rust_log: self.rust_log,
            port,
            dir,
            cluster,
            netns,
        };
        let issued = webhook.ca.issue(&[SERVICE_NAME]);
        webhook.install_certificate(&issued);
        webhook.start_process();
        webhook
    }
}

pub struct Webhook {
    process: Option<Child>,
    client: HttpsClient,
    /// The CA that signed the certificate the webhook started with.
    pub ca: TestCa,
    args: Vec<String>,
    rust_log: String,
    port: u16,
    dir: TempDir,
    /// Dropped after the process is stopped, and before the namespace.
    cluster: Cluster,
    pub netns: Netns,
}

/// A port nobody listens on inside the namespace (the webhook binds it right after).
fn free_port(netns_path: &str) -> u16 {
    crate::apiserver::in_netns(netns_path, || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    })
    .expect("a free port")
}

impl Webhook {
    pub fn builder() -> WebhookBuilder {
        WebhookBuilder {
            args: Vec::new(),
            config: Vec::new(),
            rust_log: "debug".to_owned(),
        }
    }

    pub fn client(&self) -> &HttpsClient {
        &self.client
    }

    /// Where the NADs live that pods are checked against.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// Puts a certificate and key where the webhook reads them, the way kubelet updates a
    /// Secret volume: a new directory of files, then one rename of the `..data` symlink that
    /// `tls.crt` and `tls.key` point through, so a reader never sees half an update.
    pub fn install_certificate(&self, issued: &Issued) {
        self.install_files(&issued.cert_pem, &issued.key_pem);
    }

    /// As [`install_certificate`](Self::install_certificate), with any bytes.
    pub fn install_files(&self, cert: &str, key: &str) {
        use std::os::unix::fs::symlink;
        let tls = self.tls_dir();
        std::fs::create_dir_all(&tls).expect("tls dir");
        let version = tls.join(format!("..{}", crate::unique("v")));
        std::fs::create_dir(&version).expect("version dir");
        std::fs::write(version.join("tls.crt"), cert).expect("write cert");
        std::fs::write(version.join("tls.key"), key).expect("write key");
        let staging = tls.join("..data_tmp");
        let _ = std::fs::remove_file(&staging);
        symlink(version.file_name().expect("name"), &staging).expect("symlink");
        std::fs::rename(&staging, tls.join("..data")).expect("swap ..data");
        for file in ["tls.crt", "tls.key"] {
            let link = tls.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(file), &link).expect("symlink file");
            }
        }
    }

    fn start_process(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("webhook.log")).expect("log file");
        let tls = self.tls_dir();
        let child = Command::new("ip")
            .args(["netns", "exec", self.netns.name()])
            .arg(binaries::plexusd())
            .arg("--config")
            .arg(self.dir.path().join("plexusd.yaml"))
            .arg("webhook")
            .arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--cert={}", tls.join("tls.crt").display()))
            .arg(format!("--key={}", tls.join("tls.key").display()))
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start plexusd webhook");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.process.as_mut().map(Child::try_wait) {
                panic!("plexusd webhook exited with {status}: {}", self.log());
            }
            if self
                .client
                .get("/healthz")
                .is_ok_and(|reply| reply.status == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("plexusd webhook never served /healthz: {}", self.log());
    }

    /// Whether the webhook process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("webhook.log")).unwrap_or_default()
    }

    /// POSTs a review; the reply's status and JSON.
    pub fn review(&self, body: &Value) -> Reply {
        self.client
            .post("/validate", body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("review failed: {e}\n{}", self.log()))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(child) = self.process.take() {
            crate::stop(child, Duration::from_secs(5));
        }
    }
}
