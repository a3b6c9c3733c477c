//! Readiness and health checks: which instance is being checked, when its
//! next check is due, what is in flight, and what a result means.
//!
//! An instance `starting` with a process and a `ready` check is checked
//! every `ready.interval` until one check passes (then it is `Ready`); its
//! `ready.timeout` is the instance's own timer (`instance.rs`). A `running`
//! instance with a `health` check is checked every `health.interval`;
//! `health.failures` failed checks in a row make it `Unhealthy`. A check
//! that does not answer within its timeout has failed. Checks follow the
//! instance: a new process, or a state without checks, drops its checking
//! (a check command still running is killed).
//!
//! No role thread blocks on a check:
//! - a `command` check is a process like any other: a `StartProcess` to
//!   the spawner with `check` set (its table allows the service's check
//!   commands only, as the service's user), its end a `ProcessExited`;
//! - a `tcp` check is a connect on the `sf-checks` thread, owned here. A
//!   std `connect_timeout` blocks, and the manager's loop has no poll of
//!   its own to drive a non-blocking socket, so the blocking connect runs
//!   on a thread whose only work that is: requests in on one bounded
//!   channel, results out on another, which the manager's `select!` reads.
//!   Connects run one after another, so a slow one delays the next by up
//!   to its timeout; a check whose result is late fails by its deadline
//!   here anyway. The thread ends when the manager drops its request
//!   channel; if it dies, its result channel closes, TCP checks time out
//!   and fail, and the manager logs it.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::conf::{Probe, ReadySignal};
use crate::trace::Role;
use crate::wire::proto::manager_spawner as ms;

use super::instance::{Event, State};
use super::{Asked, Manager};

/// TCP checks waiting for the `sf-checks` thread, at most.
const TCP_QUEUE: usize = 256;

/// Which instance a check is about: service id, index, and the pid of the
/// process checked (so a result about an earlier process is ignored).
pub(super) type CheckKey = (String, u32, u32);

/// What a check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Ready,
    Health,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Ready => "ready",
            Stage::Health => "health",
        }
    }
}

/// One instance being checked.
#[derive(Debug)]
struct Checking {
    stage: Stage,
    probe: Probe,
    interval: Duration,
    /// How long one check may take.
    timeout: Duration,
    /// Health: failed checks in a row that make it unhealthy.
    threshold: u32,
    failures: u32,
    next_at: Instant,
    in_flight: Option<InFlight>,
}

/// A check under way.
#[derive(Debug)]
struct InFlight {
    deadline: Instant,
    /// A command check's process, once the spawner started it.
    pid: Option<u32>,
}

/// A TCP connect for the `sf-checks` thread.
#[derive(Debug)]
pub(super) struct TcpCheck {
    key: CheckKey,
    address: SocketAddr,
    timeout: Duration,
}

/// What a TCP connect found.
#[derive(Debug)]
pub(super) struct TcpResult {
    key: CheckKey,
    outcome: Result<(), String>,
}

/// The manager's checks.
#[derive(Debug)]
pub(super) struct Checks {
    checking: HashMap<CheckKey, Checking>,
    /// Check command processes, by pid.
    processes: HashMap<u32, CheckKey>,
    tcp_requests: Option<Sender<TcpCheck>>,
    /// Results from the `sf-checks` thread.
    pub(super) tcp_results: Receiver<TcpResult>,
}

/// Why the checks could not be set up.
#[derive(Debug)]
pub(super) struct ChecksError {
    source: io::Error,
}

impl fmt::Display for ChecksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "starting the sf-checks thread for TCP checks: {}",
            self.source
        )
    }
}

impl std::error::Error for ChecksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Checks {
    /// Checks with their `sf-checks` thread; without it (logged), every TCP
    /// check fails.
    pub(super) fn new() -> Checks {
        let (tcp_requests, tcp_results) = match spawn_tcp_thread() {
            Ok((requests, results)) => (Some(requests), results),
            Err(error) => {
                log::error!("{error}; every TCP check will fail");
                (None, crossbeam_channel::never())
            }
        };
        Checks {
            checking: HashMap::new(),
            processes: HashMap::new(),
            tcp_requests,
            tcp_results,
        }
    }

