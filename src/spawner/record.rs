//! The spawner's own record: every process it started that may still run,
//! kept where only the spawner's user can write (`spawner_state_dir`), so
//! that what it adopts and signals after a crash is what it started, not
//! what the node says. The node's record (`manager/record.rs`) keeps the
//! users' wishes and grants nothing.
//!
//! Each start leaves a trace before the child is cloned: an intent line
//! naming the service instance, appended to the intents log (`intents`,
//! opened `O_APPEND` once). The child, before its exec, appends its own
//! `/proc/self/stat` line right after it (one `write(2)` on the log's
//! descriptor: async-signal-safe; the spawner waits meanwhile, so the two
//! lines are never separated), so even a crash of the spawner between the
//! clone and the record's update leaves the child's pid and start time on
//! disk. After the spawn the process goes into the record (`processes`:
//! written to `processes.tmp`, renamed over it), and only once that record
//! is in place is the log emptied (truncated: a burst of starts is one
//! record write and one truncation). So at every instant each started
//! process is in the record or in the log. (An intent file per start, as
//! before, cost an inode each: ext4's allocator skips recently deleted
//! inodes one by one, so each new file cost more than the last during a
//! start of thousands. Intent files of an older spawner, `intent.<n>`, are
//! still read, and removed after the first write.)
//!
//! The record is not fsynced: what it describes, running processes, cannot
//! outlive the events fsync guards against (a power loss or kernel crash
//! ends every process), and a record from another boot (its `boot` line is
//! the kernel's boot id) is discarded whole. Against a crash of the
//! spawner itself, which leaves the page cache intact, the rename is what
//! makes each write all-or-nothing. (fsync costs about 6.5 ms on this
//! machine's disk, twice per start; restarting a killed service takes
//! under 4 ms.)
//!
//! The directory must be the spawner user's alone: created mode 0700 if
//! missing; refused if it, or any directory above it, could be written by
//! another user (owned by someone other than root or the spawner's user,
//! or writable by group or others without the sticky bit). An exclusive
//! `flock` on `lock` keeps two spawners from sharing it; a new spawner
//! waits up to [`LOCK_WAIT`] for an old one that is exiting.
//!
//! Format, one item per line, fields separated by single spaces (service
//! ids hold no spaces); a reader ignores trailing `key=value` fields it
//! does not know, so fields can be added (for example an instance's
//! cgroup) without a new version:
//!
//! ```text
//! snow-fox-spawner-record 1
//! boot <kernel boot id>
//! process <service> <instance> <pid> <start time>
//! ```
//!
//! An intent: an empty line, `intent <service> <instance> boot=<boot id>`,
//! then, once the child wrote it, the child's `/proc/self/stat` line (the
//! empty line keeps a stat line its child was killed in the middle of
//! writing apart from the next intent). An intent of another boot names
//! nothing: the same pid with the same start time (clock ticks after
//! boot) may well name another process after a reboot.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

/// The record's file name.
const FILE_NAME: &str = "processes";
/// Where a new record is written before it is renamed into place.
const TEMP_FILE_NAME: &str = "processes.tmp";
/// The lock file's name.
const LOCK_NAME: &str = "lock";
/// The intents log's file name.
const INTENTS_NAME: &str = "intents";
/// An older spawner's intent files are `intent.<n>`.
const INTENT_PREFIX: &str = "intent.";
/// How much of the log a start's intent and stat lines fill, at most, as
/// read back for the start time (an intent line of a 64-byte service id,
/// and a stat line of 52 numbers and a 16-byte name, take under 1 KiB).
const INTENT_MAX: usize = 4096;
/// The first line: the format and its version.
const HEADER: &str = "snow-fox-spawner-record 1";
/// How long a new spawner waits for the lock of an old one that is
/// exiting (its node died; it sees the end of its link and exits).
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(10);

/// One process the spawner started, as the record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedProcess {
    /// The service it was started as.
    pub service_id: String,
    /// The instance it was started as.
    pub instance: u32,
    /// Its pid.
    pub pid: u32,
    /// Its start time (`sys::process_start_time`): with the pid, it names
    /// the process for good.
    pub start_time: u64,
}

/// The record: its directory, held locked, and what it holds.
#[derive(Debug)]
pub(super) struct SpawnerRecord {
    dir: PathBuf,
    /// Holds the `flock` while the spawner lives.
    _lock: File,
    boot_id: String,
    processes: BTreeMap<u32, RecordedProcess>,
    /// The intents log, appended to (close-on-exec, so no program a child
    /// execs holds it).
    intents: File,
    /// Whether the log holds intents written since it was last emptied.
    intents_written: bool,
    /// An older spawner's intent files, removed once the record is
    /// written.
    covered: Vec<PathBuf>,
    changed: bool,
}

