//! The manager role: the node's logic. It answers every public request,
//! owns the service registry with one [`instance::Instance`] state machine
//! per service instance, the pid → instance map, the subscriptions and the
//! request deadlines, and asks the spawner for all process work.
//!
//! Reads: [`IoEvent`]s from io, `daemon_manager` orders from the daemon,
//! `manager_spawner` reports from the spawner. Writes: replies to io (one
//! [`IoCommand::Replies`] per pass), `manager_spawner` requests to the
//! spawner, `daemon_manager` messages to the daemon. Timers (back-off, kill
//! after `stop_timeout`, request deadlines) are deadlines of its
//! `select!`, never sleeping threads.
//!
//! The spawner answers each request exactly once (`ProcessStarted`, `Ack`
//! or `Error`) under its correlation id, and the manager matches answers to
//! requests by that id (`asks.rs`). A client's `ServiceSignal` is answered
//! after the spawner's answers, so a signal the spawner refuses reaches the
//! client as an `Error`. The one message the spawner does not answer is
//! the reloaded `ServiceTable`, which the manager sends on this link (not
//! through the daemon) so that it reaches the spawner before the starts it
//! allows.
//!
//! It keeps the state record (`record.rs`) in the node's state dir: the
//! instances with a process and what users asked of each service, written
//! at most once per pass of its loop when something in it changed. At
//! start, before anything autostarts, it re-adopts the recorded processes
//! that still run (same pid and start time, service still configured):
//! they are `running`, marked adopted, and watched by the spawner through a
//! pidfd. One started from an older definition of its service is restarted
//! under the current one. A recorded process that is gone, or whose pid now
//! names another process, is logged and left alone (never signalled); its
//! instance is then started or not like any other, by the service's
//! desired state. A service a user started or stopped stays so across node
//! restarts until the user says otherwise or its definition changes; the
//! last word counts, so a start (direct, or of a service that requires
//! it) undoes an earlier stop. A service that gave up stays `failed`
//! across node restarts until a user starts it. Without such a wish,
//! `enable`/`disable` (also recorded), else `autostart`, decides.
//!
//! Services start after what they require and stop before it
//! (`deps.rs`: held starts and stops, the pull-in, stopping dependents);
//! an instance is `starting` until its readiness fd or check says it is
//! ready, and a running one with a health check is restarted when the
//! check fails too often (`checks.rs`, which owns the `sf-checks` thread
//! for TCP checks and reads its results in this loop's `select!`). A
//! `ServiceStart` is answered once the service is ready (or failed).
//!
//! It is split by what each part owns: `registry.rs` the services, their
//! instances and the indexes kept with them (timers by deadline, pids,
//! who requires what), changed only through its `on_event`; `asks.rs` the
//! spawner requests awaiting answers; `waiters.rs` the client requests
//! awaiting a service's state; `subscriptions.rs` the event subscriptions;
//! `checks.rs` the readiness and health checks. This file has the loop and
//! the work with the spawner; `requests.rs` checks, dispatches and answers
//! client requests; `adoption.rs` re-adopts recorded processes and writes
//! the record; `reload.rs` moves the services to a reloaded configuration. Each pass reads the clock once and hands that `now` to every
//! decision, so `sim.rs` (tests) drives the same code on a fake clock with
//! a fake spawner.
//!
//! If it dies, the daemon notices and shuts the node down; services are
//! then left as they are, and stay in the record.

mod adoption;
mod asks;
mod checks;
mod cluster;
mod deps;
pub mod instance;
mod logs;
mod metrics;
mod record;
mod registry;
mod reload;
mod requests;
#[cfg(test)]
mod sim;
mod status;
mod subscriptions;
#[cfg(test)]
mod tests;
mod usage;
mod waiters;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};

use crate::cgroup::InstanceCgroup;
use crate::conf::{Config, OnNodeExit, Output, ReadySignal, ServiceConfig};
use crate::sys;
use crate::trace::{Role, Tracer, now_unix_us};
use crate::wire::link::{
    ClientReply, ClientRequest, ConnectionId, IoCommand, IoEvent, IoSender, NodeInfoBoard,
    WakingSender,
};
use crate::wire::proto::public_api::{
    self, ClientIntroduce, NodeInfoResponse, StatusCode, StatusColour, TraceResponse, error::Kind,
    message::Code, message::Payload, node_info_response, service_status_response, trace_response,
};
use crate::wire::proto::{daemon_manager as dm, daemon_spawner as ds, manager_spawner as ms};
use crate::wire::{
    BadMessage, BadRequest, ManagerCluster, ManagerSpawner, PROTOCOL_VERSION, Request, error_reply,
};
use asks::{Asked, Asks};
use checks::Checks;
pub use cluster::ClusterLink;
use cluster::ClusterSide;
use deps::Hold;
use ds::service_table::output as table_output;
use instance::{Effect, Event, ExitStatus, Instance, State};
use record::{Desired, Enabled, Journal, Record, RecordedInstance, ServiceRecord, Wish};
use registry::Registry;
pub use reload::service_table;
use reload::work_dir_text;
use status::{Clock, EntryCache, instance_status, overall, system_status};
use subscriptions::Subscriptions;
use usage::{LastRun, Usage};
use waiters::{Waiter, Waiters};

/// How many of the last lines of its stderr a failed start's reason
/// quotes.
const STDERR_LINES: usize = 3;

/// Replies gathered before they are handed to io in one command.
const REPLY_BATCH: usize = 4096;
/// The most inputs one pass of the loop takes (see [`Manager::run`]).
const PASS_INPUTS: usize = 1024;

/// Field numbers in `Message.payload` (`public_api.proto`) of the replies
/// the manager keeps encoded.
const PAYLOAD_NODE_INFO_RESPONSE: u32 = 51;
const PAYLOAD_SERVICE_STATUS_RESPONSE: u32 = 57;

/// What the node says about itself in node info.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The node's name.
    pub name: String,
    /// The git commit the binary was built from.
    pub commit: String,
    /// Whether that tree was dirty: `clean`, `dirty` or `unknown`.
    pub taint: String,
    /// The crate's SemVer.
    pub version: String,
    /// Where the spawner runs: `thread`, or `process, pid N`.
    pub spawner_mode: String,
    /// Who the node runs as, e.g. `uid 65534 (nobody)`.
    pub user: String,
}

