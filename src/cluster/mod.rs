//! The cluster role: the node's member of a cluster that shares services
//! through etcd. It holds the node's lease (renewed every `lease_ttl`/3)
//! and its presence key, watches the node's own assignment prefix and
//! hands what is assigned to the manager as ordinary supervised instances,
//! publishes their states on its lease, answers the public cluster
//! requests, and schedules when it holds the scheduler key.
//!
//! Keys under the prefix (default `/snow-fox`):
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `nodes/<name>` | `{labels, version, started_unix_ms}` | the node's |
//! | `services/<id>` | `{definition, stopped}` (the cluster file's text) | none |
//! | `scheduler` | the scheduling node's name | the scheduler's |
//! | `assign/<node>/<id>.<index>` | the service's definition | none |
//! | `status/<node>/<id>.<index>` | `{state, pid, since_unix_ms}` | the node's |
//!
//! Reads `manager_cluster` messages from the manager (instance states,
//! cluster requests) and notices from its watch threads (`watch.rs`);
//! writes `manager_cluster` messages to the manager (assignments, replies,
//! health, fence). It talks to etcd with blocking requests
//! (`etcd.rs`), each bounded by a timeout, between which it serves its
//! channels; timers are its `select!`'s deadline.
//!
//! Fencing is on this node's monotonic clock: a renewal sent at `t` keeps
//! the lease until at least `t + lease_ttl` on the store, so once
//! `t + lease_ttl - margin` passes without a newer renewal, the lease may
//! be gone and the manager is told to stop `fence = true` instances
//! (killed `margin`/2 after their stop signal), before any other node can
//! have been given them. The store away is no reason to stop anything
//! else: local services and other cluster instances keep running, the
//! `cluster` subsystem turns yellow (reconnecting) or red, and the role
//! retries with back-off. On rejoining it reads its assignments before
//! anything else, so the manager stops what moved away first.
//!
//! If it dies, the daemon notices and shuts the node down, as for any role.

mod etcd;
mod http;
pub mod placement;
mod requests;
mod scheduler;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};
use serde_json::{Value, json};

use crate::conf::ClusterConfig;
use crate::trace::{Role, Tracer, now_unix_us};
use crate::wire::ManagerCluster;
use crate::wire::proto::manager_cluster as mc;
use crate::wire::proto::public_api::{StatusCode, StatusColour, node_info_response::SystemStatus};
use etcd::{Credentials, Etcd, EtcdError, Guard, Op};
use watch::WatchNotice;

/// The longest wait between two attempts to reach the store.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Notices from watch threads waiting for the role.
const WATCH_NOTICES: usize = 64;
/// The file in the state dir holding the last assignments, so that a
/// restarted node can re-adopt its cluster instances before the store
/// answers.
const CACHE_FILE: &str = "cluster.assigned";
/// The file in the state dir naming the lease the node last joined with,
/// so that a node restarted before that lease expired can take its name
/// back instead of being refused as a twin.
const LEASE_FILE: &str = "cluster.lease";

/// The cluster role's channel ends.
#[derive(Debug)]
pub struct ClusterLinks {
    /// Instance states and cluster requests from the manager.
    pub from_manager: Receiver<mc::Message>,
    /// Assignments, replies, health and fence orders to the manager.
    pub to_manager: Sender<mc::Message>,
}

