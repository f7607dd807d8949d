//! End-to-end tests: run the built `plexus` binary the way a container runtime does, against
//! no daemon or a fake one listening on a unix socket in a temporary directory. Every test runs
//! every build of the shim (`builds`) and expects the same answer from each.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::{fs, process};

use serde_json::{Value, json};

/// A scratch directory, removed on drop. Kept under /tmp: socket paths must stay under 108
/// bytes, which a deep target directory could exceed.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("plexus-shim-{}-{test}", process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("plexus.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The workspace's shim (over glibc) and, once `make` has built it, the one that ships
/// (target/static-shim: static, and without a C library on x86_64; shim/src/nolibc.rs).
fn builds() -> Vec<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_BIN_EXE_plexus"));
    let profile_dir = workspace.parent().unwrap();
    let shipped = profile_dir
        .parent()
        .unwrap()
        .join("static-shim")
        .join(profile_dir.file_name().unwrap())
        .join("plexus");
    let mut builds = vec![workspace];
    builds.extend(shipped.exists().then_some(shipped));
    builds
}

#[derive(Debug, PartialEq)]
struct Run {
    stdout: String,
    code: i32,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!("stdout is not JSON ({err}): {:?}", self.stdout);
        })
    }
}

/// Runs every build of the shim with exactly these variables (nothing leaks in from the test's
/// environment), one after the other, and returns their common answer.
fn shim(vars: &[(&str, &str)], stdin: &str) -> Run {
    let mut runs = builds()
        .into_iter()
        .map(|build| (run_build(&build, vars, stdin), build));
    let (first, first_build) = runs.next().unwrap();
    for (run, build) in runs {
        assert_eq!(
            run,
            first,
            "{} and {} answer differently (`make build` rebuilds the shipped one)",
            build.display(),
            first_build.display()
        );
    }
    first
}

fn run_build(build: &Path, vars: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(build)
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    Run {
        stdout: String::from_utf8(output.stdout).unwrap(),
        code: output.status.code().unwrap(),
    }
}

fn config_for(socket: &Path) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": "plexus",
        "type": "plexus",
        "socketPath": socket,
    })
    .to_string()
}

/// A reply framed by Content-Length.
fn reply(status: &str, body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// What the fake daemon received.
#[derive(Debug, PartialEq)]
struct Request {
    head: String,
    body: Value,
}

/// Accepts a connection from each build of the shim in turn, reads the whole request, then
/// writes `reply` (raw bytes, so tests control the framing) or, when `reply` is None, hangs up
/// without answering. Every build must have sent the same request.
fn fake_daemon(socket: &Path, reply: Option<String>) -> JoinHandle<Request> {
    let listener = UnixListener::bind(socket).unwrap();
    let calls = builds().len();
    thread::spawn(move || {
        let requests: Vec<Request> = (0..calls)
            .map(|_| answer(&listener, reply.as_deref()))
            .collect();
        for request in &requests[1..] {
            assert_eq!(
                request, &requests[0],
                "the shim's builds send different requests"
            );
        }
        requests.into_iter().next().unwrap()
    })
}

fn answer(listener: &UnixListener, reply: Option<&str>) -> Request {
    let (stream, _) = listener.accept().unwrap();
    let mut reader = BufReader::new(&stream);
    let mut head = String::new();
    loop {
        let before = head.len();
        reader.read_line(&mut head).unwrap();
        if head[before..] == *"\r\n" {
            break;
        }
    }
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    if let Some(reply) = reply {
        (&stream).write_all(reply.as_bytes()).unwrap();
    }
    Request {
        head,
        body: serde_json::from_slice(&body).unwrap(),
    }
}

const ADD_VARS: [(&str, &str); 6] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/var/run/netns/pod"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"),
    ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
];

#[test]
fn version_with_daemon_down_echoes_stdin_version() {
    let dir = TempDir::new("version");
    let run = shim(&[("CNI_COMMAND", "VERSION")], &config_for(&dir.socket()));
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout,
        r#"{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
    );
}

