//! `netdev`: a TEST DELEGATE for the device tests, standing in for plugins that take a device
//! by id, as sriov-cni (top-level `deviceID`) and host-device (`runtimeConfig.deviceID`) do.
//! Its devices are links in the node's namespace whose names are their ids, so the tests can
//! see inside the pod which device a pod got. Do not install it on a real node.
//!
//! Config keys: `recordDir` (every call's stdin is written there as
//! `<COMMAND>-<container id>-<ifname>-<n>.json`, `n` counting per command and attachment),
//! `mode` (`move`, the default, or `record`: only record and pass `prevResult` on, as a
//! chained plugin), `ipam` (run from CNI_PATH, as sriov-cni runs it).
//!
//! - ADD (`move`): the device id comes from the top-level `deviceID`, else
//!   `runtimeConfig.deviceID`; none is an error. The IPAM plugin's ADD runs first; then the
//!   link named like the id moves into CNI_NETNS as CNI_IFNAME, gets the id as its alias
//!   (`ip link show` says `alias <id>`), comes up and gets the IPAM addresses. The result has
//!   that one sandbox interface with its MAC, and the addresses.
//! - DEL: the interface goes back to the node under its id (when the pod namespace still
//!   has it), and the IPAM plugin's DEL runs. Idempotent.
//! - CHECK: the interface must be in the pod. STATUS and GC succeed; VERSION lists 0.3.0 to
//!   1.1.0.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde_json::{Value, json};

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

struct Failure {
    code: u32,
    msg: String,
    details: String,
}

fn fail(code: u32, msg: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
        details: String::new(),
    }
}

type Outcome = Result<Option<Value>, Failure>;

