//! `flannel`: a TEST STAND-IN for the flannel CNI plugin (github.com/flannel-io/cni-plugin,
//! `flannel.go` and `flannel_linux.go`), which is not packaged for the machines the tests run
//! on. It is built only so the multi-node tests (`plexus_integration::overlay`) can run NADs of
//! `"type": "flannel"` exactly as operators write them. Do not install it on a real node.
//!
//! What it does, as the real plugin does:
//! - Reads its config from stdin: `name`, `cniVersion`, `subnetFile` (default
//!   `/run/flannel/subnet.env`), `dataDir` (default `/var/lib/cni/flannel`), `delegate`, `ipam`
//!   and `runtimeConfig`.
//! - ADD reads the subnet file flanneld wrote (`FLANNEL_NETWORK`, a comma list;
//!   `FLANNEL_SUBNET`; `FLANNEL_IPV6_NETWORK`; `FLANNEL_IPV6_SUBNET`; `FLANNEL_MTU`;
//!   `FLANNEL_IPMASQ`; what is missing is an error naming it) and builds the delegate's config
//!   from `delegate`, refusing one that has `name` or `ipam` or a `type` that is not a string:
//!   `name` and `cniVersion` from the outer config, `type` bridge, `ipMasq` the opposite of
//!   `FLANNEL_IPMASQ` (flanneld masquerades itself when that is true), `mtu` `FLANNEL_MTU`,
//!   and for bridge `isGateway` true, each unless `delegate` sets it; `runtimeConfig` passed on;
//!   `ipam` the outer `ipam` (or `{}`) with `type` host-local unless set, `ranges` replaced by
//!   the node's subnet (`FLANNEL_SUBNET` as a network: 10.244.1.1/24 gives 10.244.1.0/24; the
//!   IPv6 subnet as a second range) and `routes` the outer `ipam.routes` plus one `{"dst"}` per
//!   network. It saves that config as `dataDir/<container id>` (directory 0700, file 0600,
//!   fsynced), runs the delegate found in `CNI_PATH` with the same environment, and prints its
//!   result; a delegate's CNI error is passed on unchanged.
//! - DEL runs the delegate's DEL with the saved config and removes the file only when that
//!   succeeded. No saved file, or one that does not parse, is a success that does nothing.
//! - CHECK succeeds without looking (the real `cmdCheck` is a TODO), for config versions from
//!   0.4.0 on; GC succeeds doing nothing (libcni's skel without a GC function); VERSION lists
//!   0.1.0 to 1.1.0. Like skel it requires the CNI variables of each command, a network name,
//!   and a valid container id and interface name.
//!
//! What the real plugin does that this one does not:
//! - It is a static Go binary built on libcni (`skel`, `invoke`): the delegate's result is
//!   decoded into libcni's types and encoded again; this prints the delegate's stdout as it is.
//!   `ipam.routes` are re-encoded there and passed as written here.
//! - skel refuses an ADD or DEL whose `CNI_NETNS` is the plugin's own namespace; skel versions
//!   before STATUS existed answer STATUS with "unknown CNI_COMMAND", this one succeeds.
//! - Windows (`flannel_windows.go`: the delegate is win-bridge/win-overlay with its own fields).
//! - It writes the delegate config it built to stderr on every ADD, for debugging.
//!
//! Neither this nor the real plugin talks to flanneld: the subnet file is the whole contract.
//! In the tests it is written by the test world, which also builds the VXLAN devices, routes,
//! neighbours and FDB entries that flanneld's vxlan backend would.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde_json::{Map, Value, json};

const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";
const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

// CNI error codes (libcni types.Err*).
const INCOMPATIBLE_VERSION: u32 = 1;
const INVALID_ENVIRONMENT: u32 = 4;
const DECODING_FAILURE: u32 = 6;
const INVALID_NETWORK_CONFIG: u32 = 7;
const INTERNAL: u32 = 999;

