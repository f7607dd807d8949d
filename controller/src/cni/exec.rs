//! Runs delegate plugins: finds the binary, builds the environment, enforces the deadline.
//!
//! This is the only place in plexusd that executes a plugin, so that every delegate gets the
//! same environment rules (CNI §3, SPECS §3) and the same failure reporting.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command as ProcessCommand};

use super::{CniError, Command};
use crate::cni::CniVersion;

/// One call of one plugin binary.
#[derive(Debug, Clone)]
pub struct DelegateCall {
    pub plugin_type: String,
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub cni_args: String,
    pub stdin: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("plugin {plugin:?} was not found in {dirs}")]
    NotFound { plugin: String, dirs: String },
    #[error("could not start plugin {plugin}: {source}")]
    Spawn { plugin: String, source: io::Error },
    #[error("plugin {plugin} did not finish within {after:?} and was killed")]
    Timeout { plugin: String, after: Duration, stderr: String },
    #[error("plugin {plugin} failed: {error}")]
    Failed { plugin: String, error: CniError, stderr: String },
}

impl ExecError {
    /// The CNI code to pass up: a delegate's own code is kept (SPECS §13).
    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Failed { error, .. } => error.code,
            Self::Timeout { .. } => super::code::TRY_AGAIN_LATER,
            Self::NotFound { .. } | Self::Spawn { .. } => super::code::INVALID_CONFIG,
        }
    }

    /// What the plugin wrote on stderr, for the error details.
    pub fn stderr(&self) -> &str {
        match self {
            Self::Timeout { stderr, .. } | Self::Failed { stderr, .. } => stderr,
            Self::NotFound { .. } | Self::Spawn { .. } => "",
        }
    }
}

/// Runs plugins. A trait so that ordering and rollback logic can be unit-tested with a recorder.
pub trait Executor: Send + Sync {
    /// Runs the call; `Ok` carries the plugin's stdout.
    fn run(&self, call: DelegateCall) -> BoxFuture<'_, Result<Vec<u8>, ExecError>>;

    /// The versions a plugin speaks (its VERSION answer), cached per binary.
    fn supported_versions<'a>(&'a self, plugin_type: &'a str) -> BoxFuture<'a, Vec<String>>;
}

/// Executes the real binaries found in the configured plugin directories.
pub struct PluginExecutor {
    bin_dirs: Vec<PathBuf>,
    cni_path: String,
    deadline: Duration,
    versions: Mutex<HashMap<String, Arc<Vec<String>>>>,
}

/// How often and how long to retry an exec that hit ETXTBSY (the binary is being replaced);
/// libcni does the same.
const TEXT_BUSY_RETRIES: u32 = 5;
const TEXT_BUSY_PAUSE: Duration = Duration::from_secs(1);