    /// The earliest time a check is due or overdue.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.checking
            .values()
            .map(|checking| match &checking.in_flight {
                Some(in_flight) => in_flight.deadline,
                None => checking.next_at,
            })
            .min()
    }

    /// Forgets the TCP thread after its channel closed.
    pub(super) fn tcp_thread_gone(&mut self) {
        log::error!("the sf-checks thread ended: TCP checks now time out and fail");
        self.tcp_requests = None;
        self.tcp_results = crossbeam_channel::never();
    }
}

fn spawn_tcp_thread() -> Result<(Sender<TcpCheck>, Receiver<TcpResult>), ChecksError> {
    let (request_tx, request_rx) = bounded::<TcpCheck>(TCP_QUEUE);
    let (result_tx, result_rx) = bounded::<TcpResult>(TCP_QUEUE);
    thread::Builder::new()
        .name("sf-checks".to_owned())
        .spawn(move || {
            for check in request_rx {
                let outcome = TcpStream::connect_timeout(&check.address, check.timeout)
                    .map(drop)
                    .map_err(|error| format!("connect to {}: {error}", check.address));
                let result = TcpResult {
                    key: check.key,
                    outcome,
                };
                if result_tx.send(result).is_err() {
                    return;
                }
            }
        })
        .map_err(|source| ChecksError { source })?;
    Ok((request_tx, result_rx))
}

pub(super) fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Command(argv) => format!("command {}", argv.join(" ")),
        Probe::Tcp(address) => format!("tcp {address}"),
    }
}

impl Manager {
    /// Starts, keeps or drops the checking of instance `index` of `id` by
    /// its state now.
    pub(super) fn sync_checks(&mut self, id: &str, index: usize, now: Instant) {
        let Some(service) = self.registry.get(id) else {
            return;
        };
        let Some(instance) = service.instances.get(index) else {
            return;
        };
        let config = &service.config;
        let wanted = match (instance.state, instance.pid) {
            (State::Starting, Some(pid)) => match &config.ready.signal {
                ReadySignal::Check(probe) => Some((
                    pid,
                    Checking {
                        stage: Stage::Ready,
                        probe: probe.for_instance(id, index as u32),
                        interval: config.ready.interval,
                        timeout: config.ready.timeout,
                        threshold: 1,
                        failures: 0,
                        next_at: now,
                        in_flight: None,
                    },
                )),
                _ => None,
            },
            (State::Running, Some(pid)) => config.health.as_ref().map(|health| {
                (
                    pid,
                    Checking {
                        stage: Stage::Health,
                        probe: health.probe.for_instance(id, index as u32),
                        interval: health.interval,
                        timeout: health.timeout,
                        threshold: health.failures,
                        failures: 0,
                        next_at: now + health.interval,
                        in_flight: None,
                    },
                )
            }),
            _ => None,
        };
        let index = index as u32;
        let keep = wanted.as_ref().map(|(pid, checking)| {
            let key = (id.to_owned(), index, *pid);
            let same = self
                .checks
                .checking
                .get(&key)
                .is_some_and(|current| current.stage == checking.stage);
            (key, same)
        });
        let stale: Vec<CheckKey> = self
            .checks
            .checking
            .keys()
            .filter(|key| key.0 == id && key.1 == index)
            .filter(|key| {
                !keep
                    .as_ref()
                    .is_some_and(|(kept, same)| *same && kept == *key)
            })
            .cloned()
            .collect();
        for key in stale {
            self.drop_check(&key, now);
        }
        if let (Some((pid, checking)), Some((_, false))) = (wanted, keep) {
            self.checks
                .checking
                .insert((id.to_owned(), index, pid), checking);
        }
    }

