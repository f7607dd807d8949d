//! Runs the real `plexus` binary exactly as a container runtime does.

use std::process::Command;

use serde_json::Value;

/// What the shim printed and how it exited.
#[derive(Debug, Clone)]
pub struct ShimOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl ShimOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// stdout as JSON (a result or an error object).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("shim stdout is not JSON ({e}): {self:?}"))
    }

    /// The error object, asserting the call failed.
    pub fn error(&self) -> Value {
        assert!(!self.success(), "expected a failure, got {self:?}");
        self.json()
    }

    /// The result, asserting the call succeeded.
    pub fn result(&self) -> Value {
        assert!(self.success(), "expected success, got {self:?}");
        self.json()
    }
}

/// The CNI environment of one call.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

pub fn exec(env: &CniEnv, stdin: &str) -> ShimOutput {
    exec_at(&crate::binaries::shim(), env, stdin)
}

/// Runs the shim at `binary` (one installed into a CNI bin dir, say) as a runtime does.
pub fn exec_at(binary: &std::path::Path, env: &CniEnv, stdin: &str) -> ShimOutput {
    exec_with(Command::new(binary), env, stdin)
}

/// As [`exec`], with the shim running as `uid` (a runtime, or anyone else, that is not root).
pub fn exec_as(uid: u32, env: &CniEnv, stdin: &str) -> ShimOutput {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(crate::binaries::shim());
    command.uid(uid).gid(uid);
    exec_with(command, env, stdin)
}

fn exec_with(mut command: Command, env: &CniEnv, stdin: &str) -> ShimOutput {
    command
        .env_clear()
        .env("CNI_COMMAND", &env.command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env("CNI_PATH", &env.path);
    let output = crate::run_with_stdin(command, stdin);
    ShimOutput {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        exit_code: output.status.code().unwrap_or(-1),
    }
}
