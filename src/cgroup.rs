//! cgroups: one per service instance, under the cgroup the node was
//! started in, and the only place that knows cgroup v1 from v2.
//!
//! The node's cgroups are `<own cgroup>/snow-fox.<node name>/<id>.<index>`
//! in every hierarchy it uses, `<own cgroup>` read from
//! `/proc/self/cgroup` (the `0::` line for the unified tree, one line per
//! v1 hierarchy). cgroup v2 is the primary target: with the controllers
//! in the unified tree, one directory per instance holds its processes,
//! its limits and its accounting. On a hybrid host (controllers in v1
//! hierarchies, the unified tree without them) the unified directory is
//! still the instance's membership and kill switch (`cgroup.kill`,
//! `cgroup.events`, `cpu.stat`), and the instance gets a directory in
//! each v1 hierarchy it needs: `memory` always (for its accounting), `pids`
//! only for a `pids_max` and `cpu` only for a `cpu_max` (tasks and CPU
//! time are counted in the unified tree). With no unified tree at all
//! (v1 only), the first v1 directory is the membership, and a kill is
//! SIGKILL to each member until none is left.
//!
//! It creates only directories named for its node beneath the node's own
//! cgroups, never moves a process out of the cgroup it was started in
//! (a process joins its instance's cgroups itself, between fork and exec,
//! through the `cgroup.procs` files this module opens), and removes only
//! directories it created. It owns no thread or channel: the spawner
//! creates, fills, kills and removes instance cgroups; the manager reads
//! their accounting from the paths the spawner reports.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sys;

/// Where cgroup filesystems are mounted on a normal host.
pub const DEFAULT_FS: &str = "/sys/fs/cgroup";

/// A controller whose limits or accounting the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// memory: `memory_max`, `memory_high`, memory accounting, OOM kills.
    Memory,
    /// pids: `pids_max`, the task count.
    Pids,
    /// cpu: `cpu_max`.
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    /// The kernel's name of the controller.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }

    fn named(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What an instance's cgroup limits, each `None` when unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `memory_max`, in bytes: the kernel OOM-kills above it.
    pub memory_max: Option<u64>,
    /// `memory_high`, in bytes: throttled and reclaimed above it (v2 only).
    pub memory_high: Option<u64>,
    /// `cpu_max`: microseconds of CPU per period, and the period.
    pub cpu_max: Option<CpuMax>,
    /// `pids_max`: the most tasks at once.
    pub pids_max: Option<u64>,
}

/// A CPU bandwidth limit: `quota_usec` of CPU time in every `period_usec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    /// The CPU time allowed per period, in microseconds.
    pub quota_usec: u64,
    /// The period, in microseconds.
    pub period_usec: u64,
}

/// The period `cpu_max` is enforced over (the kernel's default).
pub const CPU_PERIOD_USEC: u64 = 100_000;

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        *self != Limits::default()
    }

    /// The name of the first limit set, if any.
    pub fn first_set(&self) -> Option<&'static str> {
        self.needs().first().map(|(name, _)| *name)
    }

    /// Each set limit as (its name, the controller it needs).
    fn needs(&self) -> Vec<(&'static str, Controller)> {
        [
            ("memory_max", self.memory_max.is_some(), Controller::Memory),
            (
                "memory_high",
                self.memory_high.is_some(),
                Controller::Memory,
            ),
            ("cpu_max", self.cpu_max.is_some(), Controller::Cpu),
            ("pids_max", self.pids_max.is_some(), Controller::Pids),
        ]
        .into_iter()
        .filter(|(_, set, _)| *set)
        .map(|(name, _, controller)| (name, controller))
        .collect()
    }
}

/// Where a controller's files are for the node's cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// In the unified tree, enabled below the node's own cgroup.
    V2,
    /// In this v1 hierarchy: the node's base directory there.
    V1(PathBuf),
    /// Not usable, and why.
    Absent(String),
}

/// The node's cgroups: where its base directories are and which
/// controllers it can use. Built once at start with [`Hierarchy::open`].
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// `<unified>/<own cgroup>/snow-fox.<name>`, when there is a unified
    /// tree the node can write.
    unified: Option<PathBuf>,
    /// Where each of [`Controller::ALL`] is, in that order.
    places: Vec<(Controller, Place)>,
}