#[derive(Debug, PartialEq)]
struct CniError {
    code: u32,
    msg: String,
    details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    fn internal(msg: impl Into<String>) -> Self {
        Self::new(INTERNAL, msg)
    }

    fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            error["details"] = json!(self.details);
        }
        error
    }
}

/// What the plugin prints on success, and whether that is all.
enum Reply {
    Print(Vec<u8>),
    Nothing,
}

fn main() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    if command.is_empty() {
        eprintln!("CNI plugin flannel: TEST STAND-IN (plexus-integration), not the real plugin");
        eprintln!(
            "CNI protocol versions supported: {}",
            SUPPORTED_VERSIONS.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let mut stdout = std::io::stdout().lock();
    match run(&command, &stdin) {
        Ok(Reply::Print(bytes)) => {
            let _ = stdout.write_all(&bytes);
            ExitCode::SUCCESS
        }
        Ok(Reply::Nothing) => ExitCode::SUCCESS,
        Err(Failure::Cni(error)) => {
            let _ = writeln!(stdout, "{}", error.to_json());
            ExitCode::FAILURE
        }
        Err(Failure::Delegate(bytes)) => {
            let _ = stdout.write_all(&bytes);
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Cni(CniError),
    /// The delegate's own CNI error, printed as it is.
    Delegate(Vec<u8>),
}

impl From<CniError> for Failure {
    fn from(error: CniError) -> Self {
        Self::Cni(error)
    }
}

fn run(command: &str, stdin: &[u8]) -> Result<Reply, Failure> {
    if command == "VERSION" {
        let reply = json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS});
        return Ok(Reply::Print(reply.to_string().into_bytes()));
    }
    let required: &[&str] = match command {
        "ADD" | "CHECK" => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
        "DEL" => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
        "GC" => &["CNI_PATH"],
        "STATUS" => &[],
        other => {
            return Err(CniError::new(
                INVALID_ENVIRONMENT,
                format!("unknown CNI_COMMAND: {other}"),
            )
            .into());
        }
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|v| std::env::var(v).unwrap_or_default().is_empty())
        .collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            INVALID_ENVIRONMENT,
            format!("required env variables [{}] missing", missing.join(",")),
        )
        .into());
    }
    let conf = NetConf::parse(stdin)?;
    if matches!(command, "ADD" | "DEL" | "CHECK") {
        validate_container_id(&std::env::var("CNI_CONTAINERID").unwrap_or_default())?;
        validate_ifname(&std::env::var("CNI_IFNAME").unwrap_or_default())?;
    }
    let container_id = std::env::var("CNI_CONTAINERID").unwrap_or_default();
    let cni_path = std::env::var("CNI_PATH").unwrap_or_default();
    match command {
        "ADD" => {
            let env = SubnetEnv::load(&conf.subnet_file)?;
            let delegate = delegate_config(&conf, &env)?;
            let bytes = serde_json::to_vec(&delegate).expect("JSON");
            eprintln!("delegateAdd: netconf sent to delegate plugin:");
            let _ = std::io::stderr().write_all(&bytes);
            save(&conf.data_dir, &container_id, &bytes)
                .map_err(|e| CniError::internal(format!("saving the delegate config: {e}")))?;
            let plugin = delegate["type"].as_str().unwrap_or_default();
            let stdout = invoke("ADD", plugin, &bytes, &cni_path, "failed to delegate add")?;
            if serde_json::from_slice::<Value>(&stdout).is_err() {
                return Err(CniError::internal(format!(
                    "failed to delegate add: the result of {plugin} is not JSON: {}",
                    String::from_utf8_lossy(&stdout)
                ))
                .into());
            }
            Ok(Reply::Print(stdout))
        }
        "DEL" => {
            let path = conf.data_dir.join(&container_id);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Per the spec, DEL of what is already gone succeeds.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Reply::Nothing),
                Err(e) => return Err(CniError::internal(e.to_string()).into()),
            };
            let Ok(saved) = serde_json::from_slice::<Value>(&bytes) else {
                // The real plugin leaves the interface for a reboot to clean up.
                eprintln!("failed to parse netconf {}", path.display());
                return Ok(Reply::Nothing);
            };
            let plugin = saved["type"].as_str().unwrap_or_default();
            invoke("DEL", plugin, &bytes, &cni_path, "failed to delegate del")?;
            let _ = fs::remove_file(&path);
            Ok(Reply::Nothing)
        }
        "CHECK" => {
            if version_tuple(&conf.cni_version) < version_tuple("0.4.0") {
                return Err(CniError::new(
                    INCOMPATIBLE_VERSION,
                    "config version does not allow CHECK",
                )
                .into());
            }
            Ok(Reply::Nothing)
        }
        _ => Ok(Reply::Nothing),
    }
}

