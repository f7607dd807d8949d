//! The promises the soak checks: every reply is a CNI answer, a successful ADD gives exactly
//! the interfaces asked for, and once the runtime has deleted everything nothing is left:
//! no interface but `lo`, no IP allocation, no record, no pod veth, no process.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::world::SoakPod;
use crate::{Node, ShimOutput};

/// A reply the runtime can use: on success nothing or a JSON object, on failure a CNI error
/// object with a code and a message.
pub fn reply_problem(output: &ShimOutput) -> Option<String> {
    let parsed: Option<Value> = serde_json::from_str(&output.stdout).ok();
    let ok = match (output.success(), &parsed) {
        (true, _) if output.stdout.trim().is_empty() => true,
        (true, Some(value)) => value.is_object(),
        (false, Some(value)) => value["code"].is_u64() && value["msg"].is_string(),
        _ => false,
    };
    (!ok).then(|| format!("not a CNI answer: {output:?}"))
}

/// After a successful ADD: the pod has exactly eth0 and the interfaces its annotation names.
pub fn interfaces_problem(pod: &SoakPod) -> Option<String> {
    let got = pod.pod.link_names();
    (got != pod.expected).then(|| {
        format!(
            "{} ({}) got {got:?}, its annotation {:?} asks for {:?}",
            pod.pod.name, pod.pod.container_id, pod.annotation, pod.expected
        )
    })
}

/// After every pod was deleted: what is left in the pods and on the node, one line each.
pub fn leftovers(node: &Node, pods: &[SoakPod]) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for pod in pods {
        let links = pod.pod.link_names();
        if !links.is_empty() {
            found.push((
                "interface_left",
                format!("{} ({}): {links:?}", pod.pod.name, pod.pod.container_id),
            ));
        }
    }
    let ips = node.ipam_allocations();
    if !ips.is_empty() {
        found.push(("ip_left", format!("{ips:?}")));
    }
    let records = node.records();
    if !records.is_empty() {
        found.push(("record_left", format!("{records:?}")));
    }
    let veths = node.veths();
    if !veths.is_empty() {
        found.push(("veth_left", format!("{veths:?}")));
    }
    found
}

/// Processes in the node's network namespace other than `allowed` (plexusd): a delegate
/// still running, or one orphaned by a crash. Waits a little for those on their way out.
pub fn stray_processes(node: &Node, allowed: Option<u32>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stray: Vec<String> = node_pids(node)
            .into_iter()
            .filter(|pid| Some(*pid) != allowed)
            .map(describe)
            .collect();
        if stray.is_empty() || Instant::now() > deadline {
            return stray;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node_pids(node: &Node) -> Vec<u32> {
    std::process::Command::new("ip")
        .args(["netns", "pids", node.netns.name()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn describe(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    format!("pid {pid}: {}", cmdline.trim())
}

/// Kills what `stray_processes` found, by PID: they were started in this run's namespace.
pub fn kill_strays(node: &Node) {
    for pid in node_pids(node) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
