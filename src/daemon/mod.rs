//! The daemon role: owns the process. It loads the configuration, binds the
//! socket, creates every channel and starts the io, manager and spawner
//! threads (and the cluster thread, for a node with `[cluster]`, after
//! refusing a node name a live node holds), turns signals into actions (SIGTERM/SIGINT shut down, SIGHUP
//! reloads; the spawner takes SIGCHLD itself), notices a role that ended, and
//! runs the ordered shutdown of `protocol.md` §5: `Shutdown` to the manager
//! and wait for its `Ack` (or its end), then `Shutdown` to the spawner and
//! wait likewise, then stop io. Each wait is bounded. Before any role
//! starts it sends the spawner the service table (`ServiceTable`), the
//! first thing the spawner reads; reloaded tables are the manager's to send.
//! A spawner process ignores both and builds its table itself (see
//! `privsep.rs`).
//!
//! It is the only module that knows every role, because it joins them;
//! [`Loopback`] joins io's per-connection state to a manager without
//! sockets or threads, for fuzzers and property tests.
//! It runs on the main thread; if it dies, the process ends.
//!
//! # Two modes
//!
//! - **Thread** (not root, or no `user` in node.toml): every role is a
//!   thread of one process. Threads share credentials, so the spawner
//!   thread is no privilege boundary.
//! - **Process** (root with `user`): before any thread starts, the process
//!   splits (`privsep.rs`). The **parent is the node process** (daemon, io,
//!   manager), which drops to `user`; the **child is the spawner process**,
//!   which keeps root and is its services' parent and child subreaper. The
//!   node keeps the pid its supervisor started: that pid gets SIGTERM and
//!   SIGHUP, and its exit code is the node's outcome, so nothing changes
//!   for whoever runs it; the root process is the one that cannot be
//!   signalled by the unprivileged one. `ps` shows an unprivileged
//!   `snow-fox` and its root child `sf-spawner`. The manager_spawner and
//!   daemon_spawner links are then two socketpairs, one per protocol, each
//!   carrying only that protocol's frames, bridged to the same channels
//!   (`bridge.rs`); the node-side readers record in the correlation table
//!   the hops the spawner process sent. If the spawner process dies, the
//!   daemon link reaches EOF, which ends the spawner role as a dead thread
//!   would: ordered shutdown, exit code 3. If the node process dies, the
//!   spawner process sees EOF, leaves its services running and exits.
//!
//! Directories: the node process binds the socket after dropping root, so
//! the socket's directory and the state directory, when they do not exist
//! yet, are created by the root process before the split (mode 0700,
//! owned by the node's user); existing ones are left as they are. The log
//! directory stays root's: service output files are opened by the
//! spawner process.

mod bridge;
mod loopback;
mod privsep;
mod roles;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cluster::{Cluster, ClusterError, ClusterLinks, cached_assignments};
use crate::conf::{Config, ConfigError, paths};
use crate::io::{BoundSocket, Io, IoError, IoSettings, ListenError};
use crate::manager::{ClusterLink, Manager, ManagerLinks, NodeIdentity, service_table};
use crate::spawner::{Spawner, SpawnerError, SpawnerInbox, SpawnerLinks, TableSource, UserError};
use crate::sys;
use crate::trace::{Role, Tracer};
use crate::wire::link::{IoCommand, IoSender, NodeInfoBoard, WakingSender};
use crate::wire::proto::{daemon_manager as dm, daemon_spawner as ds};
pub use loopback::Loopback;
pub use privsep::{SPAWNER_FLAG, SpawnerProcessOptions, run_spawner_process};
use roles::RoleThreads;

/// Capacity of the io → manager channel, in batches (each a whole read
/// pass's requests, so a few suffice; io keeps a backlog beyond it).
const IO_TO_MANAGER: usize = 64;
/// Capacity of each manager ↔ spawner channel, in messages. Bounded
/// channels allocate every slot up front (a `StartProcess` slot is a few
/// hundred bytes), so this is resident memory; the manager queues beyond it
/// and the spawner waits for room.
const MANAGER_SPAWNER: usize = 256;
/// Capacity of each daemon link, in messages.
const DAEMON_LINK: usize = 16;
/// Capacity of each manager ↔ cluster channel, in messages.
const MANAGER_CLUSTER: usize = 64;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The configuration directory.
    pub conf_dir: PathBuf,
    /// The socket path, overriding `node.toml` and the default.
    pub socket: Option<PathBuf>,
    /// The node's name, overriding `node.toml`.
    pub name: Option<String>,
}