/// Why the node has no cgroups, or a limit cannot be enforced.
#[derive(Debug)]
pub enum CgroupError {
    /// No cgroup hierarchy the node can use at all.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A limit needs a controller the node cannot use.
    Unenforceable {
        /// The limit's configuration key.
        limit: &'static str,
        /// Why it cannot be enforced.
        reason: String,
    },
    /// A cgroup file or directory could not be written or read.
    Io {
        /// What was being done.
        doing: String,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for CgroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupError::Unavailable { reason } => write!(f, "no cgroups: {reason}"),
            CgroupError::Unenforceable { limit, reason } => {
                write!(f, "{limit} cannot be enforced: {reason}")
            }
            CgroupError::Io {
                doing,
                path,
                source,
            } => write!(f, "{doing} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for CgroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CgroupError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(doing: &str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let doing = doing.to_owned();
    let path = path.to_owned();
    move |source| CgroupError::Io {
        doing,
        path,
        source,
    }
}

/// Whether `name` can name a directory: letters, digits, `-`, `_`, `.`
/// and `@` (an instance the cluster assigned, `web@2`), not starting with
/// `.`.
fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// The cgroup paths of `/proc/self/cgroup`'s text: (controllers, path),
/// the unified line's controllers empty.
fn own_cgroups(self_cgroup: &str) -> Vec<(Vec<&str>, &str)> {
    self_cgroup
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            let controllers = controllers.split(',').filter(|c| !c.is_empty()).collect();
            Some((controllers, path))
        })
        .collect()
}

fn under(root: &Path, cgroup_path: &str) -> PathBuf {
    root.join(cgroup_path.trim_start_matches('/'))
}

impl Hierarchy {
    /// Finds the node's own cgroups under `fs` (the cgroup mount
    /// directory, normally [`DEFAULT_FS`]) from `self_cgroup` (the text
    /// of `/proc/self/cgroup`) and creates `snow-fox.<node_name>` beneath
    /// each one the node uses. `Unavailable` when it can use none.
    pub fn open(fs: &Path, self_cgroup: &str, node_name: &str) -> Result<Hierarchy, CgroupError> {
        if !usable_name(node_name) {
            return Err(CgroupError::Unavailable {
                reason: format!(
                    "the node name {node_name:?} cannot name a cgroup \
                     (letters, digits, '-', '_' and '.' only)"
                ),
            });
        }
        let base_name = format!("snow-fox.{node_name}");
        let lines = own_cgroups(self_cgroup);
        let unified_root = if fs.join("cgroup.controllers").exists() {
            Some(fs.to_owned())
        } else if fs.join("unified/cgroup.procs").exists() {
            Some(fs.join("unified"))
        } else {
            None
        };
        let mut problems = Vec::new();
        let mut unified = None;
        let mut v2_controllers = Vec::new();
        if let Some(root) = &unified_root {
            match lines.iter().find(|(controllers, _)| controllers.is_empty()) {
                Some((_, path)) => {
                    let own = under(root, path);
                    match open_v2_base(&own, &base_name) {
                        Ok((base, controllers)) => {
                            unified = Some(base);
                            v2_controllers = controllers;
                        }
                        Err(error) => problems.push(error.to_string()),
                    }
                }
                None => problems.push(format!(
                    "/proc/self/cgroup has no unified (0::) line for {}",
                    root.display()
                )),
            }
        } else {
            problems.push(format!("no cgroup filesystem at {}", fs.display()));
        }
        let places = Controller::ALL
            .into_iter()
            .map(|controller| {
                let in_v2 = v2_controllers.iter().find(|offered| match offered {
                    Ok(c) | Err((c, _)) => *c == controller,
                });
                let place = match in_v2 {
                    Some(Ok(_)) => Place::V2,
                    Some(Err((_, reason))) => Place::Absent(reason.clone()),
                    None => v1_place(fs, &lines, controller, &base_name),
                };
                (controller, place)
            })
            .collect::<Vec<_>>();
        let any_v1 = places
            .iter()
            .any(|(_, place)| matches!(place, Place::V1(_)));
        if unified.is_none() && !any_v1 {
            let mut reasons = problems;
            reasons.extend(places.iter().filter_map(|(_, place)| match place {
                Place::Absent(reason) => Some(reason.clone()),
                _ => None,
            }));
            return Err(CgroupError::Unavailable {
                reason: reasons.join("; "),
            });
        }
        Ok(Hierarchy { unified, places })
    }