/// The manager's channel ends.
#[derive(Debug)]
pub struct ManagerLinks {
    /// Requests and connection closes from io.
    pub from_io: Receiver<IoEvent>,
    /// Replies to io.
    pub to_io: IoSender,
    /// Orders from the daemon.
    pub from_daemon: Receiver<dm::Message>,
    /// Acks and shutdown requests to the daemon.
    pub to_daemon: Sender<dm::Message>,
    /// Reports from the spawner.
    pub from_spawner: Receiver<ms::Message>,
    /// Process work for the spawner.
    pub to_spawner: WakingSender<ms::Message>,
    /// The cluster role's link, for a node in a cluster.
    pub cluster: Option<ClusterLink>,
    /// Where node info's answer is published for io.
    pub node_info: NodeInfoBoard,
}

/// Why the manager stopped before the daemon told it to.
#[derive(Debug)]
pub enum ManagerError {
    /// A channel to another role closed.
    LinkClosed {
        /// Which role's link.
        role: Role,
    },
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::LinkClosed { role } => {
                write!(f, "manager lost its link to the {}", role.as_str())
            }
        }
    }
}

impl std::error::Error for ManagerError {}

/// A request refused or failed: becomes an `Error` reply.
#[derive(Debug)]
struct RequestError {
    kind: Kind,
    reason: String,
}

impl RequestError {
    fn new(kind: Kind, reason: impl Into<String>) -> Self {
        RequestError {
            kind,
            reason: reason.into(),
        }
    }
}

/// What woke the manager's loop: a message on one of its links, a link
/// that closed, or a deadline.
#[derive(Debug)]
enum Input {
    Io(IoEvent),
    Spawner(ms::Message),
    SpawnerGone,
    Daemon(dm::Message),
    Cluster(crate::wire::proto::manager_cluster::Message),
    ClusterGone,
    Tcp(checks::TcpResult),
    TcpGone,
    Tick,
}

/// A service and its instances.
#[derive(Debug)]
struct Service {
    config: ServiceConfig,
    /// The version of its file (`Config::service_versions`) that `config`
    /// was read from.
    version: String,
    /// What a user last asked it to be, up or down, or failed when it
    /// gave up since; `None` follows `enabled`.
    desired: Option<Wish>,
    /// What `enable` or `disable` last said; `None` follows `autostart`.
    enabled: Option<bool>,
    instances: Vec<Instance>,
    /// The start time of each instance's process, while it has one.
    start_times: Vec<Option<u64>>,
    /// The correlation id of what drives each instance now.
    operations: Vec<Option<String>>,
    /// A reload changed or removed it: applied once every instance is down.
    replacement: Option<Replacement>,
    /// A start or stop waiting for other services.
    hold: Option<Hold>,
    /// Why the node itself moves each instance, for its next event.
    notes: Vec<Option<String>>,
    /// Its status entry, encoded.
    status_entry: EntryCache,
    /// What each instance uses.
    usage: Vec<Usage>,
}

#[derive(Debug)]
enum Replacement {
    Remove,
    With(Box<ServiceConfig>),
}

/// A client's `ServiceSignal` whose signals the spawner has not all
/// answered yet.
#[derive(Debug)]
struct PendingSignal {
    connection: ConnectionId,
    service: String,
    /// Signals not answered yet.
    awaiting: usize,
    /// Why the refused ones were refused.
    refusals: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Up,
    Down,
}

/// How the state record fares, shown as the `state` subsystem.
#[derive(Debug, Default)]
struct RecordHealth {
    /// Why the record found at start was ignored.
    unreadable_at_start: Option<String>,
    /// Instances adopted at start.
    adopted: usize,
    /// Why the last write failed, until one succeeds.
    write_error: Option<String>,
}

/// The node info payload while all is green, encoded, and the
/// configuration versions it shows.
#[derive(Debug)]
struct GreenNodeInfo {
    effective: String,
    symbolic: String,
    payload: Arc<[u8]>,
}

/// The manager role.
#[derive(Debug)]
pub struct Manager {
    links: ManagerLinks,
    tracer: Tracer,
    config: Config,
    identity: NodeIdentity,
    client_prefix: String,
    clock: Clock,
    /// The services, their instances and the indexes kept with them.
    registry: Registry,
    /// The services with a `hold` (and perhaps some whose hold went:
    /// skipped and dropped when holds are released), so that releasing
    /// holds looks at those alone, not at every service, once per request
    /// of a start of thousands.
    held: BTreeSet<String>,
    asked: Asks,
    /// Client `ServiceSignal`s waiting for the spawner's answers, by
    /// correlation id.
    signals: HashMap<String, PendingSignal>,
    /// Requests for the spawner that its channel had no room for yet.
    to_spawner: VecDeque<ms::Message>,
    /// Requests answered when their service reaches a state.
    waiters: Waiters,
    /// Who gets every `Event`.
    subscriptions: Subscriptions,
    /// The thread that serves `LogsRequest`s.
    log_reader: logs::LogReader,
    outgoing: Vec<ClientReply>,
    /// The last reload's failure, shown as the `config` subsystem.
    reload_error: Option<String>,
    /// What the spawner said it can do with cgroups.
    cgroups: Option<ms::CgroupStatus>,
    /// Requests and errors counted for metrics.
    counters: metrics::Counters,
    spawner_alive: bool,
    /// Set once the daemon ordered the shutdown: its correlation id.
    shutdown: Option<String>,
    /// The services whose part of the state record may have changed since
    /// it was written.
    record_dirty: BTreeSet<String>,
    /// The state record on disk.
    journal: Journal,
    record_health: RecordHealth,
    checks: Checks,
    /// Node info's reply while all is green, kept encoded.
    green_node_info: RefCell<Option<GreenNodeInfo>>,
    /// A node info without details was answered in this pass: its answer
    /// is published for io at the pass's end.
    node_info_asked: bool,
    /// An answer is on the board now (withdrawn at a pass's start).
    node_info_published: bool,
    /// The instances the cluster assigns, and requests forwarded to it.
    cluster: ClusterSide,
    from_cluster: Receiver<crate::wire::proto::manager_cluster::Message>,
}

