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
use tokio::sync::oneshot;

use super::{CniError, Command};
use crate::cni::CniVersion;

/// One call of one plugin binary.
#[derive(Debug, Clone)]
pub struct DelegateCall {
    /// The network the call is for, as operators name it (for logs and metrics).
    pub network: String,
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
    Timeout {
        plugin: String,
        after: Duration,
        stderr: String,
    },
    #[error("plugin {plugin} failed: {error}")]
    Failed {
        plugin: String,
        error: CniError,
        stderr: String,
    },
    /// The plugin was started but never given its config: what it waited for said no.
    #[error("plugin {plugin} was stopped before it was given its config")]
    Held { plugin: String },
}

impl ExecError {
    /// The CNI code to pass up: a delegate's own code is kept (SPECS §13).
    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Failed { error, .. } => error.code,
            Self::Timeout { .. } => super::code::TRY_AGAIN_LATER,
            Self::NotFound { .. } | Self::Spawn { .. } => super::code::INVALID_CONFIG,
            Self::Held { .. } => super::code::IO_FAILURE,
        }
    }

    /// What the plugin wrote on stderr, for the error details.
    pub fn stderr(&self) -> &str {
        match self {
            Self::Timeout { stderr, .. } | Self::Failed { stderr, .. } => stderr,
            Self::NotFound { .. } | Self::Spawn { .. } | Self::Held { .. } => "",
        }
    }
}

/// Runs plugins. A trait so that ordering and rollback logic can be unit-tested with a recorder.
pub trait Executor: Send + Sync {
    /// Runs the call; `Ok` carries the plugin's stdout.
    fn run(&self, call: DelegateCall) -> BoxFuture<'_, Result<Vec<u8>, ExecError>>;

    /// Runs the call once `ready` says yes. A plugin does nothing before it has read its
    /// config on stdin, so an executor may start the process at once and hold back only its
    /// stdin: what `ready` waits for (the ADD's intent reaching the disk) then overlaps the
    /// exec. No (or a dropped sender) fails the call with [`ExecError::Held`], the plugin
    /// having been given nothing.
    fn run_when(
        &self,
        call: DelegateCall,
        ready: oneshot::Receiver<bool>,
    ) -> BoxFuture<'_, Result<Vec<u8>, ExecError>> {
        Box::pin(async move {
            if ready.await != Ok(true) {
                return Err(ExecError::Held {
                    plugin: call.plugin_type,
                });
            }
            self.run(call).await
        })
    }

    /// The versions a plugin speaks (its VERSION answer), cached per binary.
    fn supported_versions<'a>(&'a self, plugin_type: &'a str) -> BoxFuture<'a, Vec<String>>;
}

/// Executes the real binaries found in the configured plugin directories.
pub struct PluginExecutor {
    bin_dirs: Vec<PathBuf>,
    cni_path: String,
    deadline: Duration,
    versions: Mutex<HashMap<String, Arc<Vec<String>>>>,
    /// Who started the delegates, for a later plexusd to find those left running.
    owner: String,
}

/// How often and how long to retry an exec that hit ETXTBSY (the binary is being replaced);
/// libcni does the same.
const TEXT_BUSY_RETRIES: u32 = 5;
const TEXT_BUSY_PAUSE: Duration = Duration::from_secs(1);

impl PluginExecutor {
    pub fn new(bin_dirs: Vec<PathBuf>, deadline: Duration) -> Self {
        let cni_path = bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        Self {
            bin_dirs,
            cni_path,
            deadline,
            versions: Mutex::new(HashMap::new()),
            owner: String::new(),
        }
    }