/// A start about to happen: where its intent begins in the log.
#[derive(Debug)]
pub(super) struct Intent {
    offset: u64,
}

/// Why the record cannot be used.
#[derive(Debug)]
pub enum RecordError {
    /// A filesystem call failed.
    Io {
        /// What was being done.
        doing: &'static str,
        /// To what.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The directory, or one above it, could be written by someone else.
    Unsafe {
        /// The directory at fault.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another spawner holds the directory.
    Locked {
        /// The directory.
        path: PathBuf,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Io {
                doing,
                path,
                source,
            } => write!(
                f,
                "spawner record: cannot {doing} {}: {source}",
                path.display()
            ),
            RecordError::Unsafe { path, reason } => write!(
                f,
                "spawner record: refusing {} ({reason}): only the spawner's user may \
                 write it and the directories above it (spawner_state_dir)",
                path.display()
            ),
            RecordError::Locked { path } => write!(
                f,
                "spawner record: another spawner still holds {} after {} s \
                 (is another node using the same spawner_state_dir?)",
                path.display(),
                LOCK_WAIT.as_secs()
            ),
        }
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecordError::Io { source, .. } => Some(source),
            RecordError::Unsafe { .. } | RecordError::Locked { .. } => None,
        }
    }
}

impl SpawnerRecord {
    /// Opens the record in `dir` (creating it), locks it and reads what it
    /// and its intents name, with the problems found on the way (a record
    /// of another boot, unreadable lines: each logged by the caller, each
    /// losing only what it concerns). The processes are not checked: the
    /// caller checks each one still runs with its start time.
    pub(super) fn open(
        dir: &Path,
    ) -> Result<(SpawnerRecord, Vec<RecordedProcess>, Vec<String>), RecordError> {
        let io_error = |doing, path: &Path| {
            let path = path.to_owned();
            move |source| RecordError::Io {
                doing,
                path,
                source,
            }
        };
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_error("create", parent))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_error("create", dir)(error)),
        }
        check_private(dir)?;
        let lock_path = dir.join(LOCK_NAME);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        let deadline = Instant::now() + LOCK_WAIT;
        while !sys::try_lock_exclusive(&lock).map_err(io_error("lock", &lock_path))? {
            if Instant::now() >= deadline {
                return Err(RecordError::Locked {
                    path: dir.to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|id| id.trim().to_owned())
            .map_err(io_error(
                "read",
                Path::new("/proc/sys/kernel/random/boot_id"),
            ))?;
        let intents_path = dir.join(INTENTS_NAME);
        let intents = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&intents_path)
            .map_err(io_error("open", &intents_path))?;
        let mut record = SpawnerRecord {
            dir: dir.to_owned(),
            _lock: lock,
            boot_id,
            processes: BTreeMap::new(),
            intents,
            // What an earlier spawner logged goes once this one's record,
            // which then holds what still runs, is written.
            intents_written: true,
            covered: Vec::new(),
            changed: true,
        };
        let mut problems = Vec::new();
        let mut found = Vec::new();
        let path = dir.join(FILE_NAME);
        match fs::read_to_string(&path) {
            Ok(text) => found.extend(record.parse(&text, &mut problems)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => problems.push(format!("cannot read {}: {error}", path.display())),
        }
        let mut log = String::new();
        match (&record.intents).read_to_string(&mut log) {
            Ok(_) => found.extend(parse_intents(&log, &record.boot_id)),
            Err(error) => problems.push(format!("cannot read {}: {error}", intents_path.display())),
        }
        let entries = fs::read_dir(dir).map_err(io_error("list", dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name
                .to_str()
                .is_some_and(|name| name.starts_with(INTENT_PREFIX))
            {
                continue;
            }
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(text) => match parse_intent_file(&text, &record.boot_id) {
                    Some(process) => found.push(process),
                    None => log::debug!(
                        "spawner record: {} names no process (its start failed, or its \
                         child did not get as far as its exec)",
                        path.display()
                    ),
                },
                Err(error) => problems.push(format!("cannot read {}: {error}", path.display())),
            }
            record.covered.push(path);
        }
        Ok((record, found, problems))
    }

    /// The processes of `text` (the record) if it is of this boot.
    fn parse(&self, text: &str, problems: &mut Vec<String>) -> Vec<RecordedProcess> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            problems.push(format!("its first line is not `{HEADER}`: ignored"));
            return Vec::new();
        }
        match lines.next().and_then(|line| line.strip_prefix("boot ")) {
            Some(boot) if boot == self.boot_id => {}
            _ => {
                log::info!("spawner record: written before this boot; nothing in it runs");
                return Vec::new();
            }
        }
        let mut found = Vec::new();
        for (number, line) in lines.enumerate() {
            match parse_process(line) {
                Some(process) => found.push(process),
                None => problems.push(format!("line {} is not a process: {line:?}", number + 3)),
            }
        }
        found
    }

    /// Appends the intent of starting `service_id` instance `instance`
    /// to the log, before the child is cloned.
    pub(super) fn intent(
        &mut self,
        service_id: &str,
        instance: u32,
    ) -> Result<Intent, RecordError> {
        let failed = |doing| {
            let path = self.dir.join(INTENTS_NAME);
            move |source| RecordError::Io {
                doing,
                path,
                source,
            }
        };
        let offset = (&self.intents)
            .seek(SeekFrom::End(0))
            .map_err(failed("find the end of"))?;
        let line = format!("\nintent {service_id} {instance} boot={}\n", self.boot_id);
        self.intents_written = true;
        (&self.intents)
            .write_all(line.as_bytes())
            .map_err(failed("write an intent to"))?;
        Ok(Intent { offset })
    }

    /// The log, for a child to append its stat line to.
    pub(super) fn intents_log(&self) -> BorrowedFd<'_> {
        self.intents.as_fd()
    }

    /// The start time the child started under `intent` wrote for itself,
    /// read back from the log, when it is pid `pid`'s.
    pub(super) fn written_start_time(&self, intent: &Intent, pid: u32) -> Option<u64> {
        let mut bytes = vec![0; INTENT_MAX];
        let read = self.intents.read_at(&mut bytes, intent.offset).ok()?;
        let text = String::from_utf8_lossy(&bytes[..read]);
        parse_intents(&text, &self.boot_id)
            .first()
            .filter(|process| process.pid == pid)
            .map(|process| process.start_time)
    }

    /// Records `process`; the log entry of its start goes once the record
    /// holding it is written.
    pub(super) fn started(&mut self, process: RecordedProcess) {
        self.insert(process);
    }

    /// Records a process a previous spawner started, found still running.
    pub(super) fn insert(&mut self, process: RecordedProcess) {
        self.processes.insert(process.pid, process);
        self.changed = true;
    }

    /// Forgets the process `pid`, which ended.
    pub(super) fn forget(&mut self, pid: u32) {
        if self.processes.remove(&pid).is_some() {
            self.changed = true;
        }
    }

    /// The process the record holds under `pid`.
    pub(super) fn get(&self, pid: u32) -> Option<&RecordedProcess> {
        self.processes.get(&pid)
    }

    /// Every process the record holds.
    pub(super) fn processes(&self) -> impl Iterator<Item = &RecordedProcess> {
        self.processes.values()
    }

    /// Writes the record if it changed, then removes the intents it
    /// covers.
    pub(super) fn save(&mut self) -> Result<(), RecordError> {
        if !self.changed {
            return Ok(());
        }
        let mut text = format!("{HEADER}\nboot {}\n", self.boot_id);
        for process in self.processes.values() {
            text.push_str(&format!(
                "process {} {} {} {}\n",
                process.service_id, process.instance, process.pid, process.start_time
            ));
        }
        let temp = self.dir.join(TEMP_FILE_NAME);
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            fs::rename(&temp, self.dir.join(FILE_NAME))
        };
        write().map_err(|source| RecordError::Io {
            doing: "write",
            path: self.dir.join(FILE_NAME),
            source,
        })?;
        self.changed = false;
        if self.intents_written {
            self.intents.set_len(0).map_err(|source| RecordError::Io {
                doing: "empty",
                path: self.dir.join(INTENTS_NAME),
                source,
            })?;
            self.intents_written = false;
        }
        for path in self.covered.drain(..) {
            if let Err(error) = fs::remove_file(&path)
                && error.kind() != io::ErrorKind::NotFound
            {
                log::warn!("spawner record: cannot remove {}: {error}", path.display());
            }
        }
        Ok(())
    }
}