    /// What the node can and cannot do, in one line for logs and `info`.
    pub fn describe(&self) -> String {
        let mut parts = vec![match &self.unified {
            Some(base) => format!("instances in {}", base.display()),
            None => "no unified tree: membership by v1, kill by SIGKILL to members".to_owned(),
        }];
        for (controller, place) in &self.places {
            parts.push(match place {
                Place::V2 => format!("{} (v2)", controller.name()),
                Place::V1(_) => format!("{} (v1)", controller.name()),
                Place::Absent(reason) => format!("no {}: {reason}", controller.name()),
            });
        }
        parts.join("; ")
    }

    /// The controllers the node cannot use, each with why; empty when all
    /// of them work.
    pub fn missing(&self) -> Vec<String> {
        self.places
            .iter()
            .filter_map(|(controller, place)| match place {
                Place::Absent(reason) => Some(format!("{}: {reason}", controller.name())),
                _ => None,
            })
            .collect()
    }

    fn place(&self, controller: Controller) -> &Place {
        self.places
            .iter()
            .find(|(c, _)| *c == controller)
            .map_or(&Place::V2, |(_, place)| place)
    }

    /// Checks that every limit in `limits` can be enforced here.
    pub fn check(&self, limits: &Limits) -> Result<(), CgroupError> {
        for (limit, controller) in limits.needs() {
            match self.place(controller) {
                Place::Absent(reason) => {
                    return Err(CgroupError::Unenforceable {
                        limit,
                        reason: format!("no {} controller: {reason}", controller.name()),
                    });
                }
                Place::V1(_) if limit == "memory_high" => {
                    return Err(CgroupError::Unenforceable {
                        limit,
                        reason: "it needs cgroup v2's memory controller, and this host has \
                                 memory in cgroup v1 (set memory_max instead)"
                            .to_owned(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates (or takes over, when it is left from before) the cgroup
    /// `name` (`<id>.<index>`) with `limits` written. What it created is
    /// removed again when a step fails.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<InstanceCgroup, CgroupError> {
        self.check(limits)?;
        if !usable_name(name) {
            return Err(CgroupError::Unavailable {
                reason: format!("{name:?} cannot name a cgroup"),
            });
        }
        let mut dirs = Vec::new();
        if let Some(base) = &self.unified {
            dirs.push(Dir {
                kind: Kind::Unified,
                path: base.join(name),
            });
        }
        for (controller, place) in &self.places {
            // v1 memory always, for its accounting; pids and cpu only for
            // their limits (tasks are counted in the unified tree).
            let wanted = match controller {
                Controller::Memory => true,
                Controller::Pids => limits.pids_max.is_some(),
                Controller::Cpu => limits.cpu_max.is_some(),
            };
            if let (Place::V1(base), true) = (place, wanted) {
                dirs.push(Dir {
                    kind: Kind::V1(*controller),
                    path: base.join(name),
                });
            }
        }
        let cgroup = InstanceCgroup { dirs };
        let mut created = Vec::new();
        let mut taken_over = false;
        for dir in &cgroup.dirs {
            match create_in_base(dir) {
                Ok(true) => created.push(dir.path.clone()),
                Ok(false) => taken_over = true,
                Err(error) => {
                    remove_dirs(&created);
                    return Err(error);
                }
            }
        }
        if let Err(error) = cgroup.write_limits(limits, taken_over) {
            remove_dirs(&created);
            return Err(error);
        }
        Ok(cgroup)
    }

    /// The cgroup `name` would have, without creating it: for an
    /// instance a previous node started.
    pub fn existing(&self, name: &str) -> Option<InstanceCgroup> {
        let dirs: Vec<Dir> = self
            .unified
            .iter()
            .map(|base| Dir {
                kind: Kind::Unified,
                path: base.join(name),
            })
            .chain(
                self.places
                    .iter()
                    .filter_map(|(controller, place)| match place {
                        Place::V1(base) => Some(Dir {
                            kind: Kind::V1(*controller),
                            path: base.join(name),
                        }),
                        _ => None,
                    }),
            )
            .filter(|dir| usable_name(name) && dir.path.is_dir())
            .collect();
        (!dirs.is_empty()).then_some(InstanceCgroup { dirs })
    }

    /// Removes the node's base directories, where they are empty.
    pub fn remove_bases(&self) {
        let bases =
            self.unified
                .iter()
                .chain(self.places.iter().filter_map(|(_, place)| match place {
                    Place::V1(base) => Some(base),
                    _ => None,
                }));
        for base in bases {
            if let Err(error) = fs::remove_dir(base)
                && error.raw_os_error() != Some(libc::ENOTEMPTY)
                && error.raw_os_error() != Some(libc::EBUSY)
                && error.kind() != ErrorKind::NotFound
            {
                log::warn!("cannot remove cgroup {}: {error}", base.display());
            }
        }
    }
}

/// Creates `<own>/<base_name>` in the unified tree and enables there (and
/// in `own`, if it has no processes of its own) the controllers `own`
/// offers; the base and each controller it offers, passed on to
/// instances or why not.
fn open_v2_base(own: &Path, base_name: &str) -> Result<(PathBuf, V2Controllers), CgroupError> {
    let base = own.join(base_name);
    make_dir(&base)?;
    let offered = fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    let mut usable = Vec::new();
    for controller in offered.split_whitespace().filter_map(Controller::named) {
        let enable = format!("+{}", controller.name());
        // The no-internal-process rule: a cgroup that holds processes
        // (the node's own) cannot pass domain controllers down, except
        // the root. Where that fails, the controller stays unused here.
        let enabled = fs::write(own.join("cgroup.subtree_control"), &enable)
            .and_then(|()| fs::write(base.join("cgroup.subtree_control"), &enable));
        match enabled {
            Ok(()) => usable.push(Ok(controller)),
            Err(error) => usable.push(Err((
                controller,
                format!(
                    "cgroup v2 cannot pass it below {} ({error}; a cgroup that holds \
                     processes, as the node's own does, cannot: start the node in a \
                     cgroup of its own)",
                    own.display()
                ),
            ))),
        }
    }
    Ok((base, usable))
}

/// Creates an instance's directory: `true` when it made it, `false` when
/// it was there already. A base that is gone (another node of the same
/// name removed it, empty, when it stopped) is made again first.
fn create_in_base(dir: &Dir) -> Result<bool, CgroupError> {
    let mut tries = 0;
    loop {
        match fs::create_dir(&dir.path) {
            Ok(()) => return Ok(true),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(error) if error.kind() == ErrorKind::NotFound && tries < 3 => {
                tries += 1;
                let base = dir.path.parent().unwrap_or(&dir.path);
                match (dir.kind, base.parent(), base.file_name()) {
                    (Kind::Unified, Some(own), Some(base_name)) => {
                        open_v2_base(own, &base_name.to_string_lossy())?;
                    }
                    _ => make_dir(base)?,
                }
            }
            Err(error) => return Err(io_error("creating cgroup", &dir.path)(error)),
        }
    }
}

/// The unified tree's controllers: usable, or why not.
type V2Controllers = Vec<Result<Controller, (Controller, String)>>;

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Err(error) if error.kind() != ErrorKind::AlreadyExists => {
            Err(io_error("creating cgroup", path)(error))
        }
        _ => Ok(()),
    }
}

/// Where `controller` is in the v1 hierarchies, its node base created.
fn v1_place(fs: &Path, lines: &[(Vec<&str>, &str)], controller: Controller, base: &str) -> Place {
    let Some((controllers, path)) = lines
        .iter()
        .find(|(controllers, _)| controllers.contains(&controller.name()))
    else {
        return Place::Absent("not in the node's cgroups (/proc/self/cgroup)".to_owned());
    };
    let mount = [fs.join(controller.name()), fs.join(controllers.join(","))]
        .into_iter()
        .find(|mount| mount.join("cgroup.procs").exists());
    let Some(mount) = mount else {
        return Place::Absent(format!(
            "its v1 hierarchy is not mounted under {}",
            fs.display()
        ));
    };
    let base_dir = under(&mount, path).join(base);
    match make_dir(&base_dir) {
        Ok(()) => Place::V1(base_dir),
        Err(error) => Place::Absent(error.to_string()),
    }
}

fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

/// Which tree a directory of an instance's cgroup is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unified,
    V1(Controller),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    kind: Kind,
    path: PathBuf,
}

/// One instance's cgroup: its directory in the unified tree and in each
/// v1 hierarchy it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCgroup {
    dirs: Vec<Dir>,
}

/// What an instance's cgroup accounts, each `None` where this host does
/// not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metrics {
    /// CPU time used by all its processes, in microseconds.
    pub cpu_usec: Option<u64>,
    /// Memory charged to it now, in bytes.
    pub memory_current: Option<u64>,
    /// The most memory charged to it, in bytes.
    pub memory_peak: Option<u64>,
    /// Its tasks (threads) now.
    pub tasks: Option<u64>,
}

impl InstanceCgroup {
    /// Its directories as text, one `<kind> <path>` each, for the wire.
    pub fn to_wire(&self) -> Vec<String> {
        self.dirs
            .iter()
            .map(|dir| {
                let kind = match dir.kind {
                    Kind::Unified => "unified",
                    Kind::V1(controller) => controller.name(),
                };
                format!("{kind} {}", dir.path.display())
            })
            .collect()
    }

