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
//! and reads it once at start; no thread, no channel. A write goes to
//! `node.record.tmp`, is fsynced, renamed over `node.record` and the
//! directory fsynced, so a crash at any instant leaves the old record or
//! the new one, never a torn one. A stray temporary file (a crash between
//! write and rename) is never read and is overwritten by the next write.
//! A record that cannot be read or parsed is an error the manager logs and
//! shows in node info; it then starts as if there were none.
//!
//! The format is line-based text, one item per line, fields separated by
//! single spaces (service ids hold no spaces):
//!
//! ```text
//! snow-fox-record 1
//! desired <service> up|down|failed <service version>
//! enabled <service> on|off <service version>
//! instance <service> <index> <pid> <start time> <service version> <restarts>
//! ```

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
const HEADER: &str = "snow-fox-record 1";
/// The record says who ran what: readable by the node's user only.
const FILE_MODE: u32 = 0o600;

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

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Users' wishes, by service id.
    pub desired: BTreeMap<String, Desired>,
    /// `enable` / `disable`, by service id.
    pub enabled: BTreeMap<String, Enabled>,
    /// Instances with a process.
    pub instances: Vec<RecordedInstance>,
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
    /// Writing the record failed; the previous one is still in place.
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

impl Record {
    /// The record's text.
    pub fn encode(&self) -> String {
        let mut text = format!("{HEADER}\n");
        for (service, desired) in &self.desired {
            let wish = desired.wish.as_str();
            text.push_str(&format!("desired {service} {wish} {}\n", desired.version));
        }
        for (service, enabled) in &self.enabled {
            let on = if enabled.on { "on" } else { "off" };
            text.push_str(&format!("enabled {service} {on} {}\n", enabled.version));
        }
        for i in &self.instances {
            text.push_str(&format!(
                "instance {} {} {} {} {} {}\n",
                i.service, i.index, i.pid, i.start_time, i.version, i.restarts
            ));
        }
        text
    }

    /// Parses a record's text; the line at fault (from 1) and what is
    /// wrong with it otherwise.
    pub fn decode(text: &str) -> Result<Record, (usize, String)> {
        let mut lines = text.lines().enumerate().map(|(at, line)| (at + 1, line));
        match lines.next() {
            Some((_, HEADER)) => {}
            Some((line, found)) => {
                return Err((line, format!("expected `{HEADER}`, found `{found}`")));
            }
            None => return Err((1, "empty".to_owned())),
        }
        let mut record = Record::default();
        for (line, content) in lines {
            let fields: Vec<&str> = content.split(' ').collect();
            let number = |at: usize, what: &str| {
                fields[at]
                    .parse::<u64>()
                    .map_err(|_| (line, format!("{what} `{}` is not a number", fields[at])))
            };
            match fields.as_slice() {
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
                    record.desired.insert(
                        (*service).to_owned(),
                        Desired {
                            wish,
                            version: (*version).to_owned(),
                        },
                    );
                }
                ["enabled", service, on, version] => {
                    let on = match *on {
                        "on" => true,
                        "off" => false,
                        other => {
                            return Err((line, format!("expected on or off, found `{other}`")));
                        }
                    };
                    record.enabled.insert(
                        (*service).to_owned(),
                        Enabled {
                            on,
                            version: (*version).to_owned(),
                        },
                    );
                }
                ["instance", service, _, _, _, version, _] => {
                    let narrow = |value: u64, what: &str| {
                        u32::try_from(value)
                            .map_err(|_| (line, format!("{what} {value} too large")))
                    };
                    record.instances.push(RecordedInstance {
                        service: (*service).to_owned(),
                        index: narrow(number(2, "index")?, "index")?,
                        pid: narrow(number(3, "pid")?, "pid")?,
                        start_time: number(4, "start time")?,
                        version: (*version).to_owned(),
                        restarts: narrow(number(6, "restart count")?, "restart count")?,
                    });
                }
                _ => return Err((line, format!("not a record line: `{content}`"))),
            }
        }
        Ok(record)
    }

    /// Reads the record in `dir`; `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Record>, RecordError> {
        let path = dir.join(FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RecordError::Read { path, source }),
        };
        Record::decode(&text)
            .map(Some)
            .map_err(|(line, reason)| RecordError::Corrupt { path, line, reason })
    }

    /// Replaces the record in `dir` (created if missing) atomically.
    pub fn save(&self, dir: &Path) -> Result<(), RecordError> {
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| RecordError::Write { path, source }
        };
        fs::create_dir_all(dir).map_err(failed(dir))?;
        let temp = dir.join(TEMP_FILE_NAME);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&temp)
            .map_err(failed(&temp))?;
        file.write_all(self.encode().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(failed(&temp))?;
        let path = dir.join(FILE_NAME);
        fs::rename(&temp, &path).map_err(failed(&path))?;
        // The rename is durable only once the directory entry is.
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(failed(dir))
    }
}

