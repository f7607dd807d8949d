//! The CRI benchmark on its own (issue 8): `cri-bench [--reps N] [--json FILE]
//! [--plexusd-config LINE]...`, as root. Prints the table; with `--json`, writes the figures
//! (`cri_run_overhead_ms_median` among them) to FILE; each `--plexusd-config` line goes into
//! plexusd's config, to A/B a setting. Skips, saying why, when containerd or crun is not
//! installed.

use std::process::ExitCode;

use plexus_integration::cri_bench::cri_bench;

fn main() -> ExitCode {
    let mut reps = 30;
    let mut json = None;
    let mut plexusd_config = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--reps", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                reps = n.parse().unwrap_or(reps);
            }
            ("--json", Some(path)) => json = Some(path),
            ("--plexusd-config", Some(line)) => plexusd_config.push(line),
            _ => {
                eprintln!("usage: cri-bench [--reps N] [--json FILE] [--plexusd-config LINE]...");
                return ExitCode::from(2);
            }
        }
    }
    match cri_bench(reps, &plexusd_config) {
        Ok(result) => {
            print!("{}", result.table());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&result.to_json()).unwrap_or_default();
                if let Err(e) = std::fs::write(&path, text + "\n") {
                    eprintln!("cannot write {path}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("CRI bench skipped: {why}");
            ExitCode::SUCCESS
        }
    }
}
