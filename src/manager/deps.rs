//! Dependencies between services, as the manager carries them out: starts
//! and stops that wait their turn.
//!
//! A start or stop that must wait is a [`Hold`] on its service. A held
//! start is released once every service it `requires` is up (each
//! instance running and ready, or exited successfully) and no service it
//! starts `after` is still starting; a held stop once no service that
//! names it in `requires` or `after` is still stopping. Starting a service
//! holds starts for what it requires that is not up or coming (the
//! pull-in), under the same correlation id, so the trace of one
//! `ServiceStart` shows its dependencies' starts. Stopping a service holds
//! stops for every service that requires it, directly or not, so they stop
//! first: the reverse order. The node's shutdown stops everything the same
//! way.
//!
//! When a required service stops being up on its own (it exited, was
//! restarted, failed its health check), the services that require it are
//! stopped and their start is held until it is up again; their restart
//! policy then applies as to any start. A held start whose requirement
//! gave up (`failed`) answers its `ServiceStart` with the reason.
//!
//! The graph itself (order, cycles) is [`crate::conf::deps::Graph`], shared
//! with the configuration's validation. Holds live in the manager's
//! `Service`s: nothing here owns a thread or a channel.

use std::time::Instant;

use crate::conf::deps::Graph;
use crate::wire::proto::public_api::node_info_response::SystemStatus;
use crate::wire::proto::public_api::{StatusCode, StatusColour};

use super::instance::{Event, ExitStatus, State};
use super::record::Wish;
use super::status::{Tally, service_status, system_status};
use super::{Manager, Service};

/// A start or stop waiting for other services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hold {
    /// Start once what it requires is up.
    Start {
        /// The correlation id of what asked for it.
        correlation: String,
    },
    /// Stop once what depends on it is down.
    Stop {
        /// The correlation id of what asked for it.
        correlation: String,
    },
}

/// Whether every instance of `service` is running and ready, or exited
/// successfully (a one-shot that did its work).
fn is_up(service: &Service) -> bool {
    service.instances.iter().all(|instance| {
        instance.state == State::Running
            || (instance.state == State::Exited && instance.last_exit == Some(ExitStatus::Code(0)))
    })
}

/// Whether `service` is on its way up: a held start, or an instance
/// starting.
fn is_coming(service: &Service) -> bool {
    matches!(service.hold, Some(Hold::Start { .. }))
        || service
            .instances
            .iter()
            .any(|instance| instance.state == State::Starting)
}

/// Whether `service` is on its way down: a held stop, or an instance
/// stopping.
fn is_going(service: &Service) -> bool {
    matches!(service.hold, Some(Hold::Stop { .. }))
        || service
            .instances
            .iter()
            .any(|instance| instance.state == State::Stopping)
}

impl Manager {
    /// Starts service `id` after what it requires, pulling that in. A
    /// user's start (`by_user`) is their last word on each of them, as if
    /// they had started each one; the node's own (autostart, a reload)
    /// leaves alone what a user stopped or what gave up, so `id` then
    /// waits for it.
    pub(super) fn start_with_requirements(
        &mut self,
        id: &str,
        correlation: &str,
        by_user: bool,
        now: Instant,
    ) {
        for required in Graph::new(&self.config.services).requirements(id) {
            let Some(service) = self.registry.get_mut(&required) else {
                continue;
            };
            let pulled = required != id;
            if by_user && service.desired != Some(Wish::Up) {
                service.desired = Some(Wish::Up);
                self.record_dirty.insert(required.clone());
            }
            if pulled && (is_up(service) || is_coming(service)) {
                continue;
            }
            if pulled && !by_user && matches!(service.desired, Some(Wish::Down | Wish::Failed)) {
                log::info!(
                    "[{correlation}] not starting {required} for {id}: it is {}",
                    if service.desired == Some(Wish::Down) {
                        "stopped by request"
                    } else {
                        "failed"
                    }
                );
                continue;
            }
            if pulled {
                log::info!("[{correlation}] starting {required} first: {id} requires it");
            }
            service.hold = Some(Hold::Start {
                correlation: correlation.to_owned(),
            });
            self.held.insert(required);
        }
        self.advance_holds(now);
    }

    /// Stops service `id` after the services that require it, which are
    /// stopped too; returns those it stops.
    pub(super) fn stop_with_dependents(
        &mut self,
        id: &str,
        correlation: &str,
        now: Instant,
    ) -> Vec<String> {
        let dependents = self.registry.dependents(id);
        let mut stopped = Vec::new();
        for dependent in dependents {
            let Some(service) = self.registry.get_mut(&dependent) else {
                continue;
            };
            let down = service.instances.iter().all(|i| i.state.is_down());
            if down && service.hold.is_none() {
                continue;
            }
            log::info!("[{correlation}] stopping {dependent} first: it requires {id}");
            service.hold = Some(Hold::Stop {
                correlation: correlation.to_owned(),
            });
            // The user's stop reaches it too, and outlives a node restart
            // like the user's own stops.
            service.desired = Some(Wish::Down);
            self.record_dirty.insert(dependent.clone());
            self.held.insert(dependent.clone());
            stopped.push(dependent);
        }
        self.hold_stop(id, correlation);
        self.advance_holds(now);
        stopped
    }

