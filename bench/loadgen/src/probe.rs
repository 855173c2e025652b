//! The server's resource use, read from `/proc/<pid>`: CPU time (user + system, all threads)
//! from `stat`, resident memory now (`VmRSS`) and at its peak (`VmHWM`) from `status`.

use std::time::Duration;

/// Reads one process's counters.
#[derive(Debug, Clone)]
pub struct ServerProbe {
    pid: u32,
    ticks_per_second: u64,
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// User + system CPU time of all its threads so far.
    pub cpu: Duration,
    /// Resident memory now, in KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far, in KiB.
    pub peak_rss_kib: u64,
}

impl ServerProbe {
    /// A probe of process `pid`.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    /// The probe of this process itself (the load generator's own cost).
    pub fn this_process() -> Self {
        Self::new(std::process::id())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads the counters now.
    pub fn read(&self) -> std::io::Result<Reading> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let ticks = cpu_ticks(&stat).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cannot parse /proc/{}/stat", self.pid),
            )
        })?;
        Ok(Reading {
            cpu: Duration::from_secs_f64(ticks as f64 / self.ticks_per_second as f64),
            rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
            peak_rss_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
        })
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `getconf CLK_TCK` (the unit of `/proc/<pid>/stat` times); 100 on every Linux this runs on
/// when `getconf` is missing.
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 8 0 100";
        assert_eq!(cpu_ticks(stat), Some(280));
    }

    #[test]
    fn reads_this_process() {
        let reading = ServerProbe::this_process().read().unwrap();
        assert!(reading.rss_kib > 0);
        assert!(reading.peak_rss_kib >= reading.rss_kib);
    }

    #[test]
    fn status_values() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }
}
