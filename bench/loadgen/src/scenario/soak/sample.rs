//! What the soak samples: the server's memory and file descriptors, the data directory's
//! files, how busy the machine's CPUs were, and the table the samples are printed as.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::KINDS;
use crate::load::round1;

/// The server's open file descriptors.
pub fn open_fds(pid: u32) -> std::io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The machine's CPU counters from `/proc/stat`: busy and total ticks of all CPUs, and how many
/// CPUs there are.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// Ticks not idle and not waiting for I/O.
    pub busy: u64,
    /// All ticks.
    pub total: u64,
    /// Online CPUs.
    pub cpus: usize,
}

impl MachineCpu {
    /// Reads `/proc/stat` now.
    pub fn read() -> std::io::Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "cannot parse /proc/stat")
        })
    }

    /// Parses the text of `/proc/stat`.
    pub fn parse(stat: &str) -> Option<Self> {
        let mut lines = stat.lines();
        let fields: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user already).
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        let cpus = lines
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
            cpus: cpus.max(1),
        })
    }

    /// Cores kept busy on average between `earlier` and `self`.
    pub fn busy_cores_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64 * self.cpus as f64
    }
}

/// Nanoseconds the threads of process `pid` have spent runnable but waiting for a CPU (the
/// second field of each `/proc/PID/task/TID/schedstat`). Threads that ended take their share
/// with them, so this can fall; the caller clamps differences at zero.
pub fn run_queue_wait_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Rounds to two decimals.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The sizes of the files under `dir` (recursively), by path relative to `dir`.
pub fn file_sizes(dir: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // A file may vanish between listing and reading (SQLite's journal): skip it.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap_or(&path);
                out.insert(name.display().to_string(), meta.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// One sample: the server's resources at its end and every kind's interval.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the soak phase started.
    pub at_s: f64,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Bytes of all files in the data directory.
    pub db_bytes: u64,
    /// Cores other processes kept busy on average during the interval.
    pub others_cores: f64,
    /// Threads of the server and the load generator runnable but waiting for a CPU, on
    /// average during the interval.
    pub waiting_threads: f64,
    /// Per kind (in [`KINDS`] order): operations, p99 in µs, errors, missed slots.
    pub kinds: Vec<KindSample>,
}

/// What one kind did in one interval.
#[derive(Debug, Clone, Default)]
pub struct KindSample {
    /// Operations answered as expected.
    pub ok: u64,
    /// Their p50, µs.
    pub p50_us: u64,
    /// Their p99, µs.
    pub p99_us: u64,
    /// Their slowest, µs.
    pub max_us: u64,
    /// Unexpected errors by name.
    pub errors: BTreeMap<String, u64>,
    /// Slots skipped because the worker was more than a period behind.
    pub missed: u64,
}

impl Sample {
    /// The sample as JSON, with the data directory's files by name.
    pub fn to_json(&self, db_files: &BTreeMap<String, u64>) -> Value {
        let kinds: serde_json::Map<String, Value> = KINDS
            .iter()
            .zip(&self.kinds)
            .map(|(kind, k)| {
                (
                    kind.name().to_string(),
                    json!({
                        "ok": k.ok,
                        "p50_us": k.p50_us,
                        "p99_us": k.p99_us,
                        "max_us": k.max_us,
                        "errors": k.errors,
                        "missed": k.missed,
                    }),
                )
            })
            .collect();
        json!({
            "at_s": round1(self.at_s),
            "rss_kib": self.rss_kib,
            "fds": self.fds,
            "db_bytes": self.db_bytes,
            "db_files": db_files,
            "others_cores": round2(self.others_cores),
            "waiting_threads": round2(self.waiting_threads),
            "kinds": kinds,
        })
    }
}

/// The header of the table of samples.
pub fn table_header() -> String {
    let mut line = format!(
        "{:>7} {:>9} {:>5} {:>10} {:>6} {:>5}",
        "t(s)", "rss(KiB)", "fds", "db(KiB)", "others", "wait"
    );
    for kind in KINDS {
        line += &format!(" {:>16}", format!("{} ops/p99ms", kind.name()));
    }
    line + "  errors"
}

/// One row of the table of samples.
pub fn table_row(sample: &Sample) -> String {
    let mut line = format!(
        "{:>7.1} {:>9} {:>5} {:>10} {:>6.2} {:>5.2}",
        sample.at_s,
        sample.rss_kib,
        sample.fds,
        sample.db_bytes / 1024,
        sample.others_cores,
        sample.waiting_threads
    );
    let mut errors = Vec::new();
    for (kind, k) in KINDS.iter().zip(&sample.kinds) {
        line += &format!(
            " {:>16}",
            format!("{}/{:.2}", k.ok, k.p99_us as f64 / 1000.0)
        );
        for (name, n) in &k.errors {
            errors.push(format!("{}:{name}={n}", kind.name()));
        }
        if k.missed > 0 {
            errors.push(format!("{}:missed={}", kind.name(), k.missed));
        }
    }
    line + "  " + &errors.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload;

    #[test]
    fn machine_cpu() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        let a = MachineCpu::parse(stat).unwrap();
        assert_eq!(
            a,
            MachineCpu {
                busy: 150,
                total: 1000,
                cpus: 2
            }
        );
        let b = MachineCpu {
            busy: 650,
            total: 2000,
            cpus: 2,
        };
        // 500 busy of 1000 ticks on 2 CPUs: one core busy.
        assert!((b.busy_cores_since(&a) - 1.0).abs() < 1e-9);
        assert!(MachineCpu::read().unwrap().total > 0);
        assert!(std::fs::read_dir(format!("/proc/{}/task", std::process::id())).is_ok());
    }

    #[test]
    fn reads_this_process_and_a_directory() {
        assert!(open_fds(std::process::id()).unwrap() >= 3);
        let dir = std::env::temp_dir().join(format!("soak-sizes-{}", workload::run_tag()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.db"), [0u8; 10]).unwrap();
        std::fs::write(dir.join("sub").join("b"), [0u8; 5]).unwrap();
        let sizes = file_sizes(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(sizes.get("a.db"), Some(&10));
        assert_eq!(sizes.get("sub/b"), Some(&5));
        assert_eq!(sizes.values().sum::<u64>(), 15);
    }
}
