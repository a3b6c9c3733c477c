//! The state machine of one service instance. Pure: no processes, no
//! clocks, no channels. The manager feeds it events with the time they
//! happened and carries out the effects it returns.
//!
//! | state      | event                          | next state | effects                  |
//! |------------|--------------------------------|------------|--------------------------|
//! | stopped, exited, failed | `Start`           | starting   | spawn                    |
//! | backoff    | `Start`, restart timer         | starting   | spawn                    |
//! | backoff    | `Stop`                         | stopped    |                          |
//! | starting   | `Started(pid)`, `ready = "started"` | running | (signal, if a stop came) |
//! | starting   | `Started(pid)`, other `ready`  | starting (with a pid) | ready timer |
//! | starting with a pid | `Ready`               | running    |                          |
//! | starting with a pid | ready timer           | stopping   | stop signal, kill timer; its end is a failed start |
//! | starting with a pid | `Stop`                | stopping   | stop signal, kill timer  |
//! | starting with a pid | `Exited`              | as from running |                     |
//! | running    | `Unhealthy`                    | stopping   | stop signal, kill timer; its end is judged by the policy |
//! | stopped    | `Adopted(pid)` (found running at node start) | running | watch |
//! | stopped    | `GaveUpBefore` (the record says so) | failed |                     |
//! | starting   | `SpawnFailed`                  | backoff or failed (give-up limit) |  |
//! | running    | `Stop`                         | stopping   | stop signal, kill timer  |
//! | running    | `Exited`, policy says restart, ran `stable_after` | starting | spawn |
//! | running    | `Exited`, policy says restart, ran less | backoff or failed | timer |
//! | running    | `Exited`, policy says no       | exited     |                          |
//! | stopping   | kill timer                     | stopping   | SIGKILL                  |
//! | stopping   | `Exited`                       | stopped, or starting on a restart | (spawn) |
//! | stopping after a ready timeout | `Exited`   | backoff or failed |                |
//! | stopping after `Unhealthy` | `Exited`       | as from running, by the policy |       |
//!
//! `starting` lasts until the instance is ready: at once for `ready =
//! "started"`, else until the manager reports `Ready` (its readiness fd
//! or check said so) or the `ready.timeout` runs out, which counts as a
//! failed start for back-off and give-up.
//! Back-off doubles from `backoff_initial` to `backoff_max` with each quick
//! failure and resets after a run of `stable_after`. `give_up_after` failed
//! starts within `give_up_window` end in `failed` until a user starts it.
//!
//! Every transition sets the instance's `reason`, the words status,
//! events and the log show for its state: "started as pid 7", "backoff
//! 500ms (exit 1, 2nd failure)", "failed: gave up after 5 failures in 1m
//! (last: exit 1)". The manager may replace it with what only it knows
//! (what a dependency did, which check passed). A start by a user clears
//! the last exit of the instance's previous life; an automatic restart
//! keeps it, as it is why the instance restarted.
//!
//! An adopted process is not the node's child, so how it ended is
//! [`ExitStatus::Unknown`], which the `on-failure` policy counts as a
//! failure. Its run is counted from its adoption for `stable_after`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::usage::LastRun;
use crate::conf::{ReadySignal, RestartPolicy, ServiceConfig};

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running, and not meant to.
    Stopped,
    /// Spawn requested, not yet reported started.
    Starting,
    /// Its process runs.
    Running,
    /// Stop signal sent, process not yet gone.
    Stopping,
    /// Waiting to be restarted after a quick failure.
    Backoff,
    /// Exited and not restarted, by its restart policy.
    Exited,
    /// Gave up after too many failed starts.
    Failed,
}

impl State {
    /// The name used in `ServiceStatusResponse` and `Event`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Backoff => "backoff",
            State::Exited => "exited",
            State::Failed => "failed",
        }
    }

    /// Whether the instance has no process and none is coming.
    pub fn is_down(self) -> bool {
        matches!(self, State::Stopped | State::Exited | State::Failed)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It was not the node's child (an adopted process): it ended, but how
    /// is not known.
    Unknown,
}

