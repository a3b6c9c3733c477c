//! Privilege separation: a root process becomes a root spawner process
//! and an unprivileged node process, joined by two socketpairs (one per
//! protocol: `manager_spawner` and `daemon_spawner`).
//!
//! The root process binds the node's socket first (so a socket in a
//! directory only root can write, such as `/run/snow-fox`, works), gives
//! it to the node's user, then starts the spawner process: its own binary
//! executed afresh ([`SPAWNER_FLAG`]) with the spawner's ends of the two
//! links as inherited descriptors named on its command line, and nothing
//! else of the node's (every other descriptor, the listening socket
//! included, is close-on-exec). It then drops to the configured user for
//! good and carries on as the node process; the listener it bound stays
//! its own. A fresh exec, rather than a bare fork, means the root side
//! holds no copy of the node's memory and can be started alone, as the
//! tests that play a compromised node do.
//!
//! The spawner process keeps root and runs the spawner role on its main
//! thread with its channels bridged to the sockets (`bridge.rs`), and
//! exits when the role ends. What it logs goes to the stderr both
//! processes share. Its service table is its own
//! ([`TableSource::OwnConfig`]): built from the configuration it loads
//! itself from the conf dir, and read again from there on each reload,
//! never taken from the node, which a compromise of the unprivileged side
//! could otherwise turn into "allow anything". Its record of what it
//! started is in `spawner_state_dir`, which only root can write.
//!
//! When the node process dies, both links reach EOF: the spawner stops
//! carrying out starts still queued (nobody would learn of them), the
//! role sees its daemon channel close, leaves its services running and
//! the spawner process exits. When the spawner process dies, the node's
//! daemon link reader sees EOF and ends, which the daemon treats as the
//! end of the spawner role.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::bounded;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::bridge::{spawn_reader, spawn_writer};
use super::{DAEMON_LINK, DaemonError, MANAGER_SPAWNER};
use crate::conf::Config;
use crate::manager::service_table;
use crate::spawner::{self, Spawner, SpawnerError, SpawnerInbox, SpawnerLinks, TableSource};
use crate::sys::{self, UserIds};
use crate::trace::Tracer;

/// The command-line flag that makes `snow-fox` the spawner process:
/// `snow-fox --spawner-process --conf DIR --manager-fd N --daemon-fd M
/// [--node-gid G]`,
/// with N and M the spawner's ends of the manager_spawner and
/// daemon_spawner socketpairs. Whoever runs it gets a spawner with their
/// own rights, nothing more.
pub const SPAWNER_FLAG: &str = "--spawner-process";

/// The node's side of a split: the spawner process and its two links.
#[derive(Debug)]
pub(super) struct SpawnerProcess {
    /// The spawner process's pid.
    pub(super) pid: u32,
    /// The `manager_spawner` socket.
    pub(super) manager_link: UnixStream,
    /// The `daemon_spawner` socket.
    pub(super) daemon_link: UnixStream,
}

/// The node's user when this process is root and `node.toml` names a
/// `user` (process mode); otherwise (`None`) the spawner will be a thread.
pub(super) fn node_user(config: &Config) -> Result<Option<(String, UserIds)>, DaemonError> {
    let Some(user) = config.node.user.as_deref() else {
        log::info!("spawner mode: thread (node.toml names no `user`)");
        return Ok(None);
    };
    if sys::effective_uid() != 0 {
        log::warn!(
            "spawner mode: thread (not started as root, so `user = \"{user}\"` is not applied)"
        );
        return Ok(None);
    }
    let ids = spawner::resolve_user(user, config.node.group.as_deref()).map_err(|source| {
        DaemonError::NodeUser {
            user: user.to_owned(),
            source,
        }
    })?;
    if ids.uid == 0 {
        return Err(DaemonError::RootNodeUser {
            user: user.to_owned(),
        });
    }
    Ok(Some((user.to_owned(), ids)))
}