    /// Holds a stop of `id` until what depends on it is down.
    pub(super) fn hold_stop(&mut self, id: &str, correlation: &str) {
        if let Some(service) = self.registry.get_mut(id) {
            service.hold = Some(Hold::Stop {
                correlation: correlation.to_owned(),
            });
            self.held.insert(id.to_owned());
        }
    }

    /// Releases the held starts and stops whose turn has come, until none
    /// is left to release (a release can make another's turn come).
    pub(super) fn advance_holds(&mut self, now: Instant) {
        loop {
            // Services that lost their hold (or went with a reload) leave
            // the set.
            let services = &self.registry;
            self.held.retain(|id| {
                services
                    .get(id)
                    .is_some_and(|service| service.hold.is_some())
            });
            let due: Vec<(String, Hold)> = self
                .held
                .iter()
                .filter_map(|id| {
                    let hold = self.registry.get(id)?.hold.clone()?;
                    let due = match hold {
                        Hold::Start { .. } => self.waiting_for(id).is_empty(),
                        Hold::Stop { .. } => self.stop_turn_come(id),
                    };
                    due.then(|| (id.clone(), hold))
                })
                .collect();
            if due.is_empty() {
                return;
            }
            for (id, hold) in due {
                if let Some(service) = self.registry.get_mut(&id) {
                    service.hold = None;
                }
                match hold {
                    Hold::Start { correlation } => self.drive(&id, Event::Start, &correlation, now),
                    Hold::Stop { correlation } => self.drive(&id, Event::Stop, &correlation, now),
                }
            }
        }
    }

    /// What service `id` waits for before it may start: services it
    /// requires that are not up, and services it starts after that are
    /// still coming up.
    pub(super) fn waiting_for(&self, id: &str) -> Vec<String> {
        let Some(config) = self.config.services.get(id) else {
            return Vec::new();
        };
        let required = config.requires.iter().filter(|required| {
            self.registry
                .get(required)
                .is_some_and(|service| !is_up(service))
        });
        let after = config
            .after
            .iter()
            .filter(|after| self.registry.get(after).is_some_and(is_coming));
        required.chain(after).cloned().collect()
    }

    /// Whether no service that starts after `id` is still stopping.
    fn stop_turn_come(&self, id: &str) -> bool {
        self.registry
            .stop_before(id)
            .iter()
            .all(|dependent| !self.registry.get(dependent).is_some_and(is_going))
    }

    /// Why the held start of `id` cannot happen: a service it waits for
    /// gave up.
    pub(super) fn blocked_start(&self, id: &str) -> Option<String> {
        let service = self.registry.get(id)?;
        if !matches!(service.hold, Some(Hold::Start { .. })) {
            return None;
        }
        self.waiting_for(id).into_iter().find_map(|required| {
            let failed = self.registry.get(&required).is_some_and(|service| {
                service
                    .instances
                    .iter()
                    .any(|instance| instance.state == State::Failed)
            });
            failed.then(|| format!("cannot start {id}: it requires {required}, which failed"))
        })
    }

    /// `id` was up and is not any more: the services that require it and
    /// run are stopped, and started again once it is back.
    pub(super) fn requirement_lost(&mut self, id: &str, now: Instant) {
        let dependents = self.registry.required_by(id).to_vec();
        for dependent in dependents {
            let Some(service) = self.registry.get_mut(&dependent) else {
                continue;
            };
            let wanted = service.instances.iter().any(|i| i.wanted);
            if !wanted || matches!(service.hold, Some(Hold::Stop { .. })) {
                continue;
            }
            let correlation = service.current_operation();
            log::info!("[{correlation}] stopping {dependent}: {id}, which it requires, went down");
            let reason = format!("{id} went down; waiting for it");
            for note in &mut service.notes {
                *note = Some(reason.clone());
            }
            self.drive(&dependent, Event::Stop, &correlation, now);
            if self.shutdown.is_none()
                && let Some(service) = self.registry.get_mut(&dependent)
            {
                service.hold = Some(Hold::Start { correlation });
                self.held.insert(dependent);
            }
        }
    }

    /// Whether service `id` is up, for [`Manager::requirement_lost`].
    pub(super) fn service_is_up(&self, id: &str) -> bool {
        self.registry.get(id).is_some_and(is_up)
    }

    /// A service's colour in status and node info: yellow with what it
    /// waits for while its start is held.
    pub(super) fn colour_of(&self, service: &Service) -> SystemStatus {
        if matches!(service.hold, Some(Hold::Start { .. })) {
            let waiting = self.waiting_for(&service.config.id);
            if !waiting.is_empty() {
                return system_status(
                    StatusColour::Yellow,
                    StatusCode::Starting,
                    format!("waiting for {}", waiting.join(", ")),
                );
            }
        }
        service_status(&service.instances)
    }

    /// Whether [`Manager::colour_of`] is green, without its text.
    pub(super) fn is_green(&self, service: &Service) -> bool {
        if matches!(service.hold, Some(Hold::Start { .. })) {
            return self.colour_of(service).colour == StatusColour::Green as i32;
        }
        Tally::of(&service.instances).colour() == StatusColour::Green
    }
}
