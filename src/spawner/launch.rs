//! Turning one `StartProcess` into a running child.
//!
//! Everything that can fail by itself is settled before the fork: the
//! user and group are resolved to ids, the work dir is checked, output
//! files are opened (their directories created). The child then only
//! calls `setsid` (see [`crate::sys::start_in_new_session`]) and std's own
//! `setgid` → `setgroups` → `setuid` before exec. It owns nothing that
//! lasts: the caller keeps the pid, and the child's `Child` handle is
//! dropped unwaited because the spawner reaps with `waitpid(-1)`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::rotation::RotatingFile;
use crate::sys;
use crate::wire::proto::manager_spawner::{self as ms, output::Kind};

/// The environment every child starts from, before its own items.
pub(super) const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The mode of output files the spawner creates.
const OUTPUT_FILE_MODE: u32 = 0o640;

/// Rotated files kept when a rotating output does not say.
const DEFAULT_KEEP: u32 = 1;

/// A started child.
#[derive(Debug)]
pub(super) struct Launched {
    /// Its pid, which is also its session and process group id.
    pub(super) pid: u32,
    /// Its output files that rotate.
    pub(super) rotating: Vec<RotatingFile>,
    /// The read end of its readiness pipe, when it was given one.
    pub(super) ready_pipe: Option<File>,
}

/// Starts the process `request` describes, in its own session; the child
/// appends its own stat line to `intent`, if given, before it execs.
pub(super) fn launch(
    request: &ms::StartProcess,
    intent: Option<BorrowedFd<'_>>,
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
    for item in &request.environment {
        command.env(env_name(item)?, item.value.as_deref().unwrap_or(""));
    }
    if let Some(dir) = present(request.work_dir.as_deref()) {
        check_work_dir(Path::new(dir))?;
        command.current_dir(dir);
    }
    if let Some(ids) = credentials {
        command.uid(ids.uid).gid(ids.gid);
    }
    let (stdout, rotate_stdout) = open_output(Stream::Stdout, request.stdout.as_ref())?;
    let (stderr, rotate_stderr) = open_output(Stream::Stderr, request.stderr.as_ref())?;
    command.stdout(stdout).stderr(stderr);
    sys::start_in_new_session(&mut command);
    if let Some(intent) = intent {
        sys::record_own_stat_before_exec(&mut command, intent);
    }
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
        rotating: rotate_stdout.into_iter().chain(rotate_stderr).collect(),
        ready_pipe: ready_pipe.map(|(reader, _writer)| reader),
    })
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

