//! The measurements. Each returns plain numbers; main.rs prints and records them.

use std::fs::File;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use plexus_integration::apiserver::{ApiServer, in_netns};
use plexus_integration::shim::{self, CniEnv};
use plexus_integration::{Node, Pod, ShimOutput, binaries};
use serde_json::Value;

use crate::direct::{Direct, Net, Target};
use crate::stats::ServerTimes;
use crate::supervise::check;

pub type Result<T> = std::result::Result<T, String>;

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

fn target(pod: &Pod) -> (String, String) {
    (pod.netns.path(), pod.cni_args())
}

fn shim_ok(what: &str, out: &ShimOutput) -> Result<()> {
    if out.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} through plexus failed: {} {}",
            out.stdout, out.stderr
        ))
    }
}

fn scrape(node: &Node) -> Result<ServerTimes> {
    match node.get("/metrics") {
        Some((200, body)) => Ok(ServerTimes::parse(&body)),
        other => Err(format!("GET /metrics: {other:?}")),
    }
}

/// One pod's sequence of ADD and DEL timings, in ms.
#[derive(Default, Clone)]
pub struct Samples {
    pub add: Vec<f64>,
    pub del: Vec<f64>,
}

/// Latency of one case (a pod with `k` secondaries).
#[derive(Default, Clone)]
pub struct CaseResult {
    pub k: usize,
    pub direct: Samples,
    pub plexus: Samples,
    /// plexusd's own view of each Plexus run: request time and time in delegates.
    pub server: Samples,
    pub server_delegates: Samples,
}

pub struct Case<'a> {
    pub k: usize,
    pub pod: &'a Pod,
    pub nets: Vec<Net>,
}

/// Warm-up runs per case and path before the measured ones.
const WARMUP: usize = 2;

/// ADD then DEL of every case, `reps` times, direct and through Plexus alternating which
/// goes first, so drift hits both alike. Runs on a thread inside the node's namespace, where
/// plexusd runs its delegates too.
pub fn latency(
    node: &Node,
    direct: &Direct,
    cases: &[Case],
    reps: usize,
) -> Result<Vec<CaseResult>> {
    in_netns(&node.netns.path(), || {
        let mut results: Vec<CaseResult> = cases
            .iter()
            .map(|c| CaseResult {
                k: c.k,
                ..Default::default()
            })
            .collect();
        for rep in 0..WARMUP + reps {
            check()?;
            for (case, result) in cases.iter().zip(results.iter_mut()) {
                let (netns, args) = target(case.pod);
                let target = Target {
                    container_id: &case.pod.container_id,
                    netns: &netns,
                    cni_args: &args,
                };
                let direct_first = rep % 2 == 0;
                for through_plexus in [!direct_first, direct_first] {
                    if through_plexus {
                        let before = scrape(node)?;
                        let start = Instant::now();
                        let out = node.add(case.pod);
                        let add = ms_since(start);
                        shim_ok("ADD", &out)?;
                        let start = Instant::now();
                        let out = node.del(case.pod);
                        let del = ms_since(start);
                        shim_ok("DEL", &out)?;
                        let server = scrape(node)?.since(&before);
                        if rep >= WARMUP {
                            result.plexus.add.push(add);
                            result.plexus.del.push(del);
                            result.server.add.push(server.add);
                            result.server.del.push(server.del);
                            result.server_delegates.add.push(server.add_delegates);
                            result.server_delegates.del.push(server.del_delegates);
                        }
                    } else {
                        let start = Instant::now();
                        let added = direct.add(&case.nets, &target)?;
                        let add = ms_since(start);
                        let start = Instant::now();
                        direct.del(&case.nets, Some(&added), &target)?;
                        let del = ms_since(start);
                        if rep >= WARMUP {
                            result.direct.add.push(add);
                            result.direct.del.push(del);
                        }
                    }
                }
            }
        }
        Ok(results)
    })
}

pub struct ShimResult {
    /// `/bin/true`, exec'd the same way: the floor of any exec on this machine.
    pub exec_floor: Vec<f64>,
    pub version: Vec<f64>,
    pub noop_add_direct: Vec<f64>,
    pub noop_add_plexus: Vec<f64>,
    /// The no-op plugin's ADD as plexusd timed it, spawn to exit: what starting a delegate
    /// costs from plexusd, next to `noop_add_direct`.
    pub noop_add_in_plexusd: Vec<f64>,
    pub noop_del_direct: Vec<f64>,
    pub noop_del_plexus: Vec<f64>,
}