/// The plugin's own config.
#[derive(Debug)]
struct NetConf {
    name: String,
    cni_version: String,
    subnet_file: PathBuf,
    data_dir: PathBuf,
    delegate: Option<Map<String, Value>>,
    ipam: Option<Map<String, Value>>,
    runtime_config: Option<Value>,
}

impl NetConf {
    fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                format!("error unmarshall network config: {e}"),
            )
        })?;
        let Value::Object(conf) = value else {
            return Err(CniError::new(
                DECODING_FAILURE,
                "error unmarshall network config: not an object",
            ));
        };
        let string = |key: &str| -> Result<Option<String>, CniError> {
            match conf.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(CniError::internal(format!(
                    "failed to load netconf: {key} is {other}; expected a string"
                ))),
            }
        };
        let object = |key: &str| -> Result<Option<Map<String, Value>>, CniError> {
            match conf.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m.clone())),
                Some(other) => Err(CniError::internal(format!(
                    "failed to load netconf: {key} is {other}; expected an object"
                ))),
            }
        };
        let name = string("name")?.unwrap_or_default();
        if name.is_empty() {
            return Err(CniError::new(
                INVALID_NETWORK_CONFIG,
                "missing network name",
            ));
        }
        let cni_version = string("cniVersion")?.unwrap_or_default();
        let checked = if cni_version.is_empty() {
            "0.1.0"
        } else {
            &cni_version
        };
        if !SUPPORTED_VERSIONS.contains(&checked) {
            let mut error = CniError::new(INCOMPATIBLE_VERSION, "incompatible CNI versions");
            error.details = format!(
                "config is {checked:?}, plugin supports {:?}",
                SUPPORTED_VERSIONS
            );
            return Err(error);
        }
        Ok(Self {
            name,
            cni_version,
            subnet_file: string("subnetFile")?
                .unwrap_or_else(|| DEFAULT_SUBNET_FILE.into())
                .into(),
            data_dir: string("dataDir")?
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
                .into(),
            delegate: object("delegate")?,
            ipam: object("ipam")?,
            runtime_config: conf.get("runtimeConfig").filter(|v| !v.is_null()).cloned(),
        })
    }
}

/// What flanneld wrote into the subnet file. Networks and subnets are in network form
/// (`10.244.1.1/24` reads as `10.244.1.0/24`, as Go's `net.ParseCIDR` gives it).
#[derive(Debug, Default, PartialEq)]
struct SubnetEnv {
    networks: Vec<String>,
    subnet: Option<String>,
    ipv6_networks: Vec<String>,
    ipv6_subnet: Option<String>,
    mtu: Option<u32>,
    ipmasq: Option<bool>,
}

