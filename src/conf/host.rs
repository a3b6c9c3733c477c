//! Checks of a configuration against the host it is to run on: what
//! [`super::Config::load`] cannot see in the files alone. Each service's
//! user and group exist; its program and check commands exist and are
//! executable by the user it runs as; its work dir exists and that user
//! can enter it (every directory on the way searchable with the user's
//! uid and the one gid the service runs with); an output file's directory
//! exists (the node never creates it, but for its own log dir). `snow-fox --check`, the node's start
//! and every reload run them; any problem refuses the whole configuration.
//!
//! No thread, no channel: plain functions over a loaded [`Config`]. A path
//! the checking process itself may not look at (an unprivileged node
//! checking a root-only directory on reload) is not reported: the spawner,
//! which runs as root, still checks it before each start.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{Config, ConfigProblem, Output, Probe, ReadySignal, ServiceConfig};
use crate::sys;

/// The directories a program without a `/` is looked for in, as the
/// spawner's clean environment sets `PATH`.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The search (execute) permission bit of a mode's `rwx` triplet.
const EXECUTE: u32 = 0o1;

/// Who a service runs as: its user id and its one group id.
pub use crate::sys::UserIds as RunAs;

/// Resolves a service's `user` and `group` as the spawner does: a name or
/// a number each; a user without a group runs in its primary group; a group
/// without a user runs as the node's own user; neither, as the node. The
/// error says which does not exist.
pub fn run_as(user: Option<&str>, group: Option<&str>) -> Result<RunAs, String> {
    let gid = match group {
        Some(group) => Some(match sys::lookup_group(group) {
            Ok(Some(gid)) => gid,
            Ok(None) => group
                .parse()
                .map_err(|_| format!("group `{group}` does not exist"))?,
            Err(error) => return Err(format!("looking up group `{group}`: {error}")),
        }),
        None => None,
    };
    match user {
        Some(user) => {
            let (uid, primary) = match sys::lookup_user(user) {
                Ok(Some(ids)) => (ids.uid, Some(ids.gid)),
                Ok(None) => {
                    let uid: u32 = user
                        .parse()
                        .map_err(|_| format!("user `{user}` does not exist"))?;
                    let primary = sys::lookup_uid(uid).ok().flatten().map(|ids| ids.gid);
                    (uid, primary)
                }
                Err(error) => return Err(format!("looking up user `{user}`: {error}")),
            };
            let gid = gid.or(primary).ok_or_else(|| {
                format!("user id {user} has no passwd entry, so no primary group: give a group")
            })?;
            Ok(RunAs { uid, gid })
        }
        None => Ok(RunAs {
            uid: sys::effective_uid(),
            gid: gid.unwrap_or_else(sys::effective_gid),
        }),
    }
}

/// Why this process cannot start a child as `who`, if it cannot: only
/// root may change its uid or gid.
pub fn cannot_switch(who: RunAs) -> Option<String> {
    let (uid, gid) = (sys::effective_uid(), sys::effective_gid());
    (uid != 0 && (who.uid != uid || who.gid != gid)).then(|| {
        format!(
            "the node runs as uid {uid} (gid {gid}), not root, so it cannot start a service as uid {} (gid {}): run the node as root, or drop `user`/`group`",
            who.uid, who.gid
        )
    })
}

/// Whether `who` may enter directory `dir`: every directory from the root
/// to it exists, is a directory and is searchable by `who`. `Ok(None)`
/// when it may; `Ok(Some(why))` when not; `Err` when this process cannot
/// look (so cannot tell).
pub fn enterable(dir: &Path, who: RunAs) -> io::Result<Option<String>> {
    let mut walked = PathBuf::new();
    for component in dir.components() {
        walked.push(component);
        if matches!(component, Component::CurDir) {
            continue;
        }
        let metadata = match fs::metadata(&walked) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Some(format!("{} does not exist", walked.display())));
            }
            Err(error) => return Err(error),
        };
        if !metadata.is_dir() {
            return Ok(Some(format!("{} is not a directory", walked.display())));
        }
        if !allows(&metadata, who, EXECUTE) {
            return Ok(Some(format!(
                "uid {} (gid {}) may not enter {} (mode {:o}, owner {}:{})",
                who.uid,
                who.gid,
                walked.display(),
                metadata.permissions().mode() & 0o7777,
                metadata.uid(),
                metadata.gid()
            )));
        }
    }
    Ok(None)
}

/// Whether `who` may do `want` (a mode triplet's bits) to the file of
/// `metadata`. Root may do anything, but execute a file only when some
/// execute bit is set.
fn allows(metadata: &fs::Metadata, who: RunAs, want: u32) -> bool {
    let mode = metadata.permissions().mode();
    if who.uid == 0 {
        return want & EXECUTE == 0 || metadata.is_dir() || mode & 0o111 != 0;
    }
    let bits = if metadata.uid() == who.uid {
        mode >> 6
    } else if metadata.gid() == who.gid {
        mode >> 3
    } else {
        mode
    };
    bits & want == want
}

