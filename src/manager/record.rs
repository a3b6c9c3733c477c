//! The state record: what the node must remember across its own end, kept
//! in `<state_dir>/node.record`. It holds every instance that has a process
//! (service id, index, pid, the process's start time, the service version
//! it was started from, restart count) and what users asked each service to
//! be (up or down, or failed: it gave up and waits for a user's start),
//! and what `enable` and `disable` last said, so a node that comes back
//! after a crash re-adopts the processes and honours earlier `start`s and
//! `stop`s.
//!
//! Owned by the manager, which writes it at most once per pass of its loop
//! and reads it once at start; no thread, no channel. The file is a
//! journal: the whole record, then the changes of each pass appended to
//! it, so that a pass costs what it changed, not the size of the record
//! (rewritten whole per pass, a start of 10,000 services spent nine tenths
//! of the manager's time writing it). Each pass's changes are a batch of
//! lines closed by an `end` line, appended in one `write(2)` before the
//! pass's replies leave, so it survives a kill -9 of the node; a batch
//! that changes what users asked (`desired`, `enabled`) is also made
//! durable with one `fdatasync`, to survive a power loss too (instances
//! alone describe processes a power loss ends anyway). A batch
//! not closed by its `end` (a crash in the middle of the append) was never
//! answered for and is ignored whole; its last line may be cut short.
//! Anything else that does not parse is a corrupt record.
//!
//! The record is rewritten whole (compacted) by the first write of a node,
//! after a failed write, and once the journal outgrows twice what the
//! record takes written whole (and [`COMPACT_FLOOR`]): written to
//! `node.record.tmp`, fsynced, renamed over `node.record` and the directory
//! fsynced, so a crash at any instant leaves the old journal or the new
//! record, never a torn one. A stray temporary file (a crash between write
//! and rename) is never read and is overwritten by the next rewrite. Every
//! file is opened `O_NOFOLLOW` and created mode 0600. A record that cannot
//! be read or parsed is an error the manager logs and shows in node info;
//! it then starts as if there were none.
//!
//! The format is line-based text, one item per line, fields separated by
//! single spaces (service ids hold no spaces); a later line replaces an
//! earlier one of the same service (and instance), a `-` line removes it:
//!
//! ```text
//! snow-fox-record 2
//! desired <service> up|down|failed <service version>
//! enabled <service> on|off <service version>
//! instance <service> <index> <pid> <start time> <service version> <restarts>
//! end
//! -desired <service>
//! -enabled <service>
//! -instance <service> <index>
//! end
//! ```
//!
//! A record of an older node (`snow-fox-record 1`: the whole record, no
//! `end`, no removals) is read as one batch.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The record's file name in the state dir.
const FILE_NAME: &str = "node.record";
/// Where a new record is written before it is renamed into place.
const TEMP_FILE_NAME: &str = "node.record.tmp";
/// The first line: the format and its version.
const HEADER: &str = "snow-fox-record 2";
/// The first line of an older node's record: the whole record.
const HEADER_WHOLE: &str = "snow-fox-record 1";
/// The line that closes a batch.
const END: &str = "end";
/// The record says who ran what: readable by the node's user only.
const FILE_MODE: u32 = 0o600;
/// The journal is compacted once it is longer than twice the record
/// written whole plus this, so that a small record is not rewritten every
/// few passes.
pub const COMPACT_FLOOR: u64 = 16 * 1024;

/// What a service is meant to be, by what a user last said or what it
/// did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wish {
    /// A user started it (directly, or as what a started service
    /// requires).
    Up,
    /// A user stopped it (or a service it requires).
    Down,
    /// It gave up; it stays failed until a user starts it.
    Failed,
}

impl Wish {
    /// Its word in the record and in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Wish::Up => "up",
            Wish::Down => "down",
            Wish::Failed => "failed",
        }
    }
}

/// What a user asked a service to be, and the service version that was
/// current then: a changed definition forgets the wish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Up, down or failed.
    pub wish: Wish,
    /// The service's version when the user asked.
    pub version: String,
}

/// What `enable` or `disable` last said of a service, and its version
/// then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enabled {
    /// Whether it starts with the node.
    pub on: bool,
    /// The service's version when the user said so.
    pub version: String,
}

