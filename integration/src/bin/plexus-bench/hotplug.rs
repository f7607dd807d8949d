//! Hot-plug latency (issue 12): from the pod's annotation changing (the manifest written, or
//! the pod updated in the API server) to the new interface being up, with its address, inside
//! the pod's namespace; and from the selection's removal to the interface being gone.

use std::time::{Duration, Instant};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use plexus_integration::apiserver::in_netns;
use plexus_integration::{Node, Pod};
use serde_json::{Value, json};

use crate::measure::Result;
use crate::stats::ServerTimes;
use crate::supervise::check;
use crate::world;

/// How often the watcher inside the pod looks at its interfaces.
const POLL: Duration = Duration::from_micros(250);
/// A change that takes longer than this has failed.
const GIVE_UP: Duration = Duration::from_secs(30);

/// Per change, in ms: the latency, and the time plexusd spent in the delegates for it.
#[derive(Default)]
pub struct HotplugResult {
    pub attach: Vec<f64>,
    pub attach_delegates: Vec<f64>,
    pub detach: Vec<f64>,
    pub detach_delegates: Vec<f64>,
}

/// A node with `dynamicNetworks: true`, NAD `sec1` (bridge + host-local) and one running pod;
/// `changes` times the pod gains `sec1` and loses it again.
pub fn measure(kube: bool, changes: usize) -> Result<HotplugResult> {
    let pod = Pod::new(world::NAMESPACE, "hotplug");
    let nad = world::nad("sec1", &world::secondary(1));
    let mut builder = Node::builder()
        .rust_log("info")
        .cluster(world::cluster())
        .config_line("dynamicNetworks: true");
    if kube {
        builder = builder.kube();
    } else {
        builder = builder
            .manifest("nads.yaml", &nad.to_string())
            .manifest("pods.yaml", &pod_manifest(&pod, &json!({})));
    }
    let node = builder.start();
    if kube {
        node.apply_nad(world::NAMESPACE, "sec1", &world::secondary(1));
        node.apply_pod(&pod, json!({}));
    }
    node.wait_for_counts(1, 1, Duration::from_secs(20));
    let added = node.add(&pod);
    if !added.success() {
        return Err(format!("ADD of the hot-plug pod failed: {}", added.stdout));
    }
    let annotate = |networks: Value| {
        if kube {
            node.apply_pod(&pod, networks);
        } else {
            node.write_manifest("pods.yaml", &pod_manifest(&pod, &networks));
        }
    };
    let mut result = HotplugResult::default();
    for _ in 0..changes {
        check()?;
        let before = scrape(&node)?;
        let latency = until_interface(&pod, true, || {
            annotate(json!({"k8s.v1.cni.cncf.io/networks": "sec1"}))
        })?;
        recorded(&node, &pod, 2)?;
        let middle = scrape(&node)?;
        result.attach.push(latency);
        result
            .attach_delegates
            .push(middle.since(&before).add_delegates);

        let latency = until_interface(&pod, false, || annotate(json!({})))?;
        recorded(&node, &pod, 1)?;
        result.detach.push(latency);
        result
            .detach_delegates
            .push(scrape(&node)?.since(&middle).del_delegates);
    }
    if !node.del(&pod).success() {
        return Err("DEL of the hot-plug pod failed".into());
    }
    Ok(result)
}

fn pod_manifest(pod: &Pod, annotations: &Value) -> String {
    world::pod_manifest(pod, annotations).to_string()
}

fn scrape(node: &Node) -> Result<ServerTimes> {
    match node.get("/metrics") {
        Some((200, body)) => Ok(ServerTimes::parse(&body)),
        other => Err(format!("GET /metrics: {other:?}")),
    }
}

/// Waits until plexusd has recorded the change (its network-status has `entries` entries), so
/// the next change starts from a settled pod and the delegate times are complete.
fn recorded(node: &Node, pod: &Pod, entries: usize) -> Result<()> {
    let deadline = Instant::now() + GIVE_UP;
    while Instant::now() < deadline {
        let path = format!("/v1/network-status/{}", pod.container_id);
        if let Some((200, body)) = node.get(&path)
            && serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|s| s.as_array().map(Vec::len))
                == Some(entries)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("plexusd never recorded {entries} attachments"))
}

/// Runs `change`, and returns the ms until net1 is up with an IPv4 address inside the pod
/// (`up`), or gone from it (`!up`). The watcher is inside the pod's namespace before the clock
/// starts.
fn until_interface(pod: &Pod, up: bool, change: impl FnOnce()) -> Result<f64> {
    let path = pod.netns.path();
    let (ready, watching) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        in_netns(&path, || {
            let _ = ready.send(());
            let deadline = Instant::now() + GIVE_UP;
            while Instant::now() < deadline {
                if (up && net1_is_up()) || (!up && !net1_exists()) {
                    return Some(Instant::now());
                }
                std::thread::sleep(POLL);
            }
            None
        })
    });
    watching
        .recv()
        .map_err(|_| "the interface watcher did not start".to_owned())?;
    let start = Instant::now();
    change();
    let seen = watcher
        .join()
        .map_err(|_| "the interface watcher panicked".to_owned())?
        .ok_or_else(|| format!("net1 never became {}", if up { "up" } else { "gone" }))?;
    Ok(seen.duration_since(start).as_secs_f64() * 1000.0)
}

/// Whether this thread's namespace has net1 at all.
fn net1_exists() -> bool {
    getifaddrs().is_ok_and(|mut addresses| addresses.any(|a| a.interface_name == "net1"))
}

/// Whether this thread's namespace has net1, up, with an IPv4 address.
fn net1_is_up() -> bool {
    getifaddrs().is_ok_and(|mut addresses| {
        addresses.any(|a| {
            a.interface_name == "net1"
                && a.flags.contains(InterfaceFlags::IFF_UP)
                && a.address
                    .as_ref()
                    .is_some_and(|s| s.as_sockaddr_in().is_some())
        })
    })
}