/// Finds `program` as the spawner's child will: a path with a `/` as is
/// (relative to `work_dir`), else in `path`'s directories. The file found
/// and executable by `who`, or why there is none.
fn find_program(
    program: &str,
    work_dir: Option<&Path>,
    path: &str,
    who: RunAs,
) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        let program = Path::new(program);
        vec![match work_dir {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.to_owned(),
        }]
    } else {
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(program))
            .collect()
    };
    let mut refused = None;
    for candidate in &candidates {
        match fs::metadata(candidate) {
            Ok(metadata) if metadata.is_file() && allows(&metadata, who, EXECUTE) => {
                return Ok(candidate.clone());
            }
            Ok(metadata) if metadata.is_file() => {
                refused = Some(format!(
                    "{} is not executable by uid {} (gid {}) (mode {:o})",
                    candidate.display(),
                    who.uid,
                    who.gid,
                    metadata.permissions().mode() & 0o7777
                ));
            }
            Ok(_) => refused = Some(format!("{} is not a file", candidate.display())),
            // This process may not look; the spawner, as root, will.
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                return Ok(candidate.clone());
            }
            Err(_) => {}
        }
    }
    Err(refused.unwrap_or_else(|| {
        if program.contains('/') {
            format!("program {program} does not exist")
        } else {
            format!("program `{program}` is not in {path}")
        }
    }))
}

/// Every problem of `config` on this host, by service in id order.
pub fn check(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    for service in config.services.values() {
        check_service(config, service, &mut problems);
    }
    problems
}

fn check_service(config: &Config, service: &ServiceConfig, problems: &mut Vec<ConfigProblem>) {
    let source = config.sources.get(&service.id);
    let file = source.map_or_else(|| config.dir.join("services"), |source| source.file.clone());
    let text = source.map_or("", |source| source.text.as_str());
    let mut report = |key: &str, message: String| {
        problems.push(ConfigProblem {
            file: file.clone(),
            line: line_of_key(text, key),
            key: Some(key.to_owned()),
            message,
        });
    };
    let who = match run_as(service.user.as_deref(), service.group.as_deref()) {
        Ok(who) => who,
        Err(message) => {
            let key = if message.starts_with("group") {
                "group"
            } else {
                "user"
            };
            report(key, message);
            return;
        }
    };
    // Without privilege separation the node itself starts services: not
    // root, it can start them only as itself.
    if config.node.user.is_none()
        && let Some(refusal) = cannot_switch(who)
    {
        let key = if service.user.is_some() {
            "user"
        } else {
            "group"
        };
        report(key, refusal);
        return;
    }
    let path = service.env.get("PATH").map_or(BASE_PATH, String::as_str);
    for index in 0..service.instances {
        let instance = service.for_instance(index);
        let work_dir = instance.work_dir.as_deref();
        let mut work_dir_ok = true;
        if let Some(dir) = work_dir {
            match enterable(dir, who) {
                Ok(None) => {}
                Ok(Some(why)) => {
                    report(
                        "work_dir",
                        format!("cannot enter work dir {}: {why}", dir.display()),
                    );
                    work_dir_ok = false;
                }
                Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {}
                Err(error) => {
                    report(
                        "work_dir",
                        format!("cannot check work dir {}: {error}", dir.display()),
                    );
                    work_dir_ok = false;
                }
            }
        }
        let mut commands = vec![("command", instance.command.as_slice())];
        if let ReadySignal::Check(Probe::Command(argv)) = &instance.ready.signal {
            commands.push(("ready", argv));
        }
        if let Some(health) = &instance.health
            && let Probe::Command(argv) = &health.probe
        {
            commands.push(("health", argv));
        }
        for (key, argv) in commands {
            let Some(program) = argv.first() else {
                continue;
            };
            if program.contains('/') && Path::new(program).is_relative() && !work_dir_ok {
                continue;
            }
            if let Err(why) = find_program(program, work_dir, path, who) {
                report(key, why);
            }
        }
        for (key, output) in [("stdout", &instance.stdout), ("stderr", &instance.stderr)] {
            let Output::Path(_) = output else {
                continue;
            };
            let Some(target) = output.path(&service.id, key, index, &config.node.log_dir) else {
                continue;
            };
            // The log dir is the node's own, made when it first writes.
            if let Some(dir) = target.parent()
                && dir != config.node.log_dir
                && let Err(error) = fs::metadata(dir)
                && error.kind() == io::ErrorKind::NotFound
            {
                report(
                    key,
                    format!(
                        "the directory of {} does not exist (the node does not create it)",
                        target.display()
                    ),
                );
            }
        }
        // One instance's problems stand for all when nothing differs
        // between instances.
        if !service.is_per_instance() {
            break;
        }
    }
}

/// The line of `text` where top-level `key` is assigned, if one is.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|at| at + 1)
}
