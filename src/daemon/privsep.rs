//! Privilege separation: the split of one root process into a root
//! spawner process and an unprivileged node process, joined by two
//! socketpairs (one per protocol: `manager_spawner` and `daemon_spawner`).
//!
//! The split happens before any thread starts, so both sides of the fork
//! are single-threaded copies and may go on running Rust code. The parent
//! becomes the node process and drops to the configured user; the child
//! is the spawner process, which keeps root, runs the spawner role on its
//! main thread with its channels bridged to the sockets (`bridge.rs`),
//! and exits when the role ends. What it logs goes to the stderr both
//! processes share. Its service table is its own
//! ([`TableSource::OwnConfig`]): built from the configuration the fork
//! copied, and read again from the conf dir as root on each reload, never
//! taken from the node, which a compromise of the unprivileged side could
//! otherwise turn into "allow anything".
//!
//! When the node process dies, both links reach EOF: the spawner role
//! sees its daemon channel close, leaves its services running and the
//! spawner process exits. When the spawner process dies, the node's
//! daemon link reader sees EOF and ends, which the daemon treats as the
//! end of the spawner role.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crossbeam_channel::bounded;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::bridge::{spawn_reader, spawn_writer};
use super::{DAEMON_LINK, DaemonError, MANAGER_SPAWNER};
use crate::conf::Config;
use crate::manager::service_table;
use crate::spawner::{self, Spawner, SpawnerError, SpawnerLinks, TableSource};
use crate::sys::{self, Forked, UserIds};
use crate::trace::Tracer;

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

/// Splits off the spawner process when this process is root and
/// `node.toml` names a `user`; otherwise (`None`) the spawner will be a
/// thread. Must be called before any thread starts. Only the node
/// process returns: the spawner process exits when its role ends.
pub(super) fn split(
    config: &Config,
    socket_path: &Path,
) -> Result<Option<SpawnerProcess>, DaemonError> {
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
    if let Some(dir) = socket_path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        create_node_dir(dir, ids)?;
    }
    create_node_dir(&config.node.state_dir, ids)?;
    let pair = |link| {
        UnixStream::pair().map_err(|source| DaemonError::Split {
            doing: link,
            source,
        })
    };
    let (manager_link, spawner_manager_link) = pair("create the manager_spawner socketpair")?;
    let (daemon_link, spawner_daemon_link) = pair("create the daemon_spawner socketpair")?;
    let forked = sys::fork_single_threaded().map_err(|source| DaemonError::Split {
        doing: "fork the spawner process",
        source,
    })?;
    let pid = match forked {
        Forked::Child => {
            drop((manager_link, daemon_link));
            run_spawner_process(
                spawner_manager_link,
                spawner_daemon_link,
                config.clone(),
                ids.gid,
            )
        }
        Forked::Parent { child } => child,
    };
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
    Ok(Some(SpawnerProcess {
        pid,
        manager_link,
        daemon_link,
    }))
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

/// The spawner process: runs the spawner role over the two links, with
/// its service table built from `config`, until it ends, then exits.
fn run_spawner_process(
    manager_link: UnixStream,
    daemon_link: UnixStream,
    config: Config,
    node_gid: u32,
) -> ! {
    let code = match serve_spawner(manager_link, daemon_link, config, node_gid) {
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
    };
    std::process::exit(code)
}

enum ServeError {
    Setup(DaemonError),
    Role(SpawnerError),
}

fn serve_spawner(
    manager_link: UnixStream,
    daemon_link: UnixStream,
    config: Config,
    node_gid: u32,
) -> Result<(), ServeError> {
    if let Err(error) = sys::set_process_name("sf-spawner") {
        log::warn!("spawner process: cannot name itself: {error}");
    }
    if let Err(error) = sys::become_child_subreaper() {
        log::warn!("cannot become a child subreaper; orphans of services go to init: {error}");
    }
    let setup = |doing| move |source| ServeError::Setup(DaemonError::Split { doing, source });
    // SIGINT from a terminal and SIGTERM to the process group reach this
    // process too; the node process decides what they mean.
    let mut signals = Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP])
        .map_err(setup("install the spawner process's signal handlers"))?;
    let (child_exited_tx, child_exited) = bounded(1);
    std::thread::Builder::new()
        .name("sf-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGCHLD {
                    // A full channel already holds a notice; the spawner
                    // reaps everything on each one.
                    let _ = child_exited_tx.try_send(());
                } else {
                    log::debug!("spawner process: signal {signal} left to the node process");
                }
            }
        })
        .map_err(setup("start the spawner process's signal thread"))?;

    let (from_manager_tx, from_manager) = bounded(MANAGER_SPAWNER);
    let (to_manager, to_manager_rx) = bounded(MANAGER_SPAWNER);
    let (from_daemon_tx, from_daemon) = bounded(DAEMON_LINK);
    let (to_daemon, to_daemon_rx) = bounded(DAEMON_LINK);
    let clone = |link: &UnixStream| {
        link.try_clone()
            .map_err(setup("duplicate a link socket for its reader"))
    };
    spawn_reader(
        "sf-link-ms-in",
        clone(&manager_link)?,
        from_manager_tx,
        None,
    )
    .map_err(setup("start a link reader"))?;
    spawn_reader("sf-link-ds-in", clone(&daemon_link)?, from_daemon_tx, None)
        .map_err(setup("start a link reader"))?;
    let writers = [
        spawn_writer("sf-link-ms-out", to_manager_rx, manager_link),
        spawn_writer("sf-link-ds-out", to_daemon_rx, daemon_link),
    ];
    let writers = writers
        .into_iter()
        .collect::<io::Result<Vec<_>>>()
        .map_err(setup("start a link writer"))?;
    // Its own table, whose hops are lost: the node's link readers record
    // what crosses to the node.
    let spawner = Spawner::new(
        SpawnerLinks {
            from_manager,
            to_manager,
            from_daemon,
            to_daemon,
            child_exited,
        },
        Tracer::new(1),
        TableSource::OwnConfig {
            config: Box::new(config),
            build_table: service_table,
        },
    )
    .with_log_reader(node_gid);
    let result = spawner.run();
    // The role's senders are gone with it: the writers send what is
    // queued (the `Ack` of a shutdown) and end.
    for writer in writers {
        if writer.join().is_err() {
            log::error!("spawner process: a link writer panicked");
        }
    }
    result.map_err(ServeError::Role)
}