/// What happens to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A user or the autostart wants it running.
    Start,
    /// A user or the node wants it stopped.
    Stop,
    /// A user wants it stopped and started again.
    Restart,
    /// The spawner started its process.
    Started {
        /// The process id.
        pid: u32,
    },
    /// At node start, its process from before was found still running.
    Adopted {
        /// The process id.
        pid: u32,
    },
    /// The spawner could not start it, for this reason.
    SpawnFailed(String),
    /// Its process ended.
    Exited(ExitStatus),
    /// Its timer ran out.
    TimerFired,
    /// Its readiness fd or check says it is ready.
    Ready,
    /// Its health check failed `failures` times in a row.
    Unhealthy,
    /// The state record says its service gave up before the node
    /// restarted.
    GaveUpBefore,
}

/// Why a wanted instance is being stopped by the node itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// It did not become ready within `ready.timeout`.
    NotReady,
    /// Its health check failed too often.
    Unhealthy,
}

/// What the manager must do for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Ask the spawner to start its process.
    Spawn,
    /// Ask the spawner to watch an adopted process, which is not its child.
    Watch {
        /// The adopted process.
        pid: u32,
    },
    /// Ask the spawner to signal its process group.
    Signal {
        /// The process group leader.
        pid: u32,
        /// The signal number.
        signal: i32,
    },
}

/// One instance of a service.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its index, `0..instances`.
    pub index: u32,
    /// Where it stands.
    pub state: State,
    /// When it entered `state`.
    pub since: Instant,
    /// Its process, while it has one.
    pub pid: Option<u32>,
    /// Restarts since the node loaded it; an adopted instance keeps the
    /// count of the node before.
    pub restarts: u32,
    /// How its last process ended.
    pub last_exit: Option<ExitStatus>,
    /// When the timer of `backoff` (restart) or `stopping` (kill) runs out.
    pub timer: Option<Instant>,
    /// Whether a user or the configuration wants it running.
    pub wanted: bool,
    /// Whether its process was adopted at node start rather than spawned.
    pub adopted: bool,
    /// Why the node itself stops it, while it does.
    pub stop_cause: Option<StopCause>,
    /// What its last process used and whether memory ran out, set by the
    /// manager with its exit.
    pub last_run: Option<LastRun>,
    /// Why it is in its state, in words.
    pub reason: String,
    /// What its readiness check last said while it was not ready, set by
    /// the manager, for the reason of a readiness timeout.
    pub not_ready_detail: Option<String>,
    started_at: Option<Instant>,
    quick_failures: u32,
    recent_failures: VecDeque<Instant>,
}

impl Instance {
    /// A stopped instance.
    pub fn new(index: u32, now: Instant) -> Self {
        Instance {
            index,
            state: State::Stopped,
            since: now,
            pid: None,
            restarts: 0,
            last_exit: None,
            timer: None,
            wanted: false,
            adopted: false,
            stop_cause: None,
            last_run: None,
            reason: "not started".to_owned(),
            not_ready_detail: None,
            started_at: None,
            quick_failures: 0,
            recent_failures: VecDeque::new(),
        }
    }

