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
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::rotation::RotatingFile;
use crate::wire::proto::manager_spawner::{self as ms, output::Kind};
use crate::{conf, sys};

/// The `PATH` every child starts with, before its own items.
pub(super) use conf::host::BASE_PATH;

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

/// Starts the process `request` describes, in its own session.
pub(super) fn launch(request: &ms::StartProcess) -> Result<Launched, LaunchError> {
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
    if let Some(ids) = credentials {
        command.uid(ids.uid).gid(ids.gid);
    }
    let (stdout, rotate_stdout) = open_output(Stream::Stdout, request.stdout.as_ref())?;
    let (stderr, rotate_stderr) = open_output(Stream::Stderr, request.stderr.as_ref())?;
    command.stdout(stdout).stderr(stderr);
    sys::start_in_new_session(&mut command);
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

/// Resolves the user and group to run as ([`conf::host::run_as`], which
/// the configuration check uses too). A user without a group runs in the
/// user's primary group; a group without a user runs as the node's own
/// user. Setting both ids makes std clear the supplementary groups
/// (`setgroups(0)`) before `setuid`, so the child's only group is `gid`
/// (`CommandExt::groups`, which could set the list to `[gid]`, is not
/// stable). Neither given: the child keeps the node's credentials.
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
            LaunchError::WorkDir { source, .. }
            | LaunchError::OutputFile { source, .. }
            | LaunchError::Exec { source, .. }
            | LaunchError::ReadyPipe { source } => Some(source),
            LaunchError::EmptyCommand
            | LaunchError::Account { .. }
            | LaunchError::BadEnvName { .. }
            | LaunchError::OutputWithoutPath { .. }
            | LaunchError::UnknownOutputKind { .. }
            | LaunchError::BadReadyFd { .. } => None,
        }
    }
}
