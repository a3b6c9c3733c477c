//! Colours and status messages: how the manager reports services, roles and
//! the node in `NodeInfoResponse` and `ServiceStatusResponse`.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::wire::proto::public_api::node_info_response::{SubSystem, SystemStatus};
use crate::wire::proto::public_api::service_status_response;
use crate::wire::proto::public_api::{StatusCode, StatusColour};

use super::instance::{ExitStatus, Instance, State};
use super::usage::LastRun;

/// Orders colours from best to worst: Green < Yellow < Unknown < Red.
fn severity(colour: StatusColour) -> u8 {
    match colour {
        StatusColour::Green => 0,
        StatusColour::Yellow => 1,
        StatusColour::Unknown => 2,
        StatusColour::Red => 3,
    }
}

/// A `SystemStatus` with its code always set.
pub fn system_status(colour: StatusColour, code: StatusCode, reason: String) -> SystemStatus {
    SystemStatus {
        colour: colour as i32,
        code: Some(code as i64),
        reason,
    }
}

/// The worst colour of `details`, with a reason naming each subsystem that
/// is not green.
pub fn overall(details: &[SubSystem]) -> SystemStatus {
    let colour_of = |sub: &SubSystem| {
        StatusColour::try_from(sub.status.colour).unwrap_or(StatusColour::Unknown)
    };
    let worst = details
        .iter()
        .map(colour_of)
        .max_by_key(|colour| severity(*colour))
        .unwrap_or(StatusColour::Green);
    let not_green: Vec<String> = details
        .iter()
        .filter(|sub| colour_of(sub) != StatusColour::Green)
        .map(|sub| format!("{}: {}", sub.name, sub.status.reason))
        .collect();
    if not_green.is_empty() {
        return system_status(
            StatusColour::Green,
            StatusCode::Ok,
            "all subsystems are in their desired state".to_owned(),
        );
    }
    let code = details
        .iter()
        .find(|sub| colour_of(sub) == worst)
        .and_then(|sub| sub.status.code)
        .and_then(|code| StatusCode::try_from(code as i32).ok())
        .unwrap_or(StatusCode::Ok);
    system_status(worst, code, not_green.join("; "))
}

/// How a service's instances stand, counted once: its colour without any
/// text, for node info's overall status, which names only what is not
/// green.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    total: usize,
    failed: usize,
    bad_exit: usize,
    converging: usize,
    backoff: usize,
    running: usize,
    exited: usize,
}

impl Tally {
    /// Counts `instances` by state.
    pub fn of(instances: &[Instance]) -> Tally {
        let mut tally = Tally {
            total: instances.len(),
            failed: 0,
            bad_exit: 0,
            converging: 0,
            backoff: 0,
            running: 0,
            exited: 0,
        };
        for instance in instances {
            match instance.state {
                State::Failed => tally.failed += 1,
                State::Starting | State::Stopping => tally.converging += 1,
                State::Backoff => {
                    tally.converging += 1;
                    tally.backoff += 1;
                }
                State::Running => tally.running += 1,
                State::Exited => {
                    tally.exited += 1;
                    if instance.last_exit != Some(ExitStatus::Code(0)) {
                        tally.bad_exit += 1;
                    }
                }
                State::Stopped => {}
            }
        }
        tally
    }

    /// Red when an instance failed or exited unsuccessfully, yellow while
    /// converging, else green.
    pub fn colour(&self) -> StatusColour {
        if self.failed > 0 || self.bad_exit > 0 {
            StatusColour::Red
        } else if self.converging > 0 {
            StatusColour::Yellow
        } else {
            StatusColour::Green
        }
    }
}

/// The colour of a service from its instances: green when each is where it
/// is wanted, yellow while converging, red when one failed.
pub fn service_status(instances: &[Instance]) -> SystemStatus {
    let Tally {
        total,
        failed,
        bad_exit,
        converging,
        backoff,
        running,
        exited,
    } = Tally::of(instances);
    if failed > 0 {
        return system_status(
            StatusColour::Red,
            StatusCode::Failed,
            format!("{failed} of {total} instances failed and gave up"),
        );
    }
    if bad_exit > 0 {
        return system_status(
            StatusColour::Red,
            StatusCode::Exited,
            format!("{bad_exit} of {total} instances exited unsuccessfully"),
        );
    }
    if converging > 0 {
        let code = if backoff > 0 {
            StatusCode::Backoff
        } else {
            StatusCode::Starting
        };
        return system_status(
            StatusColour::Yellow,
            code,
            format!("{converging} of {total} instances starting, stopping or backing off"),
        );
    }
    if running == total {
        return system_status(
            StatusColour::Green,
            StatusCode::Ok,
            format!("{running} of {total} running"),
        );
    }
    let (code, what) = if exited > 0 {
        (StatusCode::Exited, "exited")
    } else {
        (StatusCode::Stopped, "stopped")
    };
    system_status(
        StatusColour::Green,
        code,
        format!("{running} of {total} running, the rest {what} as wanted"),
    )
}

