//! Serving captured output to clients (`LogsRequest`): a reader thread,
//! `sf-logs`, that the manager starts on the first request, so that
//! reading files never holds up the manager's loop.
//!
//! The manager checks each request, resolves which files hold the streams
//! it names (the same rule the spawner checks starts against) and hands
//! the reader a [`Job`] on a bounded channel (full: `Error{BUSY}`). The
//! reader answers on io's reply channel directly: `LogLines` batches of
//! what is on disk, merged across streams in the order the lines arrived
//! (their timestamps, written by the log keeper), then `Ack`; with
//! `follow`, it keeps a cursor per stream and every [`FOLLOW_POLL`] sends
//! what was appended since. A cursor holds its file open, so a rotation
//! (a rename by the keeper) is seen as the name now naming another file:
//! the held file is read to its end, then the files rotated after it
//! (found by inode among `path.N`), then the new one, so no line is lost
//! or repeated unless whole files were rotated away between two polls
//! (more than `log_max_bytes × log_keep` in 100 ms). The manager forwards
//! connection closes; a slow follower's connection is closed by io like
//! any other.
//!
//! What a backlog holds is read into memory once (at most the files'
//! bounded size per stream; with `lines` only that many lines per stream).
//! The thread ends when the manager drops its end of the channel.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use crate::trace::{now_unix_us, parse_utc_time};
use crate::wire::link::{ClientReply, ConnectionId, IoCommand, IoSender};
use crate::wire::proto::public_api::{
    self, LogLines, log_lines::Line, message::Code, message::Payload,
};

/// How often followed streams are read for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The most lines one `LogLines` message carries.
const BATCH_LINES: usize = 1000;

/// The most text bytes one `LogLines` message carries.
const BATCH_BYTES: usize = 256 * 1024;

/// Requests waiting for the reader.
const QUEUE: usize = 64;

/// One captured stream's files: `base`, and `base.1` ... `base.keep`.
#[derive(Debug, Clone)]
pub(super) struct StreamFiles {
    pub(super) service_id: String,
    pub(super) instance: u32,
    pub(super) stream: &'static str,
    pub(super) base: PathBuf,
    pub(super) keep: u32,
}

/// One `LogsRequest`, checked and resolved to files.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) connection: ConnectionId,
    pub(super) correlation: String,
    pub(super) streams: Vec<StreamFiles>,
    /// The last this many lines only; 0 for all.
    pub(super) lines: usize,
    pub(super) follow: bool,
    pub(super) since_unix_us: u64,
}

/// What the manager tells the reader.
#[derive(Debug)]
enum Command {
    Serve(Job),
    Closed(ConnectionId),
}

/// The manager's handle on the reader thread, started when first needed.
#[derive(Debug)]
pub(super) struct LogReader {
    commands: Option<Sender<Command>>,
    to_io: IoSender,
}

impl LogReader {
    /// A reader that will answer on `to_io`.
    pub(super) fn new(to_io: IoSender) -> LogReader {
        LogReader {
            commands: None,
            to_io,
        }
    }

    /// Hands `job` to the reader; false when it is too busy to take it.
    pub(super) fn serve(&mut self, job: Job) -> Result<bool, io::Error> {
        let commands = match &self.commands {
            Some(commands) => commands,
            None => {
                let (commands, receiver) = bounded(QUEUE);
                let to_io = self.to_io.clone();
                std::thread::Builder::new()
                    .name("sf-logs".into())
                    .spawn(move || Reader::new(receiver, to_io).run())?;
                self.commands.insert(commands)
            }
        };
        match commands.try_send(Command::Serve(job)) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Disconnected(_)) => {
                self.commands = None;
                Err(io::Error::other("the log reader thread ended"))
            }
        }
    }

    /// `connection` closed: its followers end.
    pub(super) fn closed(&mut self, connection: ConnectionId) {
        if let Some(commands) = &self.commands
            && let Err(error) = commands.try_send(Command::Closed(connection))
        {
            log::warn!("log reader: a connection close was not passed on: {error}");
        }
    }
}

struct Follower {
    connection: ConnectionId,
    correlation: String,
    since_unix_us: u64,
    cursors: Vec<Cursor>,
}

struct Reader {
    commands: Receiver<Command>,
    to_io: IoSender,
    followers: Vec<Follower>,
}

impl Reader {
    fn new(commands: Receiver<Command>, to_io: IoSender) -> Reader {
        Reader {
            commands,
            to_io,
            followers: Vec::new(),
        }
    }

