//! Percentiles, plexusd's own timings from /metrics, and plain-text tables.

use serde_json::{Value, json};

/// Median, p90 and p99 of a sample (nearest rank; the median of an even count is the mean of
/// the middle two).
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
}

pub fn summarize(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let median = if n.is_multiple_of(2) {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    } else {
        sorted[n / 2]
    };
    Summary {
        median,
        p90: rank(0.90),
        p99: rank(0.99),
    }
}

impl Summary {
    pub fn minus(&self, other: &Summary) -> Summary {
        Summary {
            median: self.median - other.median,
            p90: self.p90 - other.p90,
            p99: self.p99 - other.p99,
        }
    }

    pub fn json(&self) -> Value {
        json!({"median": round(self.median), "p90": round(self.p90), "p99": round(self.p99)})
    }
}

/// Three decimals: microseconds when the unit is ms.
pub fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// plexusd's cumulative timings, in seconds, from its /metrics text.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTimes {
    /// Request handling (plexus_cni_request_duration_seconds_sum) per command.
    pub add: f64,
    pub del: f64,
    /// Delegate calls (plexus_delegate_duration_seconds_sum) per command.
    pub add_delegates: f64,
    pub del_delegates: f64,
}

impl ServerTimes {
    pub fn parse(metrics: &str) -> Self {
        let mut times = Self::default();
        for line in metrics.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let add = series.contains(r#"command="ADD""#);
            let del = series.contains(r#"command="DEL""#);
            if series.starts_with("plexus_cni_request_duration_seconds_sum{") {
                if add {
                    times.add += value;
                } else if del {
                    times.del += value;
                }
            } else if series.starts_with("plexus_delegate_duration_seconds_sum{") {
                if add {
                    times.add_delegates += value;
                } else if del {
                    times.del_delegates += value;
                }
            }
        }
        times
    }

    /// What happened between two scrapes, in ms.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            add: (self.add - before.add) * 1000.0,
            del: (self.del - before.del) * 1000.0,
            add_delegates: (self.add_delegates - before.add_delegates) * 1000.0,
            del_delegates: (self.del_delegates - before.del_delegates) * 1000.0,
        }
    }
}

/// A table printed with aligned columns: the first column left-aligned, the rest right.
pub struct Table {
    title: String,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        println!("\n{}", self.title);
        for (i, row) in self.rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c == 0 {
                        format!("{cell:<w$}", w = widths[c])
                    } else {
                        format!("{cell:>w$}", w = widths[c])
                    }
                })
                .collect();
            println!("  {}", line.join("  "));
            if i == 0 {
                let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
                println!("  {}", "-".repeat(total));
            }
        }
    }
}

/// `1.234` for ms values.
pub fn ms(value: f64) -> String {
    format!("{value:.3}")
}

/// `+0.123`: an overhead.
pub fn signed(value: f64) -> String {
    format!("{value:+.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&samples);
        assert_eq!((s.median, s.p90, s.p99), (50.5, 90.0, 99.0));
        let s = summarize(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.p90, s.p99), (2.0, 3.0, 3.0));
    }

    #[test]
    fn server_times_add_up_per_command() {
        let text = r#"plexus_cni_request_duration_seconds_sum{command="ADD",result="success"} 0.5
plexus_cni_request_duration_seconds_sum{command="ADD",result="error"} 0.25
plexus_cni_request_duration_seconds_count{command="ADD",result="success"} 3
plexus_delegate_duration_seconds_sum{network="a",plugin="bridge",command="ADD"} 0.125
plexus_delegate_duration_seconds_sum{network="b",plugin="bridge",command="DEL"} 0.0625
"#;
        let t = ServerTimes::parse(text);
        assert_eq!(
            (t.add, t.del, t.add_delegates, t.del_delegates),
            (0.75, 0.0, 0.125, 0.0625)
        );
    }
}