/// Resolves the user and group to run as. A user without a group runs in
/// the user's primary group; a group without a user runs as the node's
/// own user. Setting both ids makes std clear the supplementary groups
/// (`setgroups(0)`) before `setuid`, so the child's only group is `gid`
/// (`CommandExt::groups`, which could set the list to `[gid]`, is not
/// stable). Neither given: the child keeps the node's credentials.
fn resolve_credentials(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<sys::UserIds>, LaunchError> {
    match user {
        Some(user) => resolve_account(user, group).map(Some),
        None => Ok(group
            .map(resolve_group)
            .transpose()?
            .map(|gid| sys::UserIds {
                uid: sys::effective_uid(),
                gid,
            })),
    }
}

/// A user and its group: `group` if given, else the user's primary group.
pub(super) fn resolve_account(
    user: &str,
    group: Option<&str>,
) -> Result<sys::UserIds, LaunchError> {
    let group_id = group.map(resolve_group).transpose()?;
    let (uid, primary_gid) = resolve_user(user)?;
    let gid = group_id
        .or(primary_gid)
        .ok_or_else(|| LaunchError::NoPrimaryGroup {
            user: user.to_owned(),
        })?;
    Ok(sys::UserIds { uid, gid })
}

/// A user name, or a numeric uid (which need not have a passwd entry; then
/// it has no primary group).
fn resolve_user(name: &str) -> Result<(u32, Option<u32>), LaunchError> {
    let lookup_failed = |source| LaunchError::UserLookup {
        user: name.to_owned(),
        source,
    };
    if let Some(ids) = sys::lookup_user(name).map_err(lookup_failed)? {
        return Ok((ids.uid, Some(ids.gid)));
    }
    let uid = name.parse::<u32>().map_err(|_| LaunchError::UnknownUser {
        user: name.to_owned(),
    })?;
    let entry = sys::lookup_uid(uid).map_err(lookup_failed)?;
    Ok((uid, entry.map(|ids| ids.gid)))
}

/// A group name, or a numeric gid.
fn resolve_group(name: &str) -> Result<u32, LaunchError> {
    let by_name = sys::lookup_group(name).map_err(|source| LaunchError::GroupLookup {
        group: name.to_owned(),
        source,
    })?;
    by_name
        .or_else(|| name.parse().ok())
        .ok_or_else(|| LaunchError::UnknownGroup {
            group: name.to_owned(),
        })
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

fn check_work_dir(dir: &Path) -> Result<(), LaunchError> {
    let metadata = fs::metadata(dir).map_err(|source| LaunchError::WorkDir {
        path: dir.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(LaunchError::WorkDir {
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    Ok(())
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

/// Where `stream` goes, and the file to rotate if it is one that rotates.
/// Without an `Output` the stream is inherited from the node.
fn open_output(
    stream: Stream,
    output: Option<&ms::Output>,
) -> Result<(Stdio, Option<RotatingFile>), LaunchError> {
    let Some(output) = output else {
        return Ok((Stdio::inherit(), None));
    };
    match Kind::try_from(output.kind) {
        Ok(Kind::Null) => Ok((Stdio::null(), None)),
        Ok(Kind::Inherit) => Ok((Stdio::inherit(), None)),
        Ok(Kind::File) => {
            let path = present(output.path.as_deref())
                .map(PathBuf::from)
                .ok_or(LaunchError::OutputWithoutPath { stream })?;
            let file = open_append(&path).map_err(|source| LaunchError::OutputFile {
                stream,
                path: path.clone(),
                source,
            })?;
            let rotating = output
                .rotate_bytes
                .filter(|&bytes| bytes > 0)
                .map(|rotate_bytes| RotatingFile {
                    path,
                    rotate_bytes,
                    keep: output.keep.unwrap_or(DEFAULT_KEEP),
                });
            Ok((Stdio::from(file), rotating))
        }
        Err(_) => Err(LaunchError::UnknownOutputKind {
            stream,
            kind: output.kind,
        }),
    }
}

/// Opens `path` for appending, creating it and its directories. The child
/// gets this descriptor itself, so no pipe ties it to the node.
fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(OUTPUT_FILE_MODE)
        .open(path)
}

/// Why a process could not be started. Its Display is the `Error` reason
/// sent to the manager.
#[derive(Debug)]
pub(super) enum LaunchError {
    /// `command` has no program.
    EmptyCommand,
    /// The passwd database has no such user, and it is not a number.
    UnknownUser { user: String },
    /// Reading the passwd database failed.
    UserLookup { user: String, source: io::Error },
    /// A numeric user without a passwd entry and no group to run in.
    NoPrimaryGroup { user: String },
    /// The group database has no such group, and it is not a number.
    UnknownGroup { group: String },
    /// Reading the group database failed.
    GroupLookup { group: String, source: io::Error },
    /// An environment item's name is empty or holds `=` or NUL.
    BadEnvName { name: String },
    /// The work dir is missing, unreadable or not a directory.
    WorkDir { path: PathBuf, source: io::Error },
    /// A FILE output without a path.
    OutputWithoutPath { stream: Stream },
    /// An output kind this spawner does not know.
    UnknownOutputKind { stream: Stream, kind: i32 },
    /// Creating or opening an output file (or its directory).
    OutputFile {
        stream: Stream,
        path: PathBuf,
        source: io::Error,
    },
    /// fork, the child's setup, or exec failed.
    Exec { program: String, source: io::Error },
    /// A readiness fd that would replace the child's stdin, stdout or
    /// stderr.
    BadReadyFd { fd: u32 },
    /// Creating the readiness pipe.
    ReadyPipe { source: io::Error },
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchError::EmptyCommand => f.write_str("the command is empty: no program to run"),
            LaunchError::UnknownUser { user } => write!(f, "user `{user}` does not exist"),
            LaunchError::UserLookup { user, source } => {
                write!(f, "looking up user `{user}`: {source}")
            }
            LaunchError::NoPrimaryGroup { user } => write!(
                f,
                "user id {user} has no passwd entry, so no primary group: give a group"
            ),
            LaunchError::UnknownGroup { group } => write!(f, "group `{group}` does not exist"),
            LaunchError::GroupLookup { group, source } => {
                write!(f, "looking up group `{group}`: {source}")
            }
            LaunchError::BadEnvName { name } => write!(
                f,
                "environment variable name {name:?} is empty or contains `=` or NUL"
            ),
            LaunchError::WorkDir { path, source } => {
                write!(f, "work dir {}: {source}", path.display())
            }
            LaunchError::OutputWithoutPath { stream } => {
                write!(f, "{stream} goes to a FILE but has no path")
            }
            LaunchError::UnknownOutputKind { stream, kind } => {
                write!(f, "{stream} has unknown output kind {kind}")
            }
            LaunchError::OutputFile {
                stream,
                path,
                source,
            } => write!(f, "opening {stream} file {}: {source}", path.display()),
            LaunchError::Exec { program, source } => write!(f, "exec {program}: {source}"),
            LaunchError::BadReadyFd { fd } => write!(
                f,
                "readiness fd {fd} would replace the child's stdin, stdout or stderr; expected 3 or more"
            ),
            LaunchError::ReadyPipe { source } => {
                write!(f, "creating the readiness pipe: {source}")
            }
        }
    }
}

impl std::error::Error for LaunchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LaunchError::UserLookup { source, .. }
            | LaunchError::GroupLookup { source, .. }
            | LaunchError::WorkDir { source, .. }
            | LaunchError::OutputFile { source, .. }
            | LaunchError::Exec { source, .. }
            | LaunchError::ReadyPipe { source } => Some(source),
            LaunchError::EmptyCommand
            | LaunchError::UnknownUser { .. }
            | LaunchError::NoPrimaryGroup { .. }
            | LaunchError::UnknownGroup { .. }
            | LaunchError::BadEnvName { .. }
            | LaunchError::OutputWithoutPath { .. }
            | LaunchError::UnknownOutputKind { .. }
            | LaunchError::BadReadyFd { .. } => None,
        }
    }
}
