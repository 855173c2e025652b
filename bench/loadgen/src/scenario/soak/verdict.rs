//! The soak's verdict: its thresholds, why each has the slack it has, and the pure function
//! that turns the samples into PASS or FAIL.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{KINDS, Kind, Sample};

/// Pass/fail thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Share of the run that is warm-up: RSS and fds are compared with the first sample at or
    /// after it.
    pub warmup_fraction: f64,
    /// The shortest warm-up.
    pub warmup_min: Duration,
    /// RSS may move this share of its post-warm-up value either way...
    pub rss_fraction: f64,
    /// ...or this many KiB, whichever is more. On a short run the warm-up ends before the
    /// allocator's arenas and SQLite's page caches (2 MiB per pooled connection by default)
    /// have reached their plateau, and 10 % of a 20–40 MiB server is only 2–4 MiB: without a
    /// floor a healthy 60 s run fails on caches filling up. A leak of even a few hundred
    /// bytes per operation passes 8 MiB within minutes at this load.
    pub rss_floor_kib: u64,
    /// Open fds may move this share either way...
    pub fd_fraction: f64,
    /// ...or this many, whichever is more. A server holds a few dozen fds, so 10 % is two or
    /// three; SQLite opens its WAL and shared-memory files and pool connections lazily, and a
    /// client connection being replaced briefly counts twice. A leak per operation exceeds
    /// this within the first second.
    pub fd_slack: usize,
    /// A kind's p99 in the last minute may be at most this multiple of its first minute's...
    pub p99_factor: f64,
    /// ...or the first minute's plus this many µs, whichever is more. On two shared cores a
    /// p99 of a millisecond or two doubles whenever another process takes a core for one
    /// scheduler slice (a few ms); that is the machine, not drift.
    pub p99_floor_us: u64,
    /// A later sample counts for the p99 comparison when its run-queue wait (threads waiting
    /// for a CPU) is at most this multiple of the first minute's...
    pub quiet_wait_factor: f64,
    /// ...or the first minute's plus this many waiting threads, whichever is more. A quarter
    /// of a thread waiting all the time is a quarter of a core taken from a load that uses
    /// about one and a half: enough to move p99 by itself.
    pub quiet_wait_slack: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            warmup_fraction: 0.2,
            warmup_min: Duration::from_secs(10),
            rss_fraction: 0.10,
            rss_floor_kib: 8 * 1024,
            fd_fraction: 0.10,
            fd_slack: 8,
            p99_factor: 2.0,
            p99_floor_us: 5_000,
            quiet_wait_factor: 1.5,
            quiet_wait_slack: 0.25,
        }
    }
}

/// The first and last latency of one kind, as compared by [`judge`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct P99Pair {
    /// p99 of the reference period (the first minute, or the first sample of a short run), µs.
    pub first_us: u64,
    /// p99 of the compared period (the last minute, or every later sample of a short run), µs.
    pub last_us: u64,
    /// Operations in the compared period (none: nothing to compare).
    pub last_ops: u64,
}

/// Which of the compared samples are quiet enough to judge latency by: those whose run-queue
/// wait is at most `factor` times, or `slack` above, the mean over the reference samples.
pub fn quiet_samples(reference: &[f64], compared: &[f64], factor: f64, slack: f64) -> Vec<usize> {
    let base = if reference.is_empty() {
        0.0
    } else {
        reference.iter().sum::<f64>() / reference.len() as f64
    };
    compared
        .iter()
        .enumerate()
        .filter(|(_, wait)| **wait <= (base * factor).max(base + slack))
        .map(|(i, _)| i)
        .collect()
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether every check held.
    pub pass: bool,
    /// Why not (empty on a pass).
    pub reasons: Vec<String>,
    /// What could not be judged, and why (does not fail the run).
    pub notes: Vec<String>,
    /// The sample RSS and fds were compared against.
    pub baseline_at_s: f64,
}

fn band(base: f64, fraction: f64, floor: f64) -> f64 {
    (base * fraction).max(floor)
}

