//! `plexus-bench` (`make bench`): what Plexus costs over the plugins it runs (issue 6).
//!
//! Run as root from target/release, next to the release `plexusd` and `plexus`. Every node is
//! a network namespace running its own plexusd and every pod is another one, as in the
//! integration tests; the real bridge and host-local plugins do the work. Measures, with the
//! files source and with the kube source (the in-process test API server):
//! - ADD and DEL latency for 0, 1, 2 and 4 secondary networks: the bench running the same
//!   delegates itself (the floor) against the `plexus` shim with plexusd warm, interleaved;
//! - the shim's cold exec (VERSION; ADD and DEL whose only delegate is a no-op) and its
//!   stripped size;
//! - plexusd's RSS idle, with 500 pods and 100 NADs, and after 10,000 pods on other nodes;
//! - 50 pods ADD at once and DEL at once, through Plexus and directly;
//! - API requests per warm ADD and DEL, also of networks that take a device (from a DRA claim
//!   and from a device plugin);
//! - the admission webhook's latency per review (NAD and pod), over 1,000 reviews;
//! - hot-plug: from a pod's annotation changing to the new interface being up inside it.
//!
//! Tables go to stdout, progress to stderr, everything to target/bench/plexus-bench.json.

mod direct;
mod hotplug;
mod measure;
mod stats;
mod supervise;
mod webhook;
mod world;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use plexus_integration::{Node, Pod, binaries};
use serde_json::{Map, Value, json};

use measure::{Case, CaseResult, Result};
use stats::{Summary, Table, ms, round, signed, summarize};