/// How the node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Shut down as asked, every role acknowledged: exit code 0.
    Clean,
    /// A role died or failed; the rest was shut down: exit code 3.
    RoleFailed,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Clean => 0,
            Outcome::RoleFailed => 3,
        }
    }
}

/// Why the node could not start.
#[derive(Debug)]
pub enum DaemonError {
    /// The configuration does not load.
    Config(ConfigError),
    /// The socket cannot be bound.
    Listen(ListenError),
    /// The io thread cannot be set up.
    Io(IoError),
    /// Signal handlers cannot be installed.
    Signals(io::Error),
    /// A role thread cannot be started.
    Thread {
        /// Which role.
        role: Role,
        /// The OS error.
        source: io::Error,
    },
    /// The node's `user` or `group` cannot be resolved.
    NodeUser {
        /// The configured user.
        user: String,
        /// Why.
        source: UserError,
    },
    /// The spawner cannot start (its record cannot be opened).
    Spawner(SpawnerError),
    /// The node's `user` is root, which would separate nothing.
    RootNodeUser {
        /// The configured user.
        user: String,
    },
    /// A directory the node process works in cannot be created for it.
    NodeDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The spawner process cannot be split off.
    Split {
        /// What failed, e.g. "fork the spawner process".
        doing: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The cluster role cannot start (or the node's name is taken).
    Cluster(ClusterError),
    /// The node process cannot drop to its user.
    DropPrivileges {
        /// The configured user.
        user: String,
        /// Its uid.
        uid: u32,
        /// The group id.
        gid: u32,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(error) => write!(f, "invalid configuration:\n{error}"),
            DaemonError::Listen(error) => error.fmt(f),
            DaemonError::Io(error) => error.fmt(f),
            DaemonError::Signals(error) => write!(f, "cannot install signal handlers: {error}"),
            DaemonError::Thread { role, source } => {
                write!(f, "cannot start the {} thread: {source}", role.as_str())
            }
            DaemonError::Spawner(error) => error.fmt(f),
            DaemonError::NodeUser { user, source } => {
                write!(f, "node.toml: cannot run the node as `{user}`: {source}")
            }
            DaemonError::RootNodeUser { user } => write!(
                f,
                "node.toml: `user = \"{user}\"` is root; name an unprivileged user for the node"
            ),
            DaemonError::NodeDir { path, source } => write!(
                f,
                "cannot create {} for the node's user: {source}",
                path.display()
            ),
            DaemonError::Split { doing, source } => {
                write!(f, "privilege separation: cannot {doing}: {source}")
            }
            DaemonError::Cluster(error) => error.fmt(f),
            DaemonError::DropPrivileges {
                user,
                uid,
                gid,
                source,
            } => write!(
                f,
                "cannot drop the node process to user {user} (uid {uid}, gid {gid}): {source}"
            ),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Config(error) => Some(error),
            DaemonError::Listen(error) => Some(error),
            DaemonError::Io(error) => Some(error),
            DaemonError::Signals(error)
            | DaemonError::Thread { source: error, .. }
            | DaemonError::NodeDir { source: error, .. }
            | DaemonError::Split { source: error, .. }
            | DaemonError::DropPrivileges { source: error, .. } => Some(error),
            DaemonError::NodeUser { source, .. } => Some(source),
            DaemonError::Cluster(error) => error.source(),
            DaemonError::Spawner(error) => Some(error),
            DaemonError::RootNodeUser { .. } => None,
        }
    }
}

/// Why the node is shutting down.
enum StopReason {
    Signal(&'static str),
    Requested,
    RoleEnded,
}

/// The daemon's ends of its links.
struct Links {
    signals: Receiver<i32>,
    to_manager: Sender<dm::Message>,
    from_manager: Receiver<dm::Message>,
    to_spawner: WakingSender<ds::Message>,
    from_spawner: Receiver<ds::Message>,
    to_io: IoSender,
}

/// Runs the node until it shuts down.
pub fn run(options: NodeOptions) -> Result<Outcome, DaemonError> {
    let mut config = Config::load_checked(&options.conf_dir).map_err(DaemonError::Config)?;
    if let Some(name) = options.name {
        config.node.name = name;
    }
    let socket_path = options
        .socket
        .or_else(|| config.node.socket.clone())
        .unwrap_or_else(paths::default_socket_path);
    let node_user = privsep::node_user(&config)?;
    let node_ids = node_user.as_ref().map(|(_, ids)| *ids);
    // Before the socket binds, so that a signal sent once the socket
    // answers is never met by the default action; signals wait in its pipe.
    let mut signal_source =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(DaemonError::Signals)?;
    let own_uid = node_ids.map_or_else(sys::effective_uid, |ids| ids.uid);
    let settings = IoSettings::from_node(&config.node, own_uid).map_err(DaemonError::Io)?;
    if let Some(ids) = node_ids {
        privsep::prepare_node_dirs(&config, &socket_path, ids)?;
    }
    // Still root in process mode: the socket may live where only root
    // can write; it is then given to the node's user.
    let socket =
        BoundSocket::bind(&socket_path, &settings.access, node_ids).map_err(DaemonError::Listen)?;
    // Before any thread starts, so that the drop to the node's user
    // covers every thread of the node process.
    let spawner_process = match &node_user {
        Some((user, ids)) => Some(privsep::split(&options.conf_dir, user, *ids)?),
        None => None,
    };
    log::info!(
        "node {} starting: configuration {} ({}), {} services",
        config.node.name,
        config.effective_version,
        config.node.label,
        config.services.len()
    );
    if spawner_process.is_none()
        && let Err(error) = sys::become_child_subreaper()
    {
        log::warn!("cannot become a child subreaper; orphans of services go to init: {error}");
    }
    let tracer = Tracer::bounded(config.node.trace_capacity, config.node.trace_memory);
    let shutdown_wait = config.node.shutdown_timeout
        + config
            .services
            .values()
            .map(|service| service.stop_timeout)
            .max()
            .unwrap_or_default();

    let (io_to_manager, manager_from_io) = bounded(IO_TO_MANAGER);
    let inbox = SpawnerInbox::new().map_err(|source| DaemonError::Thread {
        role: Role::Spawner,
        source,
    })?;
    let (manager_to_spawner, spawner_from_manager) = inbox.channel(MANAGER_SPAWNER);
    let (spawner_to_manager, manager_from_spawner) = bounded(MANAGER_SPAWNER);
    let (to_manager, manager_from_daemon) = bounded(DAEMON_LINK);
    let (manager_to_daemon, from_manager) = bounded(DAEMON_LINK);
    let (to_spawner, spawner_from_daemon) = inbox.channel(DAEMON_LINK);
    let (spawner_to_daemon, from_spawner) = bounded(DAEMON_LINK);
    let (signal_tx, signals) = bounded(16);

    let node_info = NodeInfoBoard::default();
    let (io, to_io) = Io::new(socket, settings, io_to_manager, tracer.clone(), &node_info)
        .map_err(DaemonError::Io)?;

    let signal_handle = signal_source.handle();
    let signal_thread = std::thread::Builder::new()
        .name("sf-signals".into())
        .spawn(move || {
            for signal in signal_source.forever() {
                if signal_tx.send(signal).is_err() {
                    return;
                }
            }
        })
        .map_err(DaemonError::Signals)?;

    let (cluster, cluster_link) = cluster_role(&config, &tracer)?;
    let identity = identity(&config, spawner_process.as_ref().map(|process| process.pid));
    // The first thing the spawner reads, before any request it checks.
    let table = ds::Message {
        code: ds::message::Code::ServiceTable as i32,
        correlation_id: None,
        payload: Some(ds::message::Payload::ServiceTable(service_table(&config))),
    };
    tracer.record(Role::Daemon, Role::Spawner, &table);
    to_spawner
        .try_send(table)
        .expect("no spawner runs yet, and the new channel holding its receiver has room");
    let spawner_pid = spawner_process.as_ref().map(|process| process.pid);
    let mut roles = RoleThreads::new();
    // Set when the ordered shutdown begins: links that end after that end
    // in order, and a bridge takes no action on them.
    let ending = Arc::new(AtomicBool::new(false));
    let spawner_links = SpawnerLinks {
        inbox,
        from_manager: spawner_from_manager,
        to_manager: spawner_to_manager,
        from_daemon: spawner_from_daemon,
        to_daemon: spawner_to_daemon,
        manager_socket: None,
    };
    match spawner_process {
        None => {
            let spawner = Spawner::new(
                spawner_links,
                tracer.clone(),
                TableSource::FromLinks,
                &config.node.spawner_state_dir,
            )
            .map_err(DaemonError::Spawner)?;
            roles.spawn(Role::Spawner, move || spawner.run())?;
        }
        Some(process) => {
            bridge_spawner_process(process, spawner_links, &tracer, &mut roles, &ending)?;
        }
    }
    let manager = Manager::new(
        ManagerLinks {
            from_io: manager_from_io,
            to_io: to_io.clone(),
            from_daemon: manager_from_daemon,
            to_daemon: manager_to_daemon,
            from_spawner: manager_from_spawner,
            to_spawner: manager_to_spawner,
            cluster: cluster_link,
            node_info,
        },
        tracer.clone(),
        config,
        identity,
    );
    roles.spawn(Role::Manager, move || manager.run())?;
    roles.spawn(Role::Io, move || io.run())?;
    if let Some(cluster) = cluster {
        roles.spawn(Role::Cluster, move || cluster.run())?;
    }

    let links = Links {
        signals,
        to_manager,
        from_manager,
        to_spawner,
        from_spawner,
        to_io,
    };
    let (reason, correlation) = serve(&links, &mut roles, &tracer);
    // From here on links end because the roles do, in order.
    ending.store(true, Ordering::Release);
    let failed_before = matches!(reason, StopReason::RoleEnded);
    match reason {
        StopReason::Signal(name) => log::info!("[{correlation}] {name} received: shutting down"),
        StopReason::Requested => log::info!("[{correlation}] shutdown requested by a client"),
        StopReason::RoleEnded => log::error!("[{correlation}] a role ended: shutting down"),
    }
    let clean = shutdown(&links, &mut roles, &tracer, &correlation, shutdown_wait);
    // Its link is closed, so it is exiting: reap it rather than leave a
    // zombie for init. A spawner process still holding its link is left.
    if let Some(pid) = spawner_pid
        && !roles.is_running(Role::Spawner)
    {
        match sys::wait_for_child(pid) {
            Ok(status) => log::info!("[{correlation}] spawner process {pid} ended: {status:?}"),
            Err(error) => log::warn!("[{correlation}] cannot reap spawner process {pid}: {error}"),
        }
    }
    signal_handle.close();
    if signal_thread.join().is_err() {
        log::error!("the signal thread panicked");
    }
    let outcome = if clean && !failed_before && roles.all_ended_well() {
        Outcome::Clean
    } else {
        Outcome::RoleFailed
    };
    log::info!("[{correlation}] node stopped");
    Ok(outcome)
}

/// The cluster role and the manager's end of its link, for a node with
/// `[cluster]`; refuses a node name a live node holds.
fn cluster_role(
    config: &Config,
    tracer: &Tracer,
) -> Result<(Option<Cluster>, Option<ClusterLink>), DaemonError> {
    let Some(cluster_config) = config.node.cluster.clone() else {
        return Ok((None, None));
    };
    let (to_cluster, from_manager) = bounded(MANAGER_CLUSTER);
    let (to_manager, from_cluster) = bounded(MANAGER_CLUSTER);
    let mut cluster = Cluster::new(
        ClusterLinks {
            from_manager,
            to_manager,
        },
        tracer.clone(),
        cluster_config,
        config.node.name.clone(),
        config.node.state_dir.clone(),
    )
    .map_err(DaemonError::Cluster)?;
    cluster.check_name().map_err(DaemonError::Cluster)?;
    let link = ClusterLink {
        from_cluster,
        to_cluster,
        cached: cached_assignments(&config.node.state_dir),
    };
    Ok((Some(cluster), Some(link)))
}

/// Puts the spawner process where the spawner thread would be: its ends of
/// the channels are bridged to the two link sockets. The daemon link's
/// reader stands for the spawner role: it ends when the spawner process
/// closes the link (EOF), exits or dies.
fn bridge_spawner_process(
    process: privsep::SpawnerProcess,
    links: SpawnerLinks,
    tracer: &Tracer,
    roles: &mut RoleThreads,
    ending: &Arc<AtomicBool>,
) -> Result<(), DaemonError> {
    let link_thread = |source| DaemonError::Thread {
        role: Role::Spawner,
        source,
    };
    let recorder = |to| bridge::Recorder {
        tracer: tracer.clone(),
        from: Role::Spawner,
        to,
    };
    let manager_reader = process.manager_link.try_clone().map_err(link_thread)?;
    let daemon_reader = process.daemon_link.try_clone().map_err(link_thread)?;
    let daemon_sibling = process.daemon_link.try_clone().map_err(link_thread)?;
    bridge::spawn_writer(
        "sf-link-out",
        (links.from_manager.into_inner(), process.manager_link),
        (links.from_daemon.into_inner(), process.daemon_link),
    )
    .map_err(link_thread)?;
    // Without its manager link the spawner process can start and stop
    // nothing: that link's end ends the daemon link too, which is the
    // spawner role's end, and the daemon runs the ordered shutdown.
    bridge::spawn_reader(
        "sf-link-ms-in",
        manager_reader,
        links.to_manager,
        Some(recorder(Role::Manager)),
        Some(bridge::Sibling {
            socket: daemon_sibling,
            unless: ending.clone(),
        }),
    )
    .map_err(link_thread)?;
    let recorder = recorder(Role::Daemon);
    let pid = process.pid;
    roles.spawn(Role::Spawner, move || {
        // Either end (EOF, or the daemon gone) is the role's end.
        let _ended = bridge::read_frames(daemon_reader, &links.to_daemon, Some(&recorder))?;
        log::info!("the spawner process (pid {pid}) closed its link");
        Ok::<(), bridge::LinkError>(())
    })
}

/// Serves until something asks for a shutdown; returns why, with the
/// correlation id the shutdown runs under.
fn serve(links: &Links, roles: &mut RoleThreads, tracer: &Tracer) -> (StopReason, String) {
    loop {
        select! {
            recv(links.signals) -> signal => match signal {
                Ok(SIGHUP) => {
                    let reload = dm::Message {
                        code: dm::message::Code::Reload as i32,
                        correlation_id: Some(internal_id("sighup")),
                    };
                    log::info!("[{}] SIGHUP received: reloading the configuration", reload.correlation_id.as_deref().unwrap_or_default());
                    tracer.record(Role::Daemon, Role::Manager, &reload);
                    if links.to_manager.send(reload).is_err() {
                        log::warn!("cannot reload: the manager is gone");
                    }
                }
                Ok(SIGINT) => return (StopReason::Signal("SIGINT"), internal_id("sigint")),
                Ok(_) | Err(_) => return (StopReason::Signal("SIGTERM"), internal_id("sigterm")),
            },
            recv(roles.ended()) -> ended => {
                if let Ok(ended) = ended {
                    roles.note(&ended);
                }
                return (StopReason::RoleEnded, internal_id("role-ended"));
            }
            recv(links.from_manager) -> message => match message {
                Ok(message) => match dm::message::Code::try_from(message.code) {
                    Ok(dm::message::Code::Shutdown) => {
                        let id = message.correlation_id.unwrap_or_else(|| internal_id("shutdown"));
                        return (StopReason::Requested, id);
                    }
                    Ok(dm::message::Code::Ack) => log::debug!("manager: Ack ({})", message.correlation_id.unwrap_or_default()),
                    Ok(dm::message::Code::Reload) | Err(_) => log::warn!(
                        "ignoring the manager's code {}: the daemon does not take it",
                        message.code
                    ),
                },
                Err(_) => return (StopReason::RoleEnded, internal_id("role-ended")),
            },
            recv(links.from_spawner) -> message => {
                if message.is_err() {
                    return (StopReason::RoleEnded, internal_id("role-ended"));
                }
            }
        }
    }
}

/// The ordered shutdown. Returns whether every role acknowledged in time.
fn shutdown(
    links: &Links,
    roles: &mut RoleThreads,
    tracer: &Tracer,
    correlation: &str,
    manager_wait: Duration,
) -> bool {
    let manager_order = dm::Message {
        code: dm::message::Code::Shutdown as i32,
        correlation_id: Some(correlation.to_owned()),
    };
    let manager_acked = roles.is_running(Role::Manager)
        && {
            tracer.record(Role::Daemon, Role::Manager, &manager_order);
            links.to_manager.send(manager_order).is_ok()
        }
        && await_ack(
            roles,
            &links.from_manager,
            Role::Manager,
            correlation,
            manager_wait,
        );
    if manager_acked {
        log::info!("[{correlation}] manager acknowledged shutdown");
    } else {
        log::warn!("[{correlation}] manager did not acknowledge shutdown");
    }

    let spawner_order = ds::Message {
        code: ds::message::Code::Shutdown as i32,
        correlation_id: Some(correlation.to_owned()),
        payload: None,
    };
    let spawner_acked = roles.is_running(Role::Spawner)
        && {
            tracer.record(Role::Daemon, Role::Spawner, &spawner_order);
            links.to_spawner.send(spawner_order).is_ok()
        }
        && await_ack(
            roles,
            &links.from_spawner,
            Role::Spawner,
            correlation,
            ROLE_WAIT,
        );
    if spawner_acked {
        log::info!("[{correlation}] spawner acknowledged shutdown");
    } else {
        log::warn!("[{correlation}] spawner did not acknowledge shutdown");
    }

    if links.to_io.send(IoCommand::Stop).is_err() {
        log::warn!("[{correlation}] io had already stopped");
    }
    let ended = roles.await_all(Instant::now() + ROLE_WAIT);
    if !ended {
        log::warn!("[{correlation}] a role did not end in time; exiting anyway");
    }
    manager_acked && spawner_acked && ended
}

/// How long a role may take to acknowledge or end, beyond service stops.
const ROLE_WAIT: Duration = Duration::from_secs(5);

/// Waits for `role`'s `Ack` of `correlation`, or its end, until `wait`
/// has passed. Roles that end meanwhile are noted.
fn await_ack<M: crate::wire::Envelope>(
    roles: &mut RoleThreads,
    acks: &Receiver<M>,
    role: Role,
    correlation: &str,
    wait: Duration,
) -> bool {
    let deadline = Instant::now() + wait;
    let is_ack =
        |message: &M| message.code_name() == "Ack" && message.correlation() == Some(correlation);
    loop {
        let ended = roles.ended().clone();
        select! {
            recv(acks) -> message => match message {
                Ok(message) if is_ack(&message) => return true,
                Ok(_) => {}
                Err(_) => return false,
            },
            recv(ended) -> ended => {
                if let Ok(ended) = ended {
                    roles.note(&ended);
                    if ended.role == role {
                        // A role acks, then ends: both may be ready at once.
                        return acks.try_iter().any(|message| is_ack(&message));
                    }
                }
            }
            recv(crossbeam_channel::at(deadline)) -> _ => return false,
        }
    }
}

/// What the node says about itself: its name and this build.
/// What the node says about itself; `spawner_pid` is the spawner process's
/// in process mode.
fn identity(config: &Config, spawner_pid: Option<u32>) -> NodeIdentity {
    let effective_uid = sys::effective_uid();
    NodeIdentity {
        name: config.node.name.clone(),
        commit: env!("SNOW_FOX_GIT_COMMIT").to_owned(),
        taint: env!("SNOW_FOX_GIT_TAINT").to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        spawner_mode: spawner_pid
            .map_or_else(|| "thread".to_owned(), |pid| format!("process, pid {pid}")),
        user: match (spawner_pid, &config.node.user) {
            (Some(_), Some(name)) => format!("{name} (uid {effective_uid})"),
            _ => format!("uid {effective_uid}"),
        },
    }
}

/// A correlation id for a sequence the node starts itself.
fn internal_id(what: &str) -> String {
    format!("{what}:{}", uuid::Uuid::new_v4().simple())
}