/// Why the cluster role cannot start or went on.
#[derive(Debug)]
pub enum ClusterError {
    /// The password file cannot be read.
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another live node holds this node's name.
    NameTaken {
        /// The name.
        name: String,
        /// Its presence key.
        key: String,
    },
    /// A channel to the manager closed.
    LinkClosed,
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::PasswordFile { path, source } => write!(
                f,
                "cluster: cannot read the etcd password file {}: {source}",
                path.display()
            ),
            ClusterError::NameTaken { name, key } => write!(
                f,
                "cluster: the node name `{name}` is taken: {key} is held by a live node's lease; \
                 give this node another `name`, or wait up to lease_ttl if that node just died"
            ),
            ClusterError::LinkClosed => f.write_str("cluster: the manager's link closed"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::PasswordFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The cluster's key layout under one prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }
    fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    fn service(&self, id: &str) -> String {
        format!("{}/services/{id}", self.prefix)
    }
    fn services(&self) -> String {
        format!("{}/services/", self.prefix)
    }
    fn scheduler(&self) -> String {
        format!("{}/scheduler", self.prefix)
    }
    fn assign(&self, node: &str, id: &str, index: u32) -> String {
        format!("{}/assign/{node}/{id}.{index}", self.prefix)
    }
    fn assigned_to(&self, node: &str) -> String {
        format!("{}/assign/{node}/", self.prefix)
    }
    fn assigns(&self) -> String {
        format!("{}/assign/", self.prefix)
    }
    fn status(&self, node: &str, id: &str, index: u32) -> String {
        format!("{}/status/{node}/{id}.{index}", self.prefix)
    }
    fn statuses(&self) -> String {
        format!("{}/status/", self.prefix)
    }
}

/// `<under><node>/<id>.<index>` split into its parts.
fn instance_key<'k>(key: &'k str, under: &str) -> Option<(&'k str, String, u32)> {
    let rest = key.strip_prefix(under)?;
    let (node, instance) = rest.split_once('/')?;
    let (id, index) = instance.rsplit_once('.')?;
    Some((node, id.to_owned(), index.parse().ok()?))
}

/// Reads etcd's credentials: `username` and the first line of
/// `password_file`.
fn credentials(config: &ClusterConfig) -> Result<Option<Credentials>, ClusterError> {
    let (Some(name), Some(path)) = (&config.username, &config.password_file) else {
        return Ok(None);
    };
    let text = fs::read_to_string(path).map_err(|source| ClusterError::PasswordFile {
        path: path.clone(),
        source,
    })?;
    Ok(Some(Credentials {
        name: name.clone(),
        password: text.lines().next().unwrap_or_default().to_owned(),
    }))
}

/// The assignments cached in `state_dir` by the node's last run, for the
/// manager to re-adopt before the store answers (nothing of it is
/// started). Empty when there is none or it does not read.
pub fn cached_assignments(state_dir: &Path) -> mc::Assignments {
    let path = state_dir.join(CACHE_FILE);
    let assigned = fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|value| value.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| {
            Some(mc::assignments::Assigned {
                service_id: entry.get("service_id")?.as_str()?.to_owned(),
                index: u32::try_from(entry.get("index")?.as_u64()?).ok()?,
                definition: entry.get("definition")?.as_str()?.to_owned(),
            })
        })
        .collect();
    mc::Assignments {
        assigned,
        confirmed: Some(false),
    }
}

/// Where the role stands with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    /// Starting, not yet tried.
    Joining,
    /// Not joined, or lost the lease: `reason` says why.
    Away { reason: String },
    /// Joined, but the last renewal failed.
    Reconnecting { reason: String },
    /// Joined and renewing.
    Joined,
}

/// The cluster role.
#[derive(Debug)]
pub struct Cluster {
    links: ClusterLinks,
    tracer: Tracer,
    config: ClusterConfig,
    name: String,
    state_dir: PathBuf,
    keys: Keys,
    etcd: Etcd,
    started_unix_ms: u64,
    lease: Option<i64>,
    /// When the last renewal that succeeded was sent (or the role started).
    renewed_at: Instant,
    fenced: bool,
    standing: Standing,
    health_sent: Option<(Standing, bool)>,
    backoff: Duration,
    next_tick: Instant,
    watch_notices: (Sender<WatchNotice>, Receiver<WatchNotice>),
    next_watch: u64,
    /// The watch of this node's assignments, and the scheduler's of nodes
    /// and services.
    assign_watch: Option<u64>,
    /// The revision of the last read of this node's assignments, which
    /// its watch starts after.
    assign_revision: i64,
    scheduler_watches: BTreeMap<String, u64>,
    scheduler: bool,
    /// Assignments sent to the manager as confirmed.
    assigned: Option<BTreeMap<(String, u32), String>>,
    assign_dirty: bool,
    schedule_dirty: bool,
    /// The instance states the manager last reported, and what is
    /// published of them under the lease.
    states: BTreeMap<(String, u32), String>,
    published: BTreeMap<(String, u32), String>,
    /// Dead nodes still holding assignments, since when the scheduler saw
    /// them dead.
    dead_since: BTreeMap<String, Instant>,
    /// When the scheduler last saw each node alive, kept for twice the
    /// lease: who vanished recently.
    seen: BTreeMap<String, Instant>,
}