#[derive(Parser, Clone)]
#[command(about = "Plexus's cost over the plugins it runs (run as root, from target/release)")]
struct Args {
    /// Repetitions of each latency measurement (the shim exec runs at least 100). The
    /// plugins' own time moves by several ms from run to run; with 30 repetitions the medians
    /// of direct and Plexus runs, and so the overhead, swung by 1-5 ms between bench runs.
    #[arg(long, default_value_t = 100)]
    reps: usize,
    /// Pods in the parallel ADD and DEL.
    #[arg(long, default_value_t = 50)]
    parallel: usize,
    /// Rounds of the parallel ADD and DEL (the median counts). Each takes a second or two;
    /// the median of 3 put the ratio anywhere from 1.0 to 1.38 between bench runs.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Pods on other nodes put into the test API server for the memory check.
    #[arg(long, default_value_t = 10_000)]
    other_pods: usize,
    /// Where the JSON report goes; default target/bench/plexus-bench.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Reviews of each kind in the webhook's latency.
    #[arg(long, default_value_t = 1000)]
    reviews: usize,
    /// A line of plexusd's config for the latency and parallel nodes (repeatable), to A/B a
    /// setting: e.g. `--plexusd-config "delegateStartAhead: false"`.
    #[arg(long = "plexusd-config", value_name = "LINE")]
    plexusd_config: Vec<String>,
    /// Only these parts (comma-separated), e.g. `--only files` while profiling.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Part::Memory, Part::Files, Part::Kube, Part::Webhook, Part::Hotplug])]
    only: Vec<Part>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    /// plexusd's RSS: idle, loaded, and with other nodes' pods.
    Memory,
    /// Latency, shim exec and parallel runs with the files source.
    Files,
    /// Latency, parallel runs and API requests with the kube source.
    Kube,
    /// The admission webhook's latency per review.
    Webhook,
    /// Hot-plug latency with both sources.
    Hotplug,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os(supervise::WORKER_VAR).is_none() {
        return supervise::supervise();
    }
    supervise::catch_signals();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if supervise::interrupted() => {
            eprintln!("plexus-bench: {e}; cleaned up");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("plexus-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn progress(what: &str) {
    eprintln!("== {what}");
}

fn run(args: &Args) -> Result<()> {
    preflight()?;
    let mut report = Map::new();
    report.insert("machine".into(), machine());
    report.insert("reps".into(), args.reps.into());

    progress("shim size");
    let shim_size = stripped_size(&binaries::shim())?;

    let memory = if args.only.contains(&Part::Memory) {
        progress("plexusd memory");
        memory(args)?
    } else {
        Value::Null
    };

    let latency_pods: Vec<Pod> = world::CASES
        .iter()
        .map(|k| Pod::new(world::NAMESPACE, &format!("lat-{k}")))
        .collect();
    let noop_pod = Pod::new(world::NAMESPACE, "noop");
    let parallel_pods: Vec<Pod> = (0..args.parallel)
        .map(|i| Pod::new(world::NAMESPACE, &format!("par-{i}")))
        .collect();
    let annotated = || {
        let mut pods: Vec<(&Pod, Value)> = latency_pods
            .iter()
            .zip(world::CASES)
            .map(|(p, k)| (p, world::annotations(k)))
            .collect();
        pods.push((&noop_pod, world::noop_annotations()));
        pods.extend(parallel_pods.iter().map(|p| (p, world::annotations(1))));
        pods
    };

    let mut per_source = Map::new();
    let mut shim_exec = None;
    for kube in [false, true] {
        if !args
            .only
            .contains(if kube { &Part::Kube } else { &Part::Files })
        {
            continue;
        }
        let source = if kube { "kube" } else { "files" };
        let load = settle_load()?;
        progress(&format!(
            "{source} source: starting a node with {} pods",
            annotated().len()
        ));
        let node = world::node(kube, &annotated(), &args.plexusd_config);
        let direct = world::direct(&node);
        let cases: Vec<Case> = latency_pods
            .iter()
            .zip(world::CASES)
            .map(|(pod, k)| Case {
                k,
                pod,
                nets: world::nets(&node, k),
            })
            .collect();
        progress(&format!(
            "{source} source: ADD/DEL latency, {} reps",
            args.reps
        ));
        let latency = measure::latency(&node, &direct, &cases, args.reps)?;
        let rss_after = measure::settled_rss_kib(&node)?;
        if shim_exec.is_none() {
            progress("shim exec");
            shim_exec = Some(measure::shim_exec(
                &node,
                &direct,
                &noop_pod,
                args.reps.max(100),
            )?);
        }
        progress(&format!(
            "{source} source: {} pods in parallel, {} rounds",
            args.parallel, args.rounds
        ));
        let parallel = measure::parallel(
            &node,
            &direct,
            &parallel_pods,
            &world::nets(&node, 1),
            args.rounds,
        )?;
        // What plexusd keeps once the burst is over (every pod deleted again): allocator
        // arenas, worker and blocking threads, buffers grown for the peak.
        let rss_after_burst = measure::settled_rss_kib(&node)?;
        let (burst_anon, burst_file) = measure::rss_split_kib(&node)?;
        let api = match kube.then(|| node.cluster().fixture()).flatten() {
            Some(api) => {
                progress("kube source: API requests per warm ADD");
                Some(measure::api_traffic(&node, api, &cases, 3)?)
            }
            None => None,
        };
        let devices = match kube.then(|| node.cluster().fixture()).flatten() {
            Some(_) => {
                progress("kube source: API requests per warm ADD with a device");
                Some(device_api_traffic(3)?)
            }
            None => None,
        };
        let mut section = Map::new();
        section.insert("latency_ms".into(), latency_json(&latency));
        section.insert("rss_after_latency_kib".into(), rss_after.into());
        section.insert("loadavg_before".into(), load.into());
        section.insert("parallel".into(), parallel_json(args.parallel, &parallel));
        section.insert("rss_after_burst_kib".into(), rss_after_burst.into());
        section.insert(
            "rss_after_burst_split_kib".into(),
            json!({"anon": burst_anon, "file": burst_file}),
        );
        if let Some(api) = &api {
            section.insert("api_per_warm_add".into(), api_json(api));
        }
        if let Some(devices) = &devices {
            section.insert("api_per_warm_add_with_device".into(), devices_json(devices));
        }
        print_latency(source, args.reps, &latency);
        print_parallel(source, args.parallel, &parallel, rss_after, rss_after_burst);
        println!(
            "  of which anonymous (heap, stacks): {burst_anon} KiB, file-backed (plexusd's code): {burst_file} KiB"
        );
        if let Some(api) = &api {
            print_api(api);
        }
        if let Some(devices) = &devices {
            print_device_api(devices);
        }
        per_source.insert(source.into(), Value::Object(section));
    }
    let webhook = if args.only.contains(&Part::Webhook) {
        progress(&format!(
            "admission webhook: {} reviews of each kind",
            args.reviews
        ));
        let result = webhook::measure(args.reviews)?;
        webhook::print(&result);
        Some(result)
    } else {
        None
    };
    let shim = match &shim_exec {
        Some(exec) => {
            print_shim(exec, shim_size);
            shim_json(exec, shim_size)
        }
        None => json!({"size_bytes": shim_size}),
    };
    if !memory.is_null() {
        print_memory(&memory);
    }
    if args.only.contains(&Part::Hotplug) {
        let changes = args.reps.max(MIN_HOTPLUG_CHANGES);
        let mut hotplug_sources = Map::new();
        for (source, kube) in [("files", false), ("kube", true)] {
            let load = settle_load()?;
            progress(&format!("{source} source: hot-plug, {changes} changes"));
            let result = hotplug::measure(kube, changes)?;
            print_hotplug(source, &result);
            let mut entry = hotplug_json(&result);
            entry["loadavg_before"] = load.into();
            hotplug_sources.insert(source.into(), entry);
        }
        hotplug_headline(&mut report, &hotplug_sources);
        report.insert("hotplug".into(), Value::Object(hotplug_sources));
    }
    headline(&mut report, &per_source, &shim, &memory);
    report.insert("shim".into(), shim);
    report.insert("memory_kib".into(), memory.clone());
    report.insert("sources".into(), Value::Object(per_source));
    if let Some(result) = &webhook {
        report.insert(
            "webhook_review_ms_median".into(),
            stats::round(result.nad.median).into(),
        );
        report.insert(
            "webhook_pod_review_ms_median".into(),
            stats::round(result.pod.median).into(),
        );
        report.insert("webhook".into(), webhook::json(result));
    }
    print_machine(&report);
    let targets = targets(&report);
    print_targets(&targets);
    report.insert("targets".into(), targets);

    let out = args.out.clone().unwrap_or_else(default_out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&Value::Object(report)).expect("JSON");
    std::fs::write(&out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwritten: {}", out.display());
    Ok(())
}

fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: the bench creates network namespaces".into());
    }
    for plugin in ["bridge", "host-local"] {
        let path = Path::new(binaries::CNI_BIN_DIR).join(plugin);
        if !path.is_file() {
            return Err(format!(
                "{} is missing (apt-get install containernetworking-plugins)",
                path.display()
            ));
        }
    }
    let here = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = here.parent().ok_or("no exe dir")?;
    for binary in ["plexusd", "plexus"] {
        if !dir.join(binary).is_file() {
            return Err(format!(
                "{} is missing: cargo build --release --workspace --bins",
                dir.join(binary).display()
            ));
        }
    }
    Ok(())
}

/// target/bench/plexus-bench.json, next to target/release where the bench runs from.
fn default_out() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("target"));
    target.join("bench").join("plexus-bench.json")
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "loadavg_start": loadavg(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "kernel": kernel.trim(),
    })
}