impl SubnetEnv {
    fn load(path: &Path) -> Result<Self, CniError> {
        let text = fs::read_to_string(path).map_err(|e| {
            CniError::internal(format!(
                "loadFlannelSubnetEnv failed: open {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text, &path.display().to_string())
            .map_err(|e| CniError::internal(format!("loadFlannelSubnetEnv failed: {e}")))
    }

    /// `file` names the file in errors.
    fn parse(text: &str, file: &str) -> Result<Self, String> {
        let mut env = Self::default();
        let networks = |value: &str| -> Result<Vec<String>, String> {
            let mut out: Vec<String> = Vec::new();
            for cidr in value.split(',') {
                let network = network_of(cidr)?;
                if !out.contains(&network) {
                    out.push(network);
                }
            }
            Ok(out)
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "FLANNEL_NETWORK" => env.networks = networks(value)?,
                "FLANNEL_SUBNET" => env.subnet = Some(network_of(value)?),
                "FLANNEL_IPV6_NETWORK" => env.ipv6_networks = networks(value)?,
                "FLANNEL_IPV6_SUBNET" => env.ipv6_subnet = Some(network_of(value)?),
                "FLANNEL_MTU" => {
                    env.mtu = Some(
                        value
                            .parse()
                            .map_err(|e| format!("FLANNEL_MTU={value}: {e}"))?,
                    )
                }
                "FLANNEL_IPMASQ" => env.ipmasq = Some(value == "true"),
                _ => {}
            }
        }
        let mut missing = Vec::new();
        if env.networks.is_empty() && env.ipv6_networks.is_empty() {
            missing.extend(["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]);
        }
        if env.subnet.is_none() && env.ipv6_subnet.is_none() {
            missing.extend(["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]);
        }
        if env.mtu.is_none() {
            missing.push("FLANNEL_MTU");
        }
        if env.ipmasq.is_none() {
            missing.push("FLANNEL_IPMASQ");
        }
        if !missing.is_empty() {
            return Err(format!("{file} is missing {}", missing.join(", ")));
        }
        Ok(env)
    }
}

/// `a.b.c.d/n` (or IPv6) with the host bits cleared.
fn network_of(cidr: &str) -> Result<String, String> {
    let invalid = || format!("invalid CIDR address: {cidr}");
    let (address, length) = cidr.trim().split_once('/').ok_or_else(invalid)?;
    let address: IpAddr = address.parse().map_err(|_| invalid())?;
    let length: u32 = length.parse().map_err(|_| invalid())?;
    let network = match address {
        IpAddr::V4(a) if length <= 32 => {
            let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) if length <= 128 => {
            let mask = u128::MAX.checked_shl(128 - length).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
        _ => return Err(invalid()),
    };
    Ok(format!("{network}/{length}"))
}

/// The delegate's config, as `cmdAdd` and `doCmdAdd` build it.
fn delegate_config(conf: &NetConf, env: &SubnetEnv) -> Result<Value, CniError> {
    let mut delegate = conf.delegate.clone().unwrap_or_default();
    if delegate.get("type").is_some_and(|t| !t.is_string()) {
        return Err(CniError::internal(
            "'delegate' dictionary, if present, must have (string) 'type' field",
        ));
    }
    if delegate.contains_key("name") {
        return Err(CniError::internal(
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel",
        ));
    }
    if delegate.contains_key("ipam") {
        return Err(CniError::internal(
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel",
        ));
    }
    if let Some(runtime_config) = &conf.runtime_config {
        delegate.insert("runtimeConfig".into(), runtime_config.clone());
    }
    delegate.insert("name".into(), json!(conf.name));
    delegate.entry("type").or_insert_with(|| json!("bridge"));
    // If flannel is not masquerading, the delegate should.
    let ipmasq = env.ipmasq.unwrap_or(false);
    delegate.entry("ipMasq").or_insert_with(|| json!(!ipmasq));
    delegate.entry("mtu").or_insert_with(|| json!(env.mtu));
    if delegate["type"] == "bridge" {
        delegate.entry("isGateway").or_insert(json!(true));
    }
    if !conf.cni_version.is_empty() {
        delegate.insert("cniVersion".into(), json!(conf.cni_version));
    }

    let mut ipam = conf.ipam.clone().unwrap_or_default();
    ipam.entry("type").or_insert_with(|| json!("host-local"));
    let mut ranges = Vec::new();
    for subnet in env.subnet.iter().chain(&env.ipv6_subnet) {
        ranges.push(json!([{"subnet": subnet}]));
    }
    ipam.insert("ranges".into(), json!(ranges));
    let mut routes = match ipam.get("routes") {
        None => Vec::new(),
        Some(Value::Array(routes)) if routes.iter().all(|r| r["dst"].is_string()) => routes.clone(),
        Some(other) => {
            return Err(CniError::internal(format!(
                "failed to assemble Delegate IPAM: failed to read IPAM routes: {other}"
            )));
        }
    };
    for network in env.networks.iter().chain(&env.ipv6_networks) {
        routes.push(json!({"dst": network}));
    }
    ipam.insert("routes".into(), json!(routes));
    delegate.insert("ipam".into(), Value::Object(ipam));
    Ok(Value::Object(delegate))
}

/// Writes the delegate config for DEL: the directory 0700, the file 0600, synced.
fn save(data_dir: &Path, container_id: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(data_dir.join(container_id))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Runs `plugin` from CNI_PATH with this process's environment and `command`; its stdout on
/// success, its CNI error unchanged on failure.
fn invoke(
    command: &str,
    plugin: &str,
    stdin: &[u8],
    cni_path: &str,
    context: &str,
) -> Result<Vec<u8>, Failure> {
    let binary = find_in_path(plugin, cni_path).ok_or_else(|| {
        CniError::internal(format!(
            "{context}: failed to find plugin {plugin:?} in path [{}]",
            cni_path.replace(':', " ")
        ))
    })?;
    let mut child = Command::new(&binary)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::internal(format!("{context}: {}: {e}", binary.display())))?;
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(stdin);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| CniError::internal(format!("{context}: {e}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let is_cni_error = serde_json::from_slice::<Value>(&output.stdout)
        .is_ok_and(|v| v.get("code").is_some_and(Value::is_u64));
    if is_cni_error {
        // libcni's skel does not wrap a CNI error in another one.
        return Err(Failure::Delegate(output.stdout));
    }
    Err(CniError::internal(format!(
        "{context}: netplugin failed: {:?} ({})",
        String::from_utf8_lossy(&output.stdout),
        output.status
    ))
    .into())
}

fn find_in_path(plugin: &str, cni_path: &str) -> Option<PathBuf> {
    if plugin.is_empty() || plugin.contains('/') {
        return None;
    }
    cni_path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|dir| Path::new(dir).join(plugin))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(CniError::new(
            INVALID_ENVIRONMENT,
            format!("invalid characters in containerID: {id:?}"),
        ));
    }
    Ok(())
}

fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(CniError::new(
            INVALID_ENVIRONMENT,
            format!("invalid interface name: {name:?}"),
        ));
    }
    Ok(())
}

fn version_tuple(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.245.0.0/16\nFLANNEL_SUBNET=10.245.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    fn conf(value: Value) -> NetConf {
        NetConf::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_subnet_file_reads_as_flannel_writes_it() {
        let env = SubnetEnv::parse(SUBNET_ENV, "subnet.env").unwrap();
        assert_eq!(env.networks, ["10.245.0.0/16"]);
        assert_eq!(env.subnet.as_deref(), Some("10.245.3.0/24"));
        assert_eq!(env.mtu, Some(1450));
        assert_eq!(env.ipmasq, Some(true));
        let several = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.1.0.0/16,10.2.0.0/16,10.1.0.0/16\nFLANNEL_IPV6_SUBNET=fd00:0:0:3::1/64\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false",
            "subnet.env",
        )
        .unwrap();
        assert_eq!(several.networks, ["10.1.0.0/16", "10.2.0.0/16"]);
        assert_eq!(several.ipv6_subnet.as_deref(), Some("fd00:0:0:3::/64"));
    }

    #[test]
    fn a_subnet_file_without_a_key_names_what_is_missing() {
        let error = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.245.0.0/16\nFLANNEL_MTU=1450\n",
            "/run/flannel/flannel2.env",
        )
        .unwrap_err();
        assert_eq!(
            error,
            "/run/flannel/flannel2.env is missing FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_IPMASQ"
        );
    }

    #[test]
    fn the_delegate_is_a_bridge_with_the_nodes_subnet_and_a_route_to_the_network() {
        let conf = conf(json!({
            "cniVersion": "0.3.1", "name": "flannel2", "type": "flannel",
            "delegate": {"bridge": "cni1", "isDefaultGateway": false},
            "ipam": {"dataDir": "/tmp/ipam", "routes": [{"dst": "192.0.2.0/24"}]},
            "runtimeConfig": {"mac": "c2:00:00:00:00:01"}
        }));
        let delegate =
            delegate_config(&conf, &SubnetEnv::parse(SUBNET_ENV, "subnet.env").unwrap()).unwrap();
        assert_eq!(
            delegate,
            json!({
                "cniVersion": "0.3.1", "name": "flannel2", "type": "bridge", "bridge": "cni1",
                "isDefaultGateway": false, "isGateway": true, "ipMasq": false, "mtu": 1450,
                "runtimeConfig": {"mac": "c2:00:00:00:00:01"},
                "ipam": {
                    "type": "host-local", "dataDir": "/tmp/ipam",
                    "ranges": [[{"subnet": "10.245.3.0/24"}]],
                    "routes": [{"dst": "192.0.2.0/24"}, {"dst": "10.245.0.0/16"}]
                }
            })
        );
    }

    #[test]
    fn what_the_delegate_sets_wins_and_ipmasq_is_the_opposite_of_flannels() {
        let conf = conf(json!({
            "name": "n", "delegate": {"type": "ipvlan", "mtu": 1300, "ipMasq": false}
        }));
        let env =
            SubnetEnv::parse(&SUBNET_ENV.replace("IPMASQ=true", "IPMASQ=false"), "s").unwrap();
        let delegate = delegate_config(&conf, &env).unwrap();
        assert_eq!(delegate["mtu"], 1300);
        assert_eq!(delegate["ipMasq"], false);
        assert!(
            delegate.get("isGateway").is_none(),
            "only bridge gets isGateway"
        );
        assert!(delegate.get("cniVersion").is_none());
        let bridge = delegate_config(&self::conf(json!({"name": "n"})), &env).unwrap();
        assert_eq!(
            bridge["ipMasq"], true,
            "flannel does not masquerade, so the bridge does"
        );
    }

    #[test]
    fn a_delegate_may_not_set_name_or_ipam() {
        for delegate in [
            json!({"name": "x"}),
            json!({"ipam": {}}),
            json!({"type": 1}),
        ] {
            let conf = conf(json!({"name": "n", "delegate": delegate}));
            assert!(
                delegate_config(&conf, &SubnetEnv::parse(SUBNET_ENV, "subnet.env").unwrap())
                    .is_err()
            );
        }
    }

    #[test]
    fn defaults_are_flannels_paths_and_a_name_is_required() {
        let conf = conf(json!({"name": "cbr0", "cniVersion": "1.0.0"}));
        assert_eq!(conf.subnet_file, Path::new("/run/flannel/subnet.env"));
        assert_eq!(conf.data_dir, Path::new("/var/lib/cni/flannel"));
        let error = NetConf::parse(br#"{"type": "flannel"}"#).unwrap_err();
        assert_eq!(error.code, INVALID_NETWORK_CONFIG);
        let error = NetConf::parse(br#"{"name": "n", "cniVersion": "9.9.9"}"#).unwrap_err();
        assert_eq!(error.code, INCOMPATIBLE_VERSION);
    }

    #[test]
    fn saved_configs_are_private_to_root() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("flannel2");
        save(&data_dir, "ctr1", b"{}").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data_dir), 0o700);
        assert_eq!(mode(&data_dir.join("ctr1")), 0o600);
    }
}
