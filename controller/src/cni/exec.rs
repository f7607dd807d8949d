//! Runs delegate plugins: finds the binary, builds the environment, enforces the deadline.
//!
//! This is the only place in plexusd that executes a plugin, so that every delegate gets the
//! same environment rules (CNI §3, SPECS §3) and the same failure reporting.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
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

impl DelegateCall {
    /// Whether `other` would start the same process: the same binary with the same
    /// environment. Only the stdin may differ.
    pub fn same_process(&self, other: &Self) -> bool {
        self.plugin_type == other.plugin_type
            && self.command == other.command
            && self.container_id == other.container_id
            && self.netns == other.netns
            && self.ifname == other.ifname
            && self.cni_args == other.cni_args
            && self.network == other.network
    }
}

/// What a plugin's run resolves to: its stdout.
pub type Outcome<'a> = BoxFuture<'a, Result<Vec<u8>, ExecError>>;

/// A plugin call waiting for its config, whose process may already be running.
/// [`Pending::run`] feeds it the config and waits for its answer; a `Pending` dropped unfed
/// kills whatever it started, which cannot have done anything yet.
pub struct Pending<'a> {
    feed: Box<dyn FnOnce(Vec<u8>, Instant) -> Outcome<'a> + Send + 'a>,
}

impl<'a> Pending<'a> {
    /// `feed` gets the config and the instant the plugin's turn came.
    pub fn new(feed: impl FnOnce(Vec<u8>, Instant) -> Outcome<'a> + Send + 'a) -> Self {
        Self {
            feed: Box::new(feed),
        }
    }

    /// Gives the plugin `stdin` (its config) and runs it to the end; its turn is now.
    pub fn run(self, stdin: Vec<u8>) -> Outcome<'a> {
        self.run_since(stdin, Instant::now())
    }

    /// [`Pending::run`] for a plugin whose turn came at `turn`, earlier: the first of a
    /// sequence, whose turn came when the sequence began, however long its config took.
    /// A delegate's time in the metrics counts from its turn.
    pub fn run_since(self, stdin: Vec<u8>, turn: Instant) -> Outcome<'a> {
        (self.feed)(stdin, turn)
    }
}

/// Runs `call` by [`Executor::start`]ing it and feeding it at once: the `run` of executors
/// whose work is in `start`.
pub fn run_started(exec: &dyn Executor, mut call: DelegateCall) -> Outcome<'_> {
    let stdin = std::mem::take(&mut call.stdin);
    exec.start(call).run(stdin)
}

/// Runs plugins. A trait so that ordering and rollback logic can be unit-tested with a recorder.
pub trait Executor: Send + Sync {
    /// Runs the call; `Ok` carries the plugin's stdout.
    fn run(&self, call: DelegateCall) -> Outcome<'_>;

