//! Re-adoption at start and the state record: which recorded processes
//! the manager takes back, and what it writes about the running ones.

use super::*;

impl Manager {
    /// Reads the state record: adopts each recorded process that still
    /// runs and whose service still has its instance, and takes up the
    /// users' wishes for services whose definition has not changed. Returns
    /// the adopted instances started from an older definition.
    pub(super) fn readopt(&mut self, now: Instant) -> Vec<(String, usize)> {
        let record = match Record::load(&self.config.node.state_dir) {
            Ok(record) => record.unwrap_or_default(),
            Err(error) => {
                log::error!("{error}; starting without it: nothing is adopted");
                self.record_health.unreadable_at_start = Some(error.to_string());
                return Vec::new();
            }
        };
        for (id, Desired { wish, version }) in record.desired {
            match self.services.get_mut(&id) {
                Some(service) if service.version == version => service.desired = Some(wish),
                _ => {
                    log::info!("{id} changed or is gone: its recorded desired state is dropped");
                    self.record_changed = true;
                }
            }
        }
        for (id, Enabled { on, version }) in record.enabled {
            match self.services.get_mut(&id) {
                Some(service) if service.version == version => service.enabled = Some(on),
                _ => {
                    log::info!("{id} changed or is gone: its recorded enable/disable is dropped");
                    self.record_changed = true;
                }
            }
        }
        let mut outdated = Vec::new();
        for recorded in record.instances {
            if self.adopt(&recorded, now) {
                self.record_health.adopted += 1;
                if self.services[&recorded.service].version != recorded.version {
                    outdated.push((recorded.service, recorded.index as usize));
                }
            } else {
                self.record_changed = true;
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
        let free = self
            .services
            .get(id)
            .and_then(|service| service.instances.get(*index as usize))
            .is_some_and(|instance| instance.state == State::Stopped);
        match sys::process_start_time(*pid) {
            Ok(found) if found == *start_time && free => {}
            Ok(found) if found == *start_time => {
                log::warn!(
                    "{name} still runs but its service or instance is no longer configured: \
                     left running, not managed"
                );
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
        if let Some(service) = self.services.get_mut(id) {
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
    pub(super) fn record(&self) -> Record {
        let desired = self
            .services
            .values()
            .filter_map(|service| {
                let wish = service.desired?;
                let version = service.version.clone();
                Some((service.config.id.clone(), Desired { wish, version }))
            })
            .collect();
        let enabled = self
            .services
            .values()
            .filter_map(|service| {
                let on = service.enabled?;
                let version = service.version.clone();
                Some((service.config.id.clone(), Enabled { on, version }))
            })
            .collect();
        let instances = self
            .services
            .values()
            .flat_map(|service| {
                service
                    .instances
                    .iter()
                    .zip(&service.start_times)
                    .filter_map(|(instance, start_time)| {
                        Some(RecordedInstance {
                            service: service.config.id.clone(),
                            index: instance.index,
                            pid: instance.pid?,
                            start_time: (*start_time)?,
                            version: service.version.clone(),
                            restarts: instance.restarts,
                        })
                    })
            })
            .collect();
        Record {
            desired,
            enabled,
            instances,
        }
    }

    /// Writes the state record if it changed. A failed write is logged
    /// once and shown in node info; the next change tries again.
    pub(super) fn save_record(&mut self) {
        if !self.record_changed {
            return;
        }
        self.record_changed = false;
        match self.record().save(&self.config.node.state_dir) {
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
}
