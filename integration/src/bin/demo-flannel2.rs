//! `make demo-flannel2`: the two-node world of the flannel2 tests, shown step by step. Each node
//! runs plexusd with flannel (VXLAN VNI 1, bridge cni0) as its cluster network and
//! examples/flannel2's NAD (VNI 2, bridge cni1); a pod on each node gets eth0 on the first
//! overlay and net1 on the second; a ping crosses the nodes on net1 and then on eth0, and the
//! VNI of every packet is read off the underlay (tcpdump in the switch namespace, when
//! installed) and off the vxlan devices' counters. Then both pods are deleted, and everything
//! is removed again: also on failure and on Ctrl-C (SIGINT, SIGTERM, SIGHUP).
//!
//! The world is `plexus_integration::overlay`, the same code the tests run. Run as root.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use plexus_integration::overlay::{
    self, FLANNEL2, OVERLAYS, Overlay, PRIMARY, UNDERLAY, VXLAN_PORT, World,
};
use plexus_integration::{Pod, run};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Returns from the demo (and so cleans up) once a signal came in.
macro_rules! checkpoint {
    () => {
        if interrupted() {
            return Err("interrupted".into());
        }
    };
}

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("demo-flannel2 needs root: it creates network namespaces");
        return ExitCode::FAILURE;
    }
    // The signals are taken by a thread of ours, so the demo can stop between steps and clean
    // up. Children get a clean signal mask from std, so plexusd, ping and tcpdump still stop
    // on Ctrl-C as usual (the terminal sends it to them too).
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("\n{signal} received: stopping and cleaning up");
        }
    });
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A command killed by Ctrl-C fails its step; that is not worth a backtrace.
        if !interrupted() {
            default_hook(info);
        }
    }));

    let mut created = Created::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| demo(&mut created)));
    // By now the world and the pods are dropped: plexusd stopped, namespaces and dirs gone.
    let clean = created.report();
    match outcome {
        Ok(Ok(())) if !clean => ExitCode::FAILURE,
        Ok(Ok(())) => ExitCode::SUCCESS,
        _ if interrupted() => ExitCode::from(130),
        Ok(Err(e)) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

fn section(title: &str) {
    println!("\n== {title} ==");
}

fn indented(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// `$ command` and its output, indented.
fn shell(display: &str, output: &str) {
    println!("$ {display}");
    indented(output.trim_end());
}

fn demo(created: &mut Created) -> Result<(), String> {
    section("Two nodes on one underlay, two flannel overlays on them");
    let a = Pod::new("demo", "web-a");
    let b = Pod::new("demo", "web-b");
    let nad = overlay::example_nad_ref();
    let world = World::builder(2)
        .manifest(0, "web-a.yaml", &overlay::pod_manifest(&a, &nad))
        .manifest(1, "web-b.yaml", &overlay::pod_manifest(&b, &nad))
        .start();
    created.remember(&world, [&a, &b]);
    checkpoint!();
    println!(
        "underlay:  {UNDERLAY}, bridge br0 in namespace {}",
        world.switch.name()
    );
    for (i, node) in world.nodes.iter().enumerate() {
        println!(
            "node-{}:    namespace {}, eth0 {}, plexusd on {}",
            i + 1,
            node.netns.name(),
            overlay::underlay_ip(i),
            node.socket().display()
        );
    }
    for o in OVERLAYS {
        println!(
            "{:<10} {} VNI {} on {}, UDP {VXLAN_PORT}, bridge {}: node-1 {}, node-2 {}",
            format!("{}:", o.name),
            o.cidr(),
            o.vni,
            o.device(),
            o.bridge,
            o.subnet(0),
            o.subnet(1)
        );
    }
    println!("\nWhat flanneld would have written and set up on node-1:");
    let n1 = world.node(0);
    for o in OVERLAYS {
        let file = world.subnet_file(0, &o);
        shell(
            &format!("cat {}", file.display()),
            &std::fs::read_to_string(&file).map_err(|e| e.to_string())?,
        );
    }
    for o in OVERLAYS {
        let details = n1
            .netns
            .ip(&["-d", "-br", "link", "show", "dev", &o.device()]);
        let mut summary = details
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        let full = n1.netns.ip(&["-d", "link", "show", "dev", &o.device()]);
        if let Some(vxlan) = full
            .lines()
            .find(|l| l.trim_start().starts_with("vxlan id"))
        {
            let fields: Vec<&str> = vxlan.split_whitespace().collect();
            let keep: Vec<&str> = fields
                .windows(2)
                .filter(|w| ["id", "local", "dev", "dstport"].contains(&w[0]))
                .flat_map(|w| [w[0], w[1]])
                .collect();
            summary.push_str(&format!("  vxlan {} nolearning", keep.join(" ")));
        }
        let mtu = full
            .split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .unwrap_or("?")
            .to_owned();
        shell(
            &format!("ip -d link show {}  (shortened)", o.device()),
            &format!("{summary}  mtu {mtu}"),
        );
    }
    let routes = n1.netns.ip(&["route", "show"]);
    shell(
        "ip route | grep flannel",
        &routes
            .lines()
            .filter(|l| l.contains("flannel"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    for o in OVERLAYS {
        shell(
            &format!("ip neigh show dev {}", o.device()),
            &n1.netns.ip(&["neigh", "show", "dev", &o.device()]),
        );
        shell(
            &format!("bridge fdb show dev {}", o.device()),
            &run(
                "bridge",
                &["-netns", n1.netns.name(), "fdb", "show", "dev", &o.device()],
            ),
        );
    }
    checkpoint!();

    for (i, pod) in [&a, &b].into_iter().enumerate() {
        section(&format!(
            "ADD {} on node-{} (k8s.v1.cni.cncf.io/networks: {nad})",
            pod.name,
            i + 1
        ));
        let node = world.node(i);
        let output = node.add(pod);
        if !output.success() {
            return Err(format!("ADD {}: {}", pod.name, output.stdout));
        }
        shell(
            &format!("ip -n {} -br addr", pod.netns.name()),
            &pod.netns.ip(&["-br", "addr"]),
        );
        shell(
            &format!("ip -n {} route", pod.netns.name()),
            &pod.netns.ip(&["route"]),
        );
        println!("network-status:");
        for entry in node
            .network_status(pod)
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            indented(&entry.to_string());
        }
        for o in OVERLAYS {
            shell(
                &format!(
                    "ip -n {} -br link show master {}",
                    node.netns.name(),
                    o.bridge
                ),
                &node.netns.ip(&["-br", "link", "show", "master", o.bridge]),
            );
        }
        let saved = world.data_dir(i, &FLANNEL2).join(&pod.container_id);
        shell(
            &format!(
                "cat {}  (the delegate config flannel2 ran)",
                saved.display()
            ),
            &std::fs::read_to_string(&saved).map_err(|e| e.to_string())?,
        );
        checkpoint!();
    }

    for (ifname, o) in [("net1", FLANNEL2), ("eth0", PRIMARY)] {
        let target = address(&b, ifname)?;
        section(&format!(
            "web-a (node-1) pings web-b (node-2) over {ifname}: {} -> {target}",
            address(&a, ifname)?
        ));
        cross_node_ping(&world, &a, ifname, &target, o)?;
        checkpoint!();
    }

    section("DEL both pods, then check that nothing is left");
    for (i, pod) in [&a, &b].into_iter().enumerate() {
        let output = world.node(i).del(pod);
        if !output.success() {
            return Err(format!("DEL {}: {}", pod.name, output.stdout));
        }
        println!("DEL {} on node-{}: ok", pod.name, i + 1);
    }
    for (i, pod) in [&a, &b].into_iter().enumerate() {
        let node = world.node(i);
        let mut left = Vec::new();
        if !pod.link_names().is_empty() {
            left.push(format!("{} still has {:?}", pod.name, pod.link_names()));
        }
        if !node.veths().is_empty() {
            left.push(format!("veths {:?}", node.veths()));
        }
        if !node.ipam_allocations().is_empty() {
            left.push(format!("allocations {:?}", node.ipam_allocations()));
        }
        if !node.records().is_empty() {
            left.push(format!("records {:?}", node.records()));
        }
        for o in OVERLAYS {
            if !world.data_dir_files(i, &o).is_empty() {
                left.push(format!(
                    "{:?} in {}",
                    world.data_dir_files(i, &o),
                    o.data_dir
                ));
            }
        }
        if !left.is_empty() {
            return Err(format!("node-{}: left behind: {}", i + 1, left.join("; ")));
        }
        println!(
            "✔ node-{}: {} holds no interface; no pod veth, host-local allocation, record, or file in either dataDir",
            i + 1,
            pod.name
        );
    }
    Ok(())
}

/// `pod`'s bare address on `ifname`.
fn address(pod: &Pod, ifname: &str) -> Result<String, String> {
    let link = pod
        .link(ifname)
        .ok_or_else(|| format!("{} has no {ifname}", pod.name))?;
    let cidr = link
        .addresses
        .first()
        .ok_or_else(|| format!("{ifname} of {} has no address", pod.name))?;
    Ok(cidr.split('/').next().unwrap_or(cidr).to_owned())
}

/// Pings `target` from `from` out of `ifname`, capturing node-1's underlay port, and shows the
/// VNI of each packet and how the vxlan devices' counters moved.
fn cross_node_ping(
    world: &World,
    from: &Pod,
    ifname: &str,
    target: &str,
    expected: Overlay,
) -> Result<(), String> {
    let capture = Capture::start(world);
    let before: Vec<_> = (0..2)
        .flat_map(|n| OVERLAYS.map(|o| world.counters(n, &o)))
        .collect();
    let ping = Command::new("ip")
        .args(["netns", "exec", from.netns.name()])
        .args([
            "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", ifname, target,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let after: Vec<_> = (0..2)
        .flat_map(|n| OVERLAYS.map(|o| world.counters(n, &o)))
        .collect();
    shell(
        &format!(
            "ip netns exec {} ping -c 3 -I {ifname} {target}",
            from.netns.name()
        ),
        &String::from_utf8_lossy(&ping.stdout)
            .lines()
            .filter(|l| l.contains("bytes from") || l.contains("packet loss"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    if !ping.status.success() {
        return Err(format!("web-a cannot reach {target} over {ifname}"));
    }
    match capture {
        Some(capture) => {
            let packets = capture.finish();
            println!(
                "On the underlay (tcpdump -n -T vxlan -i n0 udp port {VXLAN_PORT} in {}):",
                world.switch.name()
            );
            indented(&packets.join("\n"));
            let vnis: Vec<&str> = packets
                .iter()
                .filter_map(|p| p.split("vni ").nth(1)?.split_whitespace().next())
                .collect();
            let expected_vni = expected.vni.to_string();
            if vnis.is_empty() || vnis.iter().any(|v| *v != expected_vni) {
                return Err(format!("expected VNI {expected_vni} only, saw {vnis:?}"));
            }
            println!(
                "✔ all {} packets carried VNI {expected_vni} ({})",
                vnis.len(),
                expected.device()
            );
        }
        None => println!(
            "(tcpdump is not installed, so no capture: `make demo-flannel2` installs it; the counters tell the same story)"
        ),
    }
    println!("vxlan device counters (packets during the ping):");
    let mut only_expected = true;
    let mut i = 0;
    for n in 0..2 {
        for o in OVERLAYS {
            let (b, a) = (before[i], after[i]);
            let (tx, rx) = (a.tx_packets - b.tx_packets, a.rx_packets - b.rx_packets);
            println!(
                "    node-{} {} (VNI {}): tx +{tx}, rx +{rx}",
                n + 1,
                o.device(),
                o.vni
            );
            only_expected &= if o == expected {
                tx >= 3 && rx >= 3
            } else {
                tx == 0 && rx == 0
            };
            i += 1;
        }
    }
    if !only_expected {
        return Err(format!("expected the ping on {} only", expected.device()));
    }
    println!(
        "✔ on both nodes only {} sent and received",
        expected.device()
    );
    Ok(())
}

/// tcpdump on node-1's port of the underlay switch, stopped (by its PID) when done or dropped.
struct Capture {
    child: Child,
}

impl Capture {
    fn start(world: &World) -> Option<Self> {
        let installed = Command::new("tcpdump")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return None;
        }
        let port = VXLAN_PORT.to_string();
        // `ip netns exec` execs tcpdump itself, so the PID is tcpdump's.
        let mut child = Command::new("ip")
            .args(["netns", "exec", world.switch.name()])
            .args(["tcpdump", "-l", "-n", "-T", "vxlan", "-i", "n0"])
            .args(["udp", "port", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        // Ready once it says it is listening.
        let stderr = child.stderr.take()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = ready_tx.send(());
                    break;
                }
            }
            for _ in lines {}
        });
        let capture = Self { child };
        ready_rx.recv_timeout(Duration::from_secs(5)).ok()?;
        Some(capture)
    }

    /// Stops tcpdump and returns one line per captured packet: the outer UDP header with the
    /// VNI, then the packet inside.
    fn finish(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        self.stop();
        let mut text = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut text);
        }
        let mut packets: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.contains("VXLAN") {
                packets.push(compact(line));
            } else if let Some(last) = packets.last_mut() {
                // The inner packet, on a line of its own.
                last.push_str(" | ");
                last.push_str(&compact(line));
            }
        }
        packets
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tcpdump line without its timestamp and with the ICMP details cut short.
fn compact(line: &str) -> String {
    let line = line.trim();
    let line = match line.split_once(' ') {
        Some((first, rest)) if first.contains(':') && first.contains('.') => rest,
        _ => line,
    };
    let line = line.split(", id ").next().unwrap_or(line);
    line.split(", flags [I] (0x08)").collect::<String>()
}

/// What the demo created, to check when it ends (on success, failure and a signal alike) that
/// the world's and the pods' Drop removed it.
#[derive(Default)]
struct Created {
    namespaces: Vec<String>,
    dirs: Vec<std::path::PathBuf>,
}

impl Created {
    fn remember<const N: usize>(&mut self, world: &World, pods: [&Pod; N]) {
        self.namespaces = world
            .nodes
            .iter()
            .map(|n| n.netns.name().to_owned())
            .chain([world.switch.name().to_owned()])
            .chain(pods.iter().map(|p| p.netns.name().to_owned()))
            .collect();
        self.dirs = world.nodes.iter().map(|n| n.dir().to_owned()).collect();
    }

    /// Prints what was removed; false if anything is still there.
    fn report(&self) -> bool {
        if self.namespaces.is_empty() {
            return true;
        }
        section("Cleanup");
        println!("stopped plexusd on both nodes; removed:");
        let listed = run("ip", &["netns", "list"]);
        let mut clean = true;
        for name in &self.namespaces {
            let gone = !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name));
            clean &= gone;
            println!(
                "    {} namespace {name}",
                if gone { "✔" } else { "✘ still there:" }
            );
        }
        for dir in &self.dirs {
            let gone = !dir.exists();
            clean &= gone;
            println!(
                "    {} {}",
                if gone { "✔" } else { "✘ still there:" },
                dir.display()
            );
        }
        clean
    }
}