fn main() -> ExitCode {
    let command = env("CNI_COMMAND");
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match command.as_str() {
        "VERSION" => Ok(Some(
            json!({"cniVersion": "1.1.0", "supportedVersions": VERSIONS}),
        )),
        "" => {
            eprintln!("CNI plugin netdev: TEST DELEGATE (plexus-integration)");
            return ExitCode::SUCCESS;
        }
        _ => run(&command, &stdin),
    };
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(Some(value)) => {
            let _ = write!(stdout, "{value}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(failure) => {
            let error = json!({"cniVersion": "1.0.0", "code": failure.code, "msg": failure.msg, "details": failure.details});
            let _ = write!(stdout, "{error}");
            ExitCode::FAILURE
        }
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

fn run(command: &str, stdin: &[u8]) -> Outcome {
    let config: Value =
        serde_json::from_slice(stdin).map_err(|e| fail(6, format!("config: {e}")))?;
    record(&config, command, stdin)?;
    if config["mode"] == "record" {
        return Ok(match command {
            "ADD" => Some(config["prevResult"].clone()),
            _ => None,
        });
    }
    match command {
        "ADD" => add(&config),
        "DEL" => del(&config),
        "CHECK" => check(),
        _ => Ok(None),
    }
}

/// Writes the request where the test reads it.
fn record(config: &Value, command: &str, stdin: &[u8]) -> Result<(), Failure> {
    let Some(dir) = config["recordDir"].as_str() else {
        return Ok(());
    };
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| fail(5, format!("recordDir: {e}")))?;
    let stem = format!("{command}-{}-{}", env("CNI_CONTAINERID"), env("CNI_IFNAME"));
    let n = (0..)
        .find(|n| !dir.join(format!("{stem}-{n}.json")).exists())
        .unwrap_or_default();
    std::fs::write(dir.join(format!("{stem}-{n}.json")), stdin)
        .map_err(|e| fail(5, format!("recordDir: {e}")))
}

fn device_id(config: &Value) -> Result<String, Failure> {
    config["deviceID"]
        .as_str()
        .or_else(|| config["runtimeConfig"]["deviceID"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            fail(
                7,
                "no deviceID: neither at the top level nor in runtimeConfig",
            )
        })
}

fn add(config: &Value) -> Outcome {
    let id = device_id(config)?;
    let netns = env("CNI_NETNS");
    let ifname = env("CNI_IFNAME");
    if ip(None, &["link", "show", "dev", &id]).is_err() {
        return Err(fail(
            11,
            format!("device {id} is not on the node (taken by another pod?)"),
        ));
    }
    let ipam = ipam(config, "ADD")?;
    let moved = ip(None, &["link", "set", "dev", &id, "netns", &netns])
        .and_then(|_| ip(Some(&netns), &["link", "set", "dev", &id, "name", &ifname]))
        .and_then(|_| ip(Some(&netns), &["link", "set", "dev", &ifname, "alias", &id]))
        .and_then(|_| ip(Some(&netns), &["link", "set", "dev", &ifname, "up"]));
    if let Err(e) = moved {
        let _ = ipam_del(config);
        return Err(e);
    }
    let addresses: Vec<Value> = ipam
        .as_ref()
        .and_then(|r| r["ips"].as_array().cloned())
        .unwrap_or_default();
    for address in &addresses {
        if let Some(cidr) = address["address"].as_str() {
            ip(Some(&netns), &["addr", "add", cidr, "dev", &ifname])?;
        }
    }
    let mac = link_mac(Some(&netns), &ifname)?;
    let version = config["cniVersion"].as_str().unwrap_or("1.0.0");
    let ips: Vec<Value> = addresses
        .iter()
        .map(|a| {
            let mut ip = json!({"address": a["address"], "interface": 0});
            if !a["gateway"].is_null() {
                ip["gateway"] = a["gateway"].clone();
            }
            if version.starts_with("0.") {
                let family = if a["address"].as_str().is_some_and(|s| s.contains(':')) {
                    "6"
                } else {
                    "4"
                };
                ip["version"] = family.into();
            }
            ip
        })
        .collect();
    Ok(Some(json!({
        "cniVersion": version,
        "interfaces": [{"name": ifname, "mac": mac, "sandbox": netns}],
        "ips": ips,
    })))
}

fn del(config: &Value) -> Outcome {
    let netns = env("CNI_NETNS");
    let ifname = env("CNI_IFNAME");
    if !netns.is_empty()
        && Path::new(&netns).exists()
        && ip(Some(&netns), &["link", "show", "dev", &ifname]).is_ok()
    {
        let id = device_id(config)?;
        let home = std::process::id().to_string();
        ip(Some(&netns), &["link", "set", "dev", &ifname, "down"])?;
        ip(Some(&netns), &["addr", "flush", "dev", &ifname])?;
        ip(Some(&netns), &["link", "set", "dev", &ifname, "name", &id])?;
        ip(Some(&netns), &["link", "set", "dev", &id, "netns", &home])?;
    }
    ipam_del(config)?;
    Ok(None)
}

fn check() -> Outcome {
    let netns = env("CNI_NETNS");
    let ifname = env("CNI_IFNAME");
    ip(Some(&netns), &["link", "show", "dev", &ifname])
        .map_err(|_| fail(11, format!("{ifname} is not in {netns}")))?;
    Ok(None)
}

fn ipam_del(config: &Value) -> Result<(), Failure> {
    ipam(config, "DEL").map(drop)
}

/// Runs the config's IPAM plugin for `command`; its result for ADD.
fn ipam(config: &Value, command: &str) -> Result<Option<Value>, Failure> {
    let Some(plugin) = config["ipam"]["type"].as_str() else {
        return Ok(None);
    };
    let binary = env("CNI_PATH")
        .split(':')
        .map(|dir| PathBuf::from(dir).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| fail(5, format!("IPAM plugin {plugin} not in CNI_PATH")))?;
    let mut child = Command::new(binary)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(5, format!("{plugin}: {e}")))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(config.to_string().as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail(5, format!("{plugin}: {e}")))?;
    if !output.status.success() {
        let error: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        return Err(Failure {
            code: error["code"].as_u64().unwrap_or(999) as u32,
            msg: format!(
                "{plugin} {command}: {}",
                error["msg"].as_str().unwrap_or("failed")
            ),
            details: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(serde_json::from_slice(&output.stdout).ok())
}

/// `ip ARGS`, inside the namespace at `netns` when given.
fn ip(netns: Option<&str>, args: &[&str]) -> Result<String, Failure> {
    let mut command = match netns {
        Some(path) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={path}")).arg("ip");
            c
        }
        None => Command::new("ip"),
    };
    let output = command
        .args(args)
        .output()
        .map_err(|e| fail(5, format!("ip: {e}")))?;
    if !output.status.success() {
        return Err(Failure {
            code: 5,
            msg: format!("ip {} failed", args.join(" ")),
            details: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn link_mac(netns: Option<&str>, ifname: &str) -> Result<String, Failure> {
    let shown: Value = serde_json::from_str(&ip(netns, &["-j", "link", "show", "dev", ifname])?)
        .map_err(|e| fail(5, format!("ip -j: {e}")))?;
    Ok(shown[0]["address"].as_str().unwrap_or_default().to_owned())
}