/// One instance that had a process when the record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedInstance {
    /// The service id.
    pub service: String,
    /// The instance index.
    pub index: u32,
    /// Its process.
    pub pid: u32,
    /// The process's start time (see [`crate::sys::process_start_time`]).
    pub start_time: u64,
    /// The service version the process was started from.
    pub version: String,
    /// Restarts so far.
    pub restarts: u32,
}

/// Everything the record holds of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRecord {
    /// What a user last asked it to be.
    pub desired: Option<Desired>,
    /// What `enable` or `disable` last said.
    pub enabled: Option<Enabled>,
    /// Its instances with a process, by index.
    pub instances: Vec<RecordedInstance>,
}

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Users' wishes, by service id.
    pub desired: BTreeMap<String, Desired>,
    /// `enable` / `disable`, by service id.
    pub enabled: BTreeMap<String, Enabled>,
    /// Instances with a process, by service id and index.
    pub instances: BTreeMap<(String, u32), RecordedInstance>,
}

/// One line of the journal: a service's wish, enable or instance set
/// (`Some`) or removed (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Desired(String, Option<Desired>),
    Enabled(String, Option<Enabled>),
    Instance((String, u32), Option<RecordedInstance>),
}

/// Why the record could not be read or written.
#[derive(Debug)]
pub enum RecordError {
    /// Reading the record failed.
    Read {
        /// The record's path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The record is not one this node writes.
    Corrupt {
        /// The record's path.
        path: PathBuf,
        /// The line at fault, counted from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the record failed; what was written before is still in
    /// place.
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Read { path, source } => {
                write!(f, "reading the state record {}: {source}", path.display())
            }
            RecordError::Corrupt { path, line, reason } => write!(
                f,
                "the state record {} is corrupt at line {line}: {reason}",
                path.display()
            ),
            RecordError::Write { path, source } => write!(
                f,
                "writing the state record {}: {source} (is the state dir writable?)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecordError::Read { source, .. } | RecordError::Write { source, .. } => Some(source),
            RecordError::Corrupt { .. } => None,
        }
    }
}

impl Change {
    /// Its line in the journal, with its newline.
    fn line(&self) -> String {
        match self {
            Change::Desired(service, Some(desired)) => desired_line(service, desired),
            Change::Desired(service, None) => format!("-desired {service}\n"),
            Change::Enabled(service, Some(enabled)) => enabled_line(service, enabled),
            Change::Enabled(service, None) => format!("-enabled {service}\n"),
            Change::Instance(_, Some(instance)) => instance_line(instance),
            Change::Instance((service, index), None) => format!("-instance {service} {index}\n"),
        }
    }

