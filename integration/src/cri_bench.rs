//! What a pod costs through Plexus under a real runtime: RunPodSandbox, StopPodSandbox and
//! RemovePodSandbox latency on Debian's containerd, with the cluster network as containerd's
//! only CNI config ("direct") and through Plexus with 0, 1, 2 and 4 secondary networks, all
//! interleaved in one run (issue 8).
//!
//! Two nodes, each with its own containerd: one whose conf dir holds only the cluster network,
//! and one whose plexusd writes `00-plexus.conflist` and knows the NADs and pods. Each rep runs
//! one pod lifecycle per mode, in an order that rotates from rep to rep.
//!
//! The overhead at N secondaries is what Plexus adds on top of the plugins it runs: the median
//! over pods of (RunPodSandbox through Plexus − the secondaries' own delegate time, which
//! plexusd measures per call) minus the median direct RunPodSandbox.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Node;
use crate::containerd::{self, Containerd, Sandbox};

/// The secondary-network counts measured through Plexus.
pub const SECONDARY_COUNTS: [usize; 4] = [0, 1, 2, 4];
/// Unmeasured lifecycles per mode before the measured ones.
const WARMUP: usize = 3;

/// The median and 90th percentile of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub median_ms: f64,
    pub p90_ms: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `samples` (ms).
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index]
        };
        Self {
            median_ms: rank(0.5),
            p90_ms: rank(0.9),
        }
    }

    fn to_json(self) -> Value {
        json!({"median_ms": round(self.median_ms), "p90_ms": round(self.p90_ms)})
    }
}

/// One mode's figures.
#[derive(Debug, Clone)]
pub struct ModeResult {
    /// `direct`, or `plexus-N` for N secondaries.
    pub mode: String,
    /// N for a Plexus mode.
    pub secondaries: Option<usize>,
    pub run: Summary,
    pub stop: Summary,
    pub remove: Summary,
    /// Run + Stop + Remove of one pod.
    pub cycle: Summary,
    /// The secondaries' delegate time during RunPodSandbox (plexusd's measure); Plexus modes.
    pub secondary_delegates: Option<Summary>,
    /// RunPodSandbox minus the secondaries' delegate time, per pod; Plexus modes.
    pub run_without_secondaries: Option<Summary>,
    /// The cluster network's delegate time during RunPodSandbox; Plexus modes.
    pub cluster_delegate: Option<Summary>,
    /// plexusd's own time for the ADD, delegates excluded; Plexus modes.
    pub plexusd_own: Option<Summary>,
    /// RunPodSandbox minus plexusd's whole ADD: containerd, crun, the shim; Plexus modes.
    pub outside_plexusd: Option<Summary>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct CriBenchResult {
    pub reps: usize,
    /// `containerd --version` and `crun --version`'s first lines.
    pub runtime: String,
    /// `direct` first, then Plexus with 0, 1, 2, 4 secondaries.
    pub modes: Vec<ModeResult>,
    /// Keyed "0", "1", "2", "4": what Plexus adds to RunPodSandbox's median (see module docs).
    pub cri_run_overhead_ms_median: BTreeMap<String, f64>,
}

impl CriBenchResult {
    pub fn to_json(&self) -> Value {
        let modes: Vec<Value> = self
            .modes
            .iter()
            .map(|m| {
                let mut v = json!({
                    "mode": m.mode,
                    "run": m.run.to_json(),
                    "stop": m.stop.to_json(),
                    "remove": m.remove.to_json(),
                    "cycle": m.cycle.to_json(),
                });
                if let Some(n) = m.secondaries {
                    v["secondaries"] = json!(n);
                }
                if let Some(s) = m.secondary_delegates {
                    v["secondary_delegates"] = s.to_json();
                }
                for (key, summary) in [
                    ("run_without_secondaries", m.run_without_secondaries),
                    ("cluster_delegate", m.cluster_delegate),
                    ("plexusd_own", m.plexusd_own),
                    ("outside_plexusd", m.outside_plexusd),
                ] {
                    if let Some(s) = summary {
                        v[key] = s.to_json();
                    }
                }
                v
            })
            .collect();
        let overhead: serde_json::Map<String, Value> = self
            .cri_run_overhead_ms_median
            .iter()
            .map(|(k, v)| (k.clone(), json!(round(*v))))
            .collect();
        json!({
            "reps": self.reps,
            "runtime": self.runtime,
            "modes": modes,
            "cri_run_overhead_ms_median": overhead,
        })
    }

