//! `soak` (`make soak`): seeded random runs of every CNI operation mixed with every fault,
//! checking that nothing is lost or left behind (see `plexus_integration::soak`). Run as root
//! from the workspace: it needs the built `plexusd` and `plexus` next to it.
//!
//! Progress goes to stderr, the table to stdout, the report to target/soak/report.json.
//! Exits 1 when any run broke a promise; each violation names the seed that replays it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use plexus_integration::soak::{self, Options};

#[derive(Parser)]
#[command(about = "Plexus's randomized fault and soak harness (run as root)")]
struct Args {
    /// Runs, with seeds base-seed, base-seed + 1, ...
    #[arg(long, default_value_t = 200)]
    runs: u64,
    #[arg(long, default_value_t = 1)]
    base_seed: u64,
    /// Replays the one run of this seed (what a violation names).
    #[arg(long, conflicts_with_all = ["runs", "base_seed"])]
    seed: Option<u64>,
    /// Schedule steps per run.
    #[arg(long, default_value_t = 80)]
    steps: usize,
    #[arg(long, default_value_t = 20)]
    pods: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Every n-th seed runs with the kube source (test API server); 0: none.
    #[arg(long, default_value_t = 4)]
    kube_share: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/soak/report.json")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log_dir = args
        .out
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let options = Options {
        base_seed: args.seed.unwrap_or(args.base_seed),
        runs: if args.seed.is_some() { 1 } else { args.runs },
        steps: args.steps,
        pods: args.pods,
        workers: args.workers.max(1),
        kube_share: args.kube_share,
        log_dir,
        ..Options::default()
    };
    if std::env::var_os(plexus_integration::cluster::KUBECONFIG_VAR).is_some() {
        eprintln!(
            "soak: {} is set; the soak steers the test API server and ignores it",
            plexus_integration::cluster::KUBECONFIG_VAR
        );
        // SAFETY: no other thread runs yet, so nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(plexus_integration::cluster::KUBECONFIG_VAR) };
    }
    let started = Instant::now();
    let tally = soak::soak(&options);
    let wall = started.elapsed().as_secs_f64();
    let report = tally.to_json(options.base_seed, wall);
    let written = std::fs::create_dir_all(&options.log_dir).and_then(|()| {
        std::fs::write(
            &args.out,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
    });
    if let Err(e) = written {
        eprintln!("soak: cannot write {}: {e}", args.out.display());
    }
    print!("{}", tally.table(wall));
    if tally.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