    /// Parses one line (without its newline) of a journal.
    fn parse(content: &str, line: usize) -> Result<Change, (usize, String)> {
        let fields: Vec<&str> = content.split(' ').collect();
        let number = |at: usize, what: &str| {
            fields[at]
                .parse::<u64>()
                .map_err(|_| (line, format!("{what} `{}` is not a number", fields[at])))
        };
        let narrow = |value: u64, what: &str| {
            u32::try_from(value).map_err(|_| (line, format!("{what} {value} too large")))
        };
        let change = match fields.as_slice() {
            ["desired", service, wish, version] => {
                let wish = match *wish {
                    "up" => Wish::Up,
                    "down" => Wish::Down,
                    "failed" => Wish::Failed,
                    other => {
                        return Err((
                            line,
                            format!("expected up, down or failed, found `{other}`"),
                        ));
                    }
                };
                let version = (*version).to_owned();
                Change::Desired((*service).to_owned(), Some(Desired { wish, version }))
            }
            ["enabled", service, on, version] => {
                let on = match *on {
                    "on" => true,
                    "off" => false,
                    other => return Err((line, format!("expected on or off, found `{other}`"))),
                };
                let version = (*version).to_owned();
                Change::Enabled((*service).to_owned(), Some(Enabled { on, version }))
            }
            ["instance", service, _, _, _, version, _] => {
                let instance = RecordedInstance {
                    service: (*service).to_owned(),
                    index: narrow(number(2, "index")?, "index")?,
                    pid: narrow(number(3, "pid")?, "pid")?,
                    start_time: number(4, "start time")?,
                    version: (*version).to_owned(),
                    restarts: narrow(number(6, "restart count")?, "restart count")?,
                };
                Change::Instance((instance.service.clone(), instance.index), Some(instance))
            }
            ["-desired", service] => Change::Desired((*service).to_owned(), None),
            ["-enabled", service] => Change::Enabled((*service).to_owned(), None),
            ["-instance", service, _] => {
                let index = narrow(number(2, "index")?, "index")?;
                Change::Instance(((*service).to_owned(), index), None)
            }
            _ => return Err((line, format!("not a record line: `{content}`"))),
        };
        Ok(change)
    }
}

fn desired_line(service: &str, desired: &Desired) -> String {
    let wish = desired.wish.as_str();
    format!("desired {service} {wish} {}\n", desired.version)
}

fn enabled_line(service: &str, enabled: &Enabled) -> String {
    let on = if enabled.on { "on" } else { "off" };
    format!("enabled {service} {on} {}\n", enabled.version)
}

fn instance_line(i: &RecordedInstance) -> String {
    format!(
        "instance {} {} {} {} {} {}\n",
        i.service, i.index, i.pid, i.start_time, i.version, i.restarts
    )
}

/// Sets `key` in `map` to `value` (removes it for `None`); by how much
/// that changed the length of the lines `line` writes of the map.
fn replace<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: Option<V>,
    line: impl Fn(&K, &V) -> String,
) -> i64 {
    let length = |value: Option<&V>| value.map_or(0, |value| line(&key, value).len() as i64);
    let removed = length(map.remove(&key).as_ref());
    let added = length(value.as_ref());
    if let Some(value) = value {
        map.insert(key, value);
    }
    added - removed
}

impl Record {
    /// The record of `services`: what each holds.
    pub fn of(services: impl IntoIterator<Item = (String, ServiceRecord)>) -> Record {
        let mut record = Record::default();
        for (service, held) in services {
            for change in record.changes_to(&service, held) {
                record.apply(change);
            }
        }
        record
    }

    /// The record's text written whole: what a compaction writes.
    pub fn encode(&self) -> String {
        let mut text = format!("{HEADER}\n");
        for (service, desired) in &self.desired {
            text.push_str(&desired_line(service, desired));
        }
        for (service, enabled) in &self.enabled {
            text.push_str(&enabled_line(service, enabled));
        }
        for instance in self.instances.values() {
            text.push_str(&instance_line(instance));
        }
        text.push_str(END);
        text.push('\n');
        text
    }

    /// Parses a record's text, replaying its journal; the line at fault
    /// (from 1) and what is wrong with it otherwise.
    pub fn decode(text: &str) -> Result<Record, (usize, String)> {
        let mut lines = text
            .split_inclusive('\n')
            .enumerate()
            .map(|(at, line)| (at + 1, line));
        let journal = match lines.next().map(|(_, line)| line.trim_end_matches('\n')) {
            Some(HEADER) => true,
            Some(HEADER_WHOLE) => false,
            Some(found) => {
                return Err((1, format!("expected `{HEADER}`, found `{found}`")));
            }
            None => return Err((1, "empty".to_owned())),
        };
        let mut record = Record::default();
        let mut batch = Vec::new();
        for (line, content) in lines {
            let Some(content) = content.strip_suffix('\n') else {
                if journal {
                    // Cut short by a crash in the middle of its append:
                    // its batch has no `end`, and is dropped.
                    break;
                }
                record.apply(Change::parse(content, line)?);
                continue;
            };
            if journal && content == END {
                for change in batch.drain(..) {
                    record.apply(change);
                }
                continue;
            }
            let change = Change::parse(content, line)?;
            if journal {
                batch.push(change);
            } else if matches!(
                change,
                Change::Desired(_, None) | Change::Enabled(_, None) | Change::Instance(_, None)
            ) {
                return Err((line, format!("not a record line: `{content}`")));
            } else {
                record.apply(change);
            }
        }
        Ok(record)
    }