impl Cluster {
    /// The role for `config`, as node `name` keeping its cache in
    /// `state_dir`; nothing is contacted until [`Cluster::run`].
    pub fn new(
        links: ClusterLinks,
        tracer: Tracer,
        config: ClusterConfig,
        name: String,
        state_dir: PathBuf,
    ) -> Result<Cluster, ClusterError> {
        let etcd = Etcd::new(config.etcd.clone(), credentials(&config)?);
        let now = Instant::now();
        Ok(Cluster {
            links,
            tracer,
            keys: Keys {
                prefix: config.prefix.clone(),
            },
            config,
            name,
            state_dir,
            etcd,
            started_unix_ms: now_unix_us() / 1000,
            lease: None,
            renewed_at: now,
            fenced: false,
            standing: Standing::Joining,
            health_sent: None,
            backoff: FIRST_BACKOFF,
            next_tick: now,
            watch_notices: bounded(WATCH_NOTICES),
            next_watch: 0,
            assign_watch: None,
            assign_revision: 0,
            scheduler_watches: BTreeMap::new(),
            scheduler: false,
            assigned: None,
            assign_dirty: false,
            schedule_dirty: false,
            states: BTreeMap::new(),
            published: BTreeMap::new(),
            dead_since: BTreeMap::new(),
            seen: BTreeMap::new(),
        })
    }