    /// Prepares `call` (its `stdin` is not used) to run once it is given its config.
    ///
    /// An executor may start the process at once: a plugin does nothing before it has read
    /// its config on stdin, so whatever it waits for meanwhile (the ADD's intent reaching the
    /// disk, the plugin before it in the pod's sequence) overlaps its exec and start-up
    /// instead of preceding them. This default starts nothing before it is fed.
    fn start(&self, call: DelegateCall) -> Pending<'_> {
        Pending::new(move |stdin, _turn| self.run(DelegateCall { stdin, ..call }))
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
    /// Plugins started ahead of their turn and not yet fed (`Executor::start`)...
    ahead: AtomicUsize,
    /// ...and how many may be at once: one per CPU, 0 with `delegateStartAhead: false`. A
    /// start-up overlaps something only while a CPU is free, and in a burst of pods none is:
    /// there every process started early would only hold its memory and take CPU from the
    /// plugins that are running.
    ahead_limit: usize,
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
            ahead: AtomicUsize::new(0),
            ahead_limit: cpus(),
        }
    }

    /// Whether a plugin's process may start before its turn, waiting for its config
    /// (`delegateStartAhead`). Off, no plugin process exists before the plugin is given its
    /// config, for plugins that act on their environment before reading it.
    pub fn start_ahead(mut self, start_ahead: bool) -> Self {
        self.ahead_limit = if start_ahead { cpus() } else { 0 };
        self
    }

    /// A place for one more plugin started ahead, if there is one.
    fn ahead_slot(&self) -> Option<AheadSlot<'_>> {
        self.ahead
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.ahead_limit).then_some(waiting + 1)
            })
            .ok()
            .map(|_| AheadSlot(&self.ahead))
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

    /// Runs `call` and logs how long it took; `started` is a process already spawned for it.
    async fn run_logged(
        &self,
        call: DelegateCall,
        started: Unfed<'_>,
    ) -> Result<Vec<u8>, ExecError> {
        let began = Instant::now();
        let outcome = match started.feed() {
            Some(Started { mut child, slot }) => {
                // Fed: its place is free, and from now on the deadline kills it.
                drop(slot);
                self.wait(&mut child, &call).await
            }
            None => self.exec(&call).await,
        };
        tracing::debug!(
            plugin = %call.plugin_type,
            command = %call.command,
            ifname = %call.ifname,
            elapsed_us = began.elapsed().as_micros() as u64,
            ok = outcome.is_ok(),
            "delegate finished"
        );
        outcome
    }

    async fn exec(&self, call: &DelegateCall) -> Result<Vec<u8>, ExecError> {
        let binary = self.find(&call.plugin_type)?;
        let mut attempt = 0;
        let mut child = loop {
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
        self.wait(&mut child, call).await
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

    /// Feeds the plugin its stdin, collects its output and kills its process group at the
    /// deadline.
    async fn wait(&self, child: &mut Child, call: &DelegateCall) -> Result<Vec<u8>, ExecError> {
        let group = child.id().map(|pid| Pid::from_raw(pid as i32));
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let io = async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    // A plugin may exit without reading its stdin; that is its business.
                    let _ = stdin.write_all(&call.stdin).await;
                }
            };
            let ((), out, err, status) =
                tokio::join!(write, read_all(stdout), read_all(stderr), child.wait());
            (out, err, status)
        };
        tokio::pin!(io);
        tokio::select! {
            (stdout, stderr, status) = &mut io => {
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
            Ok((_, stderr, _)) => String::from_utf8_lossy(&stderr).into_owned(),
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

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// One of the executor's places for a plugin started ahead, given back when the plugin is
/// fed or killed.
struct AheadSlot<'a>(&'a AtomicUsize);

impl Drop for AheadSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A plugin's process started ahead of its turn, holding its place until it is fed.
struct Started<'a> {
    child: Child,
    slot: AheadSlot<'a>,
}

/// What `start` started, if anything, until it is fed. Dropped before that, the plugin is
/// killed with its process group: it has read nothing, so it has done nothing. Once fed, the
/// deadline is what kills it.
struct Unfed<'a>(Option<Started<'a>>);

impl<'a> Unfed<'a> {
    fn feed(mut self) -> Option<Started<'a>> {
        self.0.take()
    }
}