    /// The changes that make what the record holds of `service` `held`,
    /// in the order the whole record lists them.
    fn changes_to(&self, service: &str, held: ServiceRecord) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.desired.get(service) != held.desired.as_ref() {
            changes.push(Change::Desired(service.to_owned(), held.desired));
        }
        if self.enabled.get(service) != held.enabled.as_ref() {
            changes.push(Change::Enabled(service.to_owned(), held.enabled));
        }
        let mut now: BTreeMap<u32, RecordedInstance> = held
            .instances
            .into_iter()
            .map(|instance| (instance.index, instance))
            .collect();
        let from = (service.to_owned(), 0);
        let to = (service.to_owned(), u32::MAX);
        for (key, was) in self.instances.range(from..=to) {
            match now.remove(&key.1) {
                Some(instance) if instance == *was => {}
                Some(instance) => changes.push(Change::Instance(key.clone(), Some(instance))),
                None => changes.push(Change::Instance(key.clone(), None)),
            }
        }
        changes.extend(now.into_values().map(|instance| {
            Change::Instance((service.to_owned(), instance.index), Some(instance))
        }));
        changes
    }

    /// Applies `change`; by how much it changed the length of
    /// [`Record::encode`]'s text.
    fn apply(&mut self, change: Change) -> i64 {
        match change {
            Change::Desired(service, desired) => {
                replace(&mut self.desired, service, desired, |s, d| {
                    desired_line(s, d)
                })
            }
            Change::Enabled(service, enabled) => {
                replace(&mut self.enabled, service, enabled, |s, e| {
                    enabled_line(s, e)
                })
            }
            Change::Instance(key, instance) => {
                replace(&mut self.instances, key, instance, |_, i| instance_line(i))
            }
        }
    }

    /// Reads the record in `dir`; `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Record>, RecordError> {
        let path = dir.join(FILE_NAME);
        let text = match read_no_follow(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RecordError::Read { path, source }),
        };
        Record::decode(&text)
            .map(Some)
            .map_err(|(line, reason)| RecordError::Corrupt { path, line, reason })
    }
}

/// The text of `path`, not following a symbolic link there.
fn read_no_follow(path: &Path) -> io::Result<String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut text = String::new();
    io::Read::read_to_string(&mut file, &mut text)?;
    Ok(text)
}

/// The record in its state dir, as a journal: what was last written, and
/// the file the next passes' changes are appended to.
#[derive(Debug, Default)]
pub struct Journal {
    /// What the file holds, replayed.
    written: Record,
    /// The record file, open for appending; `None` before the first write
    /// and after a failed one, when the next write rewrites it whole.
    file: Option<File>,
    /// Whether a write was tried yet.
    tried: bool,
    /// The file's length.
    bytes: u64,
    /// The length of the record written whole.
    whole_bytes: u64,
}

impl Journal {
    /// Whether no write was tried yet: a node's first pass writes the
    /// record, changed or not, so that the journal of the node before
    /// (perhaps ending in a batch cut short) is not appended to.
    pub fn untried(&self) -> bool {
        !self.tried
    }

    /// Writes what changed of `services` (each with all it now holds):
    /// appends the changes as one batch, or rewrites the record whole, as
    /// `all` returns it, on the first write, after a failed one, or once
    /// the journal is long enough. Nothing when nothing changed.
    pub fn write(
        &mut self,
        dir: &Path,
        services: impl IntoIterator<Item = (String, ServiceRecord)>,
        all: impl FnOnce() -> Record,
    ) -> Result<(), RecordError> {
        self.tried = true;
        let mut batch = String::new();
        let mut wishes = false;
        for (service, held) in services {
            for change in self.written.changes_to(&service, held) {
                wishes |= !matches!(change, Change::Instance(..));
                batch.push_str(&change.line());
                let by = self.written.apply(change);
                self.whole_bytes = self.whole_bytes.saturating_add_signed(by);
            }
        }
        let longer = self.bytes + (batch.len() + END.len() + 1) as u64;
        let Some(file) = self
            .file
            .as_mut()
            .filter(|_| longer <= 2 * self.whole_bytes + COMPACT_FLOOR)
        else {
            return self.rewrite(dir, all());
        };
        if batch.is_empty() {
            return Ok(());
        }
        batch.push_str(END);
        batch.push('\n');
        // Written before the pass's replies leave, the batch survives a
        // kill -9 of the node from here on. What users asked (`desired`,
        // `enabled`) must also survive a power loss, so it is synced;
        // instances alone are not: like the spawner's record, they
        // describe processes that a power loss ends too, and a restart's
        // or a stop's reply would otherwise wait for the disk.
        let appended = file
            .write_all(batch.as_bytes())
            .and_then(|()| if wishes { file.sync_data() } else { Ok(()) });
        if let Err(source) = appended {
            // The file may end in part of this batch: the next write
            // replaces it whole.
            self.file = None;
            return Err(RecordError::Write {
                path: dir.join(FILE_NAME),
                source,
            });
        }
        self.bytes = longer;
        Ok(())
    }