/// A `process` line.
fn parse_process(line: &str) -> Option<RecordedProcess> {
    let mut fields = line.split(' ');
    if fields.next()? != "process" {
        return None;
    }
    let service_id = fields.next().filter(|id| !id.is_empty())?.to_owned();
    let instance = fields.next()?.parse().ok()?;
    let pid = fields.next()?.parse().ok()?;
    let start_time = fields.next()?.parse().ok()?;
    // Later versions may add `key=value` fields; anything else is damage.
    if !fields.all(|field| field.contains('=')) {
        return None;
    }
    Some(RecordedProcess {
        service_id,
        instance,
        pid,
        start_time,
    })
}

/// The processes the intents log `text` of boot `boot_id` names: each
/// intent line with the stat line its child wrote after it, if it got so
/// far (a line that is neither, such as a stat line cut short, names
/// nothing).
fn parse_intents(text: &str, boot_id: &str) -> Vec<RecordedProcess> {
    let mut lines = text.lines().filter(|line| !line.is_empty()).peekable();
    let mut found = Vec::new();
    while let Some(head) = lines.next() {
        let stat = lines.next_if(|line| !line.starts_with("intent "));
        found.extend(parse_intent(head, stat, boot_id));
    }
    found
}

/// The process an older spawner's intent file names.
fn parse_intent_file(text: &str, boot_id: &str) -> Option<RecordedProcess> {
    let mut lines = text.lines();
    parse_intent(lines.next()?, lines.next(), boot_id)
}