impl Manager {
    /// A manager for `config`; nothing runs until [`Manager::run`].
    pub fn new(
        mut links: ManagerLinks,
        tracer: Tracer,
        config: Config,
        identity: NodeIdentity,
    ) -> Manager {
        let now = Instant::now();
        let (cluster, from_cluster) = ClusterSide::new(links.cluster.take());
        let registry = Registry::new(&config, now);
        Manager {
            log_reader: logs::LogReader::new(links.to_io.clone()),
            links,
            tracer,
            config,
            identity,
            client_prefix: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            clock: Clock::new(),
            registry,
            held: BTreeSet::new(),
            asked: Asks::default(),
            signals: HashMap::new(),
            to_spawner: VecDeque::new(),
            waiters: Waiters::default(),
            subscriptions: Subscriptions::default(),
            outgoing: Vec::new(),
            reload_error: None,
            cgroups: None,
            counters: metrics::Counters::default(),
            spawner_alive: true,
            shutdown: None,
            record_dirty: BTreeSet::new(),
            journal: Journal::default(),
            record_health: RecordHealth::default(),
            checks: Checks::new(),
            green_node_info: RefCell::new(None),
            node_info_asked: false,
            node_info_published: false,
            cluster,
            from_cluster,
        }
    }

    /// Re-adopts what the state record says still runs, brings every
    /// service to its desired state (or its `autostart`), then serves until
    /// the daemon's `Shutdown` has been carried out.
    pub fn run(mut self) -> Result<(), ManagerError> {
        let known = self.await_known_processes();
        let mut now = Instant::now();
        self.bring_up(known, now);
        loop {
            self.end_pass(now);
            if self.shutdown.is_some() && self.all_stopping_done() {
                return self.finish_shutdown();
            }
            self.publish_node_info();
            let input = self.wait()?;
            now = Instant::now();
            self.withdraw_node_info();
            self.on_input(input, now);
            // What else waits already joins this pass: a burst (the
            // spawner's answers to a start of thousands, one message per
            // process) is then one record write and one hand-off of
            // replies, not one per message. Bounded, so that replies do
            // not wait behind an endless stream.
            for _ in 1..PASS_INPUTS {
                match self.next_input(Duration::ZERO)? {
                    Input::Tick => break,
                    input => self.on_input(input, now),
                }
            }
        }
    }

    /// Takes node info's answer off the board before a pass that may
    /// change what it shows: io sends node info here until it is
    /// published again.
    fn withdraw_node_info(&mut self) {
        if self.node_info_published {
            self.node_info_published = false;
            self.links.node_info.publish(None);
        }
    }

    /// Publishes node info's answer, as the manager would give it now,
    /// for io to answer node info without details itself: once a pass
    /// (its replies out, the record written) answered one, so that a node
    /// nobody asks pays nothing for it. Not while shutting down.
    fn publish_node_info(&mut self) {
        if !std::mem::take(&mut self.node_info_asked) || self.shutdown.is_some() {
            return;
        }
        let payload = match self.node_info(false) {
            Body::Encoded(payload) => payload,
            Body::Message(payload) => {
                let mut encoded = Vec::new();
                if let Some(payload) = payload {
                    payload.encode(&mut encoded);
                }
                encoded.into()
            }
        };
        self.links.node_info.publish(Some(payload));
        self.node_info_published = true;
    }

    /// Re-adopts what the spawner `known` runs and the record wants, and
    /// brings every other service to its desired state (or its
    /// `autostart`).
    fn bring_up(&mut self, known: Vec<ms::known_processes::Process>, now: Instant) {
        self.adopt_cached_assignments(now);
        let outdated = self.readopt(known, now);
        // The cluster's instances start when the cluster confirms them.
        let ids: Vec<String> = self
            .registry
            .keys()
            .filter(|id| !self.cluster.has(id))
            .cloned()
            .collect();
        // Failed ones first, so that no autostart pulls them in again.
        for id in &ids {
            if self.registry[id].desired == Some(Wish::Failed) {
                let correlation = format!("record:{id}:{}", uuid::Uuid::new_v4().simple());
                self.drive(id, Event::GaveUpBefore, &correlation, now);
            }
        }
        for id in ids {
            let service = &self.registry[&id];
            let event = match (service.desired, service.is_enabled()) {
                (Some(Wish::Failed), _) => continue,
                (Some(Wish::Down), _) => Event::Stop,
                (Some(Wish::Up), _) | (None, true) => Event::Start,
                (None, false) => continue,
            };
            let correlation = format!("autostart:{id}:{}", uuid::Uuid::new_v4().simple());
            if event == Event::Start {
                self.start_with_requirements(&id, &correlation, false, now);
            } else {
                self.drive(&id, event, &correlation, now);
            }
        }
        for (id, index) in outdated {
            if self.registry[&id].desired != Some(Wish::Down) {
                log::info!(
                    "{id}.{index} was started from an older definition of {id}: restarting it"
                );
                let correlation = format!("readopt:{id}:{}", uuid::Uuid::new_v4().simple());
                self.apply(&id, index, Event::Restart, Some(&correlation), now);
            }
        }
    }

