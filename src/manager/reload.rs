//! Reloading the configuration: diffing services, replacing changed
//! ones once they are down, and the service table the spawner checks
//! starts against.

use super::*;

impl Manager {
    /// Loads the configuration again and moves the services to it: added
    /// ones autostart, removed ones stop and go, changed ones are stopped
    /// and started again under their new definition, unchanged ones are
    /// left alone. An invalid configuration changes nothing. The reply's
    /// status lists which services were added, changed, removed and left
    /// alone.
    pub(super) fn reload(
        &mut self,
        correlation: &str,
        now: Instant,
    ) -> Result<Arc<[u8]>, RequestError> {
        let loaded = match Config::load_checked(&self.config.dir) {
            Ok(loaded) => loaded,
            Err(error) => {
                let problems: Vec<String> =
                    error.problems.iter().map(ToString::to_string).collect();
                self.reload_error = Some(problems.join("; "));
                // One problem a line, for the client to print as such.
                return Err(RequestError::new(Kind::ConfigInvalid, problems.join("\n")));
            }
        };
        self.reload_error = None;
        if loaded.node != self.config.node {
            log::warn!(
                "[{correlation}] node.toml changed: its new settings take effect when the node restarts"
            );
        }
        let (cluster_services, cluster_versions) = self.cluster.services();
        let mut services = loaded.services;
        let mut versions = loaded.service_versions;
        services.extend(cluster_services.clone());
        versions.extend(cluster_versions.clone());
        self.config.sources = loaded.sources;
        let diff = self.move_to(
            services,
            versions,
            loaded.effective_version,
            correlation,
            now,
            true,
        );
        log::info!(
            "[{correlation}] reload: added [{}], changed [{}], removed [{}], unchanged [{}]",
            diff.added.join(", "),
            diff.changed.join(", "),
            diff.removed.join(", "),
            diff.unchanged.join(", ")
        );
        Ok(self.status_payload(self.registry.values(), None, &diff.encode()))
    }

