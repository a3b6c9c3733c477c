//! The role threads as the daemon sees them: started under names, each
//! reporting its end (return, error or panic) on one channel, so a dead
//! role is noticed at once rather than at `join`.

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::DaemonError;
use crate::trace::Role;

/// Names a role whose thread panics as soon as it starts: the test hook
/// for role-death handling. Unset in normal operation.
const INJECT_PANIC: &str = "SNOW_FOX_INJECT_PANIC";

/// A role's thread ended.
#[derive(Debug, Clone)]
pub(super) struct RoleEnded {
    pub(super) role: Role,
    /// Why, when it was not a clean return.
    pub(super) failure: Option<String>,
}

pub(super) struct RoleThreads {
    handles: Vec<(Role, JoinHandle<()>)>,
    ended_tx: Sender<RoleEnded>,
    ended_rx: Receiver<RoleEnded>,
    ended: HashMap<&'static str, Option<String>>,
}

impl RoleThreads {
    pub(super) fn new() -> Self {
        // Unbounded is safe here: each role sends exactly one message.
        let (ended_tx, ended_rx) = unbounded();
        RoleThreads {
            handles: Vec::new(),
            ended_tx,
            ended_rx,
            ended: HashMap::new(),
        }
    }

    /// Runs `run` on a thread named `sf-<role>`; its end is reported.
    pub(super) fn spawn<E: Display>(
        &mut self,
        role: Role,
        run: impl FnOnce() -> Result<(), E> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let ended = self.ended_tx.clone();
        let inject = std::env::var(INJECT_PANIC).is_ok_and(|value| value == role.as_str());
        let handle = thread::Builder::new()
            .name(format!("sf-{}", role.as_str()))
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(|| {
                    if inject {
                        panic!("injected by {INJECT_PANIC}");
                    }
                    run()
                }));
                let failure = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(format!("failed: {error}")),
                    Err(payload) => Some(format!("panicked: {}", panic_message(payload.as_ref()))),
                };
                // The daemon outlives its roles; if it is gone, so is the process.
                let _ = ended.send(RoleEnded { role, failure });
            })
            .map_err(|source| DaemonError::Thread { role, source })?;
        self.handles.push((role, handle));
        Ok(())
    }

    /// Where role ends are reported.
    pub(super) fn ended(&self) -> &Receiver<RoleEnded> {
        &self.ended_rx
    }

    /// Takes note of a role's end and logs it.
    pub(super) fn note(&mut self, ended: &RoleEnded) {
        match &ended.failure {
            Some(failure) => log::error!("{} {failure}", ended.role.as_str()),
            None => log::debug!("{} ended", ended.role.as_str()),
        }
        self.ended
            .insert(ended.role.as_str(), ended.failure.clone());
    }

    /// Whether `role` has not ended.
    pub(super) fn is_running(&self, role: Role) -> bool {
        !self.ended.contains_key(role.as_str())
    }

    /// Waits until every role has ended or `deadline` passes, then joins
    /// the ended ones. Returns whether all ended.
    pub(super) fn await_all(&mut self, deadline: Instant) -> bool {
        while self.ended.len() < self.handles.len() {
            match self.ended_rx.recv_deadline(deadline) {
                Ok(ended) => self.note(&ended),
                Err(_) => break,
            }
        }
        let all_ended = self.ended.len() == self.handles.len();
        let handles = std::mem::take(&mut self.handles);
        for (role, handle) in handles {
            if self.ended.contains_key(role.as_str()) {
                // The thread reported its end; its panic was already caught.
                let _ = handle.join();
            }
        }
        all_ended
    }

    /// Whether every role ended cleanly.
    pub(super) fn all_ended_well(&self) -> bool {
        self.ended.values().all(Option::is_none)
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(no message)".to_owned()
    }
}