    /// Marks every delegate as started by `owner` (plexusd's records directory), so that
    /// the next plexusd can find those still running after this one died.
    pub fn owned_by(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// The first regular, executable file named `plugin_type` in the plugin directories.
    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, ExecError> {
        // Config parsing already refuses separators; this keeps the executor safe on its own.
        let plain = !plugin_type.is_empty()
            && !plugin_type.contains(['/', '\\'])
            && plugin_type != "."
            && plugin_type != "..";
        plain
            .then(|| {
                self.bin_dirs
                    .iter()
                    .map(|dir| dir.join(plugin_type))
                    .find(|p| is_executable_file(p))
            })
            .flatten()
            .ok_or_else(|| ExecError::NotFound {
                plugin: plugin_type.to_owned(),
                dirs: self.cni_path.clone(),
            })
    }

    async fn run_logged(
        &self,
        call: DelegateCall,
        ready: Option<oneshot::Receiver<bool>>,
    ) -> Result<Vec<u8>, ExecError> {
        let started = Instant::now();
        let outcome = self.exec(&call, ready).await;
        tracing::debug!(
            plugin = %call.plugin_type,
            command = %call.command,
            ifname = %call.ifname,
            elapsed_us = started.elapsed().as_micros() as u64,
            ok = outcome.is_ok(),
            "delegate finished"
        );
        outcome
    }

    async fn exec(
        &self,
        call: &DelegateCall,
        ready: Option<oneshot::Receiver<bool>>,
    ) -> Result<Vec<u8>, ExecError> {
        let binary = self.find(&call.plugin_type)?;
        let mut attempt = 0;
        let child = loop {
            match self.spawn(&binary, call) {
                Err(e)
                    if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < TEXT_BUSY_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(TEXT_BUSY_PAUSE).await;
                }
                other => break other,
            }
        }
        .map_err(|source| ExecError::Spawn {
            plugin: call.plugin_type.clone(),
            source,
        })?;
        self.wait(child, call, ready).await
    }

    fn spawn(&self, binary: &Path, call: &DelegateCall) -> io::Result<Child> {
        let mut command = ProcessCommand::new(binary);
        command
            // Nothing from plexusd's own environment may leak into a delegate (SPECS §3).
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("CNI_COMMAND", call.command.as_str())
            .env("CNI_CONTAINERID", &call.container_id)
            .env("CNI_NETNS", &call.netns)
            .env("CNI_IFNAME", &call.ifname)
            .env("CNI_ARGS", &call.cni_args)
            .env("CNI_PATH", &self.cni_path)
            // So that a plexusd started after this one died can find it (`orphans`).
            .env(super::orphans::OWNER_VAR, &self.owner)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the deadline can kill whatever the plugin started too.
            .process_group(0)
            .kill_on_drop(true);
        command.spawn()
    }

    /// Feeds the plugin its stdin (once `ready` says yes, if given), collects its output and
    /// kills its process group at the deadline.
    async fn wait(
        &self,
        mut child: Child,
        call: &DelegateCall,
        ready: Option<oneshot::Receiver<bool>>,
    ) -> Result<Vec<u8>, ExecError> {
        let group = child.id().map(|pid| Pid::from_raw(pid as i32));
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let io = async {
            let write = async {
                if let Some(ready) = ready
                    && ready.await != Ok(true)
                {
                    // Killed before it read a byte: it cannot have done anything.
                    if let Some(group) = group {
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                    return false;
                }
                if let Some(mut stdin) = stdin {
                    // A plugin may exit without reading its stdin; that is its business.
                    let _ = stdin.write_all(&call.stdin).await;
                }
                true
            };
            let (fed, out, err, status) =
                tokio::join!(write, read_all(stdout), read_all(stderr), child.wait());
            (fed, out, err, status)
        };
        tokio::pin!(io);
        tokio::select! {
            (fed, stdout, stderr, status) = &mut io => {
                if !fed {
                    return Err(ExecError::Held { plugin: call.plugin_type.clone() });
                }
                return finish(call, stdout, &stderr, status);
            }
            () = tokio::time::sleep(self.deadline) => {}
        }
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        // With the whole group dead its pipes close, and what it wrote on stderr so far is
        // usually the best clue to why it hung. A process that left the group could keep
        // them open, hence the bound.
        let stderr = match tokio::time::timeout(KILL_GRACE, &mut io).await {
            Ok((_, _, stderr, _)) => String::from_utf8_lossy(&stderr).into_owned(),
            Err(_) => String::new(),
        };
        Err(ExecError::Timeout {
            plugin: call.plugin_type.clone(),
            after: self.deadline,
            stderr,
        })
    }
}

/// How long to wait for a killed plugin's pipes to close.
const KILL_GRACE: Duration = Duration::from_secs(2);

fn finish(
    call: &DelegateCall,
    stdout: Vec<u8>,
    stderr: &[u8],
    status: io::Result<std::process::ExitStatus>,
) -> Result<Vec<u8>, ExecError> {
    let stderr = String::from_utf8_lossy(stderr).into_owned();
    if status.as_ref().is_ok_and(|s| s.success()) {
        if !stderr.is_empty() {
            tracing::debug!(plugin = %call.plugin_type, %stderr, "delegate stderr");
        }
        return Ok(stdout);
    }
    let error =
        CniError::from_stdout(&stdout).unwrap_or_else(|| unstructured_failure(&stdout, &status));
    Err(ExecError::Failed {
        plugin: call.plugin_type.clone(),
        error,
        stderr,
    })
}

fn unstructured_failure(stdout: &[u8], status: &io::Result<std::process::ExitStatus>) -> CniError {
    let how = match status {
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    };
    CniError::new(
        super::code::INTERNAL,
        format!("plugin failed ({how}) without a CNI error"),
        String::from_utf8_lossy(stdout),
    )
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
    serde_json::from_slice::<Answer>(stdout)
        .map(|a| a.supported)
        .unwrap_or_default()
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Executor for PluginExecutor {
    fn run(&self, call: DelegateCall) -> BoxFuture<'_, Result<Vec<u8>, ExecError>> {
        Box::pin(self.run_logged(call, None))
    }

    /// Starts the plugin at once and gives it its stdin when `ready` says yes.
    fn run_when(
        &self,
        call: DelegateCall,
        ready: oneshot::Receiver<bool>,
    ) -> BoxFuture<'_, Result<Vec<u8>, ExecError>> {
        Box::pin(self.run_logged(call, Some(ready)))
    }