    /// The figures as text tables.
    pub fn table(&self) -> String {
        let pair = |s: Summary| format!("{:.1} / {:.1}", s.median_ms, s.p90_ms);
        let or_dash = |s: Option<Summary>| s.map(pair).unwrap_or_else(|| "-".into());
        let mut out = format!(
            "CRI pod lifecycle on {}, {} pods per mode, interleaved (ms, median / p90)\n",
            self.runtime, self.reps
        );
        out.push_str(&format!(
            "{:<10} {:>15} {:>15} {:>15} {:>15}\n",
            "mode", "RunPodSandbox", "Stop", "Remove", "Run+Stop+Rm"
        ));
        for m in &self.modes {
            out.push_str(&format!(
                "{:<10} {:>15} {:>15} {:>15} {:>15}\n",
                m.mode,
                pair(m.run),
                pair(m.stop),
                pair(m.remove),
                pair(m.cycle),
            ));
        }
        out.push_str(
            "\nRunPodSandbox through Plexus, taken apart (ms, median / p90; plexusd's metrics)\n",
        );
        out.push_str(&format!(
            "{:<10} {:>15} {:>15} {:>15} {:>15} {:>15} {:>9}\n",
            "mode",
            "2ndary plugins",
            "Run - 2ndary",
            "cluster plugin",
            "plexusd own",
            "outside plexusd",
            "overhead"
        ));
        for m in self.modes.iter().filter(|m| m.secondaries.is_some()) {
            let overhead = m
                .secondaries
                .and_then(|n| self.cri_run_overhead_ms_median.get(&n.to_string()))
                .map(|v| format!("{v:+.2}"))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<10} {:>15} {:>15} {:>15} {:>15} {:>15} {:>9}\n",
                m.mode,
                or_dash(m.secondary_delegates),
                or_dash(m.run_without_secondaries),
                or_dash(m.cluster_delegate),
                or_dash(m.plexusd_own),
                or_dash(m.outside_plexusd),
                overhead,
            ));
        }
        out.push_str(
            "overhead = median(Run - 2ndary plugins) - median(direct Run); outside plexusd = Run - plexusd's whole ADD\n",
        );
        out
    }
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One mode under test: where its pods run and what they ask for.
struct Mode<'a> {
    name: String,
    secondaries: Option<usize>,
    node: &'a Node,
    runtime: &'a Containerd,
    pod: Sandbox,
    run: Vec<f64>,
    stop: Vec<f64>,
    remove: Vec<f64>,
    add: Vec<AddTimes>,
}

impl Mode<'_> {
    /// One pod lifecycle; returns (run, stop, remove) in ms and what plexusd spent on its ADD.
    fn cycle(&mut self, attempt: u32) -> (f64, f64, f64, AddTimes) {
        self.pod.attempt = attempt;
        let before = self.secondaries.map(|_| AddTimes::read(self.node));
        let started = Instant::now();
        let id = self
            .runtime
            .run_pod_sandbox(&self.pod)
            .unwrap_or_else(|e| panic!("{}: RunPodSandbox failed: {e}", self.name));
        let run = ms(started.elapsed());
        let add = before.map_or_else(AddTimes::default, |b| AddTimes::read(self.node).since(b));
        let started = Instant::now();
        self.runtime
            .stop(&id)
            .unwrap_or_else(|e| panic!("{}: StopPodSandbox failed: {e}", self.name));
        let stop = ms(started.elapsed());
        let started = Instant::now();
        self.runtime
            .remove(&id)
            .unwrap_or_else(|e| panic!("{}: RemovePodSandbox failed: {e}", self.name));
        let remove = ms(started.elapsed());
        (run, stop, remove, add)
    }

    fn result(&self) -> ModeResult {
        let cycle: Vec<f64> = (0..self.run.len())
            .map(|i| self.run[i] + self.stop[i] + self.remove[i])
            .collect();
        let without: Vec<f64> = (0..self.run.len())
            .map(|i| self.run[i] - self.add[i].secondaries)
            .collect();
        let of = |f: fn(&AddTimes) -> f64| -> Option<Summary> {
            self.secondaries
                .map(|_| Summary::of(&self.add.iter().map(f).collect::<Vec<_>>()))
        };
        ModeResult {
            mode: self.name.clone(),
            secondaries: self.secondaries,
            run: Summary::of(&self.run),
            stop: Summary::of(&self.stop),
            remove: Summary::of(&self.remove),
            cycle: Summary::of(&cycle),
            secondary_delegates: of(|a| a.secondaries),
            run_without_secondaries: self.secondaries.map(|_| Summary::of(&without)),
            cluster_delegate: of(|a| a.cluster),
            plexusd_own: of(|a| a.requests - a.cluster - a.secondaries),
            outside_plexusd: self.secondaries.map(|_| {
                let outside: Vec<f64> = (0..self.run.len())
                    .map(|i| self.run[i] - self.add[i].requests)
                    .collect();
                Summary::of(&outside)
            }),
        }
    }
}

