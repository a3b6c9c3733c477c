//! The seam for instances the cluster assigns: the cluster role's
//! `manager_cluster` link. Each assigned instance `<service>.<index>` runs
//! here as a service of its own, id `<service>@<index>` (an `@` no service
//! file's name can hold), one instance, started, supervised and shown like
//! any other, with origin `cluster`; it joins the configuration's services
//! so that reloads, the spawner's table and the state record treat it as
//! one of them. A new set of assignments moves the services to it as a
//! reload does: what is gone stops first, what is new starts, what is
//! unchanged is left alone. A set from the node's cache (before the store
//! answered) only re-adopts: nothing of it starts. Public cluster requests
//! are forwarded to the cluster role and answered with its reply.

use super::*;
use crate::conf::parse_cluster_service;
use crate::wire::proto::manager_cluster as mc;

/// The manager's end of the cluster role's link.
#[derive(Debug)]
pub struct ClusterLink {
    /// Assignments, replies, health and fence orders from the cluster role.
    pub from_cluster: Receiver<mc::Message>,
    /// Instance states and cluster requests to it.
    pub to_cluster: Sender<mc::Message>,
    /// The assignments cached by the node's last run, re-adopted at start.
    pub cached: mc::Assignments,
}

/// What the manager keeps of the cluster.
#[derive(Debug, Default)]
pub(super) struct ClusterSide {
    to_cluster: Option<Sender<mc::Message>>,
    cached: Option<mc::Assignments>,
    /// The assigned instances, by local id, as services.
    services: BTreeMap<String, ServiceConfig>,
    versions: BTreeMap<String, String>,
    /// The local ids of `fence = true` services.
    fence: BTreeSet<String>,
    /// How the cluster role last said it fares.
    health: Option<node_info_response::SystemStatus>,
    /// Cluster requests awaiting the role's reply.
    pending: Vec<(ConnectionId, String, Instant)>,
    /// An instance changed since the role was last told.
    states_dirty: bool,
}

impl ClusterSide {
    /// The side for `link`, and the receiving end for the manager's loop.
    pub(super) fn new(link: Option<ClusterLink>) -> (ClusterSide, Receiver<mc::Message>) {
        match link {
            None => (ClusterSide::default(), crossbeam_channel::never()),
            Some(link) => (
                ClusterSide {
                    to_cluster: Some(link.to_cluster),
                    cached: Some(link.cached),
                    ..ClusterSide::default()
                },
                link.from_cluster,
            ),
        }
    }

    /// Whether service `id` is an instance the cluster assigned.
    pub(super) fn has(&self, id: &str) -> bool {
        self.services.contains_key(id)
    }

    /// The cluster's services and their versions, to keep in a reloaded
    /// configuration.
    pub(super) fn services(&self) -> (&BTreeMap<String, ServiceConfig>, &BTreeMap<String, String>) {
        (&self.services, &self.versions)
    }

    /// The earliest deadline of a forwarded request.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|(_, _, deadline)| *deadline).min()
    }

    pub(super) fn note_change(&mut self, id: &str) {
        if self.has(id) {
            self.states_dirty = true;
        }
    }

    pub(super) fn closed(&mut self, connection: ConnectionId) {
        self.pending
            .retain(|(pending, _, _)| *pending != connection);
    }
}

impl Manager {
    /// Re-adopts the instances of the cached assignments: put in place as
    /// services before the state record is read, none started.
    pub(super) fn adopt_cached_assignments(&mut self, now: Instant) {
        if let Some(cached) = self.cluster.cached.take() {
            self.assign(cached, "cluster-cache", now);
        }
    }

