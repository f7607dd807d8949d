//! The soak harness (`make soak`, `soak --seed N`): seeded random runs that mix every CNI
//! operation with every fault a node sees, then check that nothing was lost or left behind.
//!
//! It drives only public surfaces: the `plexus` shim, the NADs and pods (manifests or the test
//! API server), the plexusd process (SIGKILL, SIGTERM, restart), the fault delegate's files
//! and the records disk (a tmpfs in a private mount namespace). A run's schedule depends only
//! on its seed; the interleaving of its concurrent calls does not, so a replay runs the same
//! steps, not necessarily in the same order.

mod check;
pub mod report;
mod run;
mod schedule;
pub mod world;

use std::path::PathBuf;
use std::time::Instant;

pub use report::{Tally, Violation};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seeds `base_seed .. base_seed + runs`.
    pub base_seed: u64,
    pub runs: u64,
    /// Schedule steps per run.
    pub steps: usize,
    pub pods: usize,
    /// Concurrent callers (the runtime's parallelism).
    pub workers: usize,
    /// Every n-th seed (`seed % n == 1`) runs with the kube source; 0: none.
    pub kube_share: u64,
    /// plexusd's `delegateTimeoutSeconds`: short, so hung delegates cost little.
    pub delegate_timeout_seconds: u64,
    /// Where plexusd's log of a run with violations is kept.
    pub log_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            base_seed: 1,
            runs: 200,
            steps: 80,
            pods: 20,
            workers: 4,
            kube_share: 4,
            delegate_timeout_seconds: 3,
            log_dir: PathBuf::from("target/soak"),
        }
    }
}

/// Every run, one after the other; a run that panics (its world could not be built, plexusd
/// did not come back) is a violation too. Progress goes to stderr.
pub fn soak(options: &Options) -> Tally {
    let mut total = Tally::default();
    for seed in options.base_seed..options.base_seed + options.runs {
        let started = Instant::now();
        let tally = match std::panic::catch_unwind(|| run::run(seed, options)) {
            Ok(tally) => tally,
            Err(panic) => panicked(seed, panic.as_ref()),
        };
        let verdict = if tally.violations.is_empty() {
            "ok".to_owned()
        } else {
            format!(
                "{} violation(s); replay with `soak --seed {seed}`",
                tally.violations.len()
            )
        };
        eprintln!(
            "soak: seed {seed} ({}): {verdict} in {:.1} s",
            if tally.kube_runs > 0 { "kube" } else { "files" },
            started.elapsed().as_secs_f64()
        );
        total.merge(tally);
    }
    total
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

fn panicked(seed: u64, panic: &(dyn std::any::Any + Send)) -> Tally {
    let message = panic_message(panic);
    Tally {
        runs: 1,
        violations: vec![Violation {
            seed,
            step: None,
            kind: "run_failed",
            detail: message,
        }],
        ..Tally::default()
    }
}
