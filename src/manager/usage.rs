//! What each instance uses: its cgroup's accounting (or its process's,
//! from `/proc`, where it has no cgroup), CPU percent over the last few
//! seconds, and its last run's CPU time, peak memory and OOM kill.
//!
//! Read only when a status asks for metrics: nothing here runs on a timer,
//! so a node nobody asks costs nothing. The manager reads the cgroup
//! files itself (they are world-readable); the spawner, which created the
//! cgroup, reports its paths.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::cgroup::InstanceCgroup;
use crate::conf::format_size;
use crate::sys;
use crate::wire::proto::public_api::service_status_response::InstanceMetrics;

use super::instance::ExitStatus;

/// How an instance's last run ended, beyond its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastRun {
    /// The kernel killed a process of it for its memory limit, which was
    /// this (`memory_max` then).
    pub oom: Option<Option<u64>>,
    /// CPU time, in microseconds, from its rusage.
    pub cpu_usec: Option<u64>,
    /// Peak resident set, in bytes, from its rusage.
    pub peak_rss_bytes: Option<u64>,
    /// How long it ran, from its start to its end being reported.
    pub ran: Option<Duration>,
}

impl LastRun {
    /// "killed: out of memory (memory_max 64 MiB)" when it ran out of
    /// memory and was killed for it; "out of memory: ..." when a process
    /// of it was.
    pub fn oom_reason(&self, exit: Option<ExitStatus>) -> Option<String> {
        let limit = self.oom?;
        let limit = limit.map_or_else(
            || "its cgroup's limit".to_owned(),
            |bytes| format!("memory_max {}", format_size(bytes)),
        );
        Some(match exit {
            Some(ExitStatus::Signal(libc::SIGKILL)) => format!("killed: out of memory ({limit})"),
            _ => format!("a process of it was killed: out of memory ({limit})"),
        })
    }
}

/// CPU percent is measured over at least this long ...
const MIN_WINDOW: Duration = Duration::from_millis(200);
/// ... and the window restarts once it is this long.
const MAX_WINDOW: Duration = Duration::from_secs(5);

/// One instance's accounting source and CPU samples.
#[derive(Debug, Default)]
pub struct Usage {
    /// Its cgroup, while its process runs in one.
    pub cgroup: Option<InstanceCgroup>,
    /// The start of the CPU window: when, and the CPU time then.
    window: Cell<Option<(Instant, u64)>>,
    /// The last percent measured, in tenths.
    permille: Cell<Option<u32>>,
    /// Runs that ended with a process killed for the memory limit.
    pub oom_kills: u64,
    /// When its process was reported started.
    pub started_at: Option<Instant>,
}

impl Usage {
    /// A new run in `cgroup` (if any): its samples start afresh.
    pub fn started(&mut self, cgroup: Option<InstanceCgroup>, now: Instant) {
        *self = Usage {
            cgroup,
            oom_kills: self.oom_kills,
            started_at: Some(now),
            ..Usage::default()
        };
    }

    /// What instance `index` of `service_id` (process `pid`, running
    /// since `since`) uses now.
    pub fn metrics(
        &self,
        service_id: &str,
        index: u32,
        pid: u32,
        since: Instant,
        now: Instant,
    ) -> InstanceMetrics {
        let mut read = self
            .cgroup
            .as_ref()
            .map(InstanceCgroup::metrics)
            .unwrap_or_default();
        if read.cpu_usec.is_none() || read.memory_current.is_none() {
            if let Ok((cpu, rss)) = sys::process_usage(pid) {
                read.cpu_usec = read.cpu_usec.or(Some(cpu));
                read.memory_current = read.memory_current.or(Some(rss));
            }
        }
        if read.tasks.is_none() {
            read.tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .ok()
                .map(|tasks| tasks.count() as u64);
        }
        let permille = read.cpu_usec.map(|cpu| self.permille(cpu, since, now));
        InstanceMetrics {
            service_id: service_id.to_owned(),
            index,
            cpu_usec: read.cpu_usec,
            cpu_permille: permille,
            memory_bytes: read.memory_current,
            memory_peak_bytes: read.memory_peak,
            tasks: read.tasks,
        }
    }

    /// CPU use in tenths of a percent of one CPU over the window ending
    /// `now` (at first, since the run started).
    fn permille(&self, cpu_usec: u64, since: Instant, now: Instant) -> u32 {
        let share = |used: u64, over: Duration| {
            let micros = over.as_micros().max(1) as u64;
            u32::try_from(used.saturating_mul(1000) / micros).unwrap_or(u32::MAX)
        };
        match self.window.get() {
            None => {
                self.window.set(Some((now, cpu_usec)));
                let value = share(cpu_usec, now.saturating_duration_since(since));
                self.permille.set(Some(value));
                value
            }
            Some((start, start_cpu)) => {
                let elapsed = now.saturating_duration_since(start);
                if elapsed < MIN_WINDOW {
                    return self.permille.get().unwrap_or(0);
                }
                let value = share(cpu_usec.saturating_sub(start_cpu), elapsed);
                self.permille.set(Some(value));
                if elapsed >= MAX_WINDOW {
                    self.window.set(Some((now, cpu_usec)));
                }
                value
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_measured_over_a_window() {
        let usage = Usage::default();
        let start = Instant::now();
        // 1 s of CPU in the first 2 s: 50 %.
        assert_eq!(
            usage.permille(1_000_000, start, start + Duration::from_secs(2)),
            500
        );
        // Too soon for a new window: the last figure again.
        let soon = start + Duration::from_secs(2) + Duration::from_millis(50);
        assert_eq!(usage.permille(1_000_000, start, soon), 500);
        // A whole CPU over the next 6 s: 100 %, and the window restarts.
        let later = start + Duration::from_secs(8);
        assert_eq!(usage.permille(7_000_000, start, later), 1000);
        let after = later + Duration::from_secs(1);
        assert_eq!(usage.permille(7_000_000, start, after), 0);
    }

    #[test]
    fn out_of_memory_is_said_with_the_limit() {
        let run = LastRun {
            oom: Some(Some(64 << 20)),
            ..LastRun::default()
        };
        assert_eq!(
            run.oom_reason(Some(ExitStatus::Signal(9))).as_deref(),
            Some("killed: out of memory (memory_max 64 MiB)")
        );
        assert!(
            LastRun::default()
                .oom_reason(Some(ExitStatus::Signal(9)))
                .is_none()
        );
    }
}