/// The process intent line `head` of boot `boot_id` names, with the stat
/// line its child wrote.
fn parse_intent(head: &str, stat: Option<&str>, boot_id: &str) -> Option<RecordedProcess> {
    let mut head = head.split(' ');
    if head.next()? != "intent" {
        return None;
    }
    let service_id = head.next().filter(|id| !id.is_empty())?.to_owned();
    let instance = head.next()?.parse().ok()?;
    if !head.any(|field| field.strip_prefix("boot=") == Some(boot_id)) {
        return None;
    }
    let stat = stat.filter(|stat| whole_stat(stat))?;
    let pid = stat.split(' ').next()?.parse().ok()?;
    let start_time = sys::parse_start_time(stat)?;
    Some(RecordedProcess {
        service_id,
        instance,
        pid,
        start_time,
    })
}

/// Whether `stat` is a whole `/proc/<pid>/stat` line: the 52 fields the
/// kernel writes (since Linux 3.5), the last at least begun, so that its
/// start time (field 22) is intact even when the child's write of it was
/// cut short (a write that crosses a page can stop between pages when
/// its writer is killed).
fn whole_stat(stat: &str) -> bool {
    stat.rsplit_once(')')
        .is_some_and(|(_, fields)| fields.split_whitespace().count() >= 50)
}