/// The 1-minute load average: other work on the machine skews every timing.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Before the timed parts: waits (up to a minute) for the load average to fall below half
/// the CPUs, as it does after the release build `make bench` runs first; returns it.
fn settle_load() -> Result<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut said = false;
    while loadavg() > cpus / 2.0 && std::time::Instant::now() < deadline {
        if !said {
            progress(&format!(
                "waiting for the load average ({}) to settle",
                loadavg()
            ));
            said = true;
        }
        supervise::check()?;
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(loadavg())
}

fn print_machine(report: &Map<String, Value>) {
    let m = &report["machine"];
    let busy = ["sources", "hotplug"]
        .iter()
        .filter_map(|part| report.get(*part).and_then(Value::as_object))
        .flat_map(|s| s.values())
        .filter_map(|s| s["loadavg_before"].as_f64())
        .fold(0.0, f64::max);
    println!(
        "\nmachine: {} CPUs ({}), kernel {}; load average {} before the timed parts{}",
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        busy,
        if busy > m["cpus"].as_f64().unwrap_or(1.0) / 2.0 {
            " (other work was running: timings are inflated)"
        } else {
            ""
        }
    );
}

/// The shim's size after `strip` (the release profile strips already; this makes sure).
fn stripped_size(binary: &Path) -> Result<u64> {
    let copy = tempfile::Builder::new()
        .prefix("plexus-shim-")
        .tempfile()
        .map_err(|e| e.to_string())?;
    std::fs::copy(binary, copy.path()).map_err(|e| e.to_string())?;
    let _ = std::process::Command::new("strip")
        .arg(copy.path())
        .status();
    let size = std::fs::metadata(copy.path())
        .map_err(|e| e.to_string())?
        .len();
    Ok(size)
}

