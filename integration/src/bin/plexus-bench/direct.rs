//! The floor: the bench runs a pod's delegates itself, in sequence, with the configs, the
//! environment and the stdin that plexusd (or a runtime's libcni) gives them. ADD runs each
//! network's chain in order, every plugin after the first getting the previous result; DEL
//! runs the networks in reverse, each chain in reverse, with the network's ADD result
//! (`prevResult`, CNI 0.4.0 and later).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

/// One network of a pod: its config (a conflist or a single-plugin config, as plexusd
/// resolves it, `@IPAM@` filled in) and the interface it gets.
#[derive(Clone)]
pub struct Net {
    pub config: Value,
    pub ifname: String,
}

/// The container a call is for.
pub struct Target<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub cni_args: &'a str,
}

pub struct Direct {
    bin_dirs: Vec<PathBuf>,
    /// What plexusd passes as CNI_PATH: its plugin dirs, joined.
    cni_path: String,
}

impl Direct {
    pub fn new(bin_dirs: Vec<PathBuf>) -> Self {
        let cni_path = bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        Self { bin_dirs, cni_path }
    }

    /// ADD of every network; their final results, in order.
    pub fn add(&self, nets: &[Net], target: &Target) -> Result<Vec<Value>, String> {
        let mut results = Vec::with_capacity(nets.len());
        for net in nets {
            let mut prev: Option<Value> = None;
            for plugin in plugins(&net.config) {
                let stdin = request(&net.config, plugin, prev.as_ref());
                let out = self.exec("ADD", plugin, &stdin, net, target)?;
                prev =
                    Some(serde_json::from_slice(&out).map_err(|e| {
                        format!("{} ADD: result is not JSON ({e})", plugin["type"])
                    })?);
            }
            results.push(prev.unwrap_or_default());
        }
        Ok(results)
    }

    /// DEL of every network in reverse, with the ADD results when there are any.
    pub fn del(
        &self,
        nets: &[Net],
        results: Option<&[Value]>,
        target: &Target,
    ) -> Result<(), String> {
        for (index, net) in nets.iter().enumerate().rev() {
            let prev = results.and_then(|r| r.get(index));
            for plugin in plugins(&net.config).into_iter().rev() {
                let stdin = request(&net.config, plugin, prev);
                self.exec("DEL", plugin, &stdin, net, target)?;
            }
        }
        Ok(())
    }

    /// Runs one plugin as plexusd's executor does: found in the plugin dirs, a clean
    /// environment with the CNI variables, its own process group, stdin written, stdout and
    /// stderr read.
    fn exec(
        &self,
        command: &str,
        plugin: &Map<String, Value>,
        stdin: &[u8],
        net: &Net,
        target: &Target,
    ) -> Result<Vec<u8>, String> {
        let plugin_type = plugin["type"].as_str().unwrap_or_default();
        self.run(plugin_type, command, stdin, &net.ifname, target)
    }

    /// One plugin call by type; `Ok` carries its stdout.
    pub fn run(
        &self,
        plugin_type: &str,
        command: &str,
        stdin: &[u8],
        ifname: &str,
        target: &Target,
    ) -> Result<Vec<u8>, String> {
        let binary = self
            .bin_dirs
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("plugin {plugin_type} not found in {}", self.cni_path))?;
        let mut child = Command::new(&binary)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", target.container_id)
            .env("CNI_NETNS", target.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", target.cni_args)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit without reading its stdin.
            let _ = pipe.write_all(stdin);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("{plugin_type} {command}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{plugin_type} {command} on {ifname} failed ({}): {} {}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(output.stdout)
    }
}

/// The plugins of a conflist, or the single plugin of a single-plugin config.
fn plugins(config: &Value) -> Vec<&Map<String, Value>> {
    match config.get("plugins").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(Value::as_object).collect(),
        None => config.as_object().into_iter().collect(),
    }
}

/// A plugin's stdin (CNI §3 "Network configuration lists" and SPECS §10): the plugin object
/// without `capabilities`, with the network's `name` and `cniVersion`, and `prevResult`.
fn request(config: &Value, plugin: &Map<String, Value>, prev: Option<&Value>) -> Vec<u8> {
    let mut out = plugin.clone();
    out.remove("capabilities");
    out.insert("name".into(), config["name"].clone());
    out.insert("cniVersion".into(), config["cniVersion"].clone());
    match prev {
        Some(prev) => out.insert("prevResult".into(), prev.clone()),
        None => out.remove("prevResult"),
    };
    Value::Object(out).to_string().into_bytes()
}