impl Drop for Unfed<'_> {
    fn drop(&mut self) {
        let Some(Started { mut child, slot }) = self.0.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        drop(slot);
        // Waited for, not dropped: tokio hands a child dropped unreaped to its orphan queue,
        // which installs a SIGCHLD handler that from then on wakes the runtime at every
        // delegate's exit as well as its pidfd does.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

impl Executor for PluginExecutor {
    fn run(&self, call: DelegateCall) -> Outcome<'_> {
        Box::pin(self.run_logged(call, Unfed(None)))
    }

    /// Spawns the plugin at once when a place for it is free, to be fed its config later;
    /// otherwise it is spawned at its turn. A plugin that cannot be spawned now is tried again
    /// at its turn, which reports the error (or waits out a binary being replaced).
    fn start(&self, call: DelegateCall) -> Pending<'_> {
        let started = Unfed(self.ahead_slot().and_then(|slot| {
            let binary = self.find(&call.plugin_type).ok()?;
            let child = self.spawn(&binary, &call).ok()?;
            Some(Started { child, slot })
        }));
        Pending::new(move |stdin, _turn| {
            Box::pin(self.run_logged(DelegateCall { stdin, ..call }, started))
        })
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

    /// Waits up to 5 s for `path` to exist (a script got that far).
    async fn appears(path: &Path) -> bool {
        for _ in 0..500 {
            if path.exists() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Whether process `pid` is gone (or a zombie waiting to be reaped).
    fn dead(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn a_plugin_started_ahead_runs_only_once_fed_and_reads_its_config_then() {
        let plugins = Plugins::new(1);
        let (started, marker) = (
            plugins.dirs[0].path().join("started"),
            plugins.dirs[0].path().join("read"),
        );
        plugins.add(
            0,
            "ahead",
            &format!(
                "touch {}; cat > {}; cat {}",
                started.display(),
                marker.display(),
                marker.display()
            ),
        );
        let executor = plugins.executor(Duration::from_secs(5));
        let mut ahead = call("ahead");
        let stdin = std::mem::take(&mut ahead.stdin);
        let pending = executor.start(ahead);
        // Started, but without its config it can only wait.
        assert!(appears(&started).await, "the plugin was not started ahead");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(std::fs::read(&marker).unwrap_or_default(), b"");
        assert_eq!(
            pending.run(stdin).await.unwrap(),
            br#"{"cniVersion":"1.0.0"}"#
        );
    }

    #[tokio::test]
    async fn a_plugin_started_ahead_and_dropped_unfed_is_killed_with_its_group_having_done_nothing()
    {
        let plugins = Plugins::new(1);
        let dir = plugins.dirs[0].path();
        let (pids, acted) = (dir.join("pids"), dir.join("acted"));
        plugins.add(
            0,
            "ahead",
            &format!(
                "sleep 300 & echo $$ $! > {}.tmp; mv {0}.tmp {0}; cat >/dev/null; touch {}",
                pids.display(),
                acted.display()
            ),
        );
        let executor = plugins.executor(Duration::from_secs(5));
        let pending = executor.start(call("ahead"));
        assert!(appears(&pids).await, "the plugin was not started ahead");
        drop(pending);
        let pids = std::fs::read_to_string(&pids).unwrap();
        let gone = async {
            while !pids.split_whitespace().all(dead) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(5), gone)
                .await
                .is_ok(),
            "the plugin or its child ({pids}) survived being dropped unfed"
        );
        assert!(!acted.exists(), "a plugin that was never fed acted");
        assert!(
            !catches_sigchld(),
            "the killed plugin went to tokio's orphan queue, whose SIGCHLD handler wakes the runtime at every later exit"
        );
    }

    /// Whether this process has a handler for SIGCHLD (nextest runs each test in a process of
    /// its own).
    fn catches_sigchld() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let caught = status
            .lines()
            .find_map(|line| line.strip_prefix("SigCgt:"))
            .unwrap();
        let mask = u64::from_str_radix(caught.trim(), 16).unwrap();
        mask & (1 << (libc::SIGCHLD - 1)) != 0
    }

    #[tokio::test]
    async fn no_more_plugins_wait_ahead_than_there_are_places_and_a_fed_one_frees_its_place() {
        let plugins = Plugins::new(1);
        let dir = plugins.dirs[0].path().to_owned();
        plugins.add(
            0,
            "ahead",
            &format!("touch {}/started-$CNI_IFNAME; cat", dir.display()),
        );
        let mut executor = plugins.executor(Duration::from_secs(5));
        executor.ahead_limit = 1;
        let on = |ifname: &str| DelegateCall {
            ifname: ifname.into(),
            stdin: Vec::new(),
            ..call("ahead")
        };
        let first = executor.start(on("net1"));
        let second = executor.start(on("net2"));
        assert!(appears(&dir.join("started-net1")).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !dir.join("started-net2").exists(),
            "a second plugin was started ahead with one place"
        );
        assert_eq!(first.run(b"one".to_vec()).await.unwrap(), b"one");
        // Fed, net1 gave its place back: the next start takes it.
        let third = executor.start(on("net3"));
        assert!(appears(&dir.join("started-net3")).await);
        assert_eq!(second.run(b"two".to_vec()).await.unwrap(), b"two");
        drop(third);
        assert_eq!(executor.ahead.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn with_start_ahead_off_nothing_runs_before_it_is_fed() {
        let plugins = Plugins::new(1);
        let started = plugins.dirs[0].path().join("started");
        plugins.add(0, "late", &format!("touch {}; cat", started.display()));
        let executor = plugins.executor(Duration::from_secs(5)).start_ahead(false);
        let mut late = call("late");
        let stdin = std::mem::take(&mut late.stdin);
        let pending = executor.start(late);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!started.exists(), "the plugin started before its turn");
        assert_eq!(
            pending.run(stdin).await.unwrap(),
            br#"{"cniVersion":"1.0.0"}"#
        );
        assert!(started.exists());
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
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            dead(&child.to_string())
        });
        assert!(gone, "the plugin's child {child} survived the deadline");
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
