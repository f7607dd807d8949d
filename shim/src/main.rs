//! `plexus`: the CNI binary the container runtime executes for every pod.
//!
//! It holds no logic: it forwards the call to plexusd over a unix socket, prints the daemon's
//! reply and exits with CNI's exit status. Only VERSION, and the failures that keep a call
//! from reaching the daemon, are answered here. It runs once per CNI call, so it must start
//! fast: as shipped it has no C library at all (`nolibc`), only core, alloc and serde_json.
//!
//! Exit status: 0 on success; 1 with a CNI error object on stdout otherwise. Logs go to stderr.

// Entered at C's `main` (`entry`) or at `_start` (`nolibc`). Tests keep the harness's.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(all(plexus_nolibc, not(test)), no_std)]

extern crate alloc;

mod cni_error;
#[cfg(all(not(plexus_nolibc), not(test)))]
mod entry;
mod http;
mod invocation;
mod netconf;
#[cfg(all(plexus_nolibc, not(test)))]
mod nolibc;
mod process;
mod sys;

use core::time::Duration;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::json;

use cni_error::{CniError, Code};
use invocation::{Command, Env};
use netconf::{DEFAULT_CNI_VERSION, NetConf};

/// The CNI versions plexusd can speak and convert results to (SPECS §9, §12).
const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

const ENDPOINT: &str = "/v1/cni";

const TIMEOUTS: http::Timeouts = http::Timeouts {
    // A live daemon accepts at once; waiting longer only delays the runtime's retry.
    connect: Duration::from_secs(2),
    // Generous: delegates (DHCP, slow IPAM) can take tens of seconds, and the runtime has its
    // own deadline. This only stops a hung daemon from holding the shim forever.
    io: Duration::from_secs(10 * 60),
};

/// What goes to stdout, and whether the call succeeded.
struct Output {
    stdout: Vec<u8>,
    success: bool,
}

fn run(env: Env, stdin: sys::Result<Vec<u8>>) -> Output {
    let raw = match stdin {
        Ok(raw) => raw,
        Err(err) => {
            let err = CniError::new(
                Code::Io,
                "reading the network config from stdin failed",
                err.to_string(),
            );
            return failure(&err, DEFAULT_CNI_VERSION);
        }
    };
    let conf = NetConf::parse(&raw);
    let outcome = match Command::from_env(env) {
        Ok(Command::Version) => Ok(Output {
            stdout: version_reply(conf.cni_version()),
            success: true,
        }),
        Ok(Command::Forward(command)) => forward(&command, env, raw, &conf),
        Err(err) => Err(err),
    };
    outcome.unwrap_or_else(|err| failure(&err, conf.cni_version()))
}

/// Sends the call to plexusd. Its reply is printed unchanged: a CNI result or error object,
/// with the HTTP status standing for the exit status.
fn forward(command: &str, env: Env, raw: Vec<u8>, conf: &NetConf) -> Result<Output, CniError> {
    let config = String::from_utf8(raw).map_err(|err| {
        CniError::new(
            Code::Decoding,
            "the network config on stdin is not valid UTF-8",
            err.to_string(),
        )
    })?;
    let body = invocation::request_body(command, env, &config)?;
    let socket = conf.socket_path();
    let response = http::post_json(socket, ENDPOINT, body.as_bytes(), &TIMEOUTS)
        .map_err(|err| transport_error(command, socket, &err))?;
    // A failure must reach the runtime as an error object; printing nothing would leave it
    // with an unexplained non-zero exit.
    if !response.is_success() && response.body.is_empty() {
        let details = format!("HTTP status {} with an empty body", response.status);
        return Err(bad_reply(command, socket, &details));
    }
    Ok(Output {
        success: response.is_success(),
        stdout: response.body,
    })
}

fn transport_error(command: &str, socket: &str, err: &http::Error) -> CniError {
    if err.is_unreachable() {
        return CniError::new(
            unavailable_code(command),
            "plexusd is not reachable",
            format!("unix socket {socket}: {err}"),
        );
    }
    bad_reply(command, socket, &err.to_string())
}

fn bad_reply(command: &str, socket: &str, details: &str) -> CniError {
    CniError::new(
        unavailable_code(command),
        "no valid reply from plexusd",
        format!("unix socket {socket}: {details}"),
    )
}

/// A daemon that cannot be asked is transient (11, the runtime retries), except for STATUS,
/// whose answer must be one of its own codes: 50, cannot serve ADD (SPECS §7).
fn unavailable_code(command: &str) -> Code {
    if command == "STATUS" {
        Code::NotAvailable
    } else {
        Code::TryAgainLater
    }
}

/// The VERSION answer echoes the caller's version, as the spec asks (skel echoes its own).
fn version_reply(cni_version: &str) -> Vec<u8> {
    json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS })
        .to_string()
        .into_bytes()
}

fn failure(err: &CniError, cni_version: &str) -> Output {
    Output {
        stdout: err.to_json(cni_version),
        success: false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> (Value, bool) {
        let env = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_bytes().to_vec())
        };
        let output = run(&env, Ok(stdin.as_bytes().to_vec()));
        (
            serde_json::from_slice(&output.stdout).unwrap(),
            output.success,
        )
    }

    #[test]
    fn version_echoes_stdin_version_or_defaults() {
        for (stdin, expected) in [
            (r#"{"cniVersion":"0.4.0"}"#, "0.4.0"),
            ("", "1.1.0"),
            ("garbage", "1.1.0"),
        ] {
            let (reply, success) = run_with(&[("CNI_COMMAND", "VERSION")], stdin);
            assert!(success);
            assert_eq!(
                reply,
                json!({ "cniVersion": expected, "supportedVersions": SUPPORTED_VERSIONS })
            );
        }
    }

    #[test]
    fn failures_carry_the_stdin_version() {
        let (reply, success) = run_with(&[], r#"{"cniVersion":"1.0.0"}"#);
        assert!(!success);
        assert_eq!(reply["cniVersion"], "1.0.0");
        assert_eq!(reply["code"], 4);
    }

    #[test]
    fn unreadable_stdin_is_code_5() {
        let env = |_: &str| Some(b"ADD".to_vec());
        let output = run(&env, Err(sys::Errno(libc::EIO)));
        let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(!output.success);
        assert_eq!(reply["code"], 5);
        assert_eq!(reply["details"], "Input/output error (os error 5)");
    }

    #[test]
    fn non_utf8_stdin_is_code_6() {
        let env = |_: &str| Some(b"ADD".to_vec());
        let output = run(&env, Ok(b"{\"name\":\"\xff\"}".to_vec()));
        let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(!output.success);
        assert_eq!(reply["code"], 6);
    }

    #[test]
    fn status_reports_not_available_and_the_rest_try_again() {
        assert_eq!(unavailable_code("STATUS"), Code::NotAvailable);
        for command in ["ADD", "DEL", "CHECK", "GC"] {
            assert_eq!(unavailable_code(command), Code::TryAgainLater);
        }
    }
}
