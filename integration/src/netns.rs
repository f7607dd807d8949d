//! A named network namespace that is deleted when dropped.

use std::process::Command;

use crate::run;

pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `plx<role>…` with loopback up.
    pub fn new(role: &str) -> Self {
        let name = crate::unique(&format!("plx{role}"));
        run("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a command inside the namespace and reports whether it succeeded.
    pub fn exec_ok(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Interface names in the namespace.
    pub fn links(&self) -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_str(&self.ip(&["-j", "link", "show"])).expect("ip -j link");
        json.as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