    pub(super) fn on_cluster(&mut self, message: mc::Message, now: Instant) {
        let correlation = message.correlation_id.clone().unwrap_or_default();
        match ManagerCluster::from_message(message.code, message.payload) {
            Ok(ManagerCluster::Assignments(set)) => {
                let correlation = format!("cluster-assign:{}", uuid::Uuid::new_v4().simple());
                self.assign(set, &correlation, now);
            }
            Ok(ManagerCluster::ClusterReply(reply)) => {
                let position = self
                    .cluster
                    .pending
                    .iter()
                    .position(|(_, pending, _)| *pending == correlation);
                if let Some(position) = position {
                    let (connection, _, _) = self.cluster.pending.remove(position);
                    self.reply(connection, reply, true);
                }
            }
            Ok(ManagerCluster::Health(health)) => {
                self.cluster.health = Some(health);
            }
            Ok(ManagerCluster::Fence) => {
                let correlation = format!("cluster-fence:{}", uuid::Uuid::new_v4().simple());
                let fenced: Vec<String> = self.cluster.fence.iter().cloned().collect();
                for id in fenced {
                    log::warn!("[{correlation}] {id}: fencing, the node's lease may be gone");
                    self.note(&id, 0, "fenced: the node's lease may be gone".to_owned());
                    self.drive(&id, Event::Stop, &correlation, now);
                }
            }
            Ok(
                taken @ (ManagerCluster::Ack
                | ManagerCluster::InstanceStates(_)
                | ManagerCluster::ClusterRequest(_)),
            ) => log::warn!(
                "ignoring the cluster role's {}: the manager does not take it",
                taken.code().as_str_name()
            ),
            Err(bad) => log::warn!("ignoring a malformed message from the cluster role: {bad}"),
        }
    }

    /// Moves the cluster's services to `set`: stops what is no longer
    /// assigned, then starts what is new (or, for a confirmed set, was
    /// stopped: fenced, or not started from the cache).
    fn assign(&mut self, set: mc::Assignments, correlation: &str, now: Instant) {
        let confirmed = set.confirmed.unwrap_or(true);
        let kill_after = self
            .config
            .node
            .cluster
            .as_ref()
            .map(|cluster| cluster.fence_margin() / 2);
        let mut services = BTreeMap::new();
        let mut versions = BTreeMap::new();
        let mut fence = BTreeSet::new();
        for assigned in set.assigned {
            let local = format!("{}@{}", assigned.service_id, assigned.index);
            let file = PathBuf::from(format!("cluster:{}", assigned.service_id));
            match parse_cluster_service(&assigned.service_id, &file, &assigned.definition) {
                Ok(parsed) => {
                    let mut service = parsed.service;
                    service.id.clone_from(&local);
                    if parsed.placement.fence {
                        if let Some(kill_after) = kill_after {
                            service.stop_timeout = service.stop_timeout.min(kill_after);
                        }
                        fence.insert(local.clone());
                    }
                    versions.insert(local.clone(), parsed.version);
                    services.insert(local, service);
                }
                Err(error) => log::error!("[{correlation}] cannot run {local}: {error}"),
            }
        }
        self.cluster.services = services;
        self.cluster.versions = versions;
        self.cluster.fence = fence;
        self.cluster.states_dirty = true;
        let mut merged: BTreeMap<String, ServiceConfig> = self
            .config
            .services
            .iter()
            .filter(|(id, _)| !id.contains('@'))
            .map(|(id, service)| (id.clone(), service.clone()))
            .collect();
        let mut merged_versions: BTreeMap<String, String> = self
            .config
            .service_versions
            .iter()
            .filter(|(id, _)| !id.contains('@'))
            .map(|(id, version)| (id.clone(), version.clone()))
            .collect();
        merged.extend(self.cluster.services.clone());
        merged_versions.extend(self.cluster.versions.clone());
        let effective = self.config.effective_version.clone();
        self.move_to(
            merged,
            merged_versions,
            effective,
            correlation,
            now,
            confirmed,
        );
        if confirmed {
            let idle: Vec<String> = self
                .cluster
                .services
                .keys()
                .filter(|id| {
                    self.registry.get(id).is_some_and(|service| {
                        service.replacement.is_none()
                            && service.hold.is_none()
                            && service.instances.iter().all(|i| i.state == State::Stopped)
                    })
                })
                .cloned()
                .collect();
            for id in idle {
                self.start_with_requirements(&id, correlation, false, now);
            }
        }
    }

