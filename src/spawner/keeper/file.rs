//! One captured output stream's log file: opened, written and rotated
//! with the rights of the user whose directory it is in, through a
//! directory fd, never through a link.
//!
//! Where the file goes is a path from the configuration, but the
//! directory on that path may belong to the service's user, who could put
//! a link anywhere in it at any moment. So:
//!
//! - The directory is opened once. The node's own log dir (the path
//!   `node.toml` gives, the file's parent exactly) is opened with the
//!   keeper's rights; if it is owned by the keeper's user and writable by
//!   no one else, nobody but that user controls its entries, and its
//!   files are handled with the keeper's own rights. Any other directory
//!   is opened with the service user's file-system ids (`setfsuid`): the
//!   path is resolved with that user's rights (a directory the user could
//!   not reach is not reached, a link the user planted on the way leads
//!   only where the user could go), and its files are handled with those
//!   rights, so the keeper can do there exactly what that user could do
//!   alone, and no more. A missing directory is an error; no directory is
//!   ever created here.
//! - The file is opened by name in that directory fd with `O_NOFOLLOW`
//!   (a link is refused, whatever it points at) and must be a regular file.
//! - Rotation renames names within the directory fd (`path.N` to
//!   `path.N+1`, ..., `path` to `path.1`; a link at a target is replaced,
//!   never written through), after checking that `path` still names the
//!   file the keeper holds, then opens a new `path` as above. Nothing is
//!   copied or truncated, so no line is lost and no byte is written twice.
//!
//! Every file holds at most `max_bytes` (records are cut to fit), so a
//! stream's files hold at most `max_bytes × (keep + 1)`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys::{self, UserIds};

/// The mode of the log files the keeper creates.
const FILE_MODE: u32 = 0o640;

/// The most rotated files a stream keeps (also the configuration's bound).
pub(super) const MAX_KEEP: u32 = 1000;

/// A log file being written, and what it takes to rotate it.
#[derive(Debug)]
pub(super) struct LogFile {
    /// The path, for messages only: nothing is resolved through it again.
    path: PathBuf,
    dir: OwnedFd,
    name: String,
    /// Whose rights its directory entries are handled with.
    rights: UserIds,
    /// The group its files are given, if any.
    reader_gid: Option<u32>,
    file: File,
    /// Bytes in `file`, counting `buffer`.
    size: u64,
    /// Records not yet written.
    buffer: Vec<u8>,
    /// Whether the last failed write left a record cut short.
    torn: bool,
    /// The newline that ends it is in the buffer.
    torn_end_buffered: bool,
    /// Records and bytes in `buffer` (the marker not counted).
    buffered_records: u64,
    buffered_bytes: u64,
    /// What failed writes lost since the last that worked.
    lost: Lost,
    max_bytes: u64,
    keep: u32,
}

/// Where a stream's file goes and how it rotates.
#[derive(Debug)]
pub(super) struct FileSpec<'a> {
    /// The file's absolute path.
    pub(super) path: &'a Path,
    /// The service's user and group.
    pub(super) service: UserIds,
    /// The node's log dir.
    pub(super) trusted_dir: Option<&'a Path>,
    /// Rotate before the file would pass this many bytes; 0 never.
    pub(super) max_bytes: u64,
    /// Rotated files to keep.
    pub(super) keep: u32,
    /// The group given the files in `trusted_dir`, for the node to read.
    pub(super) reader_gid: Option<u32>,
}