#[test]
fn version_with_empty_stdin_says_1_1_0() {
    let run = shim(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(run.code, 0);
    assert_eq!(run.json()["cniVersion"], "1.1.0");
}

#[test]
fn add_without_daemon_is_code_11_naming_the_socket() {
    let dir = TempDir::new("add-down");
    let socket = dir.socket();
    let run = shim(&ADD_VARS, &config_for(&socket));
    assert_eq!(run.code, 1);
    let err = run.json();
    assert_eq!(err["code"], 11);
    assert_eq!(err["cniVersion"], "1.0.0");
    assert_eq!(err["msg"], "plexusd is not reachable");
    let details = err["details"].as_str().unwrap();
    assert!(details.contains(socket.to_str().unwrap()), "{details}");
    assert!(details.contains("No such file or directory"), "{details}");
}

#[test]
fn status_without_daemon_is_code_50() {
    let dir = TempDir::new("status-down");
    let run = shim(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
        &config_for(&dir.socket()),
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.json()["code"], 50);
}

#[test]
fn missing_command_is_code_4_naming_cni_command() {
    let dir = TempDir::new("no-command");
    let run = shim(&ADD_VARS[1..], &config_for(&dir.socket()));
    assert_eq!(run.code, 1);
    let err = run.json();
    assert_eq!(err["code"], 4);
    assert!(err["msg"].as_str().unwrap().contains("CNI_COMMAND"));
}

#[test]
fn add_forwards_the_call_and_prints_the_reply_exactly() {
    let dir = TempDir::new("add-ok");
    let result = "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"eth0\"}]}\n";
    let daemon = fake_daemon(&dir.socket(), reply("200 OK", result));
    // Odd spacing and escapes: the config must arrive byte for byte, not re-serialized.
    let config = format!(
        "{{ \"cniVersion\": \"1.0.0\",\n  \"name\": \"caf\\u00e9\", \"socketPath\": {} }}\n",
        json!(dir.socket())
    );
    let run = shim(&ADD_VARS, &config);
    let request = daemon.join().unwrap();

    assert_eq!(run.code, 0);
    assert_eq!(run.stdout, result);
    assert!(
        request.head.starts_with("POST /v1/cni HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    for header in [
        "Host: plexus",
        "Content-Type: application/json",
        "Connection: close",
    ] {
        assert!(request.head.contains(header), "{header}: {}", request.head);
    }
    assert_eq!(
        request.body,
        json!({
            "command": "ADD",
            "containerId": "c0ffee",
            "netns": "/var/run/netns/pod",
            "ifname": "eth0",
            "args": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
            "path": "/opt/cni/bin:/usr/lib/cni",
            "config": config,
        })
    );
}

#[test]
fn unset_variables_and_unknown_commands_are_forwarded_as_is() {
    let dir = TempDir::new("frob");
    let daemon = fake_daemon(&dir.socket(), reply("204 No Content", ""));
    let run = shim(&[("CNI_COMMAND", "FROB")], &config_for(&dir.socket()));
    let request = daemon.join().unwrap();
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout, "");
    assert_eq!(request.body["command"], "FROB");
    for key in ["containerId", "netns", "ifname", "args", "path"] {
        assert_eq!(request.body[key], "", "{key}");
    }
}

#[test]
fn daemon_error_is_printed_with_exit_1() {
    let dir = TempDir::new("add-400");
    let error = r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"x"}"#;
    let daemon = fake_daemon(&dir.socket(), reply("400 Bad Request", error));
    let run = shim(&ADD_VARS, &config_for(&dir.socket()));
    daemon.join().unwrap();
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, error);
}

#[test]
fn chunked_reply_is_reassembled() {
    let dir = TempDir::new("chunked");
    let daemon = fake_daemon(
        &dir.socket(),
        Some(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             c\r\n{\"cniVersion\r\n9\r\n\":\"1.0.0\"\r\n1\r\n}\r\n0\r\n\r\n"
                .to_owned(),
        ),
    );
    let run = shim(&ADD_VARS, &config_for(&dir.socket()));
    daemon.join().unwrap();
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout, r#"{"cniVersion":"1.0.0"}"#);
}

#[test]
fn daemon_hanging_up_without_reply_is_code_11() {
    let dir = TempDir::new("hangup");
    let daemon = fake_daemon(&dir.socket(), None);
    let run = shim(&ADD_VARS, &config_for(&dir.socket()));
    daemon.join().unwrap();
    assert_eq!(run.code, 1);
    let err = run.json();
    assert_eq!(err["code"], 11);
    assert_eq!(err["msg"], "no valid reply from plexusd");
    let details = err["details"].as_str().unwrap();
    assert!(details.contains("connection closed"), "{details}");
    assert!(
        details.contains(dir.socket().to_str().unwrap()),
        "{details}"
    );
}

#[test]
fn failure_status_with_empty_body_still_yields_an_error_object() {
    let dir = TempDir::new("empty-500");
    let daemon = fake_daemon(&dir.socket(), reply("500 Internal Server Error", ""));
    let run = shim(&ADD_VARS, &config_for(&dir.socket()));
    daemon.join().unwrap();
    assert_eq!(run.code, 1);
    let err = run.json();
    assert_eq!(err["code"], 11);
    assert!(err["details"].as_str().unwrap().contains("500"));
}

/// Neither build of the shim enters through std's `main`, so the checks std's entry would make
/// are its own.
mod process_entry {
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    use super::*;

    #[test]
    fn a_stdout_nobody_reads_is_an_error_on_stderr_not_a_silent_sigpipe() {
        for build in builds() {
            stdout_nobody_reads(&build);
        }
    }

    #[test]
    fn a_closed_stdin_reads_as_an_empty_config() {
        for build in builds() {
            let mut command = Command::new(&build);
            command.env_clear().env("CNI_COMMAND", "VERSION");
            // SAFETY: close(2) is async-signal-safe, as pre_exec requires.
            unsafe {
                command.pre_exec(|| {
                    libc::close(0);
                    Ok(())
                })
            };
            let output = command.output().unwrap();
            assert_eq!(
                output.status.code(),
                Some(0),
                "{}: {output:?}",
                build.display()
            );
            let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(reply["cniVersion"], "1.1.0", "{}", build.display());
        }
    }

    fn stdout_nobody_reads(build: &Path) {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(build)
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(output.status.signal(), None, "{output:?}");
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("writing the reply to stdout failed"),
            "{stderr}"
        );
    }
}