    /// Replaces the record in `dir` (created if missing) with `record`,
    /// atomically, and keeps the new file open for the next appends.
    fn rewrite(&mut self, dir: &Path, record: Record) -> Result<(), RecordError> {
        self.file = None;
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| RecordError::Write { path, source }
        };
        fs::create_dir_all(dir).map_err(failed(dir))?;
        let temp = dir.join(TEMP_FILE_NAME);
        // Appending, so that the same descriptor appends to the record
        // once it is renamed into place (and truncated by hand: `O_TRUNC`
        // does not go with `O_APPEND` in std).
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .map_err(failed(&temp))?;
        let text = record.encode();
        file.set_len(0)
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(failed(&temp))?;
        let path = dir.join(FILE_NAME);
        fs::rename(&temp, &path).map_err(failed(&path))?;
        // The rename is durable only once the directory entry is.
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(failed(dir))?;
        self.file = Some(file);
        self.bytes = text.len() as u64;
        self.whole_bytes = self.bytes;
        self.written = record;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A state dir of its own under the temp dir, removed when dropped.
    struct TempState(PathBuf);

    impl TempState {
        fn new() -> TempState {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "snow-fox-record-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            TempState(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join(FILE_NAME)
        }
    }

    impl Drop for TempState {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn instance(service: &str, index: u32, pid: u32, restarts: u32) -> RecordedInstance {
        RecordedInstance {
            service: service.to_owned(),
            index,
            pid,
            start_time: 123_456_789 + u64::from(pid),
            version: "ffeeddccbbaa9988".to_owned(),
            restarts,
        }
    }

    fn instances(list: Vec<RecordedInstance>) -> BTreeMap<(String, u32), RecordedInstance> {
        list.into_iter()
            .map(|i| ((i.service.clone(), i.index), i))
            .collect()
    }

    fn sample() -> Record {
        Record {
            desired: BTreeMap::from([
                (
                    "web".to_owned(),
                    Desired {
                        wish: Wish::Down,
                        version: "00112233aabbccdd".to_owned(),
                    },
                ),
                (
                    "db".to_owned(),
                    Desired {
                        wish: Wish::Up,
                        version: "ffeeddccbbaa9988".to_owned(),
                    },
                ),
                (
                    "cron".to_owned(),
                    Desired {
                        wish: Wish::Failed,
                        version: "0000000000000001".to_owned(),
                    },
                ),
            ]),
            enabled: BTreeMap::from([(
                "web".to_owned(),
                Enabled {
                    on: false,
                    version: "00112233aabbccdd".to_owned(),
                },
            )]),
            instances: instances(vec![instance("db", 0, 4242, 3), instance("db", 1, 4243, 0)]),
        }
    }

    /// What `after` holds of every service `before` or `after` names, as
    /// the manager hands a pass's changes to the journal.
    fn services(before: &Record, after: &Record) -> Vec<(String, ServiceRecord)> {
        let ids: BTreeSet<&String> = [before, after]
            .into_iter()
            .flat_map(|r| {
                r.desired
                    .keys()
                    .chain(r.enabled.keys())
                    .chain(r.instances.keys().map(|key| &key.0))
            })
            .collect();
        ids.into_iter()
            .map(|id| {
                let held = ServiceRecord {
                    desired: after.desired.get(id).cloned(),
                    enabled: after.enabled.get(id).cloned(),
                    instances: after
                        .instances
                        .range((id.clone(), 0)..=(id.clone(), u32::MAX))
                        .map(|(_, i)| i.clone())
                        .collect(),
                };
                (id.clone(), held)
            })
            .collect()
    }