    /// Moves the services to `services` (with their `versions`): added
    /// ones autostart if `start_added`, removed ones stop and go, changed
    /// ones are stopped and started again under their new definition,
    /// unchanged ones are left alone. Stops are asked for before starts.
    /// Returns which it added, changed, removed and left alone.
    pub(super) fn move_to(
        &mut self,
        services: BTreeMap<String, ServiceConfig>,
        versions: BTreeMap<String, String>,
        effective_version: String,
        correlation: &str,
        now: Instant,
        start_added: bool,
    ) -> ReloadDiff {
        for (id, service) in self.registry.iter_mut() {
            service.replacement = match services.get(id) {
                None => Some(Replacement::Remove),
                Some(new) if *new != service.config => {
                    Some(Replacement::With(Box::new(new.clone())))
                }
                Some(_) => {
                    // Same definition, maybe other text (a comment): what
                    // runs is current under the new file's version.
                    if let Some(version) = versions.get(id) {
                        service.version.clone_from(version);
                        self.record_dirty.insert(id.clone());
                    }
                    None
                }
            };
        }
        let mut diff = ReloadDiff::default();
        for (id, service) in self.registry.iter() {
            match service.replacement {
                None => diff.unchanged.push(id.clone()),
                Some(Replacement::Remove) => diff.removed.push(id.clone()),
                Some(Replacement::With(_)) => diff.changed.push(id.clone()),
            }
        }
        let added: Vec<ServiceConfig> = services
            .values()
            .filter(|service| !self.registry.contains_key(&service.id))
            .cloned()
            .collect();
        self.registry.set_requirements(&services);
        self.config.services = services;
        self.config.effective_version = effective_version;
        self.config.service_versions = versions;
        self.send_service_table(correlation);
        let replaced: Vec<String> = self
            .registry
            .iter()
            .filter(|(_, service)| service.replacement.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in replaced {
            log::info!("[{correlation}] {id} changed or removed: stopping it");
            self.drive(&id, Event::Stop, correlation, now);
            self.apply_replacement(&id, now);
        }
        for config in added {
            let id = config.id.clone();
            diff.added.push(id.clone());
            let autostart = config.autostart;
            log::info!("[{correlation}] {id} added");
            let version = self.service_version(&id);
            self.registry
                .insert(id.clone(), Service::new(config, version, now));
            if autostart && start_added {
                self.start_with_requirements(&id, correlation, false, now);
            }
        }
        diff
    }

    /// The version of service `id`'s file in the loaded configuration.
    pub(super) fn service_version(&self, id: &str) -> String {
        self.config
            .service_versions
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Once every instance of a changed or removed service is down, removes
    /// it or puts its new definition in place (started if it was wanted or
    /// autostarts). A new definition forgets what users asked of the old.
    pub(super) fn apply_replacement(&mut self, id: &str, now: Instant) {
        let version = self.service_version(id);
        let Some(service) = self.registry.get_mut(id) else {
            return;
        };
        if service.replacement.is_none() || !service.instances.iter().all(|i| i.state.is_down()) {
            return;
        }
        match service.replacement.take() {
            Some(Replacement::Remove) => {
                log::info!("{id} removed");
                self.registry.remove(id);
                self.record_dirty.insert(id.to_owned());
                for waiter in self.waiters.take(id) {
                    let error = RequestError::new(
                        Kind::UnknownService,
                        format!("service `{id}` was removed by a reload"),
                    );
                    self.answer(waiter.connection, waiter.correlation, Err(error));
                }
            }
            Some(Replacement::With(config)) => {
                let start = config.autostart || service.instances.iter().any(|i| i.wanted);
                let correlation = service.current_operation();
                *service = Service::new(*config, version, now);
                self.record_dirty.insert(id.to_owned());
                log::info!("{id} now runs its new definition");
                if start {
                    self.start_with_requirements(id, &correlation, false, now);
                }
            }
            None => {}
        }
    }
}

/// Which services a reload (or a cluster change) added, changed, removed
/// and left alone.
#[derive(Debug, Default)]
pub(super) struct ReloadDiff {
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
    unchanged: Vec<String>,
}

impl ReloadDiff {
    /// Its fields of `ServiceStatusResponse` (44 to 47), encoded.
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (field, ids) in [
            (44, &self.added),
            (45, &self.changed),
            (46, &self.removed),
            (47, &self.unchanged),
        ] {
            prost::encoding::string::encode_repeated(field, ids, &mut bytes);
        }
        bytes
    }
}

/// What the spawner may start for `config`'s services: each one's command,
/// user, group, work dir, environment and outputs exactly as [`Manager`]
/// puts them in its `StartProcess`, the outputs as configured, to be
/// resolved per instance under the table's log dir.
pub fn service_table(config: &Config) -> ds::ServiceTable {
    let output = |target: &Output| {
        let (kind, path) = match target {
            Output::LogDir => (table_output::Kind::Log, None),
            Output::Path(path) => (
                table_output::Kind::Path,
                Some(path.to_string_lossy().into_owned()),
            ),
            Output::Null => (table_output::Kind::Null, None),
            Output::Inherit => (table_output::Kind::Inherit, None),
            Output::Node => (table_output::Kind::Node, None),
        };
        ds::service_table::Output {
            kind: kind as i32,
            path,
        }
    };
    ds::ServiceTable {
        services: config
            .services
            .values()
            .map(|service| ds::service_table::Service {
                id: service.id.clone(),
                command: service.command.clone(),
                user: service.user.clone(),
                group: service.group.clone(),
                work_dir: work_dir_text(service),
                checks: service
                    .check_commands()
                    .into_iter()
                    .map(|command| ds::service_table::CheckCommand {
                        command: command.to_vec(),
                    })
                    .collect(),
                environment: service
                    .env
                    .iter()
                    .map(|(name, value)| ds::service_table::EnvItem {
                        name: Some(name.clone()),
                        value: Some(value.clone()),
                    })
                    .collect(),
                stdout: Some(output(&service.stdout)),
                stderr: Some(output(&service.stderr)),
                instances: Some(service.instances),
                log_max_bytes: Some(service.log_max_bytes),
                log_keep: Some(service.log_keep),
                ready_fd: service.ready_fd(),
                log_max_rate: Some(service.log_max_rate),
                rlimits: service
                    .resources
                    .rlimits
                    .iter()
                    .map(|(_, limit)| ds::service_table::Rlimit {
                        resource: limit.resource,
                        soft: limit.soft,
                        hard: limit.hard,
                    })
                    .collect(),
                memory_max: service.resources.limits.memory_max,
                memory_high: service.resources.limits.memory_high,
                cpu_quota_usec: service.resources.limits.cpu_max.map(|cpu| cpu.quota_usec),
                cpu_period_usec: service.resources.limits.cpu_max.map(|cpu| cpu.period_usec),
                pids_max: service.resources.limits.pids_max,
                kill_process_only: (service.resources.kill_mode == crate::conf::KillMode::Process)
                    .then_some(true),
            })
            .collect(),
        log_dir: Some(config.node.log_dir.to_string_lossy().into_owned()),
        node_name: Some(config.node.name.clone()),
        cgroup_fs: Some(config.node.cgroup_fs.to_string_lossy().into_owned()),
    }
}

pub(super) fn work_dir_text(config: &ServiceConfig) -> Option<String> {
    config
        .work_dir
        .as_ref()
        .map(|dir| dir.to_string_lossy().into_owned())
}