    /// Waits for the next input, or for the next deadline.
    fn wait(&self) -> Result<Input, ManagerError> {
        let timeout = self.next_deadline().map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        });
        self.next_input(timeout)
    }

    /// The next input, waiting up to `timeout` for one: `Tick` when none
    /// came (at once, for a zero `timeout`, when none is waiting).
    fn next_input(&self, timeout: Duration) -> Result<Input, ManagerError> {
        let from_io = &self.links.from_io;
        let from_spawner = &self.links.from_spawner;
        let from_daemon = &self.links.from_daemon;
        let tcp_results = &self.checks.tcp_results;
        let from_cluster = &self.from_cluster;
        Ok(select! {
            recv(from_io) -> event => {
                Input::Io(event.map_err(|_| ManagerError::LinkClosed { role: Role::Io })?)
            }
            recv(from_spawner) -> message => message.map_or(Input::SpawnerGone, Input::Spawner),
            recv(from_daemon) -> message => Input::Daemon(
                message.map_err(|_| ManagerError::LinkClosed { role: Role::Daemon })?,
            ),
            recv(from_cluster) -> message => message.map_or(Input::ClusterGone, Input::Cluster),
            recv(tcp_results) -> result => result.map_or(Input::TcpGone, Input::Tcp),
            default(timeout) => Input::Tick,
        })
    }

    /// One pass of the loop: handles `input` and the due timers, all at
    /// `now`, the one reading of the clock the pass's decisions use.
    fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Io(event) => {
                self.on_io(event, now);
                let more: Vec<IoEvent> = self.links.from_io.try_iter().take(64).collect();
                for event in more {
                    self.on_io(event, now);
                }
            }
            Input::Spawner(message) => {
                self.on_spawner(message, now);
                // A burst of starts or exits is one pass, so one write of
                // the state record, not one per process.
                let more: Vec<ms::Message> = self.links.from_spawner.try_iter().take(64).collect();
                for message in more {
                    self.on_spawner(message, now);
                }
            }
            Input::SpawnerGone => {
                if self.spawner_alive {
                    log::error!("the spawner's link closed");
                }
                self.spawner_alive = false;
                self.links.from_spawner = crossbeam_channel::never();
                for asked in self.asked.take_all() {
                    self.spawner_gone(asked, now);
                }
            }
            Input::Daemon(message) => self.on_daemon(message, now),
            Input::Cluster(message) => self.on_cluster(message, now),
            Input::ClusterGone => {
                log::error!("the cluster role's link closed");
                self.from_cluster = crossbeam_channel::never();
            }
            Input::Tcp(result) => self.tcp_checked(result, now),
            Input::TcpGone => self.checks.tcp_thread_gone(),
            Input::Tick => {}
        }
        self.on_timers(now);
    }

    /// What every pass ends with: held starts and stops move on, and what
    /// the pass produced goes out.
    fn end_pass(&mut self, now: Instant) {
        self.advance_holds(now);
        self.send_to_spawner();
        self.send_cluster_states();
        self.write_record_then_reply();
    }

    /// Writes the record, then hands the pass's replies to io: what a
    /// client is told (a service gave up, a start was taken) is on disk
    /// first, so a node killed right after telling it comes back to it.
    fn write_record_then_reply(&mut self) {
        self.save_record();
        self.flush_replies();
    }

    /// Handles one event from io and hands the replies it has at once to
    /// io: what a turn of [`Manager::run`] does with that event, for
    /// harnesses (fuzzers, property tests) that drive the manager's request
    /// path without its thread.
    pub fn handle_io(&mut self, event: IoEvent) {
        self.withdraw_node_info();
        self.on_io(event, Instant::now());
        self.send_to_spawner();
        self.flush_replies();
        self.publish_node_info();
    }

    /// Hands the pass's replies to io in one command, stamped with the time
    /// they leave: io records this hop with its own (the manager does not
    /// take the correlation table's lock for replies).
    fn flush_replies(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        // The next batch starts with this one's room, rather than growing
        // again from nothing.
        let room = Vec::with_capacity(self.outgoing.len());
        let mut replies = std::mem::replace(&mut self.outgoing, room);
        let now = now_unix_us();
        for reply in &mut replies {
            reply.sent_unix_us = now;
        }
        if let Err(error) = self.links.to_io.send(IoCommand::Replies(replies)) {
            log::warn!("cannot hand replies to io: {error}");
        }
    }

    fn reply(&mut self, connection: ConnectionId, message: public_api::Message, last: bool) {
        self.reply_encoded(connection, message, None, last);
    }

    /// Queues a reply whose payload, if `payload_bytes`, is encoded already.
    fn reply_encoded(
        &mut self,
        connection: ConnectionId,
        message: public_api::Message,
        payload_bytes: Option<Arc<[u8]>>,
        last: bool,
    ) {
        self.outgoing.push(ClientReply {
            connection,
            message,
            payload_bytes,
            last,
            sent_unix_us: 0,
        });
        if self.outgoing.len() >= REPLY_BATCH {
            self.flush_replies();
        }
    }

    fn answer(&mut self, connection: ConnectionId, correlation: String, result: Answer) {
        let (message, payload_bytes) = match result {
            Ok(Some((code, body))) => {
                let (payload, payload_bytes) = match body {
                    Body::Message(payload) => (payload, None),
                    Body::Encoded(bytes) => (None, Some(bytes)),
                };
                let message = public_api::Message {
                    code: code as i32,
                    correlation_id: Some(correlation),
                    payload,
                };
                (message, payload_bytes)
            }
            Ok(None) => return,
            Err(error) => {
                self.counters.error(error.kind);
                // The client reads why; a flood of refusals must not
                // flood the log at its default level.
                log::debug!("[{correlation}] request refused: {}", error.reason);
                (
                    error_reply(Some(correlation), error.kind, error.reason),
                    None,
                )
            }
        };
        self.reply_encoded(connection, message, payload_bytes, true);
    }

    fn on_io(&mut self, event: IoEvent, now: Instant) {
        match event {
            IoEvent::Requests(requests) => {
                for request in requests {
                    self.on_request(request, now);
                }
            }
            IoEvent::Closed(connection) => {
                self.log_reader.closed(connection);
                self.subscriptions.closed(connection);
                self.waiters.closed(connection);
                self.signals
                    .retain(|_, pending| pending.connection != connection);
                self.cluster.closed(connection);
            }
        }
    }

    /// Applies `event` to every instance of service `id`.
    fn drive(&mut self, id: &str, event: Event, correlation: &str, now: Instant) {
        let count = self
            .registry
            .get(id)
            .map_or(0, |service| service.instances.len());
        for index in 0..count {
            self.apply(id, index, event.clone(), Some(correlation), now);
        }
    }

    /// Applies `event` to one instance, carries out its effects and tells
    /// subscribers and waiters about a change.
    fn apply(
        &mut self,
        id: &str,
        index: usize,
        event: Event,
        correlation: Option<&str>,
        now: Instant,
    ) {
        let was_up = self.service_is_up(id);
        let Some(change) = self.registry.on_event(id, index, event, correlation, now) else {
            return;
        };
        if change.recorded {
            self.record_dirty.insert(id.to_owned());
        }
        for effect in change.effects {
            self.carry_out(id, index, effect, now);
        }
        if change.moved {
            self.cluster.note_change(id);
            self.sync_checks(id, index, now);
            self.publish(id, index);
            if was_up && !self.service_is_up(id) {
                self.requirement_lost(id, now);
            }
            self.settle_waiters(id, now);
            for dependent in self.registry.dependents(id) {
                self.settle_waiters(&dependent, now);
            }
            self.apply_replacement(id, now);
        }
    }

    fn carry_out(&mut self, id: &str, index: usize, effect: Effect, now: Instant) {
        let Some(service) = self.registry.get(id) else {
            return;
        };
        let correlation = service.operations[index].clone();
        let (message, asked) = match effect {
            Effect::Watch { pid } => (
                ms::Message::new(
                    ms::message::Code::AdoptProcess,
                    correlation,
                    ms::message::Payload::AdoptProcess(ms::AdoptProcess {
                        pid,
                        start_time: service.start_times[index].unwrap_or_default(),
                        service_id: Some(id.to_owned()),
                        instance: Some(index as u32),
                    }),
                ),
                Asked::Watch { pid },
            ),
            Effect::Spawn => (
                ms::Message::new(
                    ms::message::Code::StartProcess,
                    correlation,
                    ms::message::Payload::StartProcess(self.start_process(&service.config, index)),
                ),
                Asked::Start {
                    service: id.to_owned(),
                    index: index as u32,
                },
            ),
            Effect::Signal { pid, signal } => (
                signal_group(pid, signal, correlation),
                Asked::Signal { client: None },
            ),
        };
        self.ask_spawner(message, asked, now);
    }

    /// What was asked of a spawner that is gone fails at once.
    fn spawner_gone(&mut self, asked: Asked, now: Instant) {
        match asked {
            Asked::Start { service, index } => {
                log::error!("cannot start {service}.{index}: the spawner is gone");
                self.spawn_failed(
                    &service,
                    index as usize,
                    "the spawner is gone".to_owned(),
                    now,
                );
            }
            Asked::Watch { pid } => {
                self.lost_adopted(pid, "the spawner is gone, so nothing watches it", now);
            }
            Asked::Check { key } => {
                self.check_not_started(&key, "the spawner is gone".to_owned(), now);
            }
            Asked::Signal { client } => {
                self.signal_answered(client, Some("the spawner is gone".to_owned()));
            }
        }
    }

    /// The spawner answered one signal of a client's `ServiceSignal`
    /// (`refused` says why it did not send it); the client gets its answer
    /// with the last one: `Ack` and the service's status when every signal
    /// was sent, else an `Error` saying which were refused and why.
    fn signal_answered(&mut self, client: Option<String>, refused: Option<String>) {
        let Some(correlation) = client else {
            return;
        };
        let Some(pending) = self.signals.get_mut(&correlation) else {
            // Its connection closed.
            return;
        };
        pending.awaiting = pending.awaiting.saturating_sub(1);
        pending.refusals.extend(refused);
        if pending.awaiting > 0 {
            return;
        }
        let Some(pending) = self.signals.remove(&correlation) else {
            return;
        };
        let answer = if pending.refusals.is_empty() {
            let status = self.status_of(self.registry.get(&pending.service));
            Ok(Some((Code::Ack, Body::Encoded(status))))
        } else {
            Err(RequestError::new(
                Kind::SpawnFailed,
                format!(
                    "the spawner refused to signal {}: {}",
                    pending.service,
                    pending.refusals.join("; ")
                ),
            ))
        };
        self.answer(pending.connection, correlation, answer);
    }

    /// Queues the reloaded service table for the spawner, ahead of the
    /// starts it allows. It is not answered, so nothing is asked.
    fn send_service_table(&mut self, correlation: &str) {
        let message = ms::Message::new(
            ms::message::Code::ServiceTable,
            Some(correlation.to_owned()),
            ms::message::Payload::ServiceTable(service_table(&self.config)),
        );
        self.tracer.record(Role::Manager, Role::Spawner, &message);
        if self.spawner_alive {
            self.to_spawner.push_back(message);
            self.send_to_spawner();
        }
    }

    /// Hands queued requests to the spawner without waiting: the spawner
    /// waits when the manager's inbox is full (exit notices are never
    /// dropped), so the manager must never wait on it in turn. What does
    /// not fit is sent when the spawner's answers wake this loop again.
    fn send_to_spawner(&mut self) {
        while let Some(message) = self.to_spawner.pop_front() {
            match self.links.to_spawner.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(message)) => {
                    self.to_spawner.push_front(message);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    log::error!("the spawner's link closed");
                    self.spawner_alive = false;
                    self.to_spawner.clear();
                    return;
                }
            }
        }
    }

    /// The `StartProcess` for instance `index` of `config`, its settings
    /// with `{instance}` and `{id}` replaced.
    fn start_process(&self, config: &ServiceConfig, index: usize) -> ms::StartProcess {
        let config = &config.for_instance(index as u32);
        let log_dir = &self.config.node.log_dir;
        let output = |target: &Output, stream: &str| {
            let kind = match target {
                Output::Null => ms::output::Kind::Null,
                Output::Inherit => ms::output::Kind::Inherit,
                Output::Node => ms::output::Kind::Node,
                Output::LogDir | Output::Path(_) => ms::output::Kind::File,
            };
            ms::Output {
                kind: kind as i32,
                path: target
                    .path(&config.id, stream, index as u32, log_dir)
                    .map(|path| path.to_string_lossy().into_owned()),
                rotate_bytes: Some(config.log_max_bytes),
                keep: Some(config.log_keep),
            }
        };
        ms::StartProcess {
            environment: config
                .env
                .iter()
                .map(|(name, value)| ms::start_process::EnvItem {
                    name: Some(name.clone()),
                    value: Some(value.clone()),
                })
                .collect(),
            group_name: config.group.clone(),
            user_name: config.user.clone(),
            work_dir: work_dir_text(config),
            command: config.command.clone(),
            stdout: Some(output(&config.stdout, "stdout")),
            stderr: Some(output(&config.stderr, "stderr")),
            service_id: Some(config.id.clone()),
            instance: Some(index as u32),
            check: None,
            ready_fd: config.ready_fd(),
        }
    }

    fn on_spawner(&mut self, message: ms::Message, now: Instant) {
        let typed = ManagerSpawner::from_message(message.code, message.payload);
        self.on_spawner_message(message.correlation_id.as_deref(), typed, now);
    }

    /// Handles one message of the spawner's, as its type.
    fn on_spawner_message(
        &mut self,
        correlation: Option<&str>,
        message: Result<ManagerSpawner, BadMessage<ms::message::Code>>,
        now: Instant,
    ) {
        match message {
            Ok(ManagerSpawner::ProcessStarted(started)) => match self.asked.answered(correlation) {
                Some(Asked::Check { key }) => self.check_started(key, started.pid, now),
                Some(Asked::Start { service, index }) => {
                    log::info!("{service}.{index} started as pid {}", started.pid);
                    if let Some(entry) = self.registry.get_mut(&service) {
                        if let Some(slot) = entry.start_times.get_mut(index as usize) {
                            *slot = started.start_time;
                        }
                        if let Some(usage) = entry.usage.get_mut(index as usize) {
                            usage.started(InstanceCgroup::from_wire(&started.cgroup), now);
                        }
                    }
                    self.apply(
                        &service,
                        index as usize,
                        Event::Started { pid: started.pid },
                        None,
                        now,
                    );
                }
                asked => unexpected_answer(correlation, "ProcessStarted", asked),
            },
            Ok(ManagerSpawner::Error(error)) => {
                let reason = Some(error.reason)
                    .filter(|reason| !reason.is_empty())
                    .unwrap_or_else(|| "the spawner gave no reason".to_owned());
                match self.asked.answered(correlation) {
                    Some(Asked::Start { service, index }) => {
                        log::warn!("cannot start {service}.{index}: {reason}");
                        self.spawn_failed(&service, index as usize, reason, now);
                    }
                    Some(Asked::Watch { pid }) => self.lost_adopted(pid, &reason, now),
                    Some(Asked::Check { key }) => {
                        log::warn!("cannot start a check of {}.{}: {reason}", key.0, key.1);
                        self.check_not_started(&key, reason, now);
                    }
                    Some(Asked::Signal { client }) => {
                        log::warn!("the spawner refused a signal: {reason}");
                        self.signal_answered(client, Some(reason));
                    }
                    None => log::warn!(
                        "the spawner refused a request the manager does not await ({}): {reason}",
                        correlation.unwrap_or("no correlation id")
                    ),
                }
            }
            Ok(ManagerSpawner::Ack) => match self.asked.answered(correlation) {
                Some(Asked::Signal { client }) => self.signal_answered(client, None),
                Some(Asked::Watch { .. }) => {}
                asked => unexpected_answer(correlation, "Ack", asked),
            },
            Ok(ManagerSpawner::ProcessExited(exited)) => {
                let status = match (exited.exit_code, exited.exit_signal) {
                    (_, Some(signal)) => ExitStatus::Signal(signal),
                    (Some(code), None) => ExitStatus::Code(code),
                    (None, None) => ExitStatus::Unknown,
                };
                if self.check_exited(exited.pid, exited.exit_code, now) {
                    return;
                }
                if let Some((service, index)) = self.registry.by_pid(exited.pid) {
                    log::info!(
                        "{service}.{index} (pid {}) exited: {}",
                        exited.pid,
                        instance::describe_exit(status)
                    );
                    self.note_last_run(&service, index as usize, status, &exited, now);
                    self.apply(&service, index as usize, Event::Exited(status), None, now);
                }
            }
            Ok(ManagerSpawner::ProcessReady(ready)) => {
                if let Some((service, index)) = self.registry.by_pid(ready.pid) {
                    log::info!("{service}.{index} (pid {}) is ready", ready.pid);
                    let fd = match self.config.services.get(&service).map(|s| &s.ready.signal) {
                        Some(ReadySignal::Fd(fd)) => *fd,
                        _ => 0,
                    };
                    self.note(&service, index, format!("ready: it wrote to fd {fd}"));
                    self.apply(&service, index as usize, Event::Ready, None, now);
                }
            }
            Ok(ManagerSpawner::CgroupStatus(status)) => self.cgroups = Some(status),
            Ok(ManagerSpawner::LogMessage(entry)) => {
                let level = match entry.level {
                    1 => log::Level::Error,
                    2 => log::Level::Warn,
                    3 => log::Level::Info,
                    4 => log::Level::Debug,
                    _ => log::Level::Trace,
                };
                log::log!(target: "snow_fox::spawner", level, "{}: {}", entry.target, entry.text);
            }
            Ok(
                taken @ (ManagerSpawner::StartProcess(_)
                | ManagerSpawner::SignalProcess(_)
                | ManagerSpawner::ServiceTable(_)
                | ManagerSpawner::AdoptProcess(_)
                | ManagerSpawner::KnownProcesses(_)),
            ) => log::warn!(
                "ignoring the spawner's {}: the manager does not take it here",
                taken.code().as_str_name()
            ),
            Err(bad) => log::warn!("ignoring a malformed message from the spawner: {bad}"),
        }
    }

    /// Keeps what the ended run of `id`.`index` used, and says why it
    /// ended when it ran out of memory (the next Event's reason).
    fn note_last_run(
        &mut self,
        id: &str,
        index: usize,
        status: ExitStatus,
        exited: &ms::ProcessExited,
        now: Instant,
    ) {
        let Some(service) = self.registry.get_mut(id) else {
            return;
        };
        let memory_max = service.config.resources.limits.memory_max;
        let started_at = service.usage.get(index).and_then(|usage| usage.started_at);
        let run = LastRun {
            oom: exited.oom_kills.map(|_| memory_max),
            cpu_usec: exited.cpu_usec,
            peak_rss_bytes: exited.max_rss_bytes,
            ran: started_at.map(|at| now.saturating_duration_since(at)),
        };
        if let Some(usage) = service.usage.get_mut(index) {
            usage.cgroup = None;
            usage.oom_kills += u64::from(run.oom.is_some());
        }
        if let Some(instance) = service.instances.get_mut(index) {
            instance.last_run = Some(run);
        }
        if let Some(reason) = run.oom_reason(Some(status)) {
            log::warn!("{id}.{index} {reason}");
            self.note(id, index as u32, reason);
        }
    }

    /// An adopted process the spawner cannot watch: as good as ended, with
    /// its status unknown.
    fn lost_adopted(&mut self, pid: u32, reason: &str, now: Instant) {
        if let Some((service, index)) = self.registry.by_pid(pid) {
            log::warn!("{service}.{index} (adopted pid {pid}) is lost: {reason}");
            self.apply(
                &service,
                index as usize,
                Event::Exited(ExitStatus::Unknown),
                None,
                now,
            );
        }
    }

    fn spawn_failed(&mut self, id: &str, index: usize, reason: String, now: Instant) {
        self.apply(id, index, Event::SpawnFailed(reason), None, now);
    }

    fn on_daemon(&mut self, message: dm::Message, now: Instant) {
        let correlation = message.correlation_id.clone().unwrap_or_default();
        match dm::message::Code::try_from(message.code) {
            Ok(dm::message::Code::Shutdown) => {
                log::info!("[{correlation}] shutting down: stopping services");
                self.shutdown = Some(correlation.clone());
                for waiter in self.waiters.take_all() {
                    let error = RequestError::new(Kind::ShuttingDown, "the node is shutting down");
                    self.answer(waiter.connection, waiter.correlation, Err(error));
                }
                let stopping: Vec<String> = self
                    .registry
                    .values()
                    .filter(|service| service.config.on_node_exit == OnNodeExit::Stop)
                    .map(|service| service.config.id.clone())
                    .collect();
                for service in self.registry.values_mut() {
                    service.hold = None;
                }
                for id in stopping {
                    self.hold_stop(&id, &correlation);
                }
                self.advance_holds(now);
            }
            Ok(dm::message::Code::Reload) => {
                match self.reload(&correlation, now) {
                    Ok(_) => log::info!("[{correlation}] configuration reloaded"),
                    Err(error) => log::error!("[{correlation}] reload refused: {}", error.reason),
                }
                self.ack_daemon(&correlation);
            }
            Ok(dm::message::Code::Ack) => {
                log::warn!("ignoring the daemon's Ack: the manager asked it nothing");
            }
            Err(_) => log::warn!("ignoring unknown code {} from the daemon", message.code),
        }
    }

    fn ack_daemon(&mut self, correlation: &str) {
        let ack = dm::Message {
            code: dm::message::Code::Ack as i32,
            correlation_id: Some(correlation.to_owned()),
        };
        self.tracer.record(Role::Manager, Role::Daemon, &ack);
        // The daemon waits for this Ack; if it is gone there is nobody to tell.
        let _ = self.links.to_daemon.send(ack);
    }

    /// Whether every service that stops with the node has stopped (or no
    /// spawner is left to stop anything).
    fn all_stopping_done(&self) -> bool {
        !self.spawner_alive
            || self
                .registry
                .values()
                .filter(|service| service.config.on_node_exit == OnNodeExit::Stop)
                .all(|service| service.instances.iter().all(|i| i.state.is_down()))
    }

    fn finish_shutdown(mut self) -> Result<(), ManagerError> {
        let correlation = self.shutdown.clone().unwrap_or_default();
        self.write_record_then_reply();
        log::info!("[{correlation}] manager: services stopped, acknowledging shutdown");
        self.ack_daemon(&correlation);
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.registry
            .next_timer()
            .into_iter()
            .chain(self.waiters.next_deadline())
            .chain(self.checks.next_deadline())
            .chain(self.cluster.next_deadline())
            .min()
    }

    fn on_timers(&mut self, now: Instant) {
        for (id, index) in self.registry.take_due(now) {
            self.apply(&id, index, Event::TimerFired, None, now);
        }
        self.run_checks(now);
        for id in self.waiters.due(now) {
            self.settle_waiters(&id, now);
            let (expired, waiting): (Vec<Waiter>, Vec<Waiter>) = self
                .waiters
                .take(&id)
                .into_iter()
                .partition(|waiter| waiter.deadline <= now);
            self.waiters.put_back(&id, waiting, None);
            for waiter in expired {
                let error = RequestError::new(
                    Kind::Timeout,
                    format!("service `{id}` did not get there in time"),
                );
                self.answer(waiter.connection, waiter.correlation, Err(error));
            }
        }
        self.expire_cluster_requests(now);
    }

    /// Answers the waiters of service `id` whose goal is reached or lost.
    fn settle_waiters(&mut self, id: &str, now: Instant) {
        let Some(service) = self.registry.get(id) else {
            return;
        };
        let blocked = self.blocked_start(id);
        let held = service.hold.is_some();
        let log_dir = &self.config.node.log_dir;
        let mut settled = Vec::new();
        let mut waiting = self.waiters.take(id);
        let mut recheck = None;
        waiting.retain(|waiter| {
            let outcome = match (&blocked, waiter.goal) {
                (Some(reason), Goal::Up) => {
                    Outcome::Done(Err(RequestError::new(Kind::StartFailed, reason.clone())))
                }
                _ if held => Outcome::Pending(None),
                _ => waiter_outcome(service, waiter.goal, now, log_dir),
            };
            match outcome {
                Outcome::Done(outcome) => {
                    settled.push((
                        waiter.connection,
                        waiter.correlation.clone(),
                        waiter.along.clone(),
                        outcome,
                    ));
                    false
                }
                Outcome::Pending(at) => {
                    recheck = recheck.or(at);
                    true
                }
            }
        });
        self.waiters.put_back(id, waiting, recheck);
        for (connection, correlation, along, outcome) in settled {
            let result = outcome.map(|()| {
                let ids = std::iter::once(id).chain(along.iter().map(String::as_str));
                let services = ids.filter_map(|id| self.registry.get(id));
                Some((Code::Ack, Body::Encoded(self.status_of(services))))
            });
            self.answer(connection, correlation, result);
        }
    }

    fn publish(&mut self, id: &str, index: usize) {
        if self.subscriptions.is_empty() {
            return;
        }
        let Some(instance) = self.registry.get(id).and_then(|s| s.instances.get(index)) else {
            return;
        };
        let (exit_code, exit_signal) = match instance.last_exit {
            Some(ExitStatus::Code(code))
                if instance.state.is_down() || instance.state == State::Backoff =>
            {
                (Some(code), None)
            }
            Some(ExitStatus::Signal(signal))
                if instance.state.is_down() || instance.state == State::Backoff =>
            {
                (None, Some(signal))
            }
            _ => (None, None),
        };
        let event = public_api::Event {
            service_id: id.to_owned(),
            index: index as u32,
            state: instance.state.as_str().to_owned(),
            pid: instance.pid,
            at_unix_ms: self.clock.unix_ms(instance.since),
            exit_code,
            exit_signal,
            reason: Some(instance.reason.clone()),
            oom: (exit_code.is_some() || exit_signal.is_some())
                .then(|| instance.last_run.and_then(|run| run.oom).map(|_| true))
                .flatten(),
        };
        // Encoded once for every subscriber (there may be hundreds).
        let mut encoded = Vec::new();
        Payload::Event(event).encode(&mut encoded);
        let encoded: Arc<[u8]> = encoded.into();
        let subscriptions = std::mem::take(&mut self.subscriptions);
        for (connection, correlation) in subscriptions.iter() {
            let message = public_api::Message {
                code: Code::Event as i32,
                correlation_id: Some(correlation.to_owned()),
                payload: None,
            };
            self.reply_encoded(connection, message, Some(encoded.clone()), false);
        }
        self.subscriptions = subscriptions;
    }
}