    /// Applies `event` at `now` under `config`; returns what to do.
    pub fn on_event(&mut self, event: Event, now: Instant, config: &ServiceConfig) -> Vec<Effect> {
        match (self.state, event) {
            (State::Stopped | State::Exited | State::Failed | State::Backoff, Event::Start)
            | (State::Stopped | State::Exited | State::Failed | State::Backoff, Event::Restart) => {
                if self.state == State::Failed {
                    self.recent_failures.clear();
                    self.quick_failures = 0;
                }
                self.wanted = true;
                self.last_exit = None;
                self.spawn(now)
            }
            (State::Starting, Event::Stop) if self.pid.is_some() => {
                self.wanted = false;
                self.signal_stop(now, config)
            }
            (State::Starting | State::Running | State::Stopping, Event::Start) => {
                self.wanted = true;
                Vec::new()
            }
            (State::Running, Event::Restart) => {
                self.wanted = true;
                self.signal_stop(now, config)
            }
            (State::Starting | State::Stopping, Event::Restart) => {
                self.wanted = true;
                Vec::new()
            }
            (State::Backoff, Event::Stop) => {
                self.wanted = false;
                self.enter(State::Stopped, now);
                self.reason = "stopped by request while backing off".to_owned();
                Vec::new()
            }
            (State::Running, Event::Stop) => {
                self.wanted = false;
                self.signal_stop(now, config)
            }
            (_, Event::Stop) => {
                self.wanted = false;
                Vec::new()
            }
            (State::Starting, Event::Started { pid }) if self.pid.is_none() => {
                self.pid = Some(pid);
                self.started_at = Some(now);
                self.not_ready_detail = None;
                if config.ready.signal == ReadySignal::Started {
                    self.enter(State::Running, now);
                    self.reason = format!("started as pid {pid}");
                } else {
                    self.timer = Some(now + config.ready.timeout);
                    self.reason = format!(
                        "started as pid {pid}, waiting to be ready (up to {})",
                        span(config.ready.timeout)
                    );
                }
                if self.wanted {
                    Vec::new()
                } else {
                    self.signal_stop(now, config)
                }
            }
            (State::Starting, Event::Ready) if self.pid.is_some() => {
                self.enter(State::Running, now);
                self.reason = "ready".to_owned();
                Vec::new()
            }
            (State::Starting, Event::TimerFired)
                if self.pid.is_some() && self.timer.is_some_and(|at| at <= now) =>
            {
                self.stop_cause = Some(StopCause::NotReady);
                let effects = self.signal_stop(now, config);
                self.reason = format!("stopping: {}", self.not_ready(config));
                effects
            }
            (State::Starting, Event::Exited(status)) if self.pid.is_some() => {
                self.exited(status, now, config)
            }
            (State::Running, Event::Unhealthy) => {
                self.stop_cause = Some(StopCause::Unhealthy);
                let effects = self.signal_stop(now, config);
                self.reason = "stopping: unhealthy".to_owned();
                effects
            }
            (State::Stopped, Event::Adopted { pid }) => {
                self.pid = Some(pid);
                self.adopted = true;
                self.wanted = true;
                self.started_at = Some(now);
                self.enter(State::Running, now);
                self.reason = format!("adopted: pid {pid} was still running from before");
                vec![Effect::Watch { pid }]
            }
            (State::Stopped, Event::GaveUpBefore) => {
                self.wanted = false;
                self.enter(State::Failed, now);
                self.reason = "failed: it gave up before the node restarted; start it to try again"
                    .to_owned();
                Vec::new()
            }
            (State::Starting, Event::SpawnFailed(reason)) => {
                self.last_exit = None;
                self.failed_quickly(format!("cannot start: {reason}"), now, config)
            }
            (State::Running, Event::Exited(status)) => self.exited(status, now, config),
            (State::Stopping, Event::Exited(status)) => {
                self.last_exit = Some(status);
                self.pid = None;
                self.timer = None;
                match self.stop_cause.take() {
                    Some(StopCause::NotReady) if self.wanted => {
                        let cause = self.not_ready(config);
                        return self.failed_quickly(cause, now, config);
                    }
                    Some(StopCause::Unhealthy) if self.wanted => {
                        return self.exited_as(status, Some("unhealthy"), now, config);
                    }
                    _ => {}
                }
                if self.wanted {
                    // A restart a user asked for: the stop was theirs.
                    self.last_exit = None;
                    self.restarts += 1;
                    self.spawn(now)
                } else {
                    self.enter(State::Stopped, now);
                    self.reason = format!("stopped by request ({})", describe_exit(status));
                    Vec::new()
                }
            }
            (State::Backoff, Event::TimerFired) => {
                if self.timer.is_some_and(|at| at <= now) {
                    self.restarts += 1;
                    self.spawn(now)
                } else {
                    Vec::new()
                }
            }
            (State::Stopping, Event::TimerFired) => match (self.timer, self.pid) {
                (Some(at), Some(pid)) if at <= now => {
                    self.timer = None;
                    self.reason = format!(
                        "killed: still running {} after the stop signal",
                        span(config.stop_timeout)
                    );
                    vec![Effect::Signal {
                        pid,
                        signal: libc::SIGKILL,
                    }]
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn enter(&mut self, state: State, now: Instant) {
        self.state = state;
        self.since = now;
        if state != State::Backoff && state != State::Stopping {
            self.timer = None;
        }
    }

    fn spawn(&mut self, now: Instant) -> Vec<Effect> {
        self.pid = None;
        self.adopted = false;
        self.stop_cause = None;
        self.enter(State::Starting, now);
        self.reason = match self.last_exit {
            Some(status) if self.restarts > 0 => {
                format!("restarting after {}", describe_exit(status))
            }
            _ => "starting".to_owned(),
        };
        vec![Effect::Spawn]
    }

    /// Why a readiness timeout ran out, in words.
    fn not_ready(&self, config: &ServiceConfig) -> String {
        let within = span(config.ready.timeout);
        match (&self.not_ready_detail, &config.ready.signal) {
            (Some(detail), _) => format!("not ready within {within}: {detail}"),
            (None, ReadySignal::Fd(fd)) => {
                format!("not ready within {within}: it wrote no newline to fd {fd}")
            }
            (None, _) => format!("not ready within {within}"),
        }
    }

    fn signal_stop(&mut self, now: Instant, config: &ServiceConfig) -> Vec<Effect> {
        let Some(pid) = self.pid else {
            return Vec::new();
        };
        self.enter(State::Stopping, now);
        self.reason = "stopping by request".to_owned();
        self.timer = Some(now + config.stop_timeout);
        vec![Effect::Signal {
            pid,
            signal: config.stop_signal,
        }]
    }

    fn exited(&mut self, status: ExitStatus, now: Instant, config: &ServiceConfig) -> Vec<Effect> {
        let failure = (status != ExitStatus::Code(0)).then_some("");
        self.exited_as(status, failure, now, config)
    }

    /// Its process ended with `status`: a success (`failure` is `None`)
    /// or a failure, `Some` of what failed besides the status ("" for
    /// nothing more; an unhealthy instance's end is a failure whatever its
    /// status). Restart it or not by the policy.
    fn exited_as(
        &mut self,
        status: ExitStatus,
        failure: Option<&str>,
        now: Instant,
        config: &ServiceConfig,
    ) -> Vec<Effect> {
        let succeeded = failure.is_none();
        self.last_exit = Some(status);
        self.pid = None;
        let ran = self.started_at.map_or(Duration::ZERO, |started| {
            now.saturating_duration_since(started)
        });
        let restart = self.wanted
            && match config.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !succeeded,
                RestartPolicy::Never => false,
            };
        if !restart {
            let policy = match config.restart {
                RestartPolicy::Always => "always",
                RestartPolicy::OnFailure => "on-failure",
                RestartPolicy::Never => "never",
            };
            self.reason = if !self.wanted {
                format!("{} while not wanted", describe_exit(status))
            } else if succeeded {
                format!("done (exit 0); restart = \"{policy}\"")
            } else {
                format!(
                    "{}; not restarted: restart = \"{policy}\"",
                    describe_exit(status)
                )
            };
            self.wanted = false;
            self.enter(State::Exited, now);
            return Vec::new();
        }
        if ran >= config.stable_after {
            self.quick_failures = 0;
            self.restarts += 1;
            return self.spawn(now);
        }
        let cause = match failure {
            Some(what) if !what.is_empty() => format!("{what}, {}", describe_exit(status)),
            _ => describe_exit(status),
        };
        self.failed_quickly(cause, now, config)
    }

    /// A start that failed or a run that ended too soon: back off, or give
    /// up when the limit is reached within the window.
    fn failed_quickly(
        &mut self,
        cause: String,
        now: Instant,
        config: &ServiceConfig,
    ) -> Vec<Effect> {
        self.pid = None;
        self.recent_failures.push_back(now);
        while self
            .recent_failures
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > config.give_up_window)
        {
            self.recent_failures.pop_front();
        }
        let failures = self.recent_failures.len();
        if config.give_up_after > 0 && failures >= config.give_up_after as usize {
            self.wanted = false;
            self.enter(State::Failed, now);
            self.reason = format!(
                "failed: gave up after {failures} failures in {} (last: {cause})",
                span(config.give_up_window)
            );
            return Vec::new();
        }
        let delay = backoff_delay(self.quick_failures, config);
        self.quick_failures = self.quick_failures.saturating_add(1);
        self.enter(State::Backoff, now);
        self.timer = Some(now + delay);
        self.reason = format!(
            "backoff {} ({cause}, {} failure)",
            span(delay),
            ordinal(failures)
        );
        Vec::new()
    }
}

/// How a process ended, in words: "exit 1", "signal 9 (KILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("exit {code}"),
        ExitStatus::Signal(signal) => match crate::conf::signal_name(signal) {
            Some(name) => format!("signal {signal} ({name})"),
            None => format!("signal {signal}"),
        },
        ExitStatus::Unknown => "status unknown (an adopted process)".to_owned(),
    }
}

