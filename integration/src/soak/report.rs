//! What the soak tried and what it found: counts by operation and by fault, and every
//! violation with the seed and the step that replays it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

/// A broken promise, with what replays it (`soak --seed SEED`).
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    /// The schedule step during which it was seen; `None`: at the end-of-run checks.
    pub step: Option<usize>,
    pub kind: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn to_json(&self) -> Value {
        json!({"seed": self.seed, "step": self.step, "kind": self.kind, "detail": self.detail})
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = self
            .step
            .map_or_else(|| "end of run".to_owned(), |s| format!("step {s}"));
        write!(
            f,
            "seed {} {step}: {}: {}",
            self.seed, self.kind, self.detail
        )
    }
}

/// Calls made, by CNI command (and the runtime's intent, e.g. `DEL again`).
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub ok: u64,
    pub failed: u64,
    /// Failures by the CNI code answered.
    pub codes: BTreeMap<u64, u64>,
    /// One error message per code, to tell what the failures were.
    pub samples: BTreeMap<u64, String>,
}

/// One run's or all runs' tally.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub runs: u64,
    pub kube_runs: u64,
    pub steps: u64,
    pub operations: BTreeMap<String, Outcomes>,
    pub faults: BTreeMap<String, u64>,
    pub violations: Vec<Violation>,
}

impl Tally {
    /// Counts a call; a failure with the code and message of its CNI error.
    pub fn operation(&mut self, kind: &str, failure: Option<(u64, &str)>) {
        let entry = self.operations.entry(kind.to_owned()).or_default();
        match failure {
            None => entry.ok += 1,
            Some((code, msg)) => {
                entry.failed += 1;
                *entry.codes.entry(code).or_default() += 1;
                entry.samples.entry(code).or_insert_with(|| msg.to_owned());
            }
        }
    }

    pub fn fault(&mut self, label: String) {
        *self.faults.entry(label).or_default() += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        self.runs += other.runs;
        self.kube_runs += other.kube_runs;
        self.steps += other.steps;
        for (kind, o) in other.operations {
            let entry = self.operations.entry(kind).or_default();
            entry.ok += o.ok;
            entry.failed += o.failed;
            for (code, n) in o.codes {
                *entry.codes.entry(code).or_default() += n;
            }
            for (code, msg) in o.samples {
                entry.samples.entry(code).or_insert(msg);
            }
        }
        for (label, n) in other.faults {
            *self.faults.entry(label).or_default() += n;
        }
        self.violations.extend(other.violations);
    }

    pub fn to_json(&self, base_seed: u64, wall_seconds: f64) -> Value {
        let operations: serde_json::Map<String, Value> = self
            .operations
            .iter()
            .map(|(k, o)| {
                let codes: BTreeMap<String, u64> =
                    o.codes.iter().map(|(c, n)| (c.to_string(), *n)).collect();
                let samples: BTreeMap<String, &String> =
                    o.samples.iter().map(|(c, m)| (c.to_string(), m)).collect();
                (
                    k.clone(),
                    json!({"ok": o.ok, "failed": o.failed, "failed_by_code": codes, "failure_samples": samples}),
                )
            })
            .collect();
        json!({
            "base_seed": base_seed,
            "runs": self.runs,
            "kube_runs": self.kube_runs,
            "steps": self.steps,
            "wall_seconds": (wall_seconds * 10.0).round() / 10.0,
            "operations": operations,
            "faults": self.faults,
            "violations": self.violations.iter().map(Violation::to_json).collect::<Vec<_>>(),
        })
    }

    /// The table `soak` prints.
    pub fn table(&self, wall_seconds: f64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "runs: {} ({} with the kube source), steps: {}, wall time: {:.0} s",
            self.runs, self.kube_runs, self.steps, wall_seconds
        );
        let _ = writeln!(
            out,
            "\n{:<36} {:>7} {:>7}  failed by CNI code",
            "operation", "ok", "failed"
        );
        for (kind, o) in &self.operations {
            let codes: Vec<String> = o.codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            let _ = writeln!(
                out,
                "{kind:<36} {:>7} {:>7}  {}",
                o.ok,
                o.failed,
                codes.join(", ")
            );
        }
        let _ = writeln!(out, "\n{:<36} {:>8}", "fault", "count");
        for (label, n) in &self.faults {
            let _ = writeln!(out, "{label:<36} {n:>8}");
        }
        let _ = writeln!(out, "\nviolations: {}", self.violations.len());
        for violation in &self.violations {
            let _ = writeln!(out, "  {violation}");
        }
        out
    }
}
