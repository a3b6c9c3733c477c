//! Re-adoption at start and the state record: which processes the
//! manager takes back, and what it writes about the running ones.
//!
//! What runs is the spawner's word, not the node's record: the spawner's
//! first message (`KnownProcesses`) lists every live process its own
//! record holds, including those started in the instant before a crash
//! that the node's record never heard of. The node's record adds only
//! what the spawner does not know (the users' wishes, each process's
//! service version and restart count); a process it names that the
//! spawner does not is not adopted, and signalling it would be refused.

use super::*;

impl Manager {
    /// Waits for the spawner's first messages, the processes its record
    /// holds. A spawner that is gone knows nothing.
    pub(super) fn await_known_processes(&mut self) -> Vec<ms::known_processes::Process> {
        let mut processes = Vec::new();
        loop {
            let Ok(message) = self.links.from_spawner.recv() else {
                log::error!("the spawner's link closed before it said what runs");
                self.spawner_alive = false;
                self.links.from_spawner = crossbeam_channel::never();
                return processes;
            };
            match ManagerSpawner::from_message(message.code, message.payload) {
                Ok(ManagerSpawner::KnownProcesses(known)) => {
                    processes.extend(known.processes);
                    if known.more != Some(true) {
                        return processes;
                    }
                }
                other => self.on_spawner_message(
                    message.correlation_id.as_deref(),
                    other,
                    Instant::now(),
                ),
            }
        }
    }

    /// Adopts each process the spawner knows that still runs and whose
    /// service still has its instance free, and takes up the users' wishes
    /// (from the node's record) for services whose definition has not
    /// changed. A second process for an instance already adopted (a start
    /// the node's record missed, repeated) is killed, so that each instance
    /// runs once; one of a service or instance no longer configured gets
    /// SIGTERM, as at a reload that removed it, so that nothing runs that
    /// `status` does not list. Returns the adopted instances started from
    /// an older definition.
    pub(super) fn readopt(
        &mut self,
        known: Vec<ms::known_processes::Process>,
        now: Instant,
    ) -> Vec<(String, usize)> {
        let record = match Record::load(&self.config.node.state_dir) {
            Ok(record) => record.unwrap_or_default(),
            Err(error) => {
                log::error!(
                    "{error}; starting without it: what the spawner knows runs is adopted, \
                     users' earlier wishes are forgotten"
                );
                self.record_health.unreadable_at_start = Some(error.to_string());
                Record::default()
            }
        };
        for (id, Desired { wish, version }) in record.desired {
            match self.registry.get_mut(&id) {
                Some(service) if service.version == version => service.desired = Some(wish),
                _ => log::info!("{id} changed or is gone: its recorded desired state is dropped"),
            }
        }
        for (id, Enabled { on, version }) in record.enabled {
            match self.registry.get_mut(&id) {
                Some(service) if service.version == version => service.enabled = Some(on),
                _ => log::info!("{id} changed or is gone: its recorded enable/disable is dropped"),
            }
        }
        let mut outdated = Vec::new();
        for process in known {
            let recorded = record
                .instances
                .get(&(process.service_id.clone(), process.instance))
                .filter(|recorded| {
                    (recorded.pid, recorded.start_time) == (process.pid, process.start_time)
                })
                .cloned()
                .unwrap_or_else(|| RecordedInstance {
                    // Started in the instant before the node's record was
                    // written: from the definition current then, most
                    // likely this one, and never restarted.
                    version: self
                        .registry
                        .get(&process.service_id)
                        .map(|service| service.version.clone())
                        .unwrap_or_default(),
                    service: process.service_id,
                    index: process.instance,
                    pid: process.pid,
                    start_time: process.start_time,
                    restarts: 0,
                });
            if self.adopt(&recorded, now) {
                self.record_health.adopted += 1;
                if self.registry[&recorded.service].version != recorded.version {
                    outdated.push((recorded.service, recorded.index as usize));
                }
            }
        }
        if self.record_health.adopted > 0 {
            log::info!(
                "adopted {} instances still running from before",
                self.record_health.adopted
            );
        }
        outdated
    }

