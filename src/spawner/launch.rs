//! Turning one `StartProcess` into a running child.
//!
//! Everything that can fail by itself is settled before the fork: the
//! user and group are resolved to ids, the work dir is checked, and each
//! captured output stream gets a pipe whose read end the log keeper has
//! taken (having opened the stream's file; see `keeper`). The child then only
//! calls `setsid` (see [`crate::sys::start_in_new_session`]), writes its
//! own stat line to its intent in the spawner's record, joins its cgroup,
//! sets its rlimits and drops to its user as `setgroups` → `setgid` →
//! `setuid` ([`crate::sys::prepare_child`]) before exec. It owns nothing that
//! lasts: the caller keeps the pid, and the child's `Child` handle is
//! dropped unwaited because the spawner reaps with `waitpid(-1)`.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::keeper::link::KeeperLink;
use crate::wire::proto::log_keeper as lk;
use crate::wire::proto::manager_spawner::{self as ms, output::Kind};
use crate::{conf, sys};

/// The `PATH` every child starts with, before its own items.
pub(super) use conf::host::BASE_PATH;

/// Rotated files kept when a rotating output does not say.
const DEFAULT_KEEP: u32 = 1;

/// Where a child's captured streams go: the keeper that takes their
/// pipes, and the node's log dir (whose files the keeper handles with its
/// own rights).
pub(super) struct Capture<'a> {
    /// The link to the log keeper.
    pub(super) keeper: &'a mut KeeperLink,
    /// The node's log dir.
    pub(super) log_dir: &'a Path,
    /// The group that may read the log dir's files (the node process's).
    pub(super) reader_gid: Option<u32>,
    /// How fast the streams are read, as the service table gives it.
    pub(super) max_rate: Option<u64>,
}

/// A started child.
#[derive(Debug)]
pub(super) struct Launched {
    /// Its pid, which is also its session and process group id.
    pub(super) pid: u32,
    /// The read end of its readiness pipe, when it was given one.
    pub(super) ready_pipe: Option<File>,
}

/// Starts the process `request` describes, in its own session, its
/// outputs from `capture`, with `setup`'s cgroups and rlimits (its ids are
/// filled in here); the child appends its own stat line to `intent`, if
/// given, before it execs.
pub(super) fn launch(
    request: &ms::StartProcess,
    intent: Option<BorrowedFd<'_>>,
    capture: &mut Capture<'_>,
    mut setup: sys::ChildSetup,
) -> Result<Launched, LaunchError> {
    let (program, args) = request
        .command
        .split_first()
        .ok_or(LaunchError::EmptyCommand)?;
    let credentials = resolve_credentials(
        present(request.user_name.as_deref()),
        present(request.group_name.as_deref()),
    )?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", BASE_PATH)
        .stdin(Stdio::null());
    // What systemd gives a service, before the service's own variables,
    // which may replace them.
    let run_as = conf::host::RunAs {
        uid: credentials.map_or_else(sys::effective_uid, |ids| ids.uid),
        gid: credentials.map_or_else(sys::effective_gid, |ids| ids.gid),
    };
    if let Ok(Some(account)) = sys::lookup_account(run_as.uid) {
        command
            .env("HOME", account.home)
            .env("USER", &account.name)
            .env("LOGNAME", &account.name)
            .env("SHELL", account.shell);
    }
    if let Some(service) = present(request.service_id.as_deref()) {
        command.env("SNOW_FOX_SERVICE", service).env(
            "SNOW_FOX_INSTANCE",
            request.instance.unwrap_or(0).to_string(),
        );
    }
    for item in &request.environment {
        command.env(env_name(item)?, item.value.as_deref().unwrap_or(""));
    }
    if let Some(dir) = present(request.work_dir.as_deref()) {
        check_work_dir(Path::new(dir), run_as)?;
        command.current_dir(dir);
    }
    check_rlimits(&setup.rlimits)?;
    setup.ids = credentials;
    let owner = credentials.unwrap_or(sys::UserIds {
        uid: sys::effective_uid(),
        gid: sys::effective_gid(),
    });
    let stdout = open_output(Stream::Stdout, request, owner, capture)?;
    let stderr = open_output(Stream::Stderr, request, owner, capture)?;
    command.stdout(stdout).stderr(stderr);
    sys::start_in_new_session(&mut command);
    if let Some(intent) = intent {
        sys::record_own_stat_before_exec(&mut command, intent);
    }
    sys::prepare_child(&mut command, setup);
    let ready_pipe = match request.ready_fd {
        Some(fd) => Some(ready_pipe(&mut command, fd)?),
        None => None,
    };
    let child = command.spawn().map_err(|source| LaunchError::Exec {
        program: program.clone(),
        source,
    })?;
    // Dropping the write end (the child holds its own copy) lets the read
    // end see EOF once the child closes it or ends.
    Ok(Launched {
        pid: child.id(),
        ready_pipe: ready_pipe.map(|(reader, _writer)| reader),
    })
}

