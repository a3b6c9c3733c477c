//! Requests awaiting answers: each `ServiceStart`, `ServiceStop` or
//! `ServiceRestart` is answered when its service reaches its goal, loses
//! it, or its deadline passes. They are kept by service, so a change to
//! one service looks at that service's waiters only, and the instants to
//! look again (deadlines, and the end of a `start_grace`) are kept in
//! order, so a pass finds the next one without walking every waiter.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::Goal;
use crate::wire::link::ConnectionId;

/// A request answered when its service reaches a state.
#[derive(Debug)]
pub(super) struct Waiter {
    pub connection: ConnectionId,
    pub correlation: String,
    pub goal: Goal,
    pub deadline: Instant,
    /// Services stopped along with it, shown in the reply.
    pub along: Vec<String>,
}

/// The waiters, by service.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    by_service: HashMap<String, Vec<Waiter>>,
    /// When to look at a service's waiters again. An entry may outlive
    /// the waiters it was for (answered since); looking again then finds
    /// nothing to do.
    due: BTreeSet<(Instant, String)>,
}

impl Waiters {
    /// Adds a waiter for service `id`.
    pub fn add(&mut self, id: &str, waiter: Waiter) {
        self.due.insert((waiter.deadline, id.to_owned()));
        self.by_service
            .entry(id.to_owned())
            .or_default()
            .push(waiter);
    }

    /// Takes the waiters of service `id`, to settle them; those still
    /// waiting are put back with [`Waiters::put_back`].
    pub fn take(&mut self, id: &str) -> Vec<Waiter> {
        self.by_service.remove(id).unwrap_or_default()
    }

    /// Puts back what [`Waiters::take`] took and is still waiting, to be
    /// looked at again at `recheck` if it is set.
    pub fn put_back(&mut self, id: &str, waiting: Vec<Waiter>, recheck: Option<Instant>) {
        if waiting.is_empty() {
            return;
        }
        if let Some(at) = recheck {
            self.due.insert((at, id.to_owned()));
        }
        self.by_service.insert(id.to_owned(), waiting);
    }

    /// Takes every waiter.
    pub fn take_all(&mut self) -> Vec<Waiter> {
        self.due.clear();
        self.by_service
            .drain()
            .flat_map(|(_, waiting)| waiting)
            .collect()
    }

    /// Forgets the waiters of a closed connection.
    pub fn closed(&mut self, connection: ConnectionId) {
        self.by_service.retain(|_, waiting| {
            waiting.retain(|waiter| waiter.connection != connection);
            !waiting.is_empty()
        });
    }

    /// The next instant at which a service's waiters are looked at again.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// The services whose waiters are due to be looked at by `now`.
    pub fn due(&mut self, now: Instant) -> BTreeSet<String> {
        let mut due = BTreeSet::new();
        while let Some((at, _)) = self.due.first()
            && *at <= now
        {
            if let Some((_, id)) = self.due.pop_first()
                && self.by_service.contains_key(&id)
            {
                due.insert(id);
            }
        }
        due
    }
}
