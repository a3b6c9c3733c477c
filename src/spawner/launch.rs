//! Turning one `StartProcess` into a running child.
//!
//! Everything that can fail by itself is settled before the child is
//! cloned: the user and group are resolved to ids, the work dir is
//! checked, the environment, argv and the paths to exec (the `PATH`
//! search) are built, and each captured output stream gets a pipe whose
//! read end the log keeper has taken (having opened the stream's file; see
//! `keeper`). The child, which shares the spawner's memory until its exec
//! ([`crate::sys::spawn`]: no copy of the node's page tables, however big
//! the node), then only takes its stdio, enters its work dir, calls
//! `setsid`, writes its own stat line to its intent in the spawner's
//! record, joins its cgroup, sets its rlimits and drops to its user as
//! `setgroups` → `setgid` → `setuid` before exec. It owns nothing that
//! lasts: the caller keeps the pid, and the spawner reaps with
//! `waitpid(-1)`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

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
    let program = request.command.first().ok_or(LaunchError::EmptyCommand)?;
    let exec_error = |source| LaunchError::Exec {
        program: program.clone(),
        source,
    };
    let credentials = resolve_credentials(
        present(request.user_name.as_deref()),
        present(request.group_name.as_deref()),
    )?;
    let mut env = BTreeMap::new();
    env.insert("PATH", BASE_PATH.to_owned());
    // What systemd gives a service, before the service's own variables,
    // which may replace them.
    let run_as = conf::host::RunAs {
        uid: credentials.map_or_else(sys::effective_uid, |ids| ids.uid),
        gid: credentials.map_or_else(sys::effective_gid, |ids| ids.gid),
    };
    if let Ok(Some(account)) = sys::lookup_account(run_as.uid) {
        env.insert("HOME", account.home);
        env.insert("USER", account.name.clone());
        env.insert("LOGNAME", account.name);
        env.insert("SHELL", account.shell);
    }
    if let Some(service) = present(request.service_id.as_deref()) {
        env.insert("SNOW_FOX_SERVICE", service.to_owned());
        env.insert(
            "SNOW_FOX_INSTANCE",
            request.instance.unwrap_or(0).to_string(),
        );
    }
    for item in &request.environment {
        env.insert(env_name(item)?, item.value.clone().unwrap_or_default());
    }
    let work_dir = match present(request.work_dir.as_deref()) {
        Some(dir) => {
            check_work_dir(Path::new(dir), run_as)?;
            Some(c_string(dir).map_err(exec_error)?)
        }
        None => None,
    };
    check_rlimits(&setup.rlimits)?;
    setup.ids = credentials;
    let owner = credentials.unwrap_or(sys::UserIds {
        uid: sys::effective_uid(),
        gid: sys::effective_gid(),
    });
    let stdin = open_null(false).map_err(exec_error)?;
    let stdout = open_output(Stream::Stdout, request, owner, capture)?;
    let stderr = open_output(Stream::Stderr, request, owner, capture)?;
    let (ready_pipe, pass) = match request.ready_fd {
        Some(fd) => {
            let (reader, writer, target) = ready_pipe(fd)?;
            (Some(reader), Some((writer, target)))
        }
        None => (None, None),
    };
    let plan = sys::ChildPlan {
        programs: exec_paths(program, env.get("PATH").map_or("", String::as_str))
            .map_err(exec_error)?,
        args: request
            .command
            .iter()
            .map(|arg| c_string(arg))
            .collect::<io::Result<_>>()
            .map_err(exec_error)?,
        env: env
            .iter()
            .map(|(name, value)| c_string(&format!("{name}={value}")))
            .collect::<io::Result<_>>()
            .map_err(exec_error)?,
        stdio: [Some(stdin), stdout, stderr],
        work_dir,
        stat_to: intent,
        pass,
        setup,
    };
    let pid = sys::spawn(&plan).map_err(exec_error)?;
    // Dropping the plan closes the write end of the readiness pipe (the
    // child holds its own copy), so the read end sees EOF once the child
    // closes it or ends.
    drop(plan);
    Ok(Launched { pid, ready_pipe })
}

/// `text` as a C string; one holding a NUL byte is refused.
fn c_string(text: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{text:?} holds a NUL byte"),
        )
    })
}

/// The paths to exec `program` by, as `execvp` looks for it: itself
/// when it holds a `/`, else under each item of `path` in turn (an empty
/// item is the work dir).
fn exec_paths(program: &str, path: &str) -> io::Result<Vec<CString>> {
    if program.contains('/') {
        return Ok(vec![c_string(program)?]);
    }
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            c_string(&format!("{}/{program}", dir.trim_end_matches('/')))
        })
        .collect()
}

/// `/dev/null`, for reading or for writing.
fn open_null(write: bool) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?;
    Ok(OwnedFd::from(file))
}

/// Refuses, before the clone, a hard limit above the spawner's own when it
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
/// node opens everything close-on-exec, so nothing the program needs.
fn ready_pipe(fd: u32) -> Result<(File, OwnedFd, i32), LaunchError> {
    let target = i32::try_from(fd)
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or(LaunchError::BadReadyFd { fd })?;
    let (reader, writer) = sys::pipe().map_err(|source| LaunchError::ReadyPipe { source })?;
    Ok((File::from(reader), writer, target))
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
) -> Result<Option<OwnedFd>, LaunchError> {
    let output = match stream {
        Stream::Stdout => request.stdout.as_ref(),
        Stream::Stderr => request.stderr.as_ref(),
    };
    let Some(output) = output else {
        return Ok(None);
    };
    let (destination, path) = match Kind::try_from(output.kind) {
        Ok(Kind::Null) => {
            return open_null(true)
                .map(Some)
                .map_err(|error| LaunchError::Capture {
                    stream,
                    path: None,
                    reason: format!("opening /dev/null: {error}"),
                });
        }
        Ok(Kind::Inherit) => return Ok(None),
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
    Ok(Some(writer))
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
    /// clone, the child's setup, or exec failed.
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