    /// Refuses a name a live node holds; a store that does not answer is
    /// no refusal (the role retries once running). A name held by the
    /// lease this node's previous run recorded is this node's own: that
    /// lease is revoked and the name taken back.
    pub fn check_name(&mut self) -> Result<(), ClusterError> {
        let key = self.keys.node(&self.name);
        let previous: Option<i64> = fs::read_to_string(self.state_dir.join(LEASE_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok());
        match self.etcd.get(&key) {
            Ok(Some(kv)) if kv.lease != 0 && Some(kv.lease) == previous => {
                log::info!(
                    "cluster: {key} is held by this node's previous run (lease {:x}): revoking it",
                    kv.lease
                );
                if let Err(error) = self.etcd.revoke(kv.lease) {
                    log::warn!("cluster: cannot revoke the previous lease: {error}");
                }
                Ok(())
            }
            Ok(Some(_)) => Err(ClusterError::NameTaken {
                name: self.name.clone(),
                key,
            }),
            Ok(None) => Ok(()),
            Err(error) => {
                log::warn!("cluster: {error}; the node starts on its own and keeps trying");
                Ok(())
            }
        }
    }

    /// Serves until the manager's link closes (the node is shutting down),
    /// then revokes the lease so that the cluster sees this node leave at
    /// once.
    pub fn run(mut self) -> Result<(), ClusterError> {
        match self.serve() {
            Ok(()) | Err(ClusterError::LinkClosed) => {}
            Err(error) => return Err(error),
        }
        if let Some(lease) = self.lease {
            match self.etcd.revoke(lease) {
                Ok(()) => log::info!("cluster: left the cluster (lease revoked)"),
                Err(error) => log::warn!("cluster: cannot revoke the lease on leaving: {error}"),
            }
        }
        Ok(())
    }

    fn serve(&mut self) -> Result<(), ClusterError> {
        loop {
            self.send_health()?;
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            let notices = self.watch_notices.1.clone();
            select! {
                recv(self.links.from_manager) -> message => match message {
                    Ok(message) => self.on_manager(message)?,
                    Err(_) => return Ok(()),
                },
                recv(notices) -> notice => {
                    if let Ok(notice) = notice {
                        self.on_watch(notice);
                    }
                }
                recv(crossbeam_channel::after(wait)) -> _ => {}
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.tick(now)?;
            }
            self.check_fence(Instant::now())?;
            if self.lease.is_some() {
                self.work()?;
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let fence = (!self.fenced).then(|| self.fence_deadline());
        fence.map_or(self.next_tick, |fence| fence.min(self.next_tick))
    }

    fn fence_deadline(&self) -> Instant {
        self.renewed_at + self.config.lease_ttl - self.config.fence_margin()
    }

    /// Carries out what joined work is pending: assignments first (so a
    /// returning node stops what moved away before anything else), then
    /// states, then scheduling.
    fn work(&mut self) -> Result<(), ClusterError> {
        if self.assign_dirty {
            match self.sync_assignments() {
                Ok(()) => self.assign_dirty = false,
                Err(error) => self.store_failed(&error),
            }
        }
        if self.published != self.states
            && let Err(error) = self.publish_states()
        {
            self.store_failed(&error);
        }
        if self.scheduler && self.schedule_dirty {
            self.schedule_dirty = false;
            if let Err(error) = self.schedule(Instant::now()) {
                self.store_failed(&error);
            }
        }
        Ok(())
    }

    /// The periodic work: joining, renewing, seeking the scheduler key.
    fn tick(&mut self, now: Instant) -> Result<(), ClusterError> {
        let period = self.config.lease_ttl / 3;
        let Some(lease) = self.lease else {
            match self.join() {
                Ok(()) => {
                    self.backoff = FIRST_BACKOFF;
                    self.next_tick = Instant::now() + period;
                }
                Err(reason) => {
                    self.standing = Standing::Away { reason };
                    self.retry_later(now);
                }
            }
            return Ok(());
        };
        let sent = Instant::now();
        match self.etcd.keep_alive(lease) {
            Ok(true) => {
                self.renewed(sent);
                self.next_tick = sent + period;
                self.seek_scheduler();
                self.ensure_watches();
            }
            Ok(false) => {
                log::warn!("cluster: the lease expired while the store was away: rejoining");
                self.lost_lease("the lease expired; rejoining".to_owned());
                self.next_tick = Instant::now();
            }
            Err(error) => {
                log::warn!("cluster: cannot renew the lease: {error}");
                self.store_failed(&error);
                self.retry_later(now);
            }
        }
        Ok(())
    }

    fn retry_later(&mut self, now: Instant) {
        // Renewals must not wait longer than their period, joins back off.
        let limit = if self.lease.is_some() {
            self.config.lease_ttl / 6
        } else {
            MAX_BACKOFF
        };
        self.next_tick = now + self.backoff.min(limit);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Past the fence deadline the lease may be gone: red, not yellow.
    fn store_failed(&mut self, error: &EtcdError) {
        if self.fenced {
            self.standing = Standing::Away {
                reason: format!(
                    "no renewal for {:?}, the lease may be gone: {error}",
                    self.renewed_at.elapsed()
                ),
            };
        } else if self.lease.is_some() {
            self.standing = Standing::Reconnecting {
                reason: error.to_string(),
            };
        }
    }

    /// A renewal sent at `sent` succeeded.
    fn renewed(&mut self, sent: Instant) {
        self.renewed_at = sent;
        self.standing = Standing::Joined;
        self.backoff = FIRST_BACKOFF;
        if self.fenced {
            log::info!("cluster: the lease is renewed again: fenced instances may run");
            self.fenced = false;
            self.assigned = None;
            self.assign_dirty = true;
        }
    }

    fn lost_lease(&mut self, reason: String) {
        self.lease = None;
        self.scheduler = false;
        self.scheduler_watches.clear();
        self.assign_watch = None;
        self.published.clear();
        self.standing = Standing::Away { reason };
    }

    /// Grants a lease, claims the node's name on it and starts watching
    /// this node's assignments.
    fn join(&mut self) -> Result<(), String> {
        let sent = Instant::now();
        let lease = self
            .etcd
            .grant(self.config.lease_ttl)
            .map_err(|e| e.to_string())?;
        let key = self.keys.node(&self.name);
        let presence = json!({
            "labels": self.config.labels,
            "version": env!("CARGO_PKG_VERSION"),
            "started_unix_ms": self.started_unix_ms,
        })
        .to_string();
        let put = Op::Put {
            key: key.clone(),
            value: presence,
            lease,
        };
        let claimed = self
            .etcd
            .txn(&[Guard::Absent(key.clone())], &[put])
            .map_err(|e| e.to_string());
        if claimed != Ok(true) {
            // Nothing else is on it; it expires anyway if this fails.
            let _ = self.etcd.revoke(lease);
            return Err(match claimed {
                Ok(_) => ClusterError::NameTaken {
                    name: self.name.clone(),
                    key,
                }
                .to_string(),
                Err(error) => error,
            });
        }
        self.lease = Some(lease);
        self.write_state(LEASE_FILE, &lease.to_string());
        self.renewed(sent);
        log::info!(
            "cluster: joined as {} (lease {lease:x}, ttl {:?})",
            self.name,
            self.config.lease_ttl
        );
        self.assigned = None;
        self.assign_dirty = true;
        self.seek_scheduler();
        self.ensure_watches();
        Ok(())
    }

    /// Opens the watches that are missing: this node's assignments (from
    /// after the last read of them) and, for the scheduler, nodes and
    /// services. Called after each renewal, so a watch that keeps failing
    /// is retried once per renewal, not in a loop.
    fn ensure_watches(&mut self) {
        if self.assign_watch.is_none() {
            let prefix = self.keys.assigned_to(&self.name);
            self.assign_watch = self.watch(prefix, self.assign_revision);
            self.assign_dirty = true;
        }
        if self.scheduler {
            for prefix in [self.keys.nodes(), self.keys.services()] {
                if !self.scheduler_watches.contains_key(&prefix)
                    && let Some(id) = self.watch(prefix.clone(), 0)
                {
                    self.scheduler_watches.insert(prefix, id);
                    self.schedule_dirty = true;
                }
            }
        }
    }

    /// Takes the scheduler key if nobody holds it.
    fn seek_scheduler(&mut self) {
        let Some(lease) = self.lease else {
            return;
        };
        if self.scheduler {
            self.schedule_dirty = true;
            return;
        }
        let key = self.keys.scheduler();
        let take = Op::Put {
            key: key.clone(),
            value: self.name.clone(),
            lease,
        };
        match self.etcd.txn(&[Guard::Absent(key)], &[take]) {
            Ok(true) => {
                log::info!("cluster: {} is the scheduler now", self.name);
                self.scheduler = true;
                self.schedule_dirty = true;
                self.ensure_watches();
            }
            Ok(false) => {}
            Err(error) => self.store_failed(&error),
        }
    }

    /// Starts a watch of `prefix` after `revision` (0: from now); its id.
    fn watch(&mut self, prefix: String, revision: i64) -> Option<u64> {
        self.next_watch += 1;
        let id = self.next_watch;
        let start = if revision > 0 { revision + 1 } else { 0 };
        let spawned = watch::spawn(
            id,
            self.etcd.endpoint().to_owned(),
            self.etcd.token().map(str::to_owned),
            prefix,
            start,
            self.watch_notices.0.clone(),
        );
        match spawned {
            Ok(()) => Some(id),
            Err(error) => {
                log::warn!("cluster: cannot start a watch thread: {error}");
                None
            }
        }
    }

    fn on_watch(&mut self, notice: WatchNotice) {
        let (WatchNotice::Changed { id, .. } | WatchNotice::Ended { id, .. }) = &notice;
        let id = *id;
        let scheduler_watch = self
            .scheduler_watches
            .iter()
            .find(|(_, watch)| **watch == id)
            .map(|(prefix, _)| prefix.clone());
        if Some(id) == self.assign_watch {
            self.assign_dirty = true;
            if let WatchNotice::Ended { reason, .. } = &notice {
                log::info!(
                    "cluster: the assignment watch ended ({reason}); reopened at the next renewal"
                );
                self.assign_watch = None;
            }
        } else if let Some(prefix) = scheduler_watch {
            self.schedule_dirty = true;
            if let WatchNotice::Ended { reason, .. } = &notice {
                log::info!(
                    "cluster: the watch of {prefix} ended ({reason}); reopened at the next renewal"
                );
                self.scheduler_watches.remove(&prefix);
            }
        }
    }

    /// Reads this node's assignments and hands them to the manager when
    /// they changed; (re)opens their watch from the revision read.
    fn sync_assignments(&mut self) -> Result<(), EtcdError> {
        let under = self.keys.assigns();
        let (kvs, revision) = self.etcd.range_prefix(&self.keys.assigned_to(&self.name))?;
        let assigned: BTreeMap<(String, u32), String> = kvs
            .into_iter()
            .filter_map(|kv| {
                let (_, id, index) = instance_key(&kv.key, &under)?;
                Some(((id, index), kv.value))
            })
            .collect();
        self.assign_revision = revision;
        if self.assigned.as_ref() == Some(&assigned) {
            return Ok(());
        }
        log::info!(
            "cluster: {} instances assigned to this node",
            assigned.len()
        );
        let message = mc::Assignments {
            assigned: assigned
                .iter()
                .map(|((id, index), definition)| mc::assignments::Assigned {
                    service_id: id.clone(),
                    index: *index,
                    definition: definition.clone(),
                })
                .collect(),
            confirmed: Some(true),
        };
        self.write_cache(&message);
        self.send(
            mc::message::Code::Assignments,
            None,
            mc::message::Payload::Assignments(message),
        )
        .map_err(|_| EtcdError::Malformed {
            path: "manager",
            reason: "the manager's link closed".to_owned(),
        })?;
        self.assigned = Some(assigned);
        Ok(())
    }

    fn write_cache(&self, message: &mc::Assignments) {
        let entries: Vec<Value> = message
            .assigned
            .iter()
            .map(|a| json!({"service_id": a.service_id, "index": a.index, "definition": a.definition}))
            .collect();
        self.write_state(CACHE_FILE, &Value::Array(entries).to_string());
    }

    /// Replaces `file` in the state dir with `text` (written aside, then
    /// renamed, so a crash leaves the old or the new, never half).
    fn write_state(&self, file: &str, text: &str) {
        let path = self.state_dir.join(file);
        let temporary = self.state_dir.join(format!("{file}.tmp"));
        let written = fs::create_dir_all(&self.state_dir)
            .and_then(|()| fs::write(&temporary, text))
            .and_then(|()| fs::rename(&temporary, &path));
        if let Err(error) = written {
            log::warn!("cluster: cannot write {}: {error}", path.display());
        }
    }

    /// Publishes changed instance states under the lease.
    fn publish_states(&mut self) -> Result<(), EtcdError> {
        let Some(lease) = self.lease else {
            return Ok(());
        };
        let gone: Vec<(String, u32)> = self
            .published
            .keys()
            .filter(|key| !self.states.contains_key(*key))
            .cloned()
            .collect();
        for (id, index) in gone {
            self.etcd
                .delete(&self.keys.status(&self.name, &id, index), false)?;
            self.published.remove(&(id, index));
        }
        let changed: Vec<((String, u32), String)> = self
            .states
            .iter()
            .filter(|(key, value)| self.published.get(*key) != Some(*value))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        for ((id, index), value) in changed {
            let key = self.keys.status(&self.name, &id, index);
            self.etcd.put(&key, &value, lease)?;
            self.published.insert((id, index), value);
        }
        Ok(())
    }

    /// Fences once the lease cannot be trusted to have survived.
    fn check_fence(&mut self, now: Instant) -> Result<(), ClusterError> {
        if self.fenced || now < self.fence_deadline() {
            return Ok(());
        }
        self.fenced = true;
        if let Standing::Reconnecting { reason } = &self.standing {
            self.standing = Standing::Away {
                reason: format!(
                    "no renewal for {:?}, the lease may be gone: {reason}",
                    now - self.renewed_at
                ),
            };
        }
        log::warn!(
            "cluster: no renewal for {:?}: the lease may be gone, stopping fence = true instances",
            now - self.renewed_at
        );
        self.send(mc::message::Code::Fence, None, None)
    }

    fn on_manager(&mut self, message: mc::Message) -> Result<(), ClusterError> {
        match ManagerCluster::from_message(message.code, message.payload) {
            Ok(ManagerCluster::InstanceStates(states)) => {
                self.states = states
                    .states
                    .into_iter()
                    .map(|state| {
                        let value = json!({
                            "state": state.state,
                            "pid": state.pid,
                            "since_unix_ms": state.since_unix_ms,
                        });
                        ((state.service_id, state.index), value.to_string())
                    })
                    .collect();
                Ok(())
            }
            Ok(ManagerCluster::ClusterRequest(request)) => {
                let correlation = message.correlation_id;
                let reply = self.answer(request, correlation.clone());
                self.send(
                    mc::message::Code::ClusterReply,
                    correlation,
                    mc::message::Payload::Public(reply),
                )
            }
            Ok(
                taken @ (ManagerCluster::Ack
                | ManagerCluster::Assignments(_)
                | ManagerCluster::ClusterReply(_)
                | ManagerCluster::Health(_)
                | ManagerCluster::Fence),
            ) => {
                log::warn!(
                    "cluster: ignoring the manager's {}: the cluster role does not take it",
                    taken.code().as_str_name()
                );
                Ok(())
            }
            Err(bad) => {
                log::warn!("cluster: ignoring a malformed message from the manager: {bad}");
                Ok(())
            }
        }
    }

    fn send(
        &mut self,
        code: mc::message::Code,
        correlation: Option<String>,
        payload: impl Into<Option<mc::message::Payload>>,
    ) -> Result<(), ClusterError> {
        let message = mc::Message::new(code, correlation, payload);
        self.tracer.record(Role::Cluster, Role::Manager, &message);
        self.links
            .to_manager
            .send(message)
            .map_err(|_| ClusterError::LinkClosed)
    }

    /// Tells the manager how the cluster fares when that changed.
    fn send_health(&mut self) -> Result<(), ClusterError> {
        let shown = (self.standing.clone(), self.scheduler);
        if self.health_sent.as_ref() == Some(&shown) {
            return Ok(());
        }
        let endpoints = self.config.etcd.join(", ");
        let status = match &self.standing {
            Standing::Joined => SystemStatus {
                colour: StatusColour::Green as i32,
                code: Some(StatusCode::Ok as i64),
                reason: format!(
                    "joined as {} via {endpoints}{}",
                    self.name,
                    if self.scheduler {
                        "; the scheduler"
                    } else {
                        ""
                    }
                ),
            },
            Standing::Joining => SystemStatus {
                colour: StatusColour::Yellow as i32,
                code: Some(StatusCode::Starting as i64),
                reason: format!("joining via {endpoints}"),
            },
            Standing::Reconnecting { reason } => SystemStatus {
                colour: StatusColour::Yellow as i32,
                code: Some(StatusCode::Starting as i64),
                reason: format!("reconnecting to {endpoints}: {reason}"),
            },
            Standing::Away { reason } => SystemStatus {
                colour: StatusColour::Red as i32,
                code: Some(StatusCode::Failed as i64),
                reason: format!("not joined ({endpoints}): {reason}; retrying"),
            },
        };
        self.health_sent = Some(shown);
        self.send(
            mc::message::Code::Health,
            None,
            mc::message::Payload::Health(status),
        )
    }
}