    fn supported_versions<'a>(&'a self, plugin_type: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            if let Some(known) = self
                .versions
                .lock()
                .ok()
                .and_then(|v| v.get(plugin_type).cloned())
            {
                return known.as_ref().clone();
            }
            let call = DelegateCall {
                network: String::new(),
                plugin_type: plugin_type.to_owned(),
                command: Command::Version,
                container_id: String::new(),
                netns: String::new(),
                ifname: String::new(),
                cni_args: String::new(),
                stdin: format!(r#"{{"cniVersion":"{}"}}"#, CniVersion::LATEST).into_bytes(),
            };
            // libcni takes a plugin that cannot answer VERSION to speak only the oldest version.
            let supported = match self.exec(&call, None).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A plugin directory with shell-script plugins.
    struct Plugins {
        dirs: Vec<tempfile::TempDir>,
    }

    impl Plugins {
        fn new(count: usize) -> Self {
            Self {
                dirs: (0..count).map(|_| tempfile::tempdir().unwrap()).collect(),
            }
        }

        fn add(&self, dir: usize, name: &str, script: &str) {
            let path = self.dirs[dir].path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn executor(&self, deadline: Duration) -> PluginExecutor {
            PluginExecutor::new(
                self.dirs.iter().map(|d| d.path().to_owned()).collect(),
                deadline,
            )
        }
    }

    fn call(plugin: &str) -> DelegateCall {
        DelegateCall {
            network: "tenant/data".into(),
            plugin_type: plugin.into(),
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "net1".into(),
            cni_args: "IgnoreUnknown=1;K8S_POD_NAME=web".into(),
            stdin: br#"{"cniVersion":"1.0.0"}"#.to_vec(),
        }
    }

    #[tokio::test]
    async fn a_plugin_in_the_second_directory_is_found_and_gets_exactly_the_cni_environment() {
        let plugins = Plugins::new(2);
        plugins.add(1, "echoenv", "cat >/dev/null; env | sort");
        // Something in plexusd's own environment must not reach the delegate.
        // SAFETY: set_var is unsafe in edition 2024 because of other threads reading the
        // environment; the variable is unique to this test and read by no one in-process.
        unsafe { std::env::set_var("PLEXUS_TEST_LEAK", "1") };
        let out = plugins
            .executor(Duration::from_secs(5))
            .run(call("echoenv"))
            .await
            .unwrap();
        let env = String::from_utf8(out).unwrap();
        for expected in [
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=c1",
            "CNI_NETNS=/run/netns/x",
            "CNI_IFNAME=net1",
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web",
        ] {
            assert!(
                env.lines().any(|l| l == expected),
                "{expected} missing in {env}"
            );
        }
        let path_line = env.lines().find(|l| l.starts_with("CNI_PATH=")).unwrap();
        assert_eq!(path_line.matches(':').count(), 1, "{path_line}");
        assert!(!env.contains("PLEXUS_TEST_LEAK"));
    }

    #[tokio::test]
    async fn a_held_plugin_runs_once_ready_says_yes_and_reads_its_config_only_then() {
        let plugins = Plugins::new(1);
        let marker = plugins.dirs[0].path().join("read");
        plugins.add(
            0,
            "held",
            &format!("cat > {}; cat {}", marker.display(), marker.display()),
        );
        let executor = plugins.executor(Duration::from_secs(5));
        let (go, ready) = oneshot::channel();
        let run = executor.run_when(call("held"), ready);
        tokio::pin!(run);
        // Started, but without its config it can only wait.
        tokio::select! {
            outcome = &mut run => panic!("finished before it was fed: {outcome:?}"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        assert_eq!(std::fs::read(&marker).unwrap_or_default(), b"");
        go.send(true).unwrap();
        assert_eq!(run.await.unwrap(), br#"{"cniVersion":"1.0.0"}"#);
    }

    #[tokio::test]
    async fn a_held_plugin_told_no_is_killed_unfed_and_did_nothing() {
        let plugins = Plugins::new(1);
        let marker = plugins.dirs[0].path().join("acted");
        plugins.add(
            0,
            "held",
            &format!("cat >/dev/null; touch {}", marker.display()),
        );
        let executor = plugins.executor(Duration::from_secs(5));
        for refusal in [Some(false), None] {
            let (go, ready) = oneshot::channel();
            match refusal {
                Some(answer) => go.send(answer).unwrap(),
                None => drop(go),
            }
            let err = executor.run_when(call("held"), ready).await.unwrap_err();
            assert!(matches!(err, ExecError::Held { .. }), "{err}");
            assert_eq!(err.cni_code(), crate::cni::code::IO_FAILURE);
        }
        assert!(!marker.exists(), "a plugin that was never fed acted");
    }

    #[tokio::test]
    async fn a_missing_plugin_names_the_type_and_the_search_path() {
        let plugins = Plugins::new(1);
        let err = plugins
            .executor(Duration::from_secs(5))
            .run(call("nope"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("nope") && text.contains(&plugins.dirs[0].path().display().to_string()),
            "{text}"
        );
        assert!(matches!(err, ExecError::NotFound { .. }));
    }

    #[tokio::test]
    async fn a_path_as_plugin_type_is_never_executed() {
        let plugins = Plugins::new(1);
        let err = plugins
            .executor(Duration::from_secs(5))
            .run(call("../../bin/true"))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_failing_plugin_keeps_its_code_and_its_stderr() {
        let plugins = Plugins::new(1);
        plugins.add(
            0,
            "fails",
            r#"cat >/dev/null; echo "disk on fire" >&2; echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"later"}'; exit 1"#,
        );
        let err = plugins
            .executor(Duration::from_secs(5))
            .run(call("fails"))
            .await
            .unwrap_err();
        assert_eq!(err.cni_code(), 11);
        assert_eq!(err.stderr().trim(), "disk on fire");
        assert!(err.to_string().contains("busy"));
    }

    #[tokio::test]
    async fn a_plugin_that_dies_without_an_error_object_is_reported_with_its_exit_status() {
        let plugins = Plugins::new(1);
        plugins.add(0, "crashes", "cat >/dev/null; echo garbage; exit 3");
        let err = plugins
            .executor(Duration::from_secs(5))
            .run(call("crashes"))
            .await
            .unwrap_err();
        assert_eq!(err.cni_code(), crate::cni::code::INTERNAL);
        assert!(err.to_string().contains("exit status: 3"), "{err}");
    }

    #[tokio::test]
    async fn a_plugin_past_its_deadline_is_killed_with_its_children_and_its_stderr_kept() {
        let plugins = Plugins::new(1);
        let pidfile = plugins.dirs[0].path().join("child.pid");
        plugins.add(
            0,
            "hangs",
            &format!(
                "echo 'waiting for godot' >&2; sleep 300 & echo $! > {}; wait",
                pidfile.display()
            ),
        );
        let err = plugins
            .executor(Duration::from_millis(300))
            .run(call("hangs"))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert_eq!(err.stderr().trim(), "waiting for godot");
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was in the plugin's process group, so it is gone too (or a zombie
        // waiting for whoever adopted it to reap it).
        let dead = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            std::fs::read_to_string(format!("/proc/{child}/stat")).map_or(true, |stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
        });
        assert!(dead, "the plugin's child {child} survived the deadline");
    }

    #[tokio::test]
    async fn version_answers_are_asked_once_and_cached() {
        let plugins = Plugins::new(1);
        let counter = plugins.dirs[0].path().join("count");
        plugins.add(
            0,
            "versioned",
            &format!(r#"cat >/dev/null; echo x >> {}; echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}'"#, counter.display()),
        );
        let executor = plugins.executor(Duration::from_secs(5));
        assert_eq!(
            executor.supported_versions("versioned").await,
            ["0.4.0", "1.0.0"]
        );
        assert_eq!(
            executor.supported_versions("versioned").await,
            ["0.4.0", "1.0.0"]
        );
        assert_eq!(
            std::fs::read_to_string(&counter).unwrap().lines().count(),
            1
        );
    }
}