#[cfg(test)]
mod tests {
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
    }

    impl Drop for TempState {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
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
            instances: vec![
                RecordedInstance {
                    service: "db".to_owned(),
                    index: 0,
                    pid: 4242,
                    start_time: 123_456_789,
                    version: "ffeeddccbbaa9988".to_owned(),
                    restarts: 3,
                },
                RecordedInstance {
                    service: "db".to_owned(),
                    index: 1,
                    pid: 4243,
                    start_time: 123_456_790,
                    version: "ffeeddccbbaa9988".to_owned(),
                    restarts: 0,
                },
            ],
        }
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        let record = sample();
        let text = record.encode();
        assert!(text.starts_with("snow-fox-record 1\n"));
        assert!(text.contains("instance db 1 4243 123456790 ffeeddccbbaa9988 0\n"));
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
    fn a_corrupt_record_names_its_line() {
        let cases = [
            ("", 1, "empty"),
            ("snow-fox-record 2\n", 1, "expected `snow-fox-record 1`"),
            (
                "snow-fox-record 1\ninstance a 0 12\n",
                2,
                "not a record line",
            ),
            (
                "snow-fox-record 1\ninstance a 0 x 5 v 0\n",
                2,
                "pid `x` is not a number",
            ),
            (
                "snow-fox-record 1\ndesired a up v\ninstance a 0 99999999999 5 v 0\n",
                3,
                "pid 99999999999 too large",
            ),
            (
                "snow-fox-record 1\ndesired a sideways v\n",
                2,
                "up, down or failed",
            ),
            ("snow-fox-record 1\nenabled a maybe v\n", 2, "on or off"),
        ];
        for (text, line, reason) in cases {
            let (at, why) = Record::decode(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(why.contains(reason), "{text:?}: {why}");
        }
    }

    #[test]
    fn save_replaces_the_record_and_load_reads_it_back() {
        let state = TempState::new();
        assert_eq!(Record::load(&state.0).unwrap(), None, "none yet");
        sample().save(&state.0).unwrap();
        assert_eq!(Record::load(&state.0).unwrap(), Some(sample()));
        Record::default().save(&state.0).unwrap();
        assert_eq!(Record::load(&state.0).unwrap(), Some(Record::default()));
        assert!(
            !state.0.join(TEMP_FILE_NAME).exists(),
            "the temporary file is renamed into place"
        );
    }

    #[test]
    fn a_stray_temporary_file_is_ignored_and_overwritten() {
        let state = TempState::new();
        sample().save(&state.0).unwrap();
        fs::write(
            state.0.join(TEMP_FILE_NAME),
            "snow-fox-record 1\ninstance db 0 4",
        )
        .unwrap();
        assert_eq!(Record::load(&state.0).unwrap(), Some(sample()));
        Record::default().save(&state.0).unwrap();
        assert_eq!(Record::load(&state.0).unwrap(), Some(Record::default()));
    }

    #[test]
    fn an_unreadable_or_corrupt_record_is_an_error_naming_the_file() {
        let state = TempState::new();
        fs::create_dir_all(&state.0).unwrap();
        fs::write(state.0.join(FILE_NAME), "garbage\n").unwrap();
        let error = Record::load(&state.0).unwrap_err().to_string();
        assert!(
            error.contains("node.record is corrupt at line 1"),
            "{error}"
        );
        fs::remove_file(state.0.join(FILE_NAME)).unwrap();
        fs::create_dir(state.0.join(FILE_NAME)).unwrap();
        let error = Record::load(&state.0).unwrap_err().to_string();
        assert!(error.starts_with("reading the state record"), "{error}");
        let error = sample().save(&state.0).unwrap_err().to_string();
        assert!(error.starts_with("writing the state record"), "{error}");
    }
}