/// What plexusd's /metrics say it spent on ADDs so far, in ms.
#[derive(Debug, Clone, Copy, Default)]
struct AddTimes {
    /// plexusd's whole handling of ADD requests.
    requests: f64,
    /// The cluster network's delegates.
    cluster: f64,
    /// Every other network's delegates.
    secondaries: f64,
}

impl AddTimes {
    fn read(node: &Node) -> Self {
        let (_, metrics) = node.get("/metrics").expect("GET /metrics");
        let mut times = Self::default();
        for line in metrics.lines() {
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let value = value * 1000.0;
            if !line.contains(r#"command="ADD""#) {
                continue;
            }
            if line.starts_with("plexus_cni_request_duration_seconds_sum{") {
                times.requests += value;
            } else if line.starts_with("plexus_delegate_duration_seconds_sum{") {
                if line.contains(r#"network="cluster""#) {
                    times.cluster += value;
                } else {
                    times.secondaries += value;
                }
            }
        }
        times
    }

    fn since(self, before: Self) -> Self {
        Self {
            requests: self.requests - before.requests,
            cluster: self.cluster - before.cluster,
            secondaries: self.secondaries - before.secondaries,
        }
    }
}

fn bridge_nad(index: usize) -> String {
    let name = format!("b{index}");
    let config = json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": format!("br-b{index}"),
        "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("198.18.{}.0/24", 50 + index)}]], "dataDir": "@IPAM@"}
    });
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"config": config.to_string()}
    })
    .to_string()
}

fn version_line(program: &str) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{program} (version unknown)"))
}

/// Runs the benchmark with `reps` measured pods per mode (at least 30 for the issue's figures).
/// `Err` says why it cannot run here (containerd or crun missing); any other failure panics
/// with what went wrong. Needs root; everything it makes goes away when it returns.
/// `plexusd_config` is added to the Plexus node's config, to A/B a setting.
pub fn cri_bench(reps: usize, plexusd_config: &[String]) -> Result<CriBenchResult, String> {
    if let Some(why) = containerd::unavailable() {
        return Err(why);
    }
    let direct_node = Node::builder().start();
    let plexus_pods: Vec<(usize, Sandbox)> = SECONDARY_COUNTS
        .iter()
        .map(|&n| {
            let mut pod = Sandbox::new("bench", &format!("pod-{n}"));
            pod.uid = format!("bench-uid-{n}");
            if n > 0 {
                let networks: Vec<String> = (1..=n).map(|i| format!("b{i}")).collect();
                pod = pod.networks(&networks.join(","));
            }
            (n, pod)
        })
        .collect();
    let mut builder = Node::builder()
        .config_line("writeConflist: true")
        .config_lines(plexusd_config);
    for i in 1..=4 {
        builder = builder.manifest(&format!("b{i}.yaml"), &bridge_nad(i));
    }
    for (n, pod) in &plexus_pods {
        builder = builder.manifest(&format!("pod-{n}.yaml"), &pod.manifest());
    }
    let plexus_node = builder.start();

    let direct = Containerd::for_node(&direct_node).start();
    let through_plexus = Containerd::for_node(&plexus_node).start();
    direct.wait_pod_network("cluster", Duration::from_secs(20));
    through_plexus.wait_pod_network("plexus", Duration::from_secs(20));

    let mut modes = vec![Mode {
        name: "direct".into(),
        secondaries: None,
        node: &direct_node,
        runtime: &direct,
        pod: Sandbox::new("bench", "pod-direct"),
        run: Vec::new(),
        stop: Vec::new(),
        remove: Vec::new(),
        add: Vec::new(),
    }];
    for (n, pod) in plexus_pods {
        modes.push(Mode {
            name: format!("plexus-{n}"),
            secondaries: Some(n),
            node: &plexus_node,
            runtime: &through_plexus,
            pod,
            run: Vec::new(),
            stop: Vec::new(),
            remove: Vec::new(),
            add: Vec::new(),
        });
    }

    let count = modes.len();
    for rep in 0..WARMUP + reps {
        for k in 0..count {
            let mode = &mut modes[(rep + k) % count];
            let (run, stop, remove, add) = mode.cycle(rep as u32);
            if rep >= WARMUP {
                mode.run.push(run);
                mode.stop.push(stop);
                mode.remove.push(remove);
                mode.add.push(add);
            }
        }
    }

    let results: Vec<ModeResult> = modes.iter().map(Mode::result).collect();
    let direct_run = results[0].run.median_ms;
    let cri_run_overhead_ms_median = results
        .iter()
        .filter_map(|m| {
            let n = m.secondaries?;
            Some((
                n.to_string(),
                m.run_without_secondaries?.median_ms - direct_run,
            ))
        })
        .collect();
    Ok(CriBenchResult {
        reps,
        runtime: format!("{} + {}", version_line("containerd"), version_line("crun")),
        modes: results,
        cri_run_overhead_ms_median,
    })
}
