//! Size-based rotation of the files that children write their output to.
//!
//! Children hold their output files open themselves (`O_APPEND`), so
//! rotation is copy-truncate: `path.(keep-1)` moves to `path.keep`, ...,
//! `path.1` to `path.2`, `path` is copied to `path.1`, and `path` is
//! truncated to 0, where the child's next append lands. Lines written
//! between the copy and the truncation are lost; that is the price of no
//! pipe between node and service, which lets a service outlive a node
//! crash without SIGPIPE.
//!
//! It owns the list of rotating files and which live children use each;
//! the spawner asks it when the next check is due and runs it then. A
//! failed rotation is returned to the spawner to report; the file is
//! checked again at the next tick.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often rotating files are measured.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// An output file to rotate once it grows past `rotate_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RotatingFile {
    /// The file the child appends to.
    pub(super) path: PathBuf,
    /// Rotate when the file is larger than this.
    pub(super) rotate_bytes: u64,
    /// How many rotated files (`path.1` ... `path.keep`) to keep; 0 only
    /// truncates.
    pub(super) keep: u32,
}

#[derive(Debug)]
struct Tracked {
    rotate_bytes: u64,
    keep: u32,
    /// Live children writing to the file.
    users: HashSet<u32>,
}

/// The rotating files of live children, and when to measure them next.
#[derive(Debug, Default)]
pub(super) struct Rotation {
    files: HashMap<PathBuf, Tracked>,
    next_check: Option<Instant>,
}

impl Rotation {
    /// Starts watching the files child `pid` writes to. A file already
    /// watched takes the latest limits.
    pub(super) fn track(&mut self, pid: u32, files: Vec<RotatingFile>, now: Instant) {
        for file in files {
            let tracked = self.files.entry(file.path).or_insert_with(|| Tracked {
                rotate_bytes: file.rotate_bytes,
                keep: file.keep,
                users: HashSet::new(),
            });
            tracked.rotate_bytes = file.rotate_bytes;
            tracked.keep = file.keep;
            tracked.users.insert(pid);
        }
        if !self.files.is_empty() && self.next_check.is_none() {
            self.next_check = Some(now + CHECK_INTERVAL);
        }
    }

    /// Child `pid` is gone: files no live child writes to are dropped.
    pub(super) fn forget(&mut self, pid: u32) {
        self.files.retain(|_, tracked| {
            tracked.users.remove(&pid);
            !tracked.users.is_empty()
        });
        if self.files.is_empty() {
            self.next_check = None;
        }
    }

    /// When the files should be measured next; `None` while none rotate.
    pub(super) fn next_check(&self) -> Option<Instant> {
        self.next_check
    }

    /// Rotates every file over its limit; the failures, for reporting.
    pub(super) fn rotate_due(&mut self, now: Instant) -> Vec<RotateError> {
        let failures = self
            .files
            .iter()
            .filter_map(|(path, tracked)| {
                match rotate_if_over(path, tracked.rotate_bytes, tracked.keep) {
                    Ok(rotated) => {
                        if rotated {
                            log::debug!("spawner: rotated {}", path.display());
                        }
                        None
                    }
                    Err(error) => Some(error),
                }
            })
            .collect();
        if !self.files.is_empty() {
            self.next_check = Some(now + CHECK_INTERVAL);
        }
        failures
    }
}

/// Rotates `path` if it is larger than `rotate_bytes`; whether it did. A
/// missing file (removed by hand) has nothing to rotate.
fn rotate_if_over(path: &Path, rotate_bytes: u64, keep: u32) -> Result<bool, RotateError> {
    let size = match fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(RotateError::Measure {
                path: path.to_owned(),
                source,
            });
        }
    };
    if size <= rotate_bytes {
        return Ok(false);
    }
    for index in (1..keep).rev() {
        let from = numbered(path, index);
        let to = numbered(path, index + 1);
        match fs::rename(&from, &to) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(RotateError::Shift {
                    from,
                    to,
                    source: error,
                });
            }
            _ => {}
        }
    }
    if keep > 0 {
        let to = numbered(path, 1);
        fs::copy(path, &to).map_err(|source| RotateError::Copy {
            path: path.to_owned(),
            to,
            source,
        })?;
    }
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|source| RotateError::Truncate {
            path: path.to_owned(),
            source,
        })?;
    remove_beyond(path, keep)?;
    Ok(true)
}