/// The shim exec'd from scratch each time: VERSION (answered by the shim alone), and ADD/DEL
/// of a pod whose only delegate is the no-op plugin, next to the no-op plugin run directly.
pub fn shim_exec(node: &Node, direct: &Direct, noop_pod: &Pod, reps: usize) -> Result<ShimResult> {
    let mut result = ShimResult {
        exec_floor: Vec::new(),
        version: Vec::new(),
        noop_add_direct: Vec::new(),
        noop_add_plexus: Vec::new(),
        noop_add_in_plexusd: Vec::new(),
        noop_del_direct: Vec::new(),
        noop_del_plexus: Vec::new(),
    };
    let version_env = CniEnv {
        command: "VERSION".into(),
        path: binaries::CNI_BIN_DIR.into(),
        ..Default::default()
    };
    let version_stdin = node.plexus_conf("1.1.0").to_string();
    let noop_stdin = br#"{"cniVersion":"1.0.0","name":"noop","type":"noop"}"#;
    in_netns(&node.netns.path(), || -> Result<()> {
        let (netns, args) = target(noop_pod);
        let target = Target {
            container_id: &noop_pod.container_id,
            netns: &netns,
            cni_args: &args,
        };
        for rep in 0..WARMUP + reps {
            check()?;
            let start = Instant::now();
            let output = std::process::Command::new("/bin/true")
                .output()
                .map_err(|e| e.to_string())?;
            let floor = ms_since(start);
            if !output.status.success() {
                return Err("/bin/true failed".into());
            }
            let start = Instant::now();
            let out = shim::exec(&version_env, &version_stdin);
            let version = ms_since(start);
            shim_ok("VERSION", &out)?;
            let start = Instant::now();
            direct.run("noop", "ADD", noop_stdin, "eth0", &target)?;
            let add_direct = ms_since(start);
            let start = Instant::now();
            direct.run("noop", "DEL", noop_stdin, "eth0", &target)?;
            let del_direct = ms_since(start);
            let before = scrape(node)?;
            let start = Instant::now();
            let out = node.add(noop_pod);
            let add_plexus = ms_since(start);
            shim_ok("no-op ADD", &out)?;
            let in_plexusd = scrape(node)?.since(&before).add_delegates;
            let start = Instant::now();
            let out = node.del(noop_pod);
            let del_plexus = ms_since(start);
            shim_ok("no-op DEL", &out)?;
            if rep >= WARMUP {
                result.exec_floor.push(floor);
                result.version.push(version);
                result.noop_add_direct.push(add_direct);
                result.noop_del_direct.push(del_direct);
                result.noop_add_plexus.push(add_plexus);
                result.noop_add_in_plexusd.push(in_plexusd);
                result.noop_del_plexus.push(del_plexus);
            }
        }
        Ok(())
    })?;
    Ok(result)
}

/// plexusd's resident set size (VmRSS), in KiB.
pub fn rss_kib(node: &Node) -> Result<u64> {
    let pid = node.plexusd_pid().ok_or("plexusd is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "plexusd" {
        return Err(format!("pid {pid} is {comm:?}, not plexusd"));
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for pid {pid}"))
}

/// plexusd's resident memory split as the kernel counts it: anonymous (heap, stacks) and
/// file-backed (its own code, clean and shared with the page cache), in KiB.
pub fn rss_split_kib(node: &Node) -> Result<(u64, u64)> {
    let pid = node.plexusd_pid().ok_or("plexusd is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} for pid {pid}"))
    };
    Ok((field("RssAnon:")?, field("RssFile:")?))
}

/// RSS once plexusd has settled: sampled every 100 ms until two seconds pass without change
/// (at most ten seconds), the last value.
pub fn settled_rss_kib(node: &Node) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = rss_kib(node)?;
    let mut stable_since = Instant::now();
    while Instant::now() < deadline && stable_since.elapsed() < Duration::from_secs(2) {
        check()?;
        std::thread::sleep(Duration::from_millis(100));
        let now = rss_kib(node)?;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    Ok(last)
}

pub struct ParallelRound {
    pub direct_add: f64,
    pub direct_del: f64,
    pub plexus_add: f64,
    pub plexus_del: f64,
    pub errors: usize,
}

/// All pods at once, each on its own thread inside the node's namespace; wall time from the
/// common start until the last one is done, and the failures.
fn all_at_once<T: Send>(
    node: &Node,
    pods: &[Pod],
    op: impl Fn(usize, &Pod) -> Result<T> + Sync,
) -> (f64, Vec<Result<T>>) {
    let barrier = Barrier::new(pods.len() + 1);
    let netns = node.netns.path();
    std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (barrier, netns, op) = (&barrier, &netns, &op);
                scope.spawn(move || {
                    let entered = File::open(netns).map_err(|e| e.to_string()).and_then(|ns| {
                        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
                    });
                    barrier.wait();
                    entered.and_then(|()| op(i, pod))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<Result<T>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect();
        (ms_since(start), results)
    })
}