    fn run(mut self) {
        loop {
            let command = if self.followers.is_empty() {
                self.commands
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.commands.recv_timeout(FOLLOW_POLL)
            };
            match command {
                Ok(Command::Serve(job)) => self.serve(job),
                Ok(Command::Closed(connection)) => {
                    self.followers
                        .retain(|follower| follower.connection != connection);
                }
                Err(RecvTimeoutError::Timeout) => self.follow(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Sends the backlog of `job`, then `Ack`, then keeps following.
    fn serve(&mut self, job: Job) {
        let mut cursors = Vec::with_capacity(job.streams.len());
        let mut lines = Vec::new();
        for files in job.streams {
            let mut cursor = Cursor::new(files);
            let mut backlog = cursor.backlog(job.lines, job.since_unix_us);
            lines.append(&mut backlog);
            cursors.push(cursor);
        }
        // Stable: lines of one stream that share a timestamp keep their order.
        lines.sort_by_key(|line| line.at_unix_us);
        if job.lines > 0 && lines.len() > job.lines {
            lines.drain(..lines.len() - job.lines);
        }
        self.send_lines(job.connection, &job.correlation, lines);
        self.send(
            job.connection,
            public_api::Message {
                code: Code::Ack as i32,
                correlation_id: Some(job.correlation.clone()),
                payload: None,
            },
            true,
        );
        if job.follow {
            self.followers.push(Follower {
                connection: job.connection,
                correlation: job.correlation,
                since_unix_us: job.since_unix_us,
                cursors,
            });
        }
    }

    /// Sends each follower what its streams gained.
    fn follow(&mut self) {
        let mut batches = Vec::new();
        for follower in &mut self.followers {
            let mut lines = Vec::new();
            for cursor in &mut follower.cursors {
                cursor.poll(&mut lines);
            }
            lines.retain(|line| line.at_unix_us >= follower.since_unix_us);
            lines.sort_by_key(|line| line.at_unix_us);
            if !lines.is_empty() {
                batches.push((follower.connection, follower.correlation.clone(), lines));
            }
        }
        for (connection, correlation, lines) in batches {
            self.send_lines(connection, &correlation, lines);
        }
    }

    /// Sends `lines` as `LogLines` messages of bounded size.
    fn send_lines(&self, connection: ConnectionId, correlation: &str, lines: Vec<Line>) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for line in lines {
            bytes += line.text.len() + line.service_id.len() + 24;
            batch.push(line);
            if batch.len() >= BATCH_LINES || bytes >= BATCH_BYTES {
                self.send_batch(connection, correlation, std::mem::take(&mut batch));
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.send_batch(connection, correlation, batch);
        }
    }

    fn send_batch(&self, connection: ConnectionId, correlation: &str, lines: Vec<Line>) {
        self.send(
            connection,
            public_api::Message {
                code: Code::LogLines as i32,
                correlation_id: Some(correlation.to_owned()),
                payload: Some(Payload::LogLines(LogLines { lines })),
            },
            false,
        );
    }

    fn send(&self, connection: ConnectionId, message: public_api::Message, last: bool) {
        let reply = ClientReply {
            connection,
            message,
            payload_bytes: None,
            last,
            sent_unix_us: now_unix_us(),
        };
        if let Err(error) = self.to_io.send(IoCommand::Replies(vec![reply])) {
            log::debug!("log reader: cannot hand lines to io: {error}");
        }
    }
}

/// Where a stream is read: the file it holds open, and how far.
struct Cursor {
    files: StreamFiles,
    /// The file `base` named when last looked at, its (device, inode).
    current: Option<(File, (u64, u64))>,
    /// A line read without its newline yet.
    partial: Vec<u8>,
    /// The time of the last line read, for lines without a readable one.
    last_at: u64,
    /// Rotated files the backlog read while `base` did not exist.
    read_without_base: HashSet<(u64, u64)>,
}

impl Cursor {
    fn new(files: StreamFiles) -> Cursor {
        Cursor {
            files,
            current: None,
            partial: Vec::new(),
            last_at: 0,
            read_without_base: HashSet::new(),
        }
    }

    /// `base.n`.
    fn numbered(&self, index: u32) -> PathBuf {
        PathBuf::from(format!("{}.{index}", self.files.base.display()))
    }

    /// Every line on disk (the last `lines` of them, if not 0) from
    /// `since` on, oldest first; the cursor is left at the end of `base`.
    fn backlog(&mut self, lines: usize, since: u64) -> Vec<Line> {
        let mut kept = VecDeque::new();
        let take = |line: Line, kept: &mut VecDeque<Line>| {
            if line.at_unix_us < since {
                return;
            }
            if lines > 0 && kept.len() == lines {
                kept.pop_front();
            }
            kept.push_back(line);
        };
        let mut read_rotated = HashSet::new();
        for index in (1..=self.files.keep).rev() {
            let mut read = Vec::new();
            if let Ok(mut file) = File::open(self.numbered(index)) {
                if let Ok(metadata) = file.metadata() {
                    read_rotated.insert((metadata.dev(), metadata.ino()));
                }
                self.read_to_end(&mut file, &mut read);
            }
            for line in read {
                take(line, &mut kept);
            }
        }
        let mut read = Vec::new();
        self.open_base(&mut read);
        if self.current.is_none() {
            self.read_without_base = read_rotated;
        }
        for line in read {
            take(line, &mut kept);
        }
        kept.into()
    }

    /// Opens what `base` names now and reads it to its end.
    fn open_base(&mut self, out: &mut Vec<Line>) {
        self.current = None;
        if let Ok(mut file) = File::open(&self.files.base) {
            let identity = file
                .metadata()
                .map(|m| (m.dev(), m.ino()))
                .unwrap_or_default();
            self.read_to_end(&mut file, out);
            self.current = Some((file, identity));
        }
    }

    /// What was appended since the last poll, across a rotation.
    fn poll(&mut self, out: &mut Vec<Line>) {
        let named = std::fs::metadata(&self.files.base)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let Some((mut file, held)) = self.current.take() else {
            if named.is_some() {
                // It appeared (and may have rotated already): every file
                // the backlog did not read is new.
                for index in (1..=self.files.keep).rev() {
                    if let Ok(mut rotated) = File::open(self.numbered(index))
                        && rotated
                            .metadata()
                            .is_ok_and(|m| !self.read_without_base.contains(&(m.dev(), m.ino())))
                    {
                        self.read_to_end(&mut rotated, out);
                    }
                }
                self.read_without_base.clear();
                self.open_base(out);
            }
            return;
        };
        self.read_to_end(&mut file, out);
        if named == Some(held) {
            self.current = Some((file, held));
            return;
        }
        // Rotated: the held file is complete (the keeper writes what it
        // has before it renames); the files rotated after it are newer.
        let held_at = (1..=self.files.keep).find(|index| {
            std::fs::metadata(self.numbered(*index)).is_ok_and(|m| (m.dev(), m.ino()) == held)
        });
        let newer_than_held = held_at.map_or(self.files.keep, |index| index - 1);
        for index in (1..=newer_than_held).rev() {
            if let Ok(mut rotated) = File::open(self.numbered(index)) {
                self.read_to_end(&mut rotated, out);
            }
        }
        self.open_base(out);
    }

    /// Reads `file` from where it is to its end, as lines.
    fn read_to_end(&mut self, file: &mut File, out: &mut Vec<Line>) {
        let mut bytes = Vec::new();
        if let Err(error) = file.read_to_end(&mut bytes) {
            log::debug!("log reader: reading {}: {error}", self.files.base.display());
        }
        let mut rest = bytes.as_slice();
        while let Some(end) = rest.iter().position(|byte| *byte == b'\n') {
            if self.partial.is_empty() {
                out.push(self.line(&rest[..end]));
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(&rest[..end]);
                out.push(self.line(&whole));
            }
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// One record `TIMESTAMP text` as a line.
    fn line(&mut self, record: &[u8]) -> Line {
        let record = String::from_utf8_lossy(record);
        let (at, text) = match record.split_once(' ') {
            Some((time, text)) => match parse_utc_time(time) {
                Some(at) => (at, text),
                None => (self.last_at, record.as_ref()),
            },
            None => match parse_utc_time(&record) {
                Some(at) => (at, ""),
                None => (self.last_at, record.as_ref()),
            },
        };
        self.last_at = at;
        Line {
            service_id: self.files.service_id.clone(),
            instance: self.files.instance,
            stream: self.files.stream.to_owned(),
            at_unix_us: at,
            text: text.to_owned(),
        }
    }
}

/// Streams named once: outputs shared by instances (one path) are one
/// stream, under its first instance.
pub(super) fn dedup(streams: Vec<StreamFiles>) -> Vec<StreamFiles> {
    let mut seen = HashSet::new();
    streams
        .into_iter()
        .filter(|files| seen.insert(files.base.clone()))
        .collect()
}