fn memory(args: &Args) -> Result<Value> {
    let (nads, pods) = (100, 500);
    let mut out = Map::new();

    let node = Node::builder().rust_log("info").start();
    out.insert("files_idle".into(), measure::settled_rss_kib(&node)?.into());
    let (nad_objects, pod_objects) = measure::population(nads, pods, node.name());
    let docs = |objects: &[Value]| {
        objects
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    node.write_manifest("nads.yaml", &docs(&nad_objects));
    node.write_manifest("pods.yaml", &docs(&pod_objects));
    node.wait_for_readyz(
        &format!("nads={nads} pods={pods}\n"),
        Duration::from_secs(60),
    );
    out.insert(
        "files_500pods".into(),
        measure::settled_rss_kib(&node)?.into(),
    );
    drop(node);
    supervise::check()?;

    let node = Node::builder().rust_log("info").kube().start();
    out.insert("kube_idle".into(), measure::settled_rss_kib(&node)?.into());
    let (nad_objects, pod_objects) = measure::population(nads, pods, node.name());
    for object in nad_objects.into_iter().chain(pod_objects) {
        node.cluster().apply(object);
    }
    // The kube source's summary goes on with the DRA counts.
    node.wait_for_readyz(
        &format!("nads={nads} pods={pods} "),
        Duration::from_secs(60),
    );
    let loaded = measure::settled_rss_kib(&node)?;
    out.insert("kube_500pods".into(), loaded.into());
    progress(&format!(
        "kube source: {} pods on other nodes",
        args.other_pods
    ));
    for i in 0..args.other_pods {
        if i % 1000 == 0 {
            supervise::check()?;
        }
        let namespace = format!("team-{}", i % 10);
        let pod = world::realistic_pod(
            &namespace,
            &format!("other-{i}"),
            &format!("other-node-{}", i % 100),
            "net-0",
        );
        node.cluster().apply(pod);
    }
    // The watch would have brought them by now if its selector let them through.
    std::thread::sleep(Duration::from_secs(2));
    let after = measure::settled_rss_kib(&node)?;
    node.wait_for_readyz(
        &format!("nads={nads} pods={pods} "),
        Duration::from_secs(10),
    );
    out.insert("kube_500pods_plus_others".into(), after.into());
    out.insert(
        "kube_other_nodes_growth".into(),
        (after as i64 - loaded as i64).into(),
    );
    out.insert("other_pods".into(), args.other_pods.into());
    Ok(Value::Object(out))
}

// ---- reporting ----

/// The issue asks for the median and p90 over at least this many changes.
const MIN_HOTPLUG_CHANGES: usize = 20;

fn hotplug_json(r: &hotplug::HotplugResult) -> Value {
    let s = |v: &[f64]| summarize(v).json();
    let outside = |total: &[f64], delegates: &[f64]| -> Vec<f64> {
        total.iter().zip(delegates).map(|(t, d)| t - d).collect()
    };
    json!({
        "changes": r.attach.len(),
        "attach_ms": s(&r.attach),
        "attach_delegates_ms": s(&r.attach_delegates),
        "attach_outside_delegates_ms": s(&outside(&r.attach, &r.attach_delegates)),
        "detach_ms": s(&r.detach),
        "detach_delegates_ms": s(&r.detach_delegates),
    })
}

fn print_hotplug(source: &str, r: &hotplug::HotplugResult) {
    let mut table = Table::new(
        &format!(
            "Hot-plug, {source} source, {} changes (ms): from the annotation change to net1 up with its address inside the pod (attach) or gone (detach); delegates = plexusd's time in the bridge plugin chain for that change",
            r.attach.len()
        ),
        &["change", "p50", "p90", "p99", "delegates p50"],
    );
    for (what, total, delegates) in [
        ("attach", &r.attach, &r.attach_delegates),
        ("detach", &r.detach, &r.detach_delegates),
    ] {
        let t = summarize(total);
        table.row(vec![
            what.into(),
            ms(t.median),
            ms(t.p90),
            ms(t.p99),
            ms(summarize(delegates).median),
        ]);
    }
    table.print();
}

/// `hotplug_attach_ms_median` and `_p90`: where both sources ran, the worse.
fn hotplug_headline(report: &mut Map<String, Value>, sources: &Map<String, Value>) {
    for (key, field) in [
        ("hotplug_attach_ms_median", "median"),
        ("hotplug_attach_ms_p90", "p90"),
    ] {
        let worst = sources
            .values()
            .filter_map(|s| s["attach_ms"][field].as_f64())
            .reduce(f64::max);
        if let Some(value) = worst {
            report.insert(key.into(), round(value).into());
        }
    }
}

struct Latency {
    direct: Summary,
    plexus: Summary,
    overhead: Summary,
    /// Per run, Plexus's time minus the time plexusd measured in the delegates: what Plexus
    /// added in that very run, free of the delegates' run-to-run noise (it takes the delegates
    /// to cost the same whoever execs them; `exec` below checks that).
    added: Summary,
    /// Medians of the parts of the overhead: outside plexusd (shim exec, socket, HTTP), plexusd's
    /// own work (request time minus delegate time), and delegates run by plexusd minus direct.
    outside: f64,
    own: f64,
    exec: f64,
}

fn split(case: &CaseResult, add: bool) -> Latency {
    let pick = |s: &measure::Samples| if add { s.add.clone() } else { s.del.clone() };
    let (direct, plexus, server, delegates) = (
        pick(&case.direct),
        pick(&case.plexus),
        pick(&case.server),
        pick(&case.server_delegates),
    );
    let direct_s = summarize(&direct);
    let plexus_s = summarize(&plexus);
    let outside: Vec<f64> = plexus.iter().zip(&server).map(|(p, s)| p - s).collect();
    let own: Vec<f64> = server.iter().zip(&delegates).map(|(s, d)| s - d).collect();
    let added: Vec<f64> = plexus.iter().zip(&delegates).map(|(p, d)| p - d).collect();
    Latency {
        direct: direct_s,
        plexus: plexus_s,
        overhead: plexus_s.minus(&direct_s),
        added: summarize(&added),
        outside: summarize(&outside).median,
        own: summarize(&own).median,
        exec: summarize(&delegates).median - direct_s.median,
    }
}

fn latency_json(cases: &[CaseResult]) -> Value {
    let mut out = Map::new();
    for case in cases {
        let mut entry = Map::new();
        for (cmd, add) in [("add", true), ("del", false)] {
            let l = split(case, add);
            entry.insert(
                cmd.into(),
                json!({
                    "direct": l.direct.json(), "plexus": l.plexus.json(), "overhead": l.overhead.json(),
                    "added_paired": l.added.json(),
                    "overhead_parts_median": {"shim_and_socket": round(l.outside), "plexusd_own": round(l.own), "delegate_exec_vs_direct": round(l.exec)},
                }),
            );
        }
        out.insert(case.k.to_string(), Value::Object(entry));
    }
    Value::Object(out)
}

fn print_latency(source: &str, reps: usize, cases: &[CaseResult]) {
    let mut table = Table::new(
        &format!(
            "ADD/DEL latency, {source} source, {reps} reps (ms). overhead = Plexus - direct; added = Plexus - its delegates' time, per run; then medians of its parts"
        ),
        &[
            "networks",
            "cmd",
            "direct p50",
            "p90",
            "p99",
            "plexus p50",
            "p90",
            "p99",
            "overhead p50",
            "p90",
            "p99",
            "added p50",
            "p90",
            "shim+socket",
            "plexusd own",
            "exec diff",
        ],
    );
    for case in cases {
        for (cmd, add) in [("ADD", true), ("DEL", false)] {
            let l = split(case, add);
            table.row(vec![
                format!("eth0+{}", case.k),
                cmd.into(),
                ms(l.direct.median),
                ms(l.direct.p90),
                ms(l.direct.p99),
                ms(l.plexus.median),
                ms(l.plexus.p90),
                ms(l.plexus.p99),
                signed(l.overhead.median),
                signed(l.overhead.p90),
                signed(l.overhead.p99),
                ms(l.added.median),
                ms(l.added.p90),
                ms(l.outside),
                ms(l.own),
                signed(l.exec),
            ]);
        }
    }
    table.print();
}

fn median_of(rounds: &[measure::ParallelRound], f: impl Fn(&measure::ParallelRound) -> f64) -> f64 {
    summarize(&rounds.iter().map(f).collect::<Vec<_>>()).median
}

fn parallel_json(pods: usize, rounds: &[measure::ParallelRound]) -> Value {
    let (da, pa) = (
        median_of(rounds, |r| r.direct_add),
        median_of(rounds, |r| r.plexus_add),
    );
    let (dd, pd) = (
        median_of(rounds, |r| r.direct_del),
        median_of(rounds, |r| r.plexus_del),
    );
    json!({
        "pods": pods,
        "rounds": rounds.len(),
        "add_wall_ms": {"direct": round(da), "plexus": round(pa)},
        "del_wall_ms": {"direct": round(dd), "plexus": round(pd)},
        "add_ratio": round(pa / da),
        "del_ratio": round(pd / dd),
        "errors": rounds.iter().map(|r| r.errors).sum::<usize>(),
    })
}

fn print_parallel(
    source: &str,
    pods: usize,
    rounds: &[measure::ParallelRound],
    rss_after: u64,
    rss_after_burst: u64,
) {
    let j = parallel_json(pods, rounds);
    let mut table = Table::new(
        &format!(
            "Parallel, {source} source: {pods} pods at once, wall time (ms, median of {} rounds)",
            rounds.len()
        ),
        &["cmd", "direct", "plexus", "ratio"],
    );
    for (cmd, key, ratio) in [
        ("ADD", "add_wall_ms", "add_ratio"),
        ("DEL", "del_wall_ms", "del_ratio"),
    ] {
        table.row(vec![
            cmd.into(),
            ms(j[key]["direct"].as_f64().unwrap_or(0.0)),
            ms(j[key]["plexus"].as_f64().unwrap_or(0.0)),
            format!("{:.3}", j[ratio].as_f64().unwrap_or(0.0)),
        ]);
    }
    table.print();
    println!(
        "  errors: {}   plexusd RSS after the latency runs: {rss_after} KiB, after the parallel runs: {rss_after_burst} KiB",
        j["errors"]
    );
}

fn api_json(api: &[(usize, Vec<measure::ApiTraffic>)]) -> Value {
    let mut out = Map::new();
    for (k, runs) in api {
        out.insert(k.to_string(), traffic_json(runs));
    }
    Value::Object(out)
}

/// Averages (and the worst reads) of repeated warm ADDs and DELs.
fn traffic_json(runs: &[measure::ApiTraffic]) -> Value {
    let n = runs.len().max(1) as f64;
    let avg =
        |f: fn(&measure::ApiTraffic) -> u64| round(runs.iter().map(f).sum::<u64>() as f64 / n);
    let max = |f: fn(&measure::ApiTraffic) -> u64| runs.iter().map(f).max().unwrap_or(0);
    json!({
        "runs": runs.len(),
        "add_reads": avg(|t| t.add_reads), "add_reads_max": max(|t| t.add_reads), "add_writes": avg(|t| t.add_writes),
        "del_reads": avg(|t| t.del_reads), "del_writes": avg(|t| t.del_writes),
    })
}

/// Where the device of the check's pods comes from, and their warm ADDs' API traffic.
type DeviceTraffic = Vec<(&'static str, Vec<measure::ApiTraffic>)>;

/// API traffic of `times` warm ADDs and DELs of a pod whose network takes a device from a DRA
/// claim, and of one whose device a device plugin allocated, on a node of their own.
fn device_api_traffic(times: usize) -> Result<DeviceTraffic> {
    let from_claim = Pod::new(world::NAMESPACE, "dev-claim");
    let from_plugin = Pod::new(world::NAMESPACE, "dev-plugin");
    let node = world::device_node(&from_claim, &from_plugin);
    let api = node
        .cluster()
        .fixture()
        .ok_or("the device check needs the test API server")?;
    let mut out = Vec::new();
    for (source, pod) in [("dra", &from_claim), ("device_plugin", &from_plugin)] {
        let case = Case {
            k: 1,
            pod,
            nets: Vec::new(),
        };
        let (_, runs) = measure::api_traffic(&node, api, &[case], times)?
            .pop()
            .ok_or("no runs")?;
        out.push((source, runs));
    }
    Ok(out)
}

fn devices_json(devices: &DeviceTraffic) -> Value {
    Value::Object(
        devices
            .iter()
            .map(|(source, runs)| ((*source).to_owned(), traffic_json(runs)))
            .collect(),
    )
}

fn print_device_api(devices: &DeviceTraffic) {
    let j = devices_json(devices);
    let mut table = Table::new(
        "API requests per warm ADD and DEL of a network that takes a device, kube source",
        &[
            "device from",
            "ADD reads",
            "ADD writes",
            "DEL reads",
            "DEL writes",
        ],
    );
    for (source, _) in devices {
        let e = &j[*source];
        table.row(vec![
            (*source).to_owned(),
            e["add_reads"].to_string(),
            e["add_writes"].to_string(),
            e["del_reads"].to_string(),
            e["del_writes"].to_string(),
        ]);
    }
    table.print();
    println!(
        "  writes: network-status, events, and for the claim's device its KEP-4817 status (ADD) and its release (DEL)"
    );
}

fn print_api(api: &[(usize, Vec<measure::ApiTraffic>)]) {
    let j = api_json(api);
    let mut table = Table::new(
        "API requests per warm ADD and DEL, kube source (test API server counters; watches not counted)",
        &[
            "networks",
            "ADD reads",
            "ADD writes",
            "DEL reads",
            "DEL writes",
        ],
    );
    for (k, _) in api {
        let e = &j[k.to_string()];
        table.row(vec![
            format!("eth0+{k}"),
            e["add_reads"].to_string(),
            e["add_writes"].to_string(),
            e["del_reads"].to_string(),
            e["del_writes"].to_string(),
        ]);
    }
    table.print();
    println!("  writes: the network-status patch and one event per interface, in the background");
}

fn shim_json(s: &measure::ShimResult, size: u64) -> Value {
    let m = |v: &[f64]| summarize(v).json();
    json!({
        "runs": s.version.len(),
        "exec_floor_bin_true_ms": m(&s.exec_floor),
        "version_ms": m(&s.version),
        "noop_add_direct_ms": m(&s.noop_add_direct),
        "noop_add_plexus_ms": m(&s.noop_add_plexus),
        "noop_add_delegate_in_plexusd_ms": m(&s.noop_add_in_plexusd),
        "noop_del_direct_ms": m(&s.noop_del_direct),
        "noop_del_plexus_ms": m(&s.noop_del_plexus),
        "size_bytes": size,
    })
}

fn print_shim(s: &measure::ShimResult, size: u64) {
    let mut table = Table::new(
        &format!("Shim, exec'd cold each time ({} runs, ms)", s.version.len()),
        &["what", "p50", "p90", "p99"],
    );
    for (what, samples) in [
        ("/bin/true (exec floor)", &s.exec_floor),
        ("plexus VERSION", &s.version),
        ("no-op plugin ADD, direct", &s.noop_add_direct),
        ("no-op ADD through plexus", &s.noop_add_plexus),
        ("  its plugin, as plexusd ran it", &s.noop_add_in_plexusd),
        ("no-op plugin DEL, direct", &s.noop_del_direct),
        ("no-op DEL through plexus", &s.noop_del_plexus),
    ] {
        let x = summarize(samples);
        table.row(vec![what.into(), ms(x.median), ms(x.p90), ms(x.p99)]);
    }
    table.print();
    println!(
        "  stripped shim: {size} bytes ({:.0} KiB)",
        size as f64 / 1024.0
    );
}

fn print_memory(m: &Value) {
    let mut table = Table::new("plexusd RSS (VmRSS, KiB)", &["state", "files", "kube"]);
    let v = |k: &str| m[k].to_string();
    table.row(vec!["idle".into(), v("files_idle"), v("kube_idle")]);
    table.row(vec![
        "500 pods on this node, 100 NADs".into(),
        v("files_500pods"),
        v("kube_500pods"),
    ]);
    table.row(vec![
        format!("+ {} pods on other nodes", m["other_pods"]),
        "-".into(),
        v("kube_500pods_plus_others"),
    ]);
    table.row(vec![
        "growth from other nodes' pods".into(),
        "-".into(),
        v("kube_other_nodes_growth"),
    ]);
    table.print();
}

/// The keys the issue names (those of the parts that ran). Where both sources ran, the worse
/// one counts.
fn headline(
    report: &mut Map<String, Value>,
    sources: &Map<String, Value>,
    shim: &Value,
    memory: &Value,
) {
    let worst = |f: &dyn Fn(&Value) -> Option<f64>| {
        sources.values().filter_map(f).reduce(f64::max).map(round)
    };
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            report.insert(key.into(), value);
        }
    };
    for (key, cmd, what) in [
        ("add_overhead_ms_median", "add", "overhead"),
        ("del_overhead_ms_median", "del", "overhead"),
        ("add_added_paired_ms_median", "add", "added_paired"),
        ("del_added_paired_ms_median", "del", "added_paired"),
    ] {
        let per_k: Map<String, Value> = world::CASES
            .iter()
            .filter_map(|k| {
                let k = k.to_string();
                worst(&|s| s["latency_ms"][&k][cmd][what]["median"].as_f64()).map(|v| (k, v.into()))
            })
            .collect();
        put(key, (!per_k.is_empty()).then_some(Value::Object(per_k)));
    }
    put(
        "shim_version_ms_median",
        Some(shim["version_ms"]["median"].clone()),
    );
    let noop = shim["noop_add_plexus_ms"]["median"]
        .as_f64()
        .zip(shim["noop_add_direct_ms"]["median"].as_f64());
    put(
        "shim_noop_add_overhead_ms_median",
        noop.map(|(p, d)| round(p - d).into()),
    );
    put("shim_size_bytes", Some(shim["size_bytes"].clone()));
    let max = |a: &str, b: &str| {
        memory[a]
            .as_u64()
            .zip(memory[b].as_u64())
            .map(|(a, b)| a.max(b))
    };
    put(
        "rss_idle_kib",
        max("files_idle", "kube_idle").map(Value::from),
    );
    put(
        "rss_500pods_kib",
        max("files_500pods", "kube_500pods").map(Value::from),
    );
    put(
        "rss_other_nodes_growth_kib",
        Some(memory["kube_other_nodes_growth"].clone()),
    );
    put(
        "rss_after_burst_kib",
        worst(&|s| s["rss_after_burst_kib"].as_f64()).map(Value::from),
    );
    put(
        "parallel50_ratio",
        worst(&|s| s["parallel"]["add_ratio"].as_f64()).map(Value::from),
    );
    put(
        "parallel50_del_ratio",
        worst(&|s| s["parallel"]["del_ratio"].as_f64()).map(Value::from),
    );
    put(
        "parallel50_errors",
        (!sources.is_empty()).then(|| {
            sources
                .values()
                .map(|s| s["parallel"]["errors"].as_u64().unwrap_or(0))
                .sum::<u64>()
                .into()
        }),
    );
    if let Some(api) = sources.get("kube").map(|k| &k["api_per_warm_add"]) {
        let reads = world::CASES
            .iter()
            .map(|k| {
                api[k.to_string()]["add_reads_max"]
                    .as_u64()
                    .unwrap_or(u64::MAX)
            })
            .max();
        put("warm_add_api_reads", reads.map(Value::from));
        let writes: Map<String, Value> = world::CASES
            .iter()
            .map(|k| (k.to_string(), api[k.to_string()]["add_writes"].clone()))
            .collect();
        put("warm_add_api_writes", Some(Value::Object(writes)));
    }
    if let Some(devices) = sources
        .get("kube")
        .and_then(|k| k["api_per_warm_add_with_device"].as_object())
    {
        let reads = devices
            .values()
            .map(|d| d["add_reads_max"].as_u64().unwrap_or(u64::MAX))
            .max();
        put("warm_add_with_device_api_reads", reads.map(Value::from));
    }
}