/// Creates the directories the node process works in and that do not
/// exist yet (the socket's and the state dir), owned by its user.
pub(super) fn prepare_node_dirs(
    config: &Config,
    socket_path: &Path,
    ids: UserIds,
) -> Result<(), DaemonError> {
    if let Some(dir) = socket_path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        create_node_dir(dir, ids)?;
    }
    create_node_dir(&config.node.state_dir, ids)
}

/// Starts the spawner process (root, like this one) on `conf_dir`, then
/// drops this process to `user` for good. Call it before any thread
/// starts: the drop changes only the calling thread's ids in the kernel.
pub(super) fn split(
    conf_dir: &Path,
    user: &str,
    ids: UserIds,
) -> Result<SpawnerProcess, DaemonError> {
    let failed = |doing| move |source| DaemonError::Split { doing, source };
    let (manager_link, spawner_manager_link) =
        UnixStream::pair().map_err(failed("create the manager_spawner socketpair"))?;
    let (daemon_link, spawner_daemon_link) =
        UnixStream::pair().map_err(failed("create the daemon_spawner socketpair"))?;
    let conf_dir = fs::canonicalize(conf_dir).map_err(failed("resolve the conf dir"))?;
    let program = std::env::current_exe().map_err(failed("find its own binary"))?;
    let mut command = Command::new(program);
    command
        .arg(SPAWNER_FLAG)
        .arg("--conf")
        .arg(&conf_dir)
        .arg("--manager-fd")
        .arg(spawner_manager_link.as_raw_fd().to_string())
        .arg("--daemon-fd")
        .arg(spawner_daemon_link.as_raw_fd().to_string())
        .arg("--node-gid")
        .arg(ids.gid.to_string());
    for link in [&spawner_manager_link, &spawner_daemon_link] {
        sys::pass_fd(&mut command, link.as_fd(), link.as_raw_fd());
    }
    let child = command
        .spawn()
        .map_err(failed("start the spawner process"))?;
    let pid = child.id();
    drop((spawner_manager_link, spawner_daemon_link));
    sys::drop_privileges(ids.uid, ids.gid).map_err(|source| DaemonError::DropPrivileges {
        user: user.to_owned(),
        uid: ids.uid,
        gid: ids.gid,
        source,
    })?;
    log::info!(
        "spawner mode: process, pid {pid} (root); the node process runs as {user} \
         (uid {}, gid {}) and cannot regain root",
        ids.uid,
        ids.gid
    );
    Ok(SpawnerProcess {
        pid,
        manager_link,
        daemon_link,
    })
}