impl LogFile {
    /// Opens (or creates) the file `spec` describes, as described in the
    /// module doc; the reason when it must not or cannot.
    pub(super) fn open(spec: &FileSpec<'_>) -> Result<LogFile, String> {
        let path = spec.path;
        if spec.keep > MAX_KEEP {
            return Err(format!(
                "{}: log_keep {} is over the limit of {MAX_KEEP}",
                path.display(),
                spec.keep
            ));
        }
        let (Some(dir_path), Some(name)) = (
            path.parent().filter(|_| path.is_absolute()),
            path.file_name().and_then(|name| name.to_str()),
        ) else {
            return Err(format!(
                "{}: not an absolute path to a file with a UTF-8 name",
                path.display()
            ));
        };
        // The node's log dir (named by the node's configuration, so by
        // root) is opened with the keeper's rights, as the service's user
        // may not even search it; any other directory with the user's.
        let in_log_dir = spec.trusted_dir == Some(dir_path);
        let opener = if in_log_dir { own_ids() } else { spec.service };
        let dir = sys::as_file_user(opener, || open_dir(dir_path)).map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                format!(
                    "output directory {} does not exist (snow-fox never creates \
                     directories for output files; create it, owned by the service's user)",
                    dir_path.display()
                )
            } else {
                format!(
                    "opening output directory {} as uid {}: {error}",
                    dir_path.display(),
                    opener.uid
                )
            }
        })?;
        let trusted = in_log_dir && is_trusted(&dir);
        if in_log_dir && !trusted {
            log::warn!(
                "log keeper: the log dir {} is not owned by uid {} or is writable by others: \
                 its files are handled with the service's rights",
                dir_path.display(),
                sys::effective_uid()
            );
        }
        let (rights, reader_gid) = if trusted {
            (own_ids(), spec.reader_gid)
        } else {
            (spec.service, None)
        };
        let (file, size) = open_file(&dir, name, rights, reader_gid)
            .map_err(|reason| format!("{}: {reason}", path.display()))?;
        Ok(LogFile {
            path: path.to_owned(),
            dir,
            name: name.to_owned(),
            rights,
            reader_gid,
            file,
            size,
            buffer: Vec::new(),
            torn: false,
            torn_end_buffered: false,
            buffered_records: 0,
            buffered_bytes: 0,
            lost: Lost::default(),
            max_bytes: spec.max_bytes,
            keep: spec.keep,
        })
    }

    /// The largest record this file takes whole (longer ones are cut by
    /// the caller), or None when it never rotates.
    pub(super) fn max_record(&self) -> Option<usize> {
        (self.max_bytes > 0).then(|| usize::try_from(self.max_bytes).unwrap_or(usize::MAX))
    }

    /// Adds the record `timestamp line`, preceded by a marker line if
    /// lines were lost since the last write that worked, rotating first
    /// where a record would take the file past `max_bytes`. Rotation
    /// failures are returned; the record is kept.
    pub(super) fn push(&mut self, timestamp: &str, line: &[u8]) -> Result<(), String> {
        let mut result = Ok(());
        if self.lost.records > 0 && !self.lost.marker_buffered {
            let marker = format!(
                "{timestamp} snow-fox: {} lines ({} bytes) lost: {}\n",
                self.lost.records, self.lost.bytes, self.lost.reason
            );
            result = self.append(&[marker.as_bytes()]);
            self.lost.marker_buffered = true;
        }
        let record: [&[u8]; 4] = [timestamp.as_bytes(), b" ", line, b"\n"];
        let appended = self.append(&record);
        self.buffered_records += 1;
        self.buffered_bytes += (timestamp.len() + line.len() + 2) as u64;
        result.and(appended)
    }

    /// Adds one record, given in parts (so that no record is copied twice).
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), String> {
        let len: u64 = parts.iter().map(|part| part.len() as u64).sum();
        let mut result = Ok(());
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            result = self.flush().and_then(|()| self.rotate());
        }
        if self.torn {
            // A failed write left part of a record: end it, so the next
            // record starts a line of its own.
            self.buffer.push(b'\n');
            self.size += 1;
            self.torn = false;
            self.torn_end_buffered = true;
        }
        for part in parts {
            self.buffer.extend_from_slice(part);
        }
        self.size += len;
        result
    }

    /// Writes what is buffered. On failure the buffer is dropped, its
    /// records counted as lost (the next push writes the marker), and the
    /// size is what is on disk.
    pub(super) fn flush(&mut self) -> Result<(), String> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let before = self.size - self.buffer.len() as u64;
        let written = self.file.write_all(&self.buffer);
        let buffer = std::mem::take(&mut self.buffer);
        let records = std::mem::take(&mut self.buffered_records);
        let bytes = std::mem::take(&mut self.buffered_bytes);
        let marker = std::mem::take(&mut self.lost.marker_buffered);
        let torn_end = std::mem::take(&mut self.torn_end_buffered);
        let Err(error) = written else {
            if marker {
                self.lost = Lost::default();
            }
            return Ok(());
        };
        // What made it to disk before the failure counts as written.
        self.size = self
            .file
            .metadata()
            .map_or(before, |metadata| metadata.len());
        let on_disk = usize::try_from(self.size.saturating_sub(before))
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        self.torn = on_disk > 0 && buffer[on_disk - 1] != b'\n';
        let mut ends = buffer[..on_disk]
            .iter()
            .filter(|byte| **byte == b'\n')
            .count() as u64;
        // The newline ending a torn record and the marker come first.
        if torn_end && ends > 0 {
            ends -= 1;
        }
        if marker && ends > 0 {
            ends -= 1;
            self.lost = Lost::default();
        }
        let reason = format!("writing {}: {error}", self.path.display());
        self.lost.records += records.saturating_sub(ends);
        self.lost.bytes += bytes.saturating_sub(on_disk as u64);
        self.lost.reason.clone_from(&reason);
        Err(reason)
    }

    /// Moves the files one number up and starts a new one, within the
    /// directory fd and with the rights of the directory's user.
    fn rotate(&mut self) -> Result<(), String> {
        let name = self.name.as_str();
        let numbered = |index: u32| format!("{name}.{index}");
        let held = self
            .file
            .metadata()
            .map(|metadata| (metadata.dev(), metadata.ino()))
            .ok();
        let dir = &self.dir;
        let renamed = sys::as_file_user(self.rights, || {
            if sys::identity_at(dir, name).ok() != held {
                // Someone else moved or replaced it: it is not ours to move.
                return Ok(false);
            }
            for index in (1..self.keep).rev() {
                ignore_missing(sys::rename_at(dir, &numbered(index), &numbered(index + 1)))?;
            }
            if self.keep > 0 {
                sys::rename_at(dir, name, &numbered(1))?;
            } else {
                sys::unlink_at(dir, name)?;
            }
            for index in self.keep.saturating_add(1)..=MAX_KEEP.saturating_add(1) {
                match sys::unlink_at(dir, &numbered(index)) {
                    Err(error) if error.kind() == io::ErrorKind::NotFound => break,
                    other => other?,
                }
            }
            Ok(true)
        })
        .map_err(|error| format!("rotating {}: {error}", self.path.display()))?;
        let (file, size) = open_file(&self.dir, name, self.rights, self.reader_gid)
            .map_err(|reason| format!("rotating {}: {reason}", self.path.display()))?;
        self.file = file;
        self.size = size;
        if renamed {
            Ok(())
        } else {
            Err(format!(
                "{} was moved or replaced by someone else: not rotated, a new file started",
                self.path.display()
            ))
        }
    }
}

