//! What the hypervisor took from a bench run (steal): its share of the machine's CPU time,
//! and vCPU stalls — CPU time taken from one virtual CPU at once. On the reference machine
//! it takes chunks of up to 100 ms, and only while both vCPUs are busy; a thread an ack
//! waits on, frozen that long, holds up every request behind it. The bench counts the
//! stalls and the slow acks in flight during one, so a run's tail can be told apart from
//! the server's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often `/proc/stat` is read.
const EVERY: Duration = Duration::from_millis(5);

/// Steal counted as a stall: this much taken from one vCPU within one reading interval
/// (steal spread over time shows up a tick, 10 ms, at a time).
pub(crate) const STALL_MS: f64 = 30.0;

/// The machine's CPU time and the part of it the hypervisor gave to other guests (steal),
/// in ticks, from `/proc/stat`: a virtual machine's neighbours can slow a run down.
pub(crate) fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// (total, steal) from the aggregate `cpu` line: user nice system idle iowait irq softirq
/// steal (guest time is already counted in user).
fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    (ticks.len() == 8).then(|| (ticks.iter().sum(), ticks[7]))
}

/// Percent of the machine's CPU time stolen between two `machine_ticks` readings.
pub(crate) fn steal_percent(from: Option<(u64, u64)>, to: Option<(u64, u64)>) -> String {
    match (from, to) {
        (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
            format!("{:.1}%", (s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)
        }
        _ => "unavailable".to_string(),
    }
}

/// The hypervisor's share of a run: percent of the machine's CPU time at full speed and
/// over the paced phase, and the paced phase's stalls.
pub(crate) struct Steal {
    pub full: String,
    pub paced: String,
    pub stalls: Vec<Stall>,
}

/// A stretch in which the hypervisor ran something else on one of our vCPUs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stall {
    /// When its steal was accounted: the guest kernel adds it on the vCPU's first tick
    /// after the stall, so the stall lies just before.
    pub end: Instant,
    pub cpu: usize,
    pub ms: f64,
}

/// Per-CPU steal ticks from `/proc/stat`, in the order of its `cpuN` lines.
fn per_cpu_steal(stat: &str) -> Vec<u64> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .filter_map(|l| l.split_whitespace().nth(8)?.parse().ok())
        .collect()
}

/// The stalls between two readings of per-CPU steal ticks, taken at `at`.
fn stalls_between(before: &[u64], after: &[u64], ticks_per_s: f64, at: Instant) -> Vec<Stall> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter_map(|(cpu, (b, a))| {
            let ms = a.saturating_sub(*b) as f64 * 1000.0 / ticks_per_s;
            (ms >= STALL_MS).then_some(Stall { end: at, cpu, ms })
        })
        .collect()
}

/// A thread reading `/proc/stat` every 5 ms until [`StallWatch::finish`].
pub(crate) struct StallWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Stall>>,
}

impl StallWatch {
    pub(crate) fn start(ticks_per_s: f64) -> std::io::Result<StallWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("bench-steal".into())
            .spawn(move || {
                let read = || {
                    std::fs::read_to_string("/proc/stat")
                        .map(|s| per_cpu_steal(&s))
                        .unwrap_or_default()
                };
                let mut stalls = Vec::new();
                let mut before = read();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EVERY);
                    let after = read();
                    if after.len() == before.len() {
                        stalls.extend(stalls_between(&before, &after, ticks_per_s, Instant::now()));
                    }
                    before = after;
                }
                stalls
            })?;
        Ok(StallWatch { stop, handle })
    }

    /// The stalls seen since [`StallWatch::start`] (none if the thread panicked).
    pub(crate) fn finish(self) -> Vec<Stall> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// How many of `acks` (sent at, took) that took over `slow` were in flight during a stall.
pub(crate) fn slow_during_stalls(
    acks: &[(Instant, Duration)],
    stalls: &[Stall],
    slow: Duration,
) -> usize {
    acks.iter()
        .filter(|(_, took)| *took > slow)
        .filter(|(sent, took)| {
            let done = *sent + *took;
            stalls.iter().any(|s| {
                let began = s
                    .end
                    .checked_sub(Duration::from_secs_f64(s.ms / 1000.0))
                    .unwrap_or(s.end);
                *sent < s.end && began < done
            })
        })
        .count()
}

/// "n (x ms in all, longest y ms)" of the stalls, or "none".
pub(crate) fn summary(stalls: &[Stall]) -> String {
    if stalls.is_empty() {
        return "none".to_string();
    }
    let total: f64 = stalls.iter().map(|s| s.ms).sum();
    let longest = stalls.iter().map(|s| s.ms).fold(0.0, f64::max);
    format!(
        "{} ({total:.0} ms in all, longest {longest:.0} ms)",
        stalls.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 0 5 100 0 0 0 13 0 0\n\
                        cpu0 5 0 2 50 0 0 0 3 0 0\n\
                        cpu1 5 0 3 50 0 0 0 10 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line() {
        let stat = "cpu  100 5 20 800 10 1 4 60 7 0\ncpu0 50 2 10 400 5 0 2 30 3 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((1000, 60)));
        assert_eq!(
            steal_percent(Some((1000, 60)), Some((3000, 160))),
            "5.0%".to_string()
        );
        assert_eq!(parse_machine_ticks("cpu  1 2 3\n"), None);
        assert_eq!(steal_percent(None, Some((1, 1))), "unavailable");
    }

    #[test]
    fn steal_is_read_per_cpu() {
        assert_eq!(per_cpu_steal(STAT), vec![3, 10]);
        assert!(per_cpu_steal("intr 1 2\n").is_empty());
    }

    #[test]
    fn only_steal_taken_at_once_is_a_stall() {
        let at = Instant::now();
        // 100 ticks a second: +10 ticks is 100 ms, +2 is 20 ms (under the 30 ms bar).
        let stalls = stalls_between(&[3, 10], &[5, 20], 100.0, at);
        assert_eq!(
            stalls,
            vec![Stall {
                end: at,
                cpu: 1,
                ms: 100.0
            }]
        );
        assert_eq!(summary(&stalls), "1 (100 ms in all, longest 100 ms)");
        assert_eq!(summary(&[]), "none");
    }

    #[test]
    fn a_slow_ack_counts_if_it_was_in_flight_during_a_stall() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let stall = Stall {
            end: t0 + ms(200),
            cpu: 0,
            ms: 100.0,
        };
        let acks = [
            (t0 + ms(90), ms(25)),  // slow, in flight from 90 to 115: overlaps 100-200
            (t0 + ms(150), ms(30)), // slow, inside the stall
            (t0 + ms(150), ms(5)),  // inside, but not slow
            (t0 + ms(210), ms(40)), // slow, after the stall
            (t0 + ms(50), ms(40)),  // slow, ended before the stall began
        ];
        assert_eq!(slow_during_stalls(&acks, &[stall], ms(20)), 2);
        assert_eq!(slow_during_stalls(&acks, &[], ms(20)), 0);
    }
}