/// A request's answer: a code and payload now, nothing yet, or an error.
type Answer = Result<Option<(Code, Body)>, RequestError>;

/// A reply's payload: as a message, or encoded already (field key
/// included), for replies the manager keeps encoded.
#[derive(Debug)]
enum Body {
    Message(Option<Payload>),
    Encoded(Arc<[u8]>),
}

impl Service {
    /// Whether it starts with the node.
    fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(self.config.autostart)
    }

    /// The correlation id of what drives its instances now ("" if none),
    /// for work the node does on their behalf.
    fn current_operation(&self) -> String {
        self.operations
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default()
    }

    fn new(config: ServiceConfig, version: String, now: Instant) -> Self {
        let count = config.instances as usize;
        Service {
            version,
            desired: None,
            enabled: None,
            start_times: vec![None; count],
            instances: (0..config.instances)
                .map(|index| Instance::new(index, now))
                .collect(),
            operations: vec![None; count],
            replacement: None,
            hold: None,
            notes: vec![None; count],
            status_entry: EntryCache::default(),
            usage: (0..count).map(|_| Usage::default()).collect(),
            config,
        }
    }
}

/// Where a waiter stands.
enum Outcome {
    /// Its goal is reached (`Ok`) or lost (`Err`).
    Done(Result<(), RequestError>),
    /// Still ahead; look again at this instant, or on the next change.
    Pending(Option<Instant>),
}