/// Judges a run: resources flat after the warm-up, every kind's p99 within its bound, no
/// unexpected errors, and the server alive throughout. `p99` is `None` when no compared
/// sample was quiet enough (see [`quiet_samples`]).
pub fn judge(
    samples: &[Sample],
    duration: Duration,
    p99: Option<&[(Kind, P99Pair)]>,
    server_lost: Option<&str>,
    limits: &Limits,
) -> Verdict {
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    if let Some(why) = server_lost {
        reasons.push(format!("the server stopped answering /proc reads: {why}"));
    }
    let warmup = duration
        .mul_f64(limits.warmup_fraction)
        .max(limits.warmup_min)
        .as_secs_f64();
    let baseline = samples
        .iter()
        .position(|s| s.at_s + 1e-6 >= warmup)
        .filter(|&i| i + 1 < samples.len());
    let baseline_at_s = baseline.map_or(0.0, |i| samples[i].at_s);
    match baseline {
        None => reasons.push(format!(
            "too few samples ({}) to compare anything after a {warmup:.0} s warm-up",
            samples.len()
        )),
        Some(i) => {
            let base = &samples[i];
            let rss_band = band(
                base.rss_kib as f64,
                limits.rss_fraction,
                limits.rss_floor_kib as f64,
            );
            let fd_band = band(base.fds as f64, limits.fd_fraction, limits.fd_slack as f64);
            for s in &samples[i + 1..] {
                let drift = s.rss_kib as f64 - base.rss_kib as f64;
                if drift.abs() > rss_band {
                    reasons.push(format!(
                        "RSS moved from {} KiB at {:.0} s to {} KiB at {:.0} s ({:+.0} KiB; allowed ±{:.0})",
                        base.rss_kib, base.at_s, s.rss_kib, s.at_s, drift, rss_band
                    ));
                    break;
                }
            }
            for s in &samples[i + 1..] {
                let drift = s.fds as f64 - base.fds as f64;
                if drift.abs() > fd_band {
                    reasons.push(format!(
                        "open fds moved from {} at {:.0} s to {} at {:.0} s ({:+.0}; allowed ±{:.0})",
                        base.fds, base.at_s, s.fds, s.at_s, drift, fd_band
                    ));
                    break;
                }
            }
        }
    }
    if p99.is_none() {
        notes.push(format!(
            "p99 not compared: in every later sample more threads waited for a CPU than {}× or {:+} of the first minute's (the machine was busier)",
            limits.quiet_wait_factor, limits.quiet_wait_slack
        ));
    }
    for (kind, pair) in p99.unwrap_or_default() {
        if pair.last_ops == 0 {
            reasons.push(format!(
                "{}: no operation finished in the compared period",
                kind.name()
            ));
            continue;
        }
        let allowed = (pair.first_us as f64 * limits.p99_factor)
            .max((pair.first_us + limits.p99_floor_us) as f64);
        if pair.last_us as f64 > allowed {
            reasons.push(format!(
                "{}: p99 rose from {:.2} ms to {:.2} ms (allowed {:.2} ms)",
                kind.name(),
                pair.first_us as f64 / 1000.0,
                pair.last_us as f64 / 1000.0,
                allowed / 1000.0
            ));
        }
    }
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples {
        for (kind, k) in KINDS.iter().zip(&s.kinds) {
            for (name, n) in &k.errors {
                *errors.entry(format!("{} {name}", kind.name())).or_default() += n;
            }
        }
    }
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|(k, n)| format!("{k} × {n}")).collect();
        reasons.push(format!("unexpected errors: {}", list.join(", ")));
    }
    Verdict {
        pass: reasons.is_empty(),
        reasons,
        notes,
        baseline_at_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::soak::KindSample;

    fn sample(at_s: f64, rss_kib: u64, fds: usize) -> Sample {
        Sample {
            at_s,
            rss_kib,
            fds,
            db_bytes: 0,
            others_cores: 0.0,
            waiting_threads: 0.0,
            kinds: KINDS.iter().map(|_| KindSample::default()).collect(),
        }
    }

    fn steady(p99: u64) -> Vec<(Kind, P99Pair)> {
        KINDS
            .iter()
            .map(|&k| {
                (
                    k,
                    P99Pair {
                        first_us: p99,
                        last_us: p99,
                        last_ops: 100,
                    },
                )
            })
            .collect()
    }

    fn minute(rss: impl Fn(f64) -> u64, fds: impl Fn(f64) -> usize) -> Vec<Sample> {
        (1..=6)
            .map(|i| {
                let t = i as f64 * 10.0;
                sample(t, rss(t), fds(t))
            })
            .collect()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_flat_run_passes() {
        let samples = minute(|t| 30_000 + t as u64, |_| 40);
        let v = judge(
            &samples,
            MINUTE,
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert!(v.pass, "{:?}", v.reasons);
        // 20 % of 60 s is 12 s: the first sample at or after it is the one at 20 s.
        assert_eq!(v.baseline_at_s, 20.0);
    }

    #[test]
    fn growth_during_the_warm_up_is_not_counted() {
        let samples = minute(|t| if t < 20.0 { 10_000 } else { 40_000 }, |_| 40);
        assert!(
            judge(
                &samples,
                MINUTE,
                Some(&steady(2_000)),
                None,
                &Limits::default()
            )
            .pass
        );
    }

    #[test]
    fn rss_growth_beyond_the_band_fails() {
        // Baseline 100 MiB: the band is 10 MiB (10 % beats the 8 MiB floor); +11 MiB fails.
        let samples = minute(
            |t| {
                if t < 60.0 {
                    102_400
                } else {
                    102_400 + 11 * 1024
                }
            },
            |_| 40,
        );
        let v = judge(
            &samples,
            MINUTE,
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert!(!v.pass);
        assert!(v.reasons[0].starts_with("RSS moved"), "{:?}", v.reasons);
    }

    #[test]
    fn small_rss_moves_stay_under_the_floor() {
        // +7 MiB on a 30 MiB server is 23 %, but under the 8 MiB floor.
        let samples = minute(
            |t| if t < 60.0 { 30_720 } else { 30_720 + 7 * 1024 },
            |_| 40,
        );
        assert!(
            judge(
                &samples,
                MINUTE,
                Some(&steady(2_000)),
                None,
                &Limits::default()
            )
            .pass
        );
    }

    #[test]
    fn an_fd_leak_fails_and_a_few_fds_do_not() {
        let leak = minute(|_| 30_000, |t| 40 + t as usize);
        let v = judge(
            &leak,
            MINUTE,
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert!(
            v.reasons.iter().any(|r| r.starts_with("open fds")),
            "{:?}",
            v.reasons
        );
        let wobble = minute(|_| 30_000, |t| if t > 40.0 { 45 } else { 40 });
        assert!(
            judge(
                &wobble,
                MINUTE,
                Some(&steady(2_000)),
                None,
                &Limits::default()
            )
            .pass
        );
    }

    #[test]
    fn p99_bounds() {
        let samples = minute(|_| 30_000, |_| 40);
        let limits = Limits::default();
        let with = |first_us, last_us| {
            vec![(
                Kind::Unary,
                P99Pair {
                    first_us,
                    last_us,
                    last_ops: 10,
                },
            )]
        };
        // Twice 20 ms is the bound: 40 ms passes, 41 ms fails.
        assert!(judge(&samples, MINUTE, Some(&with(20_000, 40_000)), None, &limits).pass);
        let v = judge(&samples, MINUTE, Some(&with(20_000, 41_000)), None, &limits);
        assert!(
            v.reasons[0].starts_with("unary: p99 rose"),
            "{:?}",
            v.reasons
        );
        // A 1 ms p99 may reach 6 ms (the floor), not 7.
        assert!(judge(&samples, MINUTE, Some(&with(1_000, 6_000)), None, &limits).pass);
        assert!(!judge(&samples, MINUTE, Some(&with(1_000, 7_000)), None, &limits).pass);
        // Nothing finished at the end: that is a failure, not a pass by default.
        let none = vec![(
            Kind::Churn,
            P99Pair {
                first_us: 1_000,
                last_us: 0,
                last_ops: 0,
            },
        )];
        assert!(!judge(&samples, MINUTE, Some(&none), None, &limits).pass);
    }

    #[test]
    fn errors_and_a_lost_server_fail() {
        let mut samples = minute(|_| 30_000, |_| 40);
        samples[3].kinds[Kind::Stream.index()]
            .errors
            .insert("UNAVAILABLE".into(), 2);
        let v = judge(
            &samples,
            MINUTE,
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert_eq!(v.reasons, vec!["unexpected errors: stream UNAVAILABLE × 2"]);
        let samples = minute(|_| 30_000, |_| 40);
        let v = judge(
            &samples,
            MINUTE,
            Some(&steady(2_000)),
            Some("No such file or directory"),
            &Limits::default(),
        );
        assert!(!v.pass);
    }

    #[test]
    fn noisy_neighbours_void_the_latency_check_only() {
        // Reference 0.2 threads waiting: up to 0.45 is quiet (the slack beats 1.5×).
        assert_eq!(
            quiet_samples(&[0.1, 0.3], &[0.5, 0.45, 1.5, 0.2], 1.5, 0.25),
            vec![1, 3]
        );
        // Reference 1.0: up to 1.5 (the factor beats the slack).
        assert_eq!(quiet_samples(&[1.0], &[1.5, 1.6], 1.5, 0.25), vec![0]);
        assert!(quiet_samples(&[0.0], &[0.9, 1.2], 1.5, 0.25).is_empty());
        let samples = minute(|_| 30_000, |_| 40);
        let v = judge(&samples, MINUTE, None, None, &Limits::default());
        assert!(v.pass);
        assert!(v.notes[0].starts_with("p99 not compared"));
        let leak = minute(|_| 30_000, |t| 40 + t as usize);
        assert!(!judge(&leak, MINUTE, None, None, &Limits::default()).pass);
    }

    #[test]
    fn too_short_a_run_cannot_pass() {
        let samples = vec![sample(10.0, 30_000, 40)];
        let v = judge(
            &samples,
            Duration::from_secs(10),
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert!(!v.pass);
        assert!(v.reasons[0].starts_with("too few samples"));
    }
}