    /// Writes `after` through `journal`, which holds `before`.
    fn pass(journal: &mut Journal, dir: &Path, before: &Record, after: &Record) {
        journal
            .write(dir, services(before, after), || after.clone())
            .unwrap();
    }

    /// Sample's next states: db restarted, web started, db's second
    /// instance gone, cron's wish forgotten, web enabled.
    fn history() -> Vec<Record> {
        let mut states = vec![Record::default(), sample()];
        let mut next = sample();
        next.instances = instances(vec![instance("db", 0, 5000, 4), instance("db", 1, 4243, 0)]);
        states.push(next.clone());
        next.desired.get_mut("web").unwrap().wish = Wish::Up;
        next.instances
            .insert(("web".to_owned(), 0), instance("web", 0, 5001, 0));
        states.push(next.clone());
        next.instances.remove(&("db".to_owned(), 1));
        next.desired.remove("cron");
        next.enabled.get_mut("web").unwrap().on = true;
        states.push(next);
        states
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        let record = sample();
        let text = record.encode();
        assert!(text.starts_with("snow-fox-record 2\n"));
        assert!(text.ends_with("\nend\n"));
        assert!(text.contains("instance db 1 4243 123461032 ffeeddccbbaa9988 0\n"));
        assert!(text.contains("desired web down 00112233aabbccdd\n"));
        assert!(text.contains("desired cron failed 0000000000000001\n"));
        assert!(text.contains("enabled web off 00112233aabbccdd\n"));
        assert_eq!(Record::decode(&text).unwrap(), record);
        assert_eq!(
            Record::decode(&Record::default().encode()).unwrap(),
            Record::default()
        );
    }