/// Refuses `dir` unless it is a directory only its owner (this user) can
/// write, below directories only root or this user can write (or sticky
/// ones, such as `/tmp`, where others cannot replace what is not theirs).
fn check_private(dir: &Path) -> Result<(), RecordError> {
    let us = sys::effective_uid();
    let unsafe_dir = |path: &Path, reason: String| RecordError::Unsafe {
        path: path.to_owned(),
        reason,
    };
    let metadata = fs::symlink_metadata(dir).map_err(|source| RecordError::Io {
        doing: "inspect",
        path: dir.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(unsafe_dir(dir, "not a directory (a symlink?)".to_owned()));
    }
    if metadata.uid() != us || metadata.mode() & 0o077 != 0 {
        return Err(unsafe_dir(
            dir,
            format!(
                "owned by uid {} with mode {:o}; expected uid {us}, mode 0700",
                metadata.uid(),
                metadata.mode() & 0o7777
            ),
        ));
    }
    let canonical = fs::canonicalize(dir).map_err(|source| RecordError::Io {
        doing: "resolve",
        path: dir.to_owned(),
        source,
    })?;
    for ancestor in canonical.ancestors().skip(1) {
        let metadata = fs::metadata(ancestor).map_err(|source| RecordError::Io {
            doing: "inspect",
            path: ancestor.to_owned(),
            source,
        })?;
        let owner_ok = metadata.uid() == 0 || metadata.uid() == us;
        let sticky = metadata.mode() & 0o1000 != 0;
        if !owner_ok || (metadata.mode() & 0o022 != 0 && !sticky) {
            return Err(unsafe_dir(
                ancestor,
                format!(
                    "a directory above it, owned by uid {} with mode {:o}",
                    metadata.uid(),
                    metadata.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sf-spawner-record-{label}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir(&dir).unwrap();
        dir
    }

    /// Appends `text` to the intents log as a child does.
    fn append_as_child(dir: &Path, text: &str) {
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.join(INTENTS_NAME))
            .unwrap();
        log.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_record_survives_its_writer_and_the_log_names_children_started_since() {
        let base = temp_dir("round");
        let dir = base.join("spawner");
        let (mut record, found, problems) = SpawnerRecord::open(&dir).unwrap();
        assert_eq!((found.len(), problems.len()), (0, 0));
        let process = RecordedProcess {
            service_id: "web".into(),
            instance: 2,
            pid: 4242,
            start_time: 77,
        };
        record.intent("web", 2).unwrap();
        record.started(process.clone());
        record.save().unwrap();
        let log = dir.join(INTENTS_NAME);
        assert_eq!(fs::metadata(&log).unwrap().len(), 0, "emptied once covered");

        // Starts after that write, then a crash before the next: a child
        // that wrote its stat line, one that did not get so far, one cut
        // short in the middle of its line.
        let own_stat = fs::read_to_string("/proc/self/stat").unwrap();
        let me = RecordedProcess {
            service_id: "db".into(),
            instance: 0,
            pid: std::process::id(),
            start_time: sys::process_start_time(std::process::id()).unwrap(),
        };
        let started = record.intent("db", 0).unwrap();
        append_as_child(&dir, &own_stat);
        record.intent("never", 0).unwrap();
        record.intent("cut", 0).unwrap();
        append_as_child(&dir, &own_stat[..own_stat.len() / 2]);
        record.intent("after", 0).unwrap();
        assert_eq!(
            record.written_start_time(&started, me.pid),
            Some(me.start_time)
        );
        assert_eq!(record.written_start_time(&started, me.pid + 1), None);
        drop(record);

        let (_record, found, problems) = SpawnerRecord::open(&dir).unwrap();
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(found, [process, me]);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn an_older_spawners_intent_files_are_read_and_go_after_the_first_write() {
        let base = temp_dir("older");
        let dir = base.join("spawner");
        let (record, _, _) = SpawnerRecord::open(&dir).unwrap();
        let boot = record.boot_id.clone();
        drop(record);
        let own_stat = fs::read_to_string("/proc/self/stat").unwrap();
        let old = dir.join("intent.7");
        fs::write(&old, format!("intent db 0 boot={boot}\n{own_stat}")).unwrap();
        let (mut record, found, problems) = SpawnerRecord::open(&dir).unwrap();
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].service_id.as_str(), found[0].pid),
            ("db", std::process::id())
        );
        record.save().unwrap();
        assert!(!old.exists());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_record_of_another_boot_names_nothing_and_damage_is_reported() {
        let base = temp_dir("boot");
        let dir = base.join("spawner");
        drop(SpawnerRecord::open(&dir).unwrap());
        fs::write(
            dir.join(FILE_NAME),
            format!("{HEADER}\nboot another-boot\nprocess web 0 1 2\n"),
        )
        .unwrap();
        let (record, found, _) = SpawnerRecord::open(&dir).unwrap();
        assert!(found.is_empty());
        let boot = record.boot_id.clone();
        drop(record);
        fs::write(
            dir.join(FILE_NAME),
            format!("{HEADER}\nboot {boot}\nprocess web 0 1 2 cgroup=/x\nprocess web x\n"),
        )
        .unwrap();
        let own_stat = fs::read_to_string("/proc/self/stat").unwrap();
        fs::write(
            dir.join("intent.7"),
            format!("intent db 0 boot=another-boot\n{own_stat}"),
        )
        .unwrap();
        let (_, found, problems) = SpawnerRecord::open(&dir).unwrap();
        assert_eq!(found.len(), 1, "unknown key=value fields are kept readable");
        assert_eq!(
            found[0].service_id, "web",
            "an intent of another boot names nothing"
        );
        assert_eq!(problems, ["line 4 is not a process: \"process web x\""]);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = temp_dir("unsafe");
        let dir = base.join("spawner");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o770)).unwrap();
        let error = SpawnerRecord::open(&dir).unwrap_err();
        assert!(matches!(error, RecordError::Unsafe { .. }), "{error}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).unwrap();
        let error = SpawnerRecord::open(&dir).unwrap_err();
        assert!(
            error.to_string().contains("a directory above it"),
            "{error}"
        );
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_second_spawner_cannot_take_the_lock_until_the_first_lets_go() {
        let base = temp_dir("lock");
        let dir = base.join("spawner");
        let (first, _, _) = SpawnerRecord::open(&dir).unwrap();
        let second = File::open(dir.join(LOCK_NAME)).unwrap();
        assert!(!sys::try_lock_exclusive(&second).unwrap());
        drop(first);
        assert!(sys::try_lock_exclusive(&second).unwrap());
        fs::remove_dir_all(base).unwrap();
    }
}
