//! The server's resource use, read from `/proc/<pid>`: CPU time (user + system, all threads)
//! from `stat`, resident memory now (`VmRSS`) and at its peak (`VmHWM`) from `status`.
//!
//! One probe may watch several processes (replicas of one service sharing a database): their
//! figures are summed. It may also watch a database server's process tree (PostgreSQL's
//! postmaster and its backends), whose CPU time is reported apart from the servers', and a
//! model upstream's (the fake OpenAI-compatible server the `gateway` scenario puts behind the
//! gateways), reported apart too. With [`ServerProbe::with_children`] a server's CPU time is
//! its whole process tree's (a gateway started by a launcher that forks workers).

use std::time::Duration;

/// Reads the counters of one or more server processes (and optionally a database's).
#[derive(Debug, Clone)]
pub struct ServerProbe {
    pids: Vec<u32>,
    database: Option<u32>,
    upstream: Option<u32>,
    children: bool,
    ticks_per_second: u64,
}

/// One reading of the watched processes' counters (sums over all of them).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// User + system CPU time of all their threads so far.
    pub cpu: Duration,
    /// Resident memory now, in KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far, in KiB.
    pub peak_rss_kib: u64,
    /// CPU time of the database server's process tree so far, when one is watched.
    pub database_cpu: Option<Duration>,
    /// CPU time of the model upstream's process tree so far, when one is watched.
    pub upstream_cpu: Option<Duration>,
}

impl ServerProbe {
    /// A probe of process `pid`.
    pub fn new(pid: u32) -> Self {
        Self::of_all(&[pid])
    }

    /// A probe of several processes at once (replicas): readings are their sums.
    pub fn of_all(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            database: None,
            upstream: None,
            children: false,
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    /// Also reads the CPU time of the database server whose main process is `root` (the
    /// PostgreSQL postmaster): its own, its live children's, and what its exited children
    /// used (`cutime` + `cstime`, added to the parent when it reaps them).
    pub fn with_database(mut self, root: u32) -> Self {
        self.database = Some(root);
        self
    }

    /// Also reads the CPU time of the model upstream whose process is `root` (and of its
    /// descendants), reported apart from the servers'.
    pub fn with_upstream(mut self, root: u32) -> Self {
        self.upstream = Some(root);
        self
    }

    /// Counts each server's descendants in its CPU time: live ones (at any depth) and the
    /// ones that exited and were waited for. Memory stays the server process's own.
    pub fn with_children(mut self) -> Self {
        self.children = true;
        self
    }

    /// The probe of this process itself (the load generator's own cost).
    pub fn this_process() -> Self {
        Self::new(std::process::id())
    }

    /// The (first) process id.
    pub fn pid(&self) -> u32 {
        self.pids[0]
    }

    /// All watched process ids.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Reads the counters now.
    pub fn read(&self) -> std::io::Result<Reading> {
        let mut total = Reading::default();
        for &pid in &self.pids {
            let one = self.read_one(pid)?;
            total.cpu += if self.children {
                self.tree_cpu(pid)?
            } else {
                one.cpu
            };
            total.rss_kib += one.rss_kib;
            total.peak_rss_kib += one.peak_rss_kib;
        }
        if let Some(root) = self.database {
            total.database_cpu = Some(self.tree_cpu(root)?);
        }
        if let Some(root) = self.upstream {
            total.upstream_cpu = Some(self.tree_cpu(root)?);
        }
        Ok(total)
    }

    fn read_one(&self, pid: u32) -> std::io::Result<Reading> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let times = stat_times(&stat).ok_or_else(|| unparsable(pid))?;
        Ok(Reading {
            cpu: self.ticks(times.own),
            rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
            peak_rss_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
            database_cpu: None,
            upstream_cpu: None,
        })
    }

    /// CPU time of `root`, what its exited children used (`cutime` + `cstime`, which also
    /// holds their own reaped descendants'), and its live descendants at any depth (every
    /// PostgreSQL process is a child of the postmaster; a launcher may fork deeper).
    fn tree_cpu(&self, root: u32) -> std::io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{root}/stat"))?;
        let times = stat_times(&stat).ok_or_else(|| unparsable(root))?;
        let mut ticks = times.own + times.reaped_children;
        let mut live = Vec::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process may end between listing and reading: skip it (its time moves to
            // the parent's reaped children).
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(times) = stat_times(&stat) {
                live.push((pid, times));
            }
        }
        ticks += descendants_ticks(root, &live);
        Ok(self.ticks(ticks))
    }

    fn ticks(&self, ticks: u64) -> Duration {
        Duration::from_secs_f64(ticks as f64 / self.ticks_per_second as f64)
    }
}

/// utime + stime of every live descendant of `root` among `live` (pid and times of each
/// process), at any depth.
fn descendants_ticks(root: u32, live: &[(u32, StatTimes)]) -> u64 {
    let mut ticks = 0;
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (pid, times) in live {
            if times.parent == parent && *pid != root {
                ticks += times.own;
                parents.push(*pid);
            }
        }
    }
    ticks
}

fn unparsable(pid: u32) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("cannot parse /proc/{pid}/stat"),
    )
}

/// The times of a `/proc/<pid>/stat` line, in clock ticks.
#[derive(Debug, PartialEq, Eq)]
struct StatTimes {
    /// Field 4: the parent's pid.
    parent: u32,
    /// utime + stime (fields 14 and 15).
    own: u64,
    /// cutime + cstime (fields 16 and 17): children that ended and were waited for.
    reaped_children: u64,
}

/// Reads [`StatTimes`] off a stat line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn stat_times(stat: &str) -> Option<StatTimes> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(StatTimes {
        parent: u32::try_from(field(4)?).ok()?,
        own: field(14)? + field(15)?,
        reaped_children: field(16)? + field(17)?,
    })
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
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 30 7 5 20 0 8 0 100";
        assert_eq!(
            stat_times(stat),
            Some(StatTimes {
                parent: 1,
                own: 280,
                reaped_children: 12
            })
        );
    }

    #[test]
    fn sums_several_processes() {
        let me = std::process::id();
        let one = ServerProbe::new(me).read().unwrap();
        let twice = ServerProbe::of_all(&[me, me]).read().unwrap();
        assert!(twice.rss_kib >= one.rss_kib * 2 - 1024);
        assert!(twice.cpu >= one.cpu);
        assert!(twice.database_cpu.is_none());
    }

    #[test]
    fn reads_a_process_tree() {
        // Our parent's tree holds this process, so its CPU time is at least ours.
        let mine = ServerProbe::this_process().read().unwrap().cpu;
        let parent = std::os::unix::process::parent_id();
        let tree = ServerProbe::this_process()
            .with_database(parent)
            .read()
            .unwrap();
        assert!(tree.database_cpu.unwrap() >= mine);
    }

    #[test]
    fn descendants_at_any_depth() {
        let times = |parent, own| StatTimes {
            parent,
            own,
            reaped_children: 0,
        };
        let live = [
            (10, times(1, 1)),
            (11, times(10, 2)),
            (12, times(11, 4)),
            (13, times(1, 8)),
        ];
        assert_eq!(descendants_ticks(10, &live), 6);
        assert_eq!(descendants_ticks(12, &live), 0);
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