    #[test]
    fn an_older_nodes_whole_record_is_read() {
        let text = "snow-fox-record 1\ndesired db up v1\nenabled db on v1\n\
                    instance db 0 42 77 v1 2\n";
        let record = Record::decode(text).unwrap();
        assert_eq!(record.desired["db"].wish, Wish::Up);
        assert!(record.enabled["db"].on);
        assert_eq!(record.instances[&("db".to_owned(), 0)].pid, 42);
        // It knows no removals, and needs no `end`.
        let (line, why) = Record::decode("snow-fox-record 1\n-desired db\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(why.contains("not a record line"), "{why}");
        let (line, _) = Record::decode("snow-fox-record 1\nend\n").unwrap_err();
        assert_eq!(line, 2);
    }

    #[test]
    fn a_corrupt_record_names_its_line() {
        let cases = [
            ("", 1, "empty"),
            ("snow-fox-record 3\n", 1, "expected `snow-fox-record 2`"),
            (
                "snow-fox-record 2\ninstance a 0 12\n",
                2,
                "not a record line",
            ),
            (
                "snow-fox-record 2\ninstance a 0 x 5 v 0\n",
                2,
                "pid `x` is not a number",
            ),
            (
                "snow-fox-record 2\ndesired a up v\ninstance a 0 99999999999 5 v 0\n",
                3,
                "pid 99999999999 too large",
            ),
            (
                "snow-fox-record 2\ndesired a sideways v\n",
                2,
                "up, down or failed",
            ),
            ("snow-fox-record 2\nenabled a maybe v\n", 2, "on or off"),
            ("snow-fox-record 2\n-instance a x\n", 2, "index `x`"),
            ("snow-fox-record 2\n-desired\n", 2, "not a record line"),
            // Garbage in the middle of a journal, even in a batch that is
            // later closed, or in the last batch that is not.
            (
                "snow-fox-record 2\ndesired a up v\nend\ndesired a down v\n\
                 garbage\nend\ndesired a up v\nend\n",
                5,
                "not a record line: `garbage`",
            ),
            (
                "snow-fox-record 2\nend\n\nend\n",
                3,
                "not a record line: ``",
            ),
            (
                "snow-fox-record 2\nend\n-enabled a b\ninstance a",
                3,
                "not a record line",
            ),
        ];
        for (text, line, reason) in cases {
            let (at, why) = Record::decode(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(why.contains(reason), "{text:?}: {why}");
        }
    }

    #[test]
    fn each_pass_appends_its_changes_and_the_journal_replays_to_the_last() {
        let state = TempState::new();
        assert_eq!(Record::load(&state.0).unwrap(), None, "none yet");
        let mut journal = Journal::default();
        assert!(journal.untried());
        let states = history();
        for pair in states.windows(2) {
            pass(&mut journal, &state.0, &pair[0], &pair[1]);
            assert_eq!(Record::load(&state.0).unwrap().as_ref(), Some(&pair[1]));
        }
        assert!(!journal.untried());
        let text = fs::read_to_string(state.file()).unwrap();
        // The first write is the record whole, each pass after it a
        // batch of what it changed.
        assert!(text.starts_with(&sample().encode()), "{text}");
        assert_eq!(text.matches("\nend\n").count(), states.len() - 1, "{text}");
        assert!(
            text.ends_with(
                "\n-desired cron\n-instance db 1\nenabled web on 00112233aabbccdd\nend\n"
            )
        );
        assert_eq!(fs::metadata(state.file()).unwrap().len(), journal.bytes);
        // A pass that changed nothing writes nothing.
        let last = states.last().unwrap();
        pass(&mut journal, &state.0, last, last);
        assert_eq!(fs::read_to_string(state.file()).unwrap(), text);
        assert_eq!(fs::metadata(state.file()).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_batch_cut_short_anywhere_loads_as_the_record_before_it() {
        let state = TempState::new();
        let mut journal = Journal::default();
        let states = history();
        for pair in states.windows(2) {
            pass(&mut journal, &state.0, &pair[0], &pair[1]);
        }
        let text = fs::read_to_string(state.file()).unwrap();
        let last_batch = text[..text.len() - 1].rfind("end\n").unwrap() + "end\n".len();
        assert!(text.len() - last_batch > 60, "a batch of several lines");
        for cut in last_batch..text.len() {
            fs::write(state.file(), &text[..cut]).unwrap();
            assert_eq!(
                Record::load(&state.0).unwrap().as_ref(),
                Some(&states[states.len() - 2]),
                "cut at byte {cut} of {}",
                text.len()
            );
        }
        // A node's first write after that rewrites the record whole, so
        // what it appends next never follows a batch cut short.
        let mut journal = Journal::default();
        let before = &states[states.len() - 2];
        pass(&mut journal, &state.0, before, &sample());
        pass(&mut journal, &state.0, &sample(), before);
        assert_eq!(Record::load(&state.0).unwrap().as_ref(), Some(before));
    }

    #[test]
    fn a_journal_of_many_passes_is_compacted_and_stays_bounded() {
        let state = TempState::new();
        let mut journal = Journal::default();
        let mut before = Record::default();
        let mut largest = 0;
        let mut compactions = 0;
        for round in 0..2_000u32 {
            // One service restarting over and over, another coming and
            // going: the record itself stays small.
            let mut after = before.clone();
            after
                .instances
                .insert(("db".to_owned(), 0), instance("db", 0, 1000 + round, round));
            if round % 2 == 0 {
                after.desired.insert(
                    "web".to_owned(),
                    Desired {
                        wish: Wish::Up,
                        version: "v".to_owned(),
                    },
                );
            } else {
                after.desired.remove("web");
            }
            let was = journal.bytes;
            pass(&mut journal, &state.0, &before, &after);
            let bytes = fs::metadata(state.file()).unwrap().len();
            assert_eq!(bytes, journal.bytes);
            compactions += usize::from(bytes < was);
            largest = largest.max(bytes);
            before = after;
        }
        assert_eq!(Record::load(&state.0).unwrap().as_ref(), Some(&before));
        let whole = before.encode().len() as u64;
        assert!(whole < 200, "{whole}");
        assert!(
            largest <= 2 * 200 + COMPACT_FLOOR,
            "the journal grew to {largest} bytes"
        );
        // About 2,000 passes of ~80 bytes, compacted every 16 KiB.
        assert!(compactions >= 8, "{compactions} compactions");
    }

    #[test]
    fn a_growing_record_is_appended_to_not_rewritten_per_pass() {
        // A start of many services, each pass adding a few: the journal
        // is compacted once in a while, not per pass, and stays within
        // twice the record.
        let state = TempState::new();
        let mut journal = Journal::default();
        let mut before = Record::default();
        let mut compactions = 0;
        for service in 0..1_000u32 {
            let mut after = before.clone();
            let id = format!("s{service:04}");
            after.desired.insert(
                id.clone(),
                Desired {
                    wish: Wish::Up,
                    version: "00112233aabbccdd".to_owned(),
                },
            );
            after
                .instances
                .insert((id.clone(), 0), instance(&id, 0, service, 0));
            let was = journal.bytes;
            pass(&mut journal, &state.0, &before, &after);
            compactions += usize::from(journal.bytes < was + 10);
            let whole = after.encode().len() as u64;
            assert!(journal.bytes <= 2 * whole + COMPACT_FLOOR);
            before = after;
        }
        assert_eq!(Record::load(&state.0).unwrap().as_ref(), Some(&before));
        assert!(compactions < 10, "{compactions} rewrites in 1,000 passes");
    }

    #[test]
    fn a_stray_temporary_file_is_ignored_and_overwritten() {
        let state = TempState::new();
        let mut journal = Journal::default();
        pass(&mut journal, &state.0, &Record::default(), &sample());
        fs::write(
            state.0.join(TEMP_FILE_NAME),
            "snow-fox-record 2\ninstance db 0 4",
        )
        .unwrap();
        assert_eq!(Record::load(&state.0).unwrap(), Some(sample()));
        let mut journal = Journal::default();
        pass(&mut journal, &state.0, &sample(), &Record::default());
        assert_eq!(Record::load(&state.0).unwrap(), Some(Record::default()));
        assert!(
            !state.0.join(TEMP_FILE_NAME).exists(),
            "the temporary file is renamed into place"
        );
    }

    #[test]
    fn symbolic_links_in_place_of_the_record_are_not_followed() {
        let state = TempState::new();
        fs::create_dir_all(&state.0).unwrap();
        let target = state.0.join("elsewhere");
        fs::write(&target, sample().encode()).unwrap();
        std::os::unix::fs::symlink(&target, state.file()).unwrap();
        let error = Record::load(&state.0).unwrap_err().to_string();
        assert!(error.starts_with("reading the state record"), "{error}");
        fs::remove_file(state.file()).unwrap();
        std::os::unix::fs::symlink(&target, state.0.join(TEMP_FILE_NAME)).unwrap();
        let mut journal = Journal::default();
        let error = journal
            .write(&state.0, Vec::new(), Record::default)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("writing the state record"), "{error}");
        assert_eq!(fs::read_to_string(&target).unwrap(), sample().encode());
    }

    #[test]
    fn an_unreadable_or_corrupt_record_is_an_error_naming_the_file() {
        let state = TempState::new();
        fs::create_dir_all(&state.0).unwrap();
        fs::write(state.file(), "garbage\n").unwrap();
        let error = Record::load(&state.0).unwrap_err().to_string();
        assert!(
            error.contains("node.record is corrupt at line 1"),
            "{error}"
        );
        fs::remove_file(state.file()).unwrap();
        fs::create_dir(state.file()).unwrap();
        let error = Record::load(&state.0).unwrap_err().to_string();
        assert!(error.starts_with("reading the state record"), "{error}");
        let mut journal = Journal::default();
        let error = journal
            .write(&state.0, services(&Record::default(), &sample()), sample)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("writing the state record"), "{error}");
        // The next write tries the whole record again, and once it can,
        // succeeds.
        fs::remove_dir(state.file()).unwrap();
        journal.write(&state.0, Vec::new(), sample).unwrap();
        assert_eq!(Record::load(&state.0).unwrap(), Some(sample()));
    }
}