    fn drop_check(&mut self, key: &CheckKey, now: Instant) {
        let Some(checking) = self.checks.checking.remove(key) else {
            return;
        };
        if let Some(pid) = checking.in_flight.and_then(|in_flight| in_flight.pid) {
            self.kill_check(pid, now);
        }
    }

    /// Kills a check command's process group; its end is then ignored.
    fn kill_check(&mut self, pid: u32, now: Instant) {
        let message = super::signal_group(pid, libc::SIGKILL, None);
        self.ask_spawner(message, Asked::Signal { client: None }, now);
    }

    /// Starts the checks that are due and fails those past their deadline.
    pub(super) fn run_checks(&mut self, now: Instant) {
        let overdue: Vec<CheckKey> = self
            .checks
            .checking
            .iter()
            .filter(|(_, checking)| {
                checking
                    .in_flight
                    .as_ref()
                    .is_some_and(|in_flight| in_flight.deadline <= now)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in overdue {
            let pid = self
                .checks
                .checking
                .get_mut(&key)
                .and_then(|checking| checking.in_flight.take())
                .and_then(|in_flight| in_flight.pid);
            if let Some(pid) = pid {
                self.checks.processes.remove(&pid);
                self.kill_check(pid, now);
            }
            self.check_result(&key, Err("no answer within its timeout".to_owned()), now);
        }
        let due: Vec<CheckKey> = self
            .checks
            .checking
            .iter()
            .filter(|(_, checking)| checking.in_flight.is_none() && checking.next_at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.start_check(key, now);
        }
    }

    fn start_check(&mut self, key: CheckKey, now: Instant) {
        let Some(checking) = self.checks.checking.get_mut(&key) else {
            return;
        };
        checking.in_flight = Some(InFlight {
            deadline: now + checking.timeout,
            pid: None,
        });
        let stage = checking.stage;
        let timeout = checking.timeout;
        let tcp_address = checking.probe.tcp_address();
        match checking.probe.clone() {
            Probe::Tcp(text) => {
                let Some(address) = tcp_address else {
                    self.check_result(&key, Err(format!("`{text}` is not an address")), now);
                    return;
                };
                let check = TcpCheck {
                    key: key.clone(),
                    address,
                    timeout,
                };
                let sent = match &self.checks.tcp_requests {
                    Some(requests) => match requests.try_send(check) {
                        Ok(()) => Ok(()),
                        Err(TrySendError::Full(_)) => Err("too many TCP checks queued"),
                        Err(TrySendError::Disconnected(_)) => Err("the sf-checks thread is gone"),
                    },
                    None => Err("the sf-checks thread is gone"),
                };
                if let Err(reason) = sent {
                    self.check_result(&key, Err(reason.to_owned()), now);
                }
            }
            Probe::Command(argv) => {
                let (id, index, _) = &key;
                let Some(service) = self.registry.get(id) else {
                    return;
                };
                let mut request = self.start_process(&service.config, *index as usize);
                let null = ms::Output {
                    kind: ms::output::Kind::Null as i32,
                    path: None,
                    rotate_bytes: None,
                    keep: None,
                };
                request.command = argv;
                request.check = Some(stage.as_str().to_owned());
                request.ready_fd = None;
                request.stdout = Some(null.clone());
                request.stderr = Some(null);
                // A readiness check is part of the start that asked for
                // it; health checks belong to no request, so they do not
                // grow that start's trace for as long as the service runs.
                let correlation = match stage {
                    Stage::Ready => service.operations[*index as usize].clone(),
                    Stage::Health => None,
                };
                let message = ms::Message::new(
                    ms::message::Code::StartProcess,
                    correlation,
                    ms::message::Payload::StartProcess(request),
                );
                self.ask_spawner(message, Asked::Check { key }, now);
            }
        }
    }

    /// The spawner started check command `pid` for `key`.
    pub(super) fn check_started(&mut self, key: CheckKey, pid: u32, now: Instant) {
        match self
            .checks
            .checking
            .get_mut(&key)
            .and_then(|checking| checking.in_flight.as_mut())
        {
            Some(in_flight) => {
                in_flight.pid = Some(pid);
                self.checks.processes.insert(pid, key);
            }
            // Dropped while it was being started.
            None => self.kill_check(pid, now),
        }
    }

    /// The spawner could not start a check command.
    pub(super) fn check_not_started(&mut self, key: &CheckKey, reason: String, now: Instant) {
        self.check_result(key, Err(reason), now);
    }

    /// Whether `pid` was a check command; if so its end is its result.
    pub(super) fn check_exited(&mut self, pid: u32, exit_code: Option<i32>, now: Instant) -> bool {
        let Some(key) = self.checks.processes.remove(&pid) else {
            return false;
        };
        let outcome = match exit_code {
            Some(0) => Ok(()),
            Some(code) => Err(format!("exited with code {code}")),
            None => Err("killed by a signal".to_owned()),
        };
        self.check_result(&key, outcome, now);
        true
    }

    /// A TCP check's result from the `sf-checks` thread.
    pub(super) fn tcp_checked(&mut self, result: TcpResult, now: Instant) {
        let still_asked = self
            .checks
            .checking
            .get(&result.key)
            .is_some_and(|checking| checking.in_flight.is_some());
        if still_asked {
            self.check_result(&result.key, result.outcome, now);
        }
    }

    /// What a check's result means for its instance.
    fn check_result(&mut self, key: &CheckKey, outcome: Result<(), String>, now: Instant) {
        let Some(checking) = self.checks.checking.get_mut(key) else {
            return;
        };
        checking.in_flight = None;
        checking.next_at = now + checking.interval;
        let (id, index, pid) = key;
        let what = describe(&checking.probe);
        match (checking.stage, outcome) {
            (Stage::Ready, Ok(())) => {
                log::info!("{id}.{index} (pid {pid}) is ready: {what} passed");
                self.note(id, *index, format!("ready: {what} passed"));
                self.apply(id, *index as usize, Event::Ready, None, now);
            }
            (Stage::Ready, Err(reason)) => {
                log::debug!("{id}.{index} (pid {pid}) not ready yet: {what}: {reason}");
                if let Some(instance) = self
                    .registry
                    .get_mut(id)
                    .and_then(|service| service.instances.get_mut(*index as usize))
                {
                    instance.not_ready_detail = Some(format!("{what}: {reason}"));
                }
            }
            (Stage::Health, Ok(())) => {
                if checking.failures > 0 {
                    log::info!("{id}.{index} (pid {pid}) is healthy again: {what} passed");
                }
                checking.failures = 0;
            }
            (Stage::Health, Err(reason)) => {
                checking.failures += 1;
                let (failures, threshold) = (checking.failures, checking.threshold);
                log::warn!(
                    "{id}.{index} (pid {pid}) health check failed ({failures} of {threshold}): {what}: {reason}"
                );
                if failures >= threshold {
                    let why =
                        format!("health check failed {failures} times in a row: {what}: {reason}");
                    log::warn!("{id}.{index} (pid {pid}) is unhealthy, restarting it: {why}");
                    self.note(id, *index, why);
                    self.apply(id, *index as usize, Event::Unhealthy, None, now);
                }
            }
        }
    }

    /// Sets the reason the next event of instance `index` of `id` gives.
    pub(super) fn note(&mut self, id: &str, index: u32, reason: String) {
        if let Some(note) = self
            .registry
            .get_mut(id)
            .and_then(|service| service.notes.get_mut(index as usize))
        {
            *note = Some(reason);
        }
    }

    /// Records `message` and queues it for the spawner, expecting one
    /// answer; without a spawner, the ask fails at once.
    pub(super) fn ask_spawner(&mut self, message: ms::Message, asked: Asked, now: Instant) {
        self.tracer.record(Role::Manager, Role::Spawner, &message);
        if self.spawner_alive {
            self.asked.push(message.correlation_id.as_deref(), asked);
            self.to_spawner.push_back(message);
            self.send_to_spawner();
        } else {
            self.spawner_gone(asked, now);
        }
    }
}