/// Lines lost to failed writes, until a marker line saying so is written.
#[derive(Debug, Default)]
struct Lost {
    records: u64,
    bytes: u64,
    reason: String,
    /// The marker is in the buffer.
    marker_buffered: bool,
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The keeper's own effective ids.
fn own_ids() -> UserIds {
    UserIds {
        uid: sys::effective_uid(),
        gid: sys::effective_gid(),
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map(OwnedFd::from)
}

/// Whether only the keeper's user can change `dir`'s entries.
fn is_trusted(dir: &OwnedFd) -> bool {
    dir.try_clone()
        .map(File::from)
        .and_then(|dir| dir.metadata())
        .is_ok_and(|dir| dir.uid() == sys::effective_uid() && dir.mode() & 0o022 == 0)
}

/// Opens `name` in `dir` for appending with `rights`, creating it; refuses
/// a link or anything but a regular file; gives it group `reader_gid`.
/// The file and its size.
fn open_file(
    dir: &OwnedFd,
    name: &str,
    rights: UserIds,
    reader_gid: Option<u32>,
) -> Result<(File, u64), String> {
    let flags =
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let file = sys::as_file_user(rights, || sys::open_at(dir, name, flags, FILE_MODE)).map_err(
        |error| match error.raw_os_error() {
            Some(libc::ELOOP) => "is a symbolic link: snow-fox never writes through one".to_owned(),
            _ => format!("opening it as uid {}: {error}", rights.uid),
        },
    )?;
    let metadata = file
        .metadata()
        .map_err(|error| format!("reading what was opened: {error}"))?;
    if !metadata.file_type().is_file() {
        return Err("is not a regular file".to_owned());
    }
    if let Some(gid) = reader_gid.filter(|gid| *gid != metadata.gid()) {
        std::os::unix::fs::fchown(&file, None, Some(gid))
            .map_err(|error| format!("giving it to group {gid}: {error}"))?;
    }
    Ok((file, metadata.len()))
}