/// A duration as people write it: "250ms", "2s", "1.5s", "1m", "90s".
pub fn span(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// 1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st.
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `backoff_initial` doubled `failures` times, at most `backoff_max`.
fn backoff_delay(failures: u32, config: &ServiceConfig) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    config
        .backoff_initial
        .saturating_mul(factor)
        .min(config.backoff_max)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::conf::{OnNodeExit, Output, Readiness};

    fn config(restart: RestartPolicy) -> ServiceConfig {
        ServiceConfig {
            id: "svc".into(),
            command: vec!["/bin/true".into()],
            instances: 1,
            env: BTreeMap::new(),
            work_dir: None,
            user: None,
            group: None,
            autostart: true,
            restart,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            stable_after: Duration::from_secs(5),
            give_up_after: 4,
            give_up_window: Duration::from_secs(60),
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(2),
            stdout: Output::LogDir,
            stderr: Output::LogDir,
            log_max_bytes: 0,
            log_keep: 0,
            log_max_rate: 0,
            on_node_exit: OnNodeExit::Stop,
            requires: Vec::new(),
            after: Vec::new(),
            ready: Readiness::default(),
            health: None,
            resources: crate::conf::Resources::default(),
            start_grace: Duration::ZERO,
            description: None,
        }
    }

    /// A started instance running as `pid` since `at`.
    fn running(config: &ServiceConfig, pid: u32, at: Instant) -> Instance {
        let mut instance = Instance::new(0, at);
        assert_eq!(instance.on_event(Event::Start, at, config), [Effect::Spawn]);
        assert!(
            instance
                .on_event(Event::Started { pid }, at, config)
                .is_empty()
        );
        assert_eq!(instance.state, State::Running);
        instance
    }

    #[test]
    fn quick_failures_back_off_with_doubling_delays_then_give_up() {
        let config = config(RestartPolicy::Always);
        let mut now = Instant::now();
        let mut instance = running(&config, 10, now);
        let mut delays = Vec::new();
        for pid in 11.. {
            now += Duration::from_millis(10);
            instance.on_event(Event::Exited(ExitStatus::Code(1)), now, &config);
            if instance.state == State::Failed {
                break;
            }
            assert_eq!(instance.state, State::Backoff);
            let at = instance.timer.unwrap();
            delays.push(at - now);
            assert!(
                instance
                    .on_event(Event::TimerFired, now, &config)
                    .is_empty(),
                "not yet"
            );
            now = at;
            assert_eq!(
                instance.on_event(Event::TimerFired, now, &config),
                [Effect::Spawn]
            );
            instance.on_event(Event::Started { pid }, now, &config);
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 350], "doubling, capped at backoff_max");
        assert_eq!(instance.restarts, 3);
        assert!(!instance.wanted);
        assert_eq!(
            instance.on_event(Event::Start, now, &config),
            [Effect::Spawn],
            "a user may start it again"
        );
    }

    #[test]
    fn an_adopted_process_runs_and_its_unknown_end_is_a_failure() {
        let config = config(RestartPolicy::OnFailure);
        let now = Instant::now();
        let mut instance = Instance::new(0, now);
        assert_eq!(
            instance.on_event(Event::Adopted { pid: 7 }, now, &config),
            [Effect::Watch { pid: 7 }]
        );
        assert_eq!(
            (
                instance.state,
                instance.pid,
                instance.adopted,
                instance.wanted
            ),
            (State::Running, Some(7), true, true)
        );
        let later = now + Duration::from_secs(6);
        let effects = instance.on_event(Event::Exited(ExitStatus::Unknown), later, &config);
        assert_eq!(effects, [Effect::Spawn], "restarted by on-failure");
        assert_eq!(instance.last_exit, Some(ExitStatus::Unknown));
        assert!(!instance.adopted, "its next process is a child");
        assert!(
            instance
                .on_event(Event::Adopted { pid: 8 }, later, &config)
                .is_empty()
        );
        assert_eq!(instance.state, State::Starting, "only a stopped one adopts");
    }

    #[test]
    fn stopping_an_adopted_process_signals_its_group() {
        let config = config(RestartPolicy::Always);
        let now = Instant::now();
        let mut instance = Instance::new(0, now);
        instance.on_event(Event::Adopted { pid: 7 }, now, &config);
        assert_eq!(
            instance.on_event(Event::Stop, now, &config),
            [Effect::Signal {
                pid: 7,
                signal: libc::SIGTERM
            }]
        );
        instance.on_event(Event::Exited(ExitStatus::Unknown), now, &config);
        assert_eq!(instance.state, State::Stopped);
    }

    #[test]
    fn a_stable_run_restarts_at_once_and_resets_back_off() {
        let config = config(RestartPolicy::Always);
        let start = Instant::now();
        let mut instance = running(&config, 10, start);
        let later = start + Duration::from_secs(6);
        let effects = instance.on_event(Event::Exited(ExitStatus::Signal(9)), later, &config);
        assert_eq!(effects, [Effect::Spawn]);
        assert_eq!(instance.state, State::Starting);
        assert_eq!(instance.last_exit, Some(ExitStatus::Signal(9)));
    }

    #[test]
    fn restart_policies_decide_on_the_exit_status() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        for (policy, status, restarts) in [
            (RestartPolicy::Never, ExitStatus::Code(1), false),
            (RestartPolicy::OnFailure, ExitStatus::Code(0), false),
            (RestartPolicy::OnFailure, ExitStatus::Code(2), true),
            (RestartPolicy::OnFailure, ExitStatus::Signal(9), true),
            (RestartPolicy::Always, ExitStatus::Code(0), true),
        ] {
            let config = config(policy);
            let mut instance = running(&config, 10, now);
            let effects = instance.on_event(Event::Exited(status), later, &config);
            assert_eq!(!effects.is_empty(), restarts, "{policy:?} {status:?}");
            if !restarts {
                assert_eq!(instance.state, State::Exited);
                assert_eq!(instance.last_exit, Some(status));
            }
        }
    }

    #[test]
    fn stop_signals_then_kills_after_the_timeout() {
        let config = config(RestartPolicy::Always);
        let now = Instant::now();
        let mut instance = running(&config, 42, now);
        let effects = instance.on_event(Event::Stop, now, &config);
        assert_eq!(
            effects,
            [Effect::Signal {
                pid: 42,
                signal: libc::SIGTERM
            }]
        );
        assert_eq!(instance.state, State::Stopping);
        let kill_at = instance.timer.unwrap();
        assert_eq!(kill_at - now, config.stop_timeout);
        let effects = instance.on_event(Event::TimerFired, kill_at, &config);
        assert_eq!(
            effects,
            [Effect::Signal {
                pid: 42,
                signal: libc::SIGKILL
            }]
        );
        instance.on_event(Event::Exited(ExitStatus::Signal(9)), kill_at, &config);
        assert_eq!(instance.state, State::Stopped);
        assert_eq!(instance.pid, None);
    }

    #[test]
    fn a_stop_during_start_signals_the_process_once_it_exists() {
        let config = config(RestartPolicy::Always);
        let now = Instant::now();
        let mut instance = Instance::new(0, now);
        instance.on_event(Event::Start, now, &config);
        assert!(instance.on_event(Event::Stop, now, &config).is_empty());
        let effects = instance.on_event(Event::Started { pid: 7 }, now, &config);
        assert_eq!(
            effects,
            [Effect::Signal {
                pid: 7,
                signal: libc::SIGTERM
            }]
        );
    }

    #[test]
    fn restart_stops_then_starts_again() {
        let config = config(RestartPolicy::Never);
        let now = Instant::now();
        let mut instance = running(&config, 5, now);
        assert_eq!(
            instance.on_event(Event::Restart, now, &config),
            [Effect::Signal {
                pid: 5,
                signal: libc::SIGTERM
            }]
        );
        let effects = instance.on_event(Event::Exited(ExitStatus::Signal(15)), now, &config);
        assert_eq!(effects, [Effect::Spawn]);
        assert_eq!(instance.restarts, 1);
    }

    fn checked(restart: RestartPolicy) -> ServiceConfig {
        let mut config = config(restart);
        config.ready = Readiness {
            signal: ReadySignal::Fd(3),
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
        };
        config
    }

    #[test]
    fn an_instance_is_starting_until_it_is_ready() {
        let config = checked(RestartPolicy::Always);
        let now = Instant::now();
        let mut instance = Instance::new(0, now);
        instance.on_event(Event::Start, now, &config);
        assert!(
            instance
                .on_event(Event::Started { pid: 7 }, now, &config)
                .is_empty()
        );
        assert_eq!((instance.state, instance.pid), (State::Starting, Some(7)));
        assert_eq!(instance.timer, Some(now + Duration::from_secs(1)));
        let later = now + Duration::from_millis(300);
        assert!(
            instance
                .on_event(Event::TimerFired, later, &config)
                .is_empty()
        );
        instance.on_event(Event::Ready, later, &config);
        assert_eq!((instance.state, instance.timer), (State::Running, None));
    }

    #[test]
    fn a_readiness_timeout_stops_the_instance_and_backs_off() {
        let config = checked(RestartPolicy::Always);
        let now = Instant::now();
        let mut instance = Instance::new(0, now);
        instance.on_event(Event::Start, now, &config);
        instance.on_event(Event::Started { pid: 7 }, now, &config);
        let due = now + Duration::from_secs(1);
        assert_eq!(
            instance.on_event(Event::TimerFired, due, &config),
            [Effect::Signal {
                pid: 7,
                signal: libc::SIGTERM
            }]
        );
        assert_eq!(instance.state, State::Stopping);
        assert_eq!(instance.stop_cause, Some(StopCause::NotReady));
        instance.on_event(Event::Exited(ExitStatus::Signal(15)), due, &config);
        assert_eq!(instance.state, State::Backoff, "a failed start");
        assert!(instance.wanted);
        assert_eq!(instance.timer, Some(due + config.backoff_initial));
    }

    #[test]
    fn a_stop_or_an_end_before_ready_is_handled_like_a_running_one() {
        let config = checked(RestartPolicy::Never);
        let now = Instant::now();
        let mut instance = Instance::new(0, now);
        instance.on_event(Event::Start, now, &config);
        instance.on_event(Event::Started { pid: 7 }, now, &config);
        assert_eq!(
            instance.on_event(Event::Stop, now, &config),
            [Effect::Signal {
                pid: 7,
                signal: libc::SIGTERM
            }]
        );
        instance.on_event(Event::Exited(ExitStatus::Signal(15)), now, &config);
        assert_eq!(instance.state, State::Stopped);
        instance.on_event(Event::Start, now, &config);
        instance.on_event(Event::Started { pid: 8 }, now, &config);
        instance.on_event(Event::Exited(ExitStatus::Code(3)), now, &config);
        assert_eq!(instance.state, State::Exited);
    }

    #[test]
    fn an_unhealthy_instance_is_restarted_as_a_failure() {
        let config = config(RestartPolicy::OnFailure);
        let now = Instant::now();
        let mut instance = running(&config, 5, now);
        assert_eq!(
            instance.on_event(Event::Unhealthy, now, &config),
            [Effect::Signal {
                pid: 5,
                signal: libc::SIGTERM
            }]
        );
        let later = now + Duration::from_secs(10);
        let effects = instance.on_event(Event::Exited(ExitStatus::Code(0)), later, &config);
        assert_eq!(
            effects,
            [Effect::Spawn],
            "a clean exit after SIGTERM still failed"
        );
        assert_eq!(instance.restarts, 1);
        assert_eq!(instance.stop_cause, None);
    }

    #[test]
    fn a_stop_in_backoff_cancels_the_restart() {
        let config = config(RestartPolicy::Always);
        let now = Instant::now();
        let mut instance = running(&config, 5, now);
        instance.on_event(Event::Exited(ExitStatus::Code(1)), now, &config);
        assert_eq!(instance.state, State::Backoff);
        instance.on_event(Event::Stop, now, &config);
        assert_eq!(instance.state, State::Stopped);
        assert_eq!(instance.timer, None);
    }
}