    /// Adopts one recorded process if it still runs and its instance is
    /// free; says why not in the log otherwise. Whether it was adopted.
    pub(super) fn adopt(&mut self, recorded: &RecordedInstance, now: Instant) -> bool {
        let RecordedInstance {
            service: id,
            index,
            pid,
            start_time,
            ..
        } = recorded;
        let name = format!("{id}.{index} (pid {pid})");
        let instance = self
            .registry
            .get(id)
            .and_then(|service| service.instances.get(*index as usize));
        let free = instance.is_some_and(|instance| instance.state == State::Stopped);
        match sys::process_start_time(*pid) {
            Ok(found) if found == *start_time && free => {}
            Ok(found) if found == *start_time && instance.is_some() => {
                log::warn!(
                    "{name} runs a second time for an instance already adopted: killing it, \
                     so that each instance runs once"
                );
                self.signal_group(*pid, libc::SIGKILL, now);
                return false;
            }
            Ok(found) if found == *start_time => {
                log::warn!(
                    "{name} still runs but its service or instance is no longer configured: \
                     stopping it (SIGTERM to its process group), as a reload removing it would"
                );
                self.signal_group(*pid, libc::SIGTERM, now);
                return false;
            }
            Ok(_) => {
                log::warn!(
                    "{name} is gone: its pid now names another process, which is left alone"
                );
                return false;
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                log::warn!("{name} is gone: it ended while the node was down");
                return false;
            }
            Err(error) => {
                log::warn!("{name} is not adopted: cannot read its start time: {error}");
                return false;
            }
        }
        let index = *index as usize;
        if let Some(service) = self.registry.get_mut(id) {
            service.start_times[index] = Some(*start_time);
            service.instances[index].restarts = recorded.restarts;
        }
        log::info!("{name} adopted: it ran on while the node was down");
        let correlation = format!("readopt:{id}:{}", uuid::Uuid::new_v4().simple());
        self.apply(
            id,
            index,
            Event::Adopted { pid: *pid },
            Some(&correlation),
            now,
        );
        true
    }

    /// What the state record must hold now.
    #[cfg(test)]
    pub(super) fn record(&self) -> Record {
        record_of(&self.registry)
    }

    /// Writes what changed of the state record, and the whole record on
    /// the first pass (the node's first word replaces what the one before
    /// left). A failed write is logged once and shown in node info; the
    /// next change tries again.
    pub(super) fn save_record(&mut self) {
        if self.record_dirty.is_empty() && !self.journal.untried() {
            return;
        }
        let dirty = std::mem::take(&mut self.record_dirty);
        let registry = &self.registry;
        let changed = dirty.into_iter().map(|id| {
            let held = registry.get(&id).map(service_record).unwrap_or_default();
            (id, held)
        });
        let written = self
            .journal
            .write(&self.config.node.state_dir, changed, || record_of(registry));
        match written {
            Ok(()) => {
                if self.record_health.write_error.take().is_some() {
                    log::info!("the state record is written again");
                }
            }
            Err(error) => {
                let error = error.to_string();
                if self.record_health.write_error.as_ref() != Some(&error) {
                    log::error!("{error}");
                }
                self.record_health.write_error = Some(error);
            }
        }
    }

    /// Asks the spawner to signal `pid`'s process group, outside any
    /// instance's state machine.
    fn signal_group(&mut self, pid: u32, signal: i32, now: Instant) {
        let correlation = format!("readopt:duplicate:{}", uuid::Uuid::new_v4().simple());
        let message = super::signal_group(pid, signal, Some(correlation));
        self.ask_spawner(message, Asked::Signal { client: None }, now);
    }
}

/// What the state record must hold for `registry`.
fn record_of(registry: &Registry) -> Record {
    Record::of(
        registry
            .values()
            .map(|service| (service.config.id.clone(), service_record(service))),
    )
}

/// What the state record holds of `service`.
fn service_record(service: &Service) -> ServiceRecord {
    let version = || service.version.clone();
    let instances = service
        .instances
        .iter()
        .zip(&service.start_times)
        .filter_map(|(instance, start_time)| {
            Some(RecordedInstance {
                service: service.config.id.clone(),
                index: instance.index,
                pid: instance.pid?,
                start_time: (*start_time)?,
                version: version(),
                restarts: instance.restarts,
            })
        })
        .collect();
    ServiceRecord {
        desired: service.desired.map(|wish| Desired {
            wish,
            version: version(),
        }),
        enabled: service.enabled.map(|on| Enabled {
            on,
            version: version(),
        }),
        instances,
    }
}