    /// The cgroup [`InstanceCgroup::to_wire`] described; None when a line
    /// does not parse or nothing is described.
    pub fn from_wire(lines: &[String]) -> Option<InstanceCgroup> {
        let dirs = lines
            .iter()
            .map(|line| {
                let (kind, path) = line.split_once(' ')?;
                let kind = match kind {
                    "unified" => Kind::Unified,
                    name => Kind::V1(Controller::named(name)?),
                };
                Some(Dir {
                    kind,
                    path: PathBuf::from(path),
                })
            })
            .collect::<Option<Vec<Dir>>>()?;
        (!dirs.is_empty()).then_some(InstanceCgroup { dirs })
    }

    /// The directory of `controller`'s files: the v1 one, else the
    /// unified one.
    fn dir_of(&self, controller: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|dir| dir.kind == Kind::V1(controller))
            .or_else(|| self.membership())
            .map(|dir| dir.path.as_path())
    }

    fn v1(&self, controller: Controller) -> bool {
        self.dirs.iter().any(|dir| dir.kind == Kind::V1(controller))
    }

    /// The directory whose members are the instance's processes.
    fn membership(&self) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|dir| dir.kind == Kind::Unified)
            .or(self.dirs.first())
    }

    /// Writes `limits`; in a cgroup `taken_over` from before, which may
    /// hold old limits, also "no limit" to each file of a limit not set (a
    /// new cgroup starts without limits).
    fn write_limits(&self, limits: &Limits, taken_over: bool) -> Result<(), CgroupError> {
        let v1_cpu = self.v1(Controller::Cpu);
        let (cpu_v2, cpu_v1) = match limits.cpu_max {
            Some(cpu) if v1_cpu => (None, Some(cpu.quota_usec.to_string())),
            Some(cpu) => (
                Some(format!("{} {}", cpu.quota_usec, cpu.period_usec)),
                None,
            ),
            None => (None, None),
        };
        let text = |value: Option<u64>| value.map(|value| value.to_string());
        let settings = [
            (
                Controller::Memory,
                "memory.max",
                "memory.limit_in_bytes",
                text(limits.memory_max),
            ),
            (
                Controller::Memory,
                "memory.high",
                "memory.high",
                text(limits.memory_high),
            ),
            (
                Controller::Pids,
                "pids.max",
                "pids.max",
                text(limits.pids_max),
            ),
            (
                Controller::Cpu,
                "cpu.max",
                "cpu.cfs_period_us",
                limits
                    .cpu_max
                    .filter(|_| v1_cpu)
                    .map(|cpu| cpu.period_usec.to_string()),
            ),
            (
                Controller::Cpu,
                "cpu.max",
                "cpu.cfs_quota_us",
                if v1_cpu { cpu_v1 } else { cpu_v2 },
            ),
        ];
        for (controller, v2, v1, value) in settings {
            let Some(dir) = self.dir_of(controller) else {
                continue;
            };
            let v1_file = self.v1(controller);
            let file = dir.join(if v1_file { v1 } else { v2 });
            match value {
                Some(value) => fs::write(&file, value).map_err(io_error("writing", &file))?,
                // A period has no "unlimited"; the quota says it.
                None if taken_over && file.exists() && v1 != "cpu.cfs_period_us" => {
                    let unlimited = if v1_file && controller != Controller::Pids {
                        "-1"
                    } else {
                        "max"
                    };
                    fs::write(&file, unlimited).map_err(io_error("writing", &file))?;
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Its `cgroup.procs` files, opened write-only, for the child to join
    /// with [`sys::ChildSetup`].
    pub fn procs_files(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.path.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(io_error("opening", &path))
            })
            .collect()
    }

    /// The pids of its processes.
    pub fn members(&self) -> Vec<u32> {
        self.membership()
            .and_then(|dir| fs::read_to_string(dir.path.join("cgroup.procs")).ok())
            .map(|text| {
                text.lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `pid` is one of its processes.
    pub fn contains(&self, pid: u32) -> bool {
        self.members().contains(&pid)
    }

    /// Whether no process is left in it.
    pub fn is_empty(&self) -> bool {
        let Some(dir) = self.membership() else {
            return true;
        };
        match fs::read_to_string(dir.path.join("cgroup.events")) {
            Ok(events) => key_value(&events, "populated") == Some(0),
            Err(_) => self.members().is_empty(),
        }
    }

    /// Kills every process in it: `cgroup.kill` where the kernel has it,
    /// else SIGKILL to each member (call again until [`Self::is_empty`]:
    /// members may fork meanwhile).
    pub fn kill(&self) {
        if let Some(dir) = self.membership() {
            let kill = dir.path.join("cgroup.kill");
            if kill.exists() && fs::write(&kill, "1").is_ok() {
                return;
            }
        }
        for pid in self.members() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Removes its directories; they must be empty of processes.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            match fs::remove_dir(&dir.path) {
                Err(error) if error.kind() != ErrorKind::NotFound => {
                    return Err(io_error("removing cgroup", &dir.path)(error));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How many of its processes the kernel killed for its memory limit.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = self.dir_of(Controller::Memory) else {
            return 0;
        };
        let file = if self.v1(Controller::Memory) {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| key_value(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// What it uses now.
    pub fn metrics(&self) -> Metrics {
        let read = |controller: Controller, v2: &str, v1: &str| {
            let dir = self.dir_of(controller)?;
            let file = if self.v1(controller) { v1 } else { v2 };
            read_number(&dir.join(file))
        };
        let cpu_usec = self
            .membership()
            .filter(|dir| dir.kind == Kind::Unified)
            .and_then(|dir| fs::read_to_string(dir.path.join("cpu.stat")).ok())
            .and_then(|text| key_value(&text, "usage_usec"));
        let tasks = read(Controller::Pids, "pids.current", "pids.current").or_else(|| {
            let dir = self.membership()?;
            let file = if dir.kind == Kind::Unified {
                "cgroup.threads"
            } else {
                "tasks"
            };
            let text = fs::read_to_string(dir.path.join(file)).ok()?;
            Some(text.lines().count() as u64)
        });
        Metrics {
            cpu_usec,
            memory_current: read(
                Controller::Memory,
                "memory.current",
                "memory.usage_in_bytes",
            ),
            memory_peak: read(
                Controller::Memory,
                "memory.peak",
                "memory.max_usage_in_bytes",
            ),
            tasks,
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    let mut text = String::new();
    io::Read::read_to_string(&mut File::open(path).ok()?, &mut text).ok()?;
    text.trim().parse().ok()
}

/// The number after `key` in a flat-keyed cgroup file (`key value` lines).
fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests;