/// Each target of the issue whose number was measured, and whether it is met.
fn targets(report: &Map<String, Value>) -> Value {
    let mut out = Vec::new();
    let mut add = |name: String, value: Option<f64>, target: &str, met: fn(f64) -> bool| {
        if let Some(value) = value {
            out.push(json!({"name": name, "value": value, "target": target, "met": met(value)}));
        }
    };
    let f = |key: &str| report.get(key).and_then(Value::as_f64);
    // Plexus - direct, as the issue defines it, and the same paired within each run (free of
    // the delegates' own run-to-run noise).
    for (key, cmd, what) in [
        ("add_overhead_ms_median", "ADD", "overhead"),
        ("del_overhead_ms_median", "DEL", "overhead"),
        ("add_added_paired_ms_median", "ADD", "added, paired,"),
        ("del_added_paired_ms_median", "DEL", "added, paired,"),
    ] {
        for k in world::CASES {
            let value = report.get(key).and_then(|v| v[k.to_string()].as_f64());
            add(
                format!("{cmd} {what} eth0+{k} (median ms)"),
                value,
                "<= 1",
                |v| v <= 1.0,
            );
        }
    }
    add(
        "shim VERSION (median ms)".into(),
        f("shim_version_ms_median"),
        "<= 1.5",
        |v| v <= 1.5,
    );
    // Issue 6's line. The shim linked glibc statically for a while (1.05 MiB, and the line
    // moved to 1.25 MiB with it); without libc it is 76 KiB, so the line is back where it was.
    add(
        "stripped shim, static (bytes)".into(),
        f("shim_size_bytes"),
        "<= 1048576",
        |v| v <= 1_048_576.0,
    );
    add(
        "plexusd RSS idle (KiB)".into(),
        f("rss_idle_kib"),
        "<= 12288",
        |v| v <= 12_288.0,
    );
    add(
        "plexusd RSS, 500 pods/100 NADs (KiB)".into(),
        f("rss_500pods_kib"),
        "<= 16384",
        |v| v <= 16_384.0,
    );
    // A page or two of noise is not growth.
    add(
        "RSS growth from other nodes' pods (KiB)".into(),
        f("rss_other_nodes_growth_kib"),
        "~0 (<= 64)",
        |v| v <= 64.0,
    );
    let pods = report["sources"]
        .as_object()
        .and_then(|s| s.values().next())
        .map(|s| s["parallel"]["pods"].to_string())
        .unwrap_or_default();
    add(
        format!("{pods} parallel ADDs, Plexus/direct"),
        f("parallel50_ratio"),
        "<= 1.2",
        |v| v <= 1.2,
    );
    add(
        format!("plexusd RSS after {pods} parallel pods (KiB)"),
        f("rss_after_burst_kib"),
        "<= 16384",
        |v| v <= 16_384.0,
    );
    add(
        "API reads per warm ADD".into(),
        f("warm_add_api_reads"),
        "0",
        |v| v == 0.0,
    );
    add(
        "API reads per warm ADD with a device (DRA claim, device plugin)".into(),
        f("warm_add_with_device_api_reads"),
        "0",
        |v| v == 0.0,
    );
    Value::Array(out)
}

fn print_targets(targets: &Value) {
    let mut table = Table::new(
        "Targets (issue 6; where both sources ran, the worse counts)",
        &["target", "value", "wanted", "met"],
    );
    for t in targets.as_array().into_iter().flatten() {
        table.row(vec![
            t["name"].as_str().unwrap_or_default().into(),
            match t["value"].as_f64() {
                Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
                Some(v) => format!("{v:.3}"),
                None => t["value"].to_string(),
            },
            t["target"].as_str().unwrap_or_default().into(),
            if t["met"] == true {
                "yes".into()
            } else {
                "NO".into()
            },
        ]);
    }
    table.print();
}