impl PluginExecutor {
    pub fn new(bin_dirs: Vec<PathBuf>, deadline: Duration) -> Self {
        let cni_path = bin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":");
        Self { bin_dirs, cni_path, deadline, versions: Mutex::new(HashMap::new()) }
    }

    /// The first regular, executable file named `plugin_type` in the plugin directories.
    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, ExecError> {
        // Config parsing already refuses separators; this keeps the executor safe on its own.
        let plain = !plugin_type.is_empty()
            && !plugin_type.contains(['/', '\\'])
            && plugin_type != "."
            && plugin_type != "..";
        plain
            .then(|| self.bin_dirs.iter().map(|dir| dir.join(plugin_type)).find(|p| is_executable_file(p)))
            .flatten()
            .ok_or_else(|| ExecError::NotFound { plugin: plugin_type.to_owned(), dirs: self.cni_path.clone() })
    }

    async fn exec(&self, call: &DelegateCall) -> Result<Vec<u8>, ExecError> {
        let binary = self.find(&call.plugin_type)?;
        let mut attempt = 0;
        let child = loop {
            match self.spawn(&binary, call) {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < TEXT_BUSY_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(TEXT_BUSY_PAUSE).await;
                }
                other => break other,
            }
        }
        .map_err(|source| ExecError::Spawn { plugin: call.plugin_type.clone(), source })?;
        self.wait(child, call).await
    }

    fn spawn(&self, binary: &Path, call: &DelegateCall) -> io::Result<Child> {
        let mut command = ProcessCommand::new(binary);
        command
            // Nothing from plexusd's own environment may leak into a delegate (SPECS §3).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
            .env("CNI_COMMAND", call.command.as_str())
            .env("CNI_CONTAINERID", &call.container_id)
            .env("CNI_NETNS", &call.netns)
            .env("CNI_IFNAME", &call.ifname)
            .env("CNI_ARGS", &call.cni_args)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the deadline can kill whatever the plugin started too.
            .process_group(0)
            .kill_on_drop(true);
        command.spawn()
    }

    async fn wait(&self, mut child: Child, call: &DelegateCall) -> Result<Vec<u8>, ExecError> {
        let group = child.id().map(|pid| Pid::from_raw(pid as i32));
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let io = async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    // A plugin may exit without reading its stdin; that is its business.
                    let _ = stdin.write_all(&call.stdin).await;
                }
            };
            let (_, out, err, status) = tokio::join!(write, read_all(stdout), read_all(stderr), child.wait());
            (out, err, status)
        };
        match tokio::time::timeout(self.deadline, io).await {
            Ok((stdout, stderr, status)) => {
                let stderr = String::from_utf8_lossy(&stderr).into_owned();
                let success = status.as_ref().map(|s| s.success()).unwrap_or(false);
                if success {
                    if !stderr.is_empty() {
                        tracing::debug!(plugin = %call.plugin_type, %stderr, "delegate stderr");
                    }
                    return Ok(stdout);
                }
                let error = CniError::from_stdout(&stdout).unwrap_or_else(|| unstructured_failure(&stdout, &status));
                Err(ExecError::Failed { plugin: call.plugin_type.clone(), error, stderr })
            }
            Err(_) => {
                if let Some(group) = group {
                    let _ = killpg(group, Signal::SIGKILL);
                }
                Err(ExecError::Timeout { plugin: call.plugin_type.clone(), after: self.deadline, stderr: String::new() })
            }
        }
    }
}

fn unstructured_failure(stdout: &[u8], status: &io::Result<std::process::ExitStatus>) -> CniError {
    let how = match status {
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    };
    CniError::new(super::code::INTERNAL, format!("plugin failed ({how}) without a CNI error"), String::from_utf8_lossy(stdout))
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut buffer = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut buffer).await;
    }
    buffer
}

/// `supportedVersions` of a VERSION answer; anything unreadable counts as no version.
fn parse_version_answer(stdout: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "supportedVersions", default)]
        supported: Vec<String>,
    }
    serde_json::from_slice::<Answer>(stdout).map(|a| a.supported).unwrap_or_default()
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

impl Executor for PluginExecutor {
    fn run(&self, call: DelegateCall) -> BoxFuture<'_, Result<Vec<u8>, ExecError>> {
        Box::pin(async move {
            let started = Instant::now();
            let outcome = self.exec(&call).await;
            tracing::debug!(
                plugin = %call.plugin_type,
                command = %call.command,
                ifname = %call.ifname,
                elapsed_us = started.elapsed().as_micros() as u64,
                ok = outcome.is_ok(),
                "delegate finished"
            );
            outcome
        })
    }

    fn supported_versions<'a>(&'a self, plugin_type: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            if let Some(known) = self.versions.lock().ok().and_then(|v| v.get(plugin_type).cloned()) {
                return known.as_ref().clone();
            }
            let call = DelegateCall {
                plugin_type: plugin_type.to_owned(),
                command: Command::Version,
                container_id: String::new(),
                netns: String::new(),
                ifname: String::new(),
                cni_args: String::new(),
                stdin: format!(r#"{{"cniVersion":"{}"}}"#, CniVersion::LATEST).into_bytes(),
            };
            // libcni takes a plugin that cannot answer VERSION to speak only the oldest version.
            let supported = match self.exec(&call).await {
                Ok(stdout) => parse_version_answer(&stdout),
                Err(e) => {
                    tracing::warn!(plugin = plugin_type, error = %e, "VERSION probe failed");
                    Vec::new()
                }
            };
            if let Ok(mut cache) = self.versions.lock() {
                cache.insert(plugin_type.to_owned(), Arc::new(supported.clone()));
            }
            supported
        })
    }
}