    /// Hands a public cluster request to the cluster role; answered when
    /// its reply comes back, or with `TIMEOUT` at the request deadline.
    pub(super) fn forward_to_cluster(
        &mut self,
        connection: ConnectionId,
        correlation: &str,
        mut request: public_api::Message,
        now: Instant,
    ) -> Answer {
        let Some(to_cluster) = &self.cluster.to_cluster else {
            return Err(RequestError::new(
                Kind::NotClustered,
                "this node is not in a cluster: node.toml has no [cluster] section",
            ));
        };
        request.correlation_id = Some(correlation.to_owned());
        let message = mc::Message::new(
            mc::message::Code::ClusterRequest,
            Some(correlation.to_owned()),
            mc::message::Payload::Public(request),
        );
        self.tracer.record(Role::Manager, Role::Cluster, &message);
        match to_cluster.try_send(message) {
            Ok(()) => {
                let deadline = now + self.config.node.request_timeout;
                self.cluster
                    .pending
                    .push((connection, correlation.to_owned(), deadline));
                Ok(None)
            }
            Err(TrySendError::Full(_)) => Err(RequestError::new(
                Kind::Busy,
                "the cluster role has too many requests waiting; try again",
            )),
            Err(TrySendError::Disconnected(_)) => Err(RequestError::new(
                Kind::ClusterUnavailable,
                "the cluster role is gone",
            )),
        }
    }

    /// Answers forwarded requests past their deadline.
    pub(super) fn expire_cluster_requests(&mut self, now: Instant) {
        let (expired, waiting) = std::mem::take(&mut self.cluster.pending)
            .into_iter()
            .partition(|(_, _, deadline)| *deadline <= now);
        self.cluster.pending = waiting;
        for (connection, correlation, _) in expired {
            let error = RequestError::new(
                Kind::Timeout,
                "the cluster role did not answer in time (is etcd slow?)",
            );
            self.answer(connection, correlation, Err(error));
        }
    }

    /// Tells the cluster role the states of its instances, when one
    /// changed; if its inbox is full, the next pass tries again.
    pub(super) fn send_cluster_states(&mut self) {
        if !self.cluster.states_dirty {
            return;
        }
        let Some(to_cluster) = &self.cluster.to_cluster else {
            return;
        };
        let states = self
            .cluster
            .services
            .keys()
            .filter_map(|local| {
                let (id, index) = local.rsplit_once('@')?;
                let instance = self.registry.get(local)?.instances.first()?;
                Some(mc::instance_states::State {
                    service_id: id.to_owned(),
                    index: index.parse().ok()?,
                    state: instance.state.as_str().to_owned(),
                    pid: instance.pid,
                    since_unix_ms: Some(self.clock.unix_ms(instance.since)),
                })
            })
            .collect();
        let message = mc::Message::new(
            mc::message::Code::InstanceStates,
            None,
            mc::message::Payload::InstanceStates(mc::InstanceStates { states }),
        );
        match to_cluster.try_send(message) {
            Ok(()) => self.cluster.states_dirty = false,
            Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => self.cluster.to_cluster = None,
        }
    }

    /// The `cluster` subsystem, for a node in a cluster.
    pub(super) fn cluster_status(&self) -> Option<node_info_response::SystemStatus> {
        self.cluster.to_cluster.as_ref()?;
        Some(self.cluster.health.clone().unwrap_or_else(|| {
            system_status(
                StatusColour::Yellow,
                StatusCode::Starting,
                "joining the cluster".to_owned(),
            )
        }))
    }
}