/// Creates `dir` (mode 0700) owned by the node's user, for the node to
/// work in; missing parents are created as usual (0755, root's). An
/// existing directory is left as it is: it may be shared (`/tmp`), and its
/// owner chose its rights.
fn create_node_dir(dir: &Path, ids: UserIds) -> Result<(), DaemonError> {
    if dir.exists() {
        return Ok(());
    }
    let failed = |source| DaemonError::NodeDir {
        path: dir.to_owned(),
        source,
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(failed)?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    std::os::unix::fs::chown(dir, Some(ids.uid), Some(ids.gid)).map_err(failed)
}

/// What the spawner process was started with ([`SPAWNER_FLAG`]).
#[derive(Debug, Clone)]
pub struct SpawnerProcessOptions {
    /// The configuration directory it reads itself.
    pub conf_dir: PathBuf,
    /// Its end of the manager_spawner socketpair.
    pub manager_fd: i32,
    /// Its end of the daemon_spawner socketpair.
    pub daemon_fd: i32,
    /// The unprivileged node's group, given read access to the log dir's
    /// files so that the node can serve them (none: only root reads them).
    pub node_gid: Option<u32>,
}

/// The spawner process: loads the configuration itself, runs the spawner
/// role over the two links until it ends, and returns the exit code.
pub fn run_spawner_process(options: &SpawnerProcessOptions) -> i32 {
    match serve_spawner(options) {
        Ok(()) => 0,
        Err(ServeError::Setup(error)) => {
            log::error!("spawner process: {error}");
            1
        }
        Err(ServeError::Role(SpawnerError::DaemonChannelClosed { .. })) => {
            log::warn!(
                "spawner process: the node process is gone (its link closed); \
                 leaving services running and exiting"
            );
            1
        }
        Err(ServeError::Role(error)) => {
            log::error!("spawner process: {error}");
            1
        }
    }
}

enum ServeError {
    Setup(DaemonError),
    Role(SpawnerError),
}

fn serve_spawner(options: &SpawnerProcessOptions) -> Result<(), ServeError> {
    let link = |fd, doing| {
        sys::take_inherited_socket(fd)
            .map(|fd: OwnedFd| UnixStream::from(fd))
            .map_err(|source| ServeError::Setup(DaemonError::Split { doing, source }))
    };
    let manager_link = link(options.manager_fd, "take the manager_spawner link")?;
    let daemon_link = link(options.daemon_fd, "take the daemon_spawner link")?;
    let config = Config::load(&options.conf_dir)
        .map_err(|error| ServeError::Setup(DaemonError::Config(error)))?;
    if let Err(error) = sys::set_process_name("sf-spawner") {
        log::warn!("spawner process: cannot name itself: {error}");
    }
    if let Err(error) = sys::become_child_subreaper() {
        log::warn!("cannot become a child subreaper; orphans of services go to init: {error}");
    }
    let setup = |doing| move |source| ServeError::Setup(DaemonError::Split { doing, source });
    // SIGINT from a terminal and SIGTERM to the process group reach this
    // process too; the node process decides what they mean, so here they
    // only set a flag nobody reads. SIGCHLD is the spawner role's own.
    let ignored = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT, SIGHUP] {
        signal_hook::flag::register(signal, ignored.clone())
            .map_err(setup("install the spawner process's signal handlers"))?;
    }
    let inbox = SpawnerInbox::new().map_err(setup("create the spawner's poll"))?;
    let (from_manager_tx, from_manager) = inbox.channel(MANAGER_SPAWNER);
    let (to_manager, to_manager_rx) = bounded(MANAGER_SPAWNER);
    let (from_daemon_tx, from_daemon) = inbox.channel(DAEMON_LINK);
    let (to_daemon, to_daemon_rx) = bounded(DAEMON_LINK);
    let clone = |link: &UnixStream| {
        link.try_clone()
            .map_err(setup("duplicate a link socket for its reader"))
    };
    let hangup_watch = clone(&manager_link)?;
    spawn_reader(
        "sf-link-ms-in",
        clone(&manager_link)?,
        from_manager_tx,
        None,
        None,
    )
    .map_err(setup("start a link reader"))?;
    spawn_reader(
        "sf-link-ds-in",
        clone(&daemon_link)?,
        from_daemon_tx,
        None,
        None,
    )
    .map_err(setup("start a link reader"))?;
    let writer = spawn_writer(
        "sf-link-out",
        (to_manager_rx, manager_link),
        (to_daemon_rx, daemon_link),
    )
    .map_err(setup("start the link writer"))?;
    let record_dir = config.node.spawner_state_dir.clone();
    // Its own table, whose hops are lost: the node's link readers record
    // what crosses to the node.
    let spawner = Spawner::new(
        SpawnerLinks {
            inbox,
            from_manager,
            to_manager,
            from_daemon,
            to_daemon,
            manager_socket: Some(OwnedFd::from(hangup_watch)),
        },
        Tracer::new(1),
        TableSource::OwnConfig {
            config: Box::new(config),
            build_table: service_table,
        },
        &record_dir,
    )
    .map(|spawner| match options.node_gid {
        Some(gid) => spawner.with_log_reader(gid),
        None => spawner,
    })
    .map_err(ServeError::Role);
    let result = spawner.and_then(|spawner| spawner.run().map_err(ServeError::Role));
    // The role's senders are gone with it: the writer sends what is
    // queued (the `Ack` of a shutdown) and ends.
    if writer.join().is_err() {
        log::error!("spawner process: the link writer panicked");
    }
    result
}
