//! The service registry: every configured service with its instances, and
//! the indexes kept with them — each instance's timer by deadline, each
//! process by pid, who requires each service. [`Registry::on_event`] is
//! the one place an instance's state changes, so the indexes always say
//! what the instances say; the manager decides what to do about a change.

use std::collections::{BTreeMap, BTreeSet, HashMap, btree_map};
use std::ops::Index;
use std::time::Instant;

use crate::conf::deps::RequiredBy;
use crate::conf::{Config, ServiceConfig};

use super::Service;
use super::instance::{Effect, Event, State};
use super::record::Wish;

/// The services and their indexes.
#[derive(Debug)]
pub(super) struct Registry {
    services: BTreeMap<String, Service>,
    /// Every instance timer by deadline, so that a loop pass does not walk
    /// every instance to find the next one. Entries of replaced services
    /// may linger until due; [`Registry::take_due`] skips them.
    timers: BTreeSet<(Instant, String, usize)>,
    /// The instance each live process is, by pid.
    pids: HashMap<u32, (String, u32)>,
    /// Who requires each service, kept with the configuration.
    required_by: RequiredBy,
}

/// What an event did to an instance.
#[derive(Debug)]
pub(super) struct Change {
    /// What the manager must carry out.
    pub(super) effects: Vec<Effect>,
    /// Its state or pid changed.
    pub(super) moved: bool,
    /// Something the state record holds changed (its pid, or the service
    /// gave up and is now desired `failed`).
    pub(super) recorded: bool,
}

impl Registry {
    /// The services of `config`, none of them running, at `now`.
    pub(super) fn new(config: &Config, now: Instant) -> Registry {
        let services = config
            .services
            .values()
            .map(|service| {
                let version = config.service_versions.get(&service.id).cloned();
                (
                    service.id.clone(),
                    Service::new(service.clone(), version.unwrap_or_default(), now),
                )
            })
            .collect();
        Registry {
            services,
            timers: BTreeSet::new(),
            pids: HashMap::new(),
            required_by: RequiredBy::new(&config.services),
        }
    }

    /// Service `id`.
    pub(super) fn get(&self, id: &str) -> Option<&Service> {
        self.services.get(id)
    }

    /// Service `id`, to change what is not its instances' state, pid or
    /// timer (those change only through [`Registry::on_event`]).
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Service> {
        self.services.get_mut(id)
    }

    /// Whether service `id` is configured.
    pub(super) fn contains_key(&self, id: &str) -> bool {
        self.services.contains_key(id)
    }

    /// Every service, by id.
    pub(super) fn values(&self) -> btree_map::Values<'_, String, Service> {
        self.services.values()
    }

    /// Every service, by id, to change what [`Registry::get_mut`] may.
    pub(super) fn values_mut(&mut self) -> btree_map::ValuesMut<'_, String, Service> {
        self.services.values_mut()
    }

    /// Every service's id.
    pub(super) fn keys(&self) -> btree_map::Keys<'_, String, Service> {
        self.services.keys()
    }

    /// Every service with its id.
    pub(super) fn iter(&self) -> btree_map::Iter<'_, String, Service> {
        self.services.iter()
    }

    /// Every service with its id, to change what [`Registry::get_mut`] may.
    pub(super) fn iter_mut(&mut self) -> btree_map::IterMut<'_, String, Service> {
        self.services.iter_mut()
    }

    /// Adds service `id` (a reload added it or replaced its definition).
    pub(super) fn insert(&mut self, id: String, service: Service) {
        self.services.insert(id, service);
    }

    /// Removes service `id`, whose instances are all down.
    pub(super) fn remove(&mut self, id: &str) {
        self.services.remove(id);
    }

    /// Who requires what, after a reload changed the services.
    pub(super) fn set_requirements(&mut self, services: &BTreeMap<String, ServiceConfig>) {
        self.required_by = RequiredBy::new(services);
    }

    /// The services that require `id`, directly or through others.
    pub(super) fn dependents(&self, id: &str) -> Vec<String> {
        self.required_by.dependents(id)
    }

    /// The services that require `id` directly, in id order.
    pub(super) fn required_by(&self, id: &str) -> &[String] {
        self.required_by.required_by(id)
    }

    /// The services that name `id` in their `requires` or `after`.
    pub(super) fn stop_before(&self, id: &str) -> &[String] {
        self.required_by.stop_before(id)
    }

    /// The service and instance whose process `pid` is.
    pub(super) fn by_pid(&self, pid: u32) -> Option<(String, u32)> {
        self.pids.get(&pid).cloned()
    }

    /// The earliest instance timer.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    /// The instances whose timer is due at `now`, taken off the timers.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<(String, usize)> {
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first()
            && entry.0 <= now
        {
            let Some((_, id, index)) = self.timers.pop_first() else {
                break;
            };
            // An entry outlives its instance when a reload replaces the
            // service: only a timer the instance still has is due.
            let still_set = self
                .services
                .get(&id)
                .and_then(|service| service.instances.get(index))
                .is_some_and(|instance| instance.timer.is_some_and(|at| at <= now));
            if still_set {
                due.push((id, index));
            }
        }
        due
    }

    /// Applies `event` to instance `index` of service `id` (driven by
    /// `correlation`, if given) and keeps the indexes with it; `None` if
    /// there is no such instance.
    pub(super) fn on_event(
        &mut self,
        id: &str,
        index: usize,
        event: Event,
        correlation: Option<&str>,
        now: Instant,
    ) -> Option<Change> {
        let service = self.services.get_mut(id)?;
        let instance = service.instances.get_mut(index)?;
        if let Some(correlation) = correlation {
            service.operations[index] = Some(correlation.to_owned());
        }
        let before = (instance.state, instance.pid);
        let old_timer = instance.timer;
        let note = service.notes[index].take();
        let effects = instance.on_event(event, now, &service.config);
        let mut recorded = false;
        let moved = before != (instance.state, instance.pid);
        if moved {
            if let Some(note) = note {
                instance.reason = note;
            }
            log::info!(
                "{id}.{index}: {}: {}",
                instance.state.as_str(),
                instance.reason
            );
            if instance.state == State::Failed && service.desired != Some(Wish::Failed) {
                service.desired = Some(Wish::Failed);
                recorded = true;
            }
        }
        if old_timer != instance.timer {
            if let Some(at) = old_timer {
                self.timers.remove(&(at, id.to_owned(), index));
            }
            if let Some(at) = instance.timer {
                self.timers.insert((at, id.to_owned(), index));
            }
        }
        if before.1 != instance.pid {
            recorded = true;
            if let Some(pid) = before.1 {
                self.pids.remove(&pid);
            }
            if let Some(pid) = instance.pid {
                self.pids.insert(pid, (id.to_owned(), index as u32));
            }
        }
        Some(Change {
            effects,
            moved,
            recorded,
        })
    }
}

impl Index<&str> for Registry {
    type Output = Service;

    fn index(&self, id: &str) -> &Service {
        &self.services[id]
    }
}

impl Index<&String> for Registry {
    type Output = Service;

    fn index(&self, id: &String) -> &Service {
        &self.services[id]
    }
}