/// Turns the manager's monotonic instants into wall-clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix: Duration,
}

impl Clock {
    /// A clock anchored now.
    pub fn new() -> Self {
        Clock {
            base: Instant::now(),
            base_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// `at` in milliseconds since the Unix epoch.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        let unix = if at >= self.base {
            self.base_unix + (at - self.base)
        } else {
            self.base_unix.saturating_sub(self.base - at)
        };
        unix.as_millis() as u64
    }
}

/// One instance as `ServiceStatusResponse` shows it.
pub fn instance_status(instance: &Instance, clock: &Clock) -> service_status_response::Instance {
    let (last_exit_code, last_exit_signal) = match instance.last_exit {
        Some(ExitStatus::Code(code)) => (Some(code), None),
        Some(ExitStatus::Signal(signal)) => (None, Some(signal)),
        Some(ExitStatus::Unknown) | None => (None, None),
    };
    let last_run = instance.last_run.unwrap_or_default();
    service_status_response::Instance {
        last_exit_oom: last_run.oom.map(|_| true),
        last_cpu_usec: last_run.cpu_usec,
        last_peak_rss_bytes: last_run.peak_rss_bytes,
        last_exit_reason: last_run.oom_reason(instance.last_exit),
        last_run_ms: last_run.ran.map(|ran| ran.as_millis() as u64),
        index: instance.index,
        state: instance.state.as_str().to_owned(),
        pid: instance.pid,
        since_unix_ms: Some(clock.unix_ms(instance.since)),
        restarts: Some(instance.restarts),
        last_exit_code,
        last_exit_signal,
        adopted: instance.adopted.then_some(true),
        reason: Some(instance.reason.clone()),
    }
}

/// What an instance's `ServiceStatusResponse` entry is built from, to tell
/// whether a cached encoding still shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InstanceShown {
    reason: String,
    index: u32,
    state: State,
    pid: Option<u32>,
    since: Instant,
    restarts: u32,
    last_exit: Option<ExitStatus>,
    adopted: bool,
    last_run: Option<LastRun>,
}

impl InstanceShown {
    /// Whether it still shows `instance` as it is (without copying its
    /// reason, as [`InstanceShown::of`] would on every status request).
    fn shows(&self, instance: &Instance) -> bool {
        self.index == instance.index
            && self.state == instance.state
            && self.pid == instance.pid
            && self.since == instance.since
            && self.restarts == instance.restarts
            && self.last_exit == instance.last_exit
            && self.adopted == instance.adopted
            && self.reason == instance.reason
    }

    fn of(instance: &Instance) -> InstanceShown {
        InstanceShown {
            reason: instance.reason.clone(),
            index: instance.index,
            state: instance.state,
            pid: instance.pid,
            since: instance.since,
            restarts: instance.restarts,
            last_exit: instance.last_exit,
            adopted: instance.adopted,
            last_run: instance.last_run,
        }
    }
}

/// A service's encoded `ServiceStatusResponse.services` entry (field key
/// included; entries of a repeated field concatenate on the wire), kept
/// with the instance fields it shows: a status query copies it instead of
/// formatting and encoding every service again.
///
/// It checks itself on each use rather than being invalidated where
/// instances change, so no change can leave it stale: an entry's text and
/// colour follow from its instances alone (the caller does not use it
/// while the service's colour depends on other services).
#[derive(Debug, Default)]
pub struct EntryCache {
    entry: RefCell<Option<CachedEntry>>,
}

/// What an entry showed when it was encoded, and its bytes.
type CachedEntry = (ServiceShown, Vec<InstanceShown>, Vec<u8>);

/// What a service's entry shows besides its instances: its desired state
/// and whether it is enabled.
pub type ServiceShown = (Option<&'static str>, bool);

impl EntryCache {
    /// Appends the entry for a service shown as `service` with
    /// `instances` to `out`, encoding it with `encode` only when something
    /// it shows changed since it was last encoded.
    pub fn append(
        &self,
        service: ServiceShown,
        instances: &[Instance],
        encode: impl Fn(&mut Vec<u8>),
        out: &mut Vec<u8>,
    ) {
        let mut entry = self.entry.borrow_mut();
        let stale = !entry.as_ref().is_some_and(|(shown_service, shown, _)| {
            *shown_service == service
                && shown.len() == instances.len()
                && shown
                    .iter()
                    .zip(instances)
                    .all(|(shown, instance)| shown.shows(instance))
        });
        if stale {
            let mut bytes = Vec::new();
            encode(&mut bytes);
            *entry = Some((
                service,
                instances.iter().map(InstanceShown::of).collect(),
                bytes,
            ));
        }
        if let Some((_, _, bytes)) = entry.as_ref() {
            debug_assert!(
                stale || {
                    let mut fresh = Vec::new();
                    encode(&mut fresh);
                    *bytes == fresh
                },
                "a cached status entry no longer matches its service"
            );
            out.extend_from_slice(bytes);
        }
    }
}