/// `pods` ADD at once then DEL at once, directly and through Plexus, `rounds` times
/// (alternating which goes first).
pub fn parallel(
    node: &Node,
    direct: &Direct,
    pods: &[Pod],
    nets: &[Net],
    rounds: usize,
) -> Result<Vec<ParallelRound>> {
    let mut out = Vec::new();
    for round in 0..rounds {
        check()?;
        let mut r = ParallelRound {
            direct_add: 0.0,
            direct_del: 0.0,
            plexus_add: 0.0,
            plexus_del: 0.0,
            errors: 0,
        };
        let direct_first = round % 2 == 0;
        for through_plexus in [!direct_first, direct_first] {
            if through_plexus {
                let (add, results) =
                    all_at_once(node, pods, |_, pod| shim_ok("ADD", &node.add(pod)));
                r.errors += report_errors("Plexus ADD", &results);
                let (del, results) =
                    all_at_once(node, pods, |_, pod| shim_ok("DEL", &node.del(pod)));
                r.errors += report_errors("Plexus DEL", &results);
                (r.plexus_add, r.plexus_del) = (add, del);
            } else {
                let (add, added) = all_at_once(node, pods, |_, pod| {
                    let (netns, args) = target(pod);
                    direct.add(
                        nets,
                        &Target {
                            container_id: &pod.container_id,
                            netns: &netns,
                            cni_args: &args,
                        },
                    )
                });
                r.errors += report_errors("direct ADD", &added);
                let (del, results) = all_at_once(node, pods, |i, pod| {
                    let (netns, args) = target(pod);
                    let results = added[i].as_ref().ok().map(Vec::as_slice);
                    direct.del(
                        nets,
                        results,
                        &Target {
                            container_id: &pod.container_id,
                            netns: &netns,
                            cni_args: &args,
                        },
                    )
                });
                r.errors += report_errors("direct DEL", &results);
                (r.direct_add, r.direct_del) = (add, del);
            }
        }
        out.push(r);
    }
    Ok(out)
}

fn report_errors<T>(what: &str, results: &[Result<T>]) -> usize {
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(first) = errors.first() {
        eprintln!(
            "  {what}: {} of {} failed; first: {first}",
            errors.len(),
            results.len()
        );
    }
    errors.len()
}

/// API requests of one warm ADD and the DEL after it.
#[derive(Clone, Copy, Default)]
pub struct ApiTraffic {
    pub add_reads: u64,
    pub add_writes: u64,
    pub del_reads: u64,
    pub del_writes: u64,
}

/// Waits until the API server has seen no request for 500 ms (plexusd writes status and
/// events in the background after answering).
fn quiet(api: &ApiServer) -> Result<plexus_integration::apiserver::Counters> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = api.counters();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(500) {
        check()?;
        if Instant::now() > deadline {
            return Err("the API server never went quiet".into());
        }
        std::thread::sleep(Duration::from_millis(25));
        let now = api.counters();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    Ok(last)
}

/// Reads and writes of `times` warm ADDs (and DELs) per case, from the test API server's
/// counters; watches are long-running and not counted.
pub fn api_traffic(
    node: &Node,
    api: &ApiServer,
    cases: &[Case],
    times: usize,
) -> Result<Vec<(usize, Vec<ApiTraffic>)>> {
    let mut out = Vec::new();
    for case in cases {
        let mut runs = Vec::new();
        for _ in 0..times {
            quiet(api)?;
            api.reset_counters();
            shim_ok("ADD", &node.add(case.pod))?;
            let after_add = quiet(api)?;
            api.reset_counters();
            shim_ok("DEL", &node.del(case.pod))?;
            let after_del = quiet(api)?;
            if after_add.reads > 0 {
                eprintln!("  reads on a warm ADD: {:?}", api.requests());
            }
            runs.push(ApiTraffic {
                add_reads: after_add.reads,
                add_writes: after_add.writes,
                del_reads: after_del.reads,
                del_writes: after_del.writes,
            });
        }
        out.push((case.k, runs));
    }
    Ok(out)
}

/// The NADs and pods of the memory check: `nads` NADs and `pods` pods on `node_name`, each pod
/// naming two of the NADs.
pub fn population(nads: usize, pods: usize, node_name: &str) -> (Vec<Value>, Vec<Value>) {
    let nad_objects = (0..nads)
        .map(|i| {
            let mut nad =
                crate::world::nad(&format!("net-{i}"), &crate::world::secondary(1 + i % 4));
            nad["metadata"]["namespace"] = format!("team-{}", i % 10).into();
            nad
        })
        .collect();
    let pod_objects = (0..pods)
        .map(|i| {
            let namespace = format!("team-{}", i % 10);
            let networks = format!("net-{},net-{}", i % nads.max(1), (i + 1) % nads.max(1));
            crate::world::realistic_pod(
                &namespace,
                &format!("web-{node_name}-{i}"),
                node_name,
                &networks,
            )
        })
        .collect();
    (nad_objects, pod_objects)
}