/// Whether a waiter's goal is reached or lost. A start is lost when an
/// instance did not get running and ready: it backs off, gave up, or
/// exited unsuccessfully; with `ready = "started"` an instance counts as
/// started once it has run for its `start_grace`.
/// A `SignalProcess` of `pid`'s process group.
fn signal_group(pid: u32, signal: i32, correlation: Option<String>) -> ms::Message {
    ms::Message::new(
        ms::message::Code::SignalProcess,
        correlation,
        ms::message::Payload::SignalProcess(ms::SignalProcess {
            pid,
            signal,
            group: Some(true),
        }),
    )
}

/// Logs an answer of the spawner's that does not fit what it answers.
fn unexpected_answer(correlation: Option<&str>, answer: &str, asked: Option<Asked>) {
    log::warn!(
        "ignoring the spawner's {answer} ({}): it answers {}",
        correlation.unwrap_or("no correlation id"),
        match asked {
            Some(asked) => format!("{asked:?}"),
            None => "nothing the manager awaits".to_owned(),
        }
    );
}

fn waiter_outcome(service: &Service, goal: Goal, now: Instant, log_dir: &Path) -> Outcome {
    let instances = &service.instances;
    if goal == Goal::Down {
        return if instances.iter().all(|i| i.state.is_down()) {
            Outcome::Done(Ok(()))
        } else {
            Outcome::Pending(None)
        };
    }
    let config = &service.config;
    let mut recheck = None;
    let mut pending = false;
    for instance in instances {
        let failed = match instance.state {
            State::Failed | State::Backoff => true,
            State::Exited => instance.last_exit != Some(ExitStatus::Code(0)),
            State::Running => {
                let settled_at = instance.since + config.start_grace;
                let grace = config.ready.signal == ReadySignal::Started && !instance.adopted;
                if grace && settled_at > now {
                    recheck = Some(recheck.map_or(settled_at, |at: Instant| at.min(settled_at)));
                    pending = true;
                }
                false
            }
            State::Starting | State::Stopping | State::Stopped => {
                pending = true;
                false
            }
        };
        if failed {
            let mut reason = format!(
                "{}.{} did not start: {}",
                config.id, instance.index, instance.reason
            );
            let stderr = config
                .stderr
                .path(&config.id, "stderr", instance.index, log_dir);
            if let Some(tail) = stderr
                .as_deref()
                .and_then(|path| crate::conf::paths::tail_lines(path, STDERR_LINES))
            {
                reason.push_str(&format!("; its stderr ends: {}", tail.join(" | ")));
            }
            return Outcome::Done(Err(RequestError::new(Kind::StartFailed, reason)));
        }
    }
    if pending {
        Outcome::Pending(recheck)
    } else {
        Outcome::Done(Ok(()))
    }
}