/// Removes `path.(keep+1)`, `path.(keep+2)`, ... left by a larger `keep`.
fn remove_beyond(path: &Path, keep: u32) -> Result<(), RotateError> {
    for index in keep.saturating_add(1).. {
        let old = numbered(path, index);
        match fs::remove_file(&old) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(RotateError::RemoveOld { path: old, source }),
        }
    }
    Ok(())
}

/// `path.index`, for any path (not only UTF-8 ones).
fn numbered(path: &Path, index: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// A rotation step that failed.
#[derive(Debug)]
pub(super) enum RotateError {
    /// Reading the file's size.
    Measure { path: PathBuf, source: io::Error },
    /// Moving `path.n` to `path.(n+1)`.
    Shift {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// Copying the file to `path.1`.
    Copy {
        path: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// Truncating the file after its copy.
    Truncate { path: PathBuf, source: io::Error },
    /// Removing a rotated file beyond `keep`.
    RemoveOld { path: PathBuf, source: io::Error },
}

impl fmt::Display for RotateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotateError::Measure { path, source } => {
                write!(f, "rotating {}: reading its size: {source}", path.display())
            }
            RotateError::Shift { from, to, source } => write!(
                f,
                "rotating: moving {} to {}: {source}",
                from.display(),
                to.display()
            ),
            RotateError::Copy { path, to, source } => write!(
                f,
                "rotating {}: copying it to {}: {source}",
                path.display(),
                to.display()
            ),
            RotateError::Truncate { path, source } => write!(
                f,
                "rotating {}: truncating it after its copy: {source}",
                path.display()
            ),
            RotateError::RemoveOld { path, source } => write!(
                f,
                "rotating: removing {} beyond the files to keep: {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RotateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RotateError::Measure { source, .. }
            | RotateError::Shift { source, .. }
            | RotateError::Copy { source, .. }
            | RotateError::Truncate { source, .. }
            | RotateError::RemoveOld { source, .. } => Some(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn temp_dir() -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sf-rotation-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rotation_shifts_copies_truncates_and_keeps_at_most_keep() {
        let dir = temp_dir();
        let log = dir.join("out.log");
        for round in ["one", "two", "three"] {
            fs::write(&log, round.repeat(10)).unwrap();
            assert!(rotate_if_over(&log, 5, 2).unwrap());
        }
        assert_eq!(fs::read_to_string(&log).unwrap(), "");
        assert_eq!(
            fs::read_to_string(numbered(&log, 1)).unwrap(),
            "three".repeat(10)
        );
        assert_eq!(
            fs::read_to_string(numbered(&log, 2)).unwrap(),
            "two".repeat(10)
        );
        assert!(!numbered(&log, 3).exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn small_missing_and_keep_zero_files() {
        let dir = temp_dir();
        let log = dir.join("out.log");
        assert!(!rotate_if_over(&log, 5, 2).unwrap());
        fs::write(&log, "tiny").unwrap();
        assert!(!rotate_if_over(&log, 5, 2).unwrap());
        fs::write(numbered(&log, 1), "old").unwrap();
        fs::write(&log, "larger than five").unwrap();
        assert!(rotate_if_over(&log, 5, 0).unwrap());
        assert_eq!(fs::read_to_string(&log).unwrap(), "");
        assert!(!numbered(&log, 1).exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_timer_runs_only_while_a_live_child_uses_a_file() {
        let mut rotation = Rotation::default();
        let now = Instant::now();
        assert_eq!(rotation.next_check(), None);
        let file = RotatingFile {
            path: PathBuf::from("/nonexistent/sf/out.log"),
            rotate_bytes: 10,
            keep: 1,
        };
        rotation.track(7, vec![file.clone(), file.clone()], now);
        rotation.track(8, vec![file], now);
        assert_eq!(rotation.next_check(), Some(now + CHECK_INTERVAL));
        assert!(rotation.rotate_due(now).is_empty());
        rotation.forget(7);
        assert!(rotation.next_check().is_some());
        rotation.forget(8);
        assert_eq!(rotation.next_check(), None);
    }
}
