//! A short soak (`make soak` runs 200): a few seeded runs mixing every CNI call with every
//! fault, one of them with the kube source, and not one broken promise.

use plexus_integration::soak::{self, Options};

#[test]
fn a_short_soak_breaks_no_promise() {
    let options = Options {
        // Seed 1 runs with the kube source (every 4th seed from 1 on).
        base_seed: 1,
        runs: 3,
        steps: 60,
        log_dir: std::env::temp_dir(),
        ..Options::default()
    };
    let tally = soak::soak(&options);
    eprintln!("{}", tally.table(0.0));
    assert_eq!(tally.runs, 3);
    assert_eq!(tally.kube_runs, 1);
    assert!(
        tally.violations.is_empty(),
        "{} violation(s), replay with `soak --seed N`: {:#?}",
        tally.violations.len(),
        tally.violations
    );
}