/// Refuses, before the fork, a hard limit above the spawner's own when it
/// cannot raise one: the child's `setrlimit` would fail with a bare EPERM.
fn check_rlimits(limits: &[sys::Rlimit]) -> Result<(), LaunchError> {
    for limit in limits {
        let own = sys::getrlimit(limit.resource).map_err(|source| LaunchError::Rlimit {
            name: sys::rlimit_name(limit.resource),
            reason: format!("reading the node's own: {source}"),
        })?;
        if limit.hard > own.1 && !sys::has_capability(sys::CAP_SYS_RESOURCE) {
            let shown = |value: u64| {
                if value == sys::RLIM_INFINITY {
                    "infinity".to_owned()
                } else {
                    value.to_string()
                }
            };
            return Err(LaunchError::Rlimit {
                name: sys::rlimit_name(limit.resource),
                reason: format!(
                    "hard limit {} is above the node's own ({}), and raising it needs \
                     CAP_SYS_RESOURCE, which the node lacks",
                    shown(limit.hard),
                    shown(own.1)
                ),
            });
        }
    }
    Ok(())
}

/// A pipe whose write end the child gets as `fd`; both ends close on exec
/// in every other child. Whatever the child had at `fd` is replaced: the
/// node opens everything close-on-exec, so nothing the program needs. (Were
/// `fd` free in the node, std's own exec-error pipe could land there and an
/// exec failure would look like a start and an exit; a running node holds
/// its low fds, so the readiness fds used in practice, 3 and up, are taken.)
fn ready_pipe(command: &mut Command, fd: u32) -> Result<(File, OwnedFd), LaunchError> {
    let target = i32::try_from(fd)
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or(LaunchError::BadReadyFd { fd })?;
    let (reader, writer) = sys::pipe().map_err(|source| LaunchError::ReadyPipe { source })?;
    sys::pass_fd(command, writer.as_fd(), target);
    Ok((File::from(reader), writer))
}

/// An optional string field, with "" meaning absent.
pub(super) fn present(field: Option<&str>) -> Option<&str> {
    field.filter(|value| !value.is_empty())
}

/// Resolves the user and group to run as ([`conf::host::run_as`], which
/// the configuration check uses too). A user without a group runs in the
/// user's primary group; a group without a user runs as the node's own
/// user. With ids the child clears its supplementary groups
/// (`setgroups(0)`, as root) before `setgid` and `setuid`
/// ([`sys::prepare_child`]), so its only group is `gid`. Neither given:
/// the child keeps the node's credentials.
fn resolve_credentials(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<sys::UserIds>, LaunchError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let ids = conf::host::run_as(user, group).map_err(|reason| LaunchError::Account { reason })?;
    // Else the child's setgid would fail and read as a failed exec.
    if let Some(reason) = conf::host::cannot_switch(ids) {
        return Err(LaunchError::Account { reason });
    }
    Ok(Some(ids))
}

fn env_name(item: &ms::start_process::EnvItem) -> Result<&str, LaunchError> {
    let name = item.name.as_deref().unwrap_or("");
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(LaunchError::BadEnvName {
            name: name.to_owned(),
        });
    }
    Ok(name)
}

/// Checks that the child, as `run_as`, will be able to enter `dir`: a
/// `chdir` that fails in the child would be reported as a failed exec of
/// the program, naming the wrong thing.
fn check_work_dir(dir: &Path, run_as: conf::host::RunAs) -> Result<(), LaunchError> {
    let refused = |source| LaunchError::WorkDir {
        path: dir.to_owned(),
        source,
    };
    match conf::host::enterable(dir, run_as) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(refused(io::Error::new(
            io::ErrorKind::PermissionDenied,
            why,
        ))),
        Err(source) => Err(refused(source)),
    }
}

/// A child's output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// Where `stream` of `request` goes. Without an `Output` the stream is
/// inherited from the node. A captured stream (a file, or the node's
/// stderr in container mode) is the write end of a pipe whose read end the
/// log keeper took; its file is opened with `owner`'s rights (see
/// `keeper::file`).
fn open_output(
    stream: Stream,
    request: &ms::StartProcess,
    owner: sys::UserIds,
    capture: &mut Capture<'_>,
) -> Result<Stdio, LaunchError> {
    let output = match stream {
        Stream::Stdout => request.stdout.as_ref(),
        Stream::Stderr => request.stderr.as_ref(),
    };
    let Some(output) = output else {
        return Ok(Stdio::inherit());
    };
    let (destination, path) = match Kind::try_from(output.kind) {
        Ok(Kind::Null) => return Ok(Stdio::null()),
        Ok(Kind::Inherit) => return Ok(Stdio::inherit()),
        Ok(Kind::Node) => (lk::add_stream::Destination::Node, None),
        Ok(Kind::File) => {
            let path = present(output.path.as_deref())
                .map(PathBuf::from)
                .ok_or(LaunchError::OutputWithoutPath { stream })?;
            (lk::add_stream::Destination::File, Some(path))
        }
        Err(_) => {
            return Err(LaunchError::UnknownOutputKind {
                stream,
                kind: output.kind,
            });
        }
    };
    let failed = |reason| LaunchError::Capture {
        stream,
        path: path.clone(),
        reason,
    };
    let (reader, writer) =
        sys::pipe().map_err(|error| failed(format!("creating its pipe: {error}")))?;
    let add = lk::AddStream {
        service_id: request.service_id.clone().unwrap_or_default(),
        instance: request.instance.unwrap_or_default(),
        stream: stream.to_string(),
        destination: destination as i32,
        path: path
            .as_ref()
            .map(|path| path.to_string_lossy().into_owned()),
        uid: Some(owner.uid),
        gid: Some(owner.gid),
        max_bytes: output.rotate_bytes,
        keep: Some(output.keep.unwrap_or(DEFAULT_KEEP)),
        trusted_dir: Some(capture.log_dir.to_string_lossy().into_owned()),
        reader_gid: capture.reader_gid,
        max_rate: capture.max_rate,
    };
    capture
        .keeper
        .add_stream(add, reader.as_fd())
        .map_err(failed)?;
    Ok(Stdio::from(writer))
}

/// Why a process could not be started. Its Display is the `Error` reason
/// sent to the manager.
#[derive(Debug)]
pub(super) enum LaunchError {
    /// `command` has no program.
    EmptyCommand,
    /// The user or group does not exist (and is not a number), a numeric
    /// user has no primary group, or the databases could not be read.
    Account { reason: String },
    /// An environment item's name is empty or holds `=` or NUL.
    BadEnvName { name: String },
    /// The work dir is missing, unreadable or not a directory.
    WorkDir { path: PathBuf, source: io::Error },
    /// A FILE output without a path.
    OutputWithoutPath { stream: Stream },
    /// An output kind this spawner does not know.
    UnknownOutputKind { stream: Stream, kind: i32 },
    /// The log keeper could not take a captured stream (its file could
    /// not or must not be opened, or the keeper was not reachable).
    Capture {
        stream: Stream,
        path: Option<PathBuf>,
        reason: String,
    },
    /// fork, the child's setup, or exec failed.
    Exec { program: String, source: io::Error },
    /// A readiness fd that would replace the child's stdin, stdout or
    /// stderr.
    BadReadyFd { fd: u32 },
    /// Creating the readiness pipe.
    ReadyPipe { source: io::Error },
    /// An rlimit the child could not be given.
    Rlimit { name: String, reason: String },
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchError::EmptyCommand => f.write_str("the command is empty: no program to run"),
            LaunchError::Account { reason } => f.write_str(reason),
            LaunchError::BadEnvName { name } => write!(
                f,
                "environment variable name {name:?} is empty or contains `=` or NUL"
            ),
            LaunchError::WorkDir { path, source } => {
                write!(f, "chdir to work dir {}: {source}", path.display())
            }
            LaunchError::OutputWithoutPath { stream } => {
                write!(f, "{stream} goes to a FILE but has no path")
            }
            LaunchError::UnknownOutputKind { stream, kind } => {
                write!(f, "{stream} has unknown output kind {kind}")
            }
            LaunchError::Capture {
                stream,
                path: Some(path),
                reason,
            } => write!(f, "capturing {stream} into {}: {reason}", path.display()),
            LaunchError::Capture {
                stream,
                path: None,
                reason,
            } => write!(f, "capturing {stream} for the node's stderr: {reason}"),
            LaunchError::Exec { program, source } => write!(f, "exec {program}: {source}"),
            LaunchError::BadReadyFd { fd } => write!(
                f,
                "readiness fd {fd} would replace the child's stdin, stdout or stderr; expected 3 or more"
            ),
            LaunchError::ReadyPipe { source } => {
                write!(f, "creating the readiness pipe: {source}")
            }
            LaunchError::Rlimit { name, reason } => write!(f, "limits.{name}: {reason}"),
        }
    }
}

impl std::error::Error for LaunchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LaunchError::WorkDir { source, .. }
            | LaunchError::Exec { source, .. }
            | LaunchError::ReadyPipe { source } => Some(source),
            LaunchError::EmptyCommand
            | LaunchError::Account { .. }
            | LaunchError::BadEnvName { .. }
            | LaunchError::OutputWithoutPath { .. }
            | LaunchError::Capture { .. }
            | LaunchError::UnknownOutputKind { .. }
            | LaunchError::BadReadyFd { .. }
            | LaunchError::Rlimit { .. } => None,
        }
    }
}
