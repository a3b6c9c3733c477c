//! The log keeper: one small process per log dir that holds the read end
//! of every service's output pipe and writes what comes out of it.
//!
//! Services write into pipes. Their read ends are handed to the keeper
//! (`AddStream` on the `log_keeper` link, the pipe as `SCM_RIGHTS`)
//! before the service is started, and only the keeper holds them. It runs
//! in its own session, apart from the node, so a node that crashes, is
//! killed or upgraded leaves it running: services keep their pipes, their
//! lines keep landing in their files, and the next node's spawner finds
//! the keeper again by its name (an abstract UNIX socket named after the
//! node's user and log dir, see [`name_for`]; both sides check the other's
//! uid) and hands it the pipes of the services it starts. The keeper ends
//! by itself once no stream is open and no spawner is connected.
//!
//! It reads every pipe whatever happens to the files: each line is
//! timestamped with the time it was read (`2026-12-01T11:07:00.123456Z `,
//! UTC) and appended to the stream's file ([`file`]), cut into pieces of
//! at most [`MAX_LINE`] bytes. A file that cannot be written (disk full)
//! loses the lines read meanwhile; they are counted, and the next line
//! that can be written is preceded by a marker line
//! (`snow-fox: N lines (B bytes) lost: why`). So a service never waits
//! for a disk: it waits only while its own pipe is full, for as long as
//! the keeper takes to get round to it, and one fast writer slows no one
//! but itself (each pipe gets at most [`READ_BUDGET`] bytes per turn).
//! Each stream is read at most at its service's `log_max_rate` bytes a
//! second ([`budget`]): past it the pipe is left unread until the budget
//! allows a chunk again, so a flood of output waits in its writer, loses
//! nothing, and cannot take the CPUs and the disk from the node and the
//! other services. The keeper runs at nice 10 ([`KEEPER_NICE`]): when the
//! CPUs are busy, writing logs gives way to the node and the services. If
//! the keeper itself is killed, the pipes lose their only reader and a
//! service's next write fails with `EPIPE` (SIGPIPE).
//!
//! Container mode (`stdout = "node"`): the lines go to the keeper's
//! stderr, which is the node's, prefixed with `service.instance | `.
//!
//! One thread, one `mio::Poll`. It owns its listener, its spawners'
//! connections and its streams; it reads `log_keeper` requests and
//! answers each with `Ack` or `Error`.

mod budget;
mod file;
pub(super) mod link;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use prost::Message as _;

use crate::sys::{self, UserIds};
use crate::trace::{now_unix_us, utc_time};
use crate::wire::LogKeeper;
use crate::wire::proto::log_keeper as lk;
use budget::Budget;
use file::{FileSpec, LogFile};

/// The longest piece of a line written as one record; longer lines are
/// cut into pieces this long.
pub const MAX_LINE: usize = 16 * 1024;

/// The most bytes read from one pipe before the others get their turn.
pub const READ_BUDGET: usize = 256 * 1024;

/// The keeper's nice value: writing logs gives way to the node and the
/// services, so a flood of output cannot slow the node's answers.
pub const KEEPER_NICE: i32 = 10;

/// How long a keeper nobody has connected to yet waits for its first
/// spawner.
const FIRST_CONNECT: Duration = Duration::from_secs(10);

/// The largest `log_keeper` packet.
pub(super) const MAX_PACKET: usize = 64 * 1024;

const LISTENER: Token = Token(0);

/// The keeper's abstract socket name for the node user `uid` and log dir
/// `log_dir`: one keeper per user and log dir, found again by the next
/// node.
pub fn name_for(uid: u32, log_dir: &Path) -> String {
    // FNV-1a: the name only needs to differ between log dirs, and abstract
    // names are short.
    let hash = log_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("snow-fox-log-keeper.{uid}.{hash:016x}")
}

/// The keeper process's main, for `snow-fox --log-keeper NAME`: binds
/// `name`, says so on fd 3 (a newline) when it was handed one, and serves
/// until no stream and no spawner is left.
pub fn run_process(name: &str) -> Result<(), KeeperError> {
    if sys::effective_uid() == 0 {
        // Its file work is done with each service user's ids; root's own
        // supplementary groups must not add to them.
        sys::clear_supplementary_groups().map_err(|source| KeeperError::Setup {
            doing: "clear its supplementary groups",
            source,
        })?;
    }
    if let Err(error) = sys::set_process_name("sf-log-keeper") {
        log::warn!("log keeper: cannot name itself: {error}");
    }
    if let Err(error) = sys::set_own_nice(KEEPER_NICE) {
        log::warn!("log keeper: cannot lower its priority to nice {KEEPER_NICE}: {error}");
    }
    let listener = sys::seqpacket_listen(name.as_bytes());
    // fd 3 is the readiness pipe the spawner passed (or nothing, when
    // started by hand); a newline says "bound".
    let ready = sys::take_inherited_fd(3);
    let listener = listener.map_err(|source| KeeperError::Setup {
        doing: "bind its socket name (is another keeper running?)",
        source,
    })?;
    if let Some(ready) = ready {
        let _ = File::from(ready).write_all(b"\n");
    }
    serve(listener)
}

/// Serves on `listener` (from [`sys::seqpacket_listen`]) until no stream
/// and no spawner is left.
pub fn serve(listener: OwnedFd) -> Result<(), KeeperError> {
    Keeper::new(listener)?.run()
}

/// A connected spawner.
#[derive(Debug)]
struct Client {
    socket: OwnedFd,
}

/// One captured output stream.
#[derive(Debug)]
struct Stream {
    pipe: File,
    /// `service.instance`.
    label: String,
    sink: Sink,
    /// The line read so far, without its newline.
    pending: Vec<u8>,
    /// The last problem reported, so a failing file logs once, not per line.
    last_problem: Option<String>,
    /// How much may be read from the pipe, and when.
    budget: Budget,
    /// It spent its budget and waits in `Keeper::parked`, unread.
    parked: bool,
}

#[derive(Debug)]
enum Sink {
    File(LogFile),
    Node,
}

struct Keeper {
    poll: Poll,
    listener: OwnedFd,
    clients: HashMap<Token, Client>,
    streams: HashMap<Token, Stream>,
    /// Streams with data left to read after their turn.
    busy: VecDeque<Token>,
    /// Streams that spent their budget, by when they may be read again.
    parked: BinaryHeap<Reverse<(Instant, Token)>>,
    next_token: usize,
    started: Instant,
    ever_connected: bool,
    buffer: Vec<u8>,
}

impl Keeper {
    fn new(listener: OwnedFd) -> Result<Keeper, KeeperError> {
        let poll = Poll::new().map_err(|source| KeeperError::Setup {
            doing: "create its poll",
            source,
        })?;
        poll.registry()
            .register(
                &mut SourceFd(&listener.as_raw_fd()),
                LISTENER,
                Interest::READABLE,
            )
            .map_err(|source| KeeperError::Setup {
                doing: "poll its listener",
                source,
            })?;
        Ok(Keeper {
            poll,
            listener,
            clients: HashMap::new(),
            streams: HashMap::new(),
            busy: VecDeque::new(),
            parked: BinaryHeap::new(),
            next_token: 1,
            started: Instant::now(),
            ever_connected: false,
            buffer: vec![0; READ_BUDGET.min(64 * 1024)],
        })
    }

    fn run(mut self) -> Result<(), KeeperError> {
        let mut events = Events::with_capacity(256);
        loop {
            if self.clients.is_empty()
                && self.streams.is_empty()
                && (self.ever_connected || self.started.elapsed() >= FIRST_CONNECT)
            {
                log::debug!("log keeper: no stream and no spawner left; ending");
                return Ok(());
            }
            let first_connect = (!self.ever_connected)
                .then(|| FIRST_CONNECT.saturating_sub(self.started.elapsed()));
            let unpark = self
                .parked
                .peek()
                .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
            let timeout = if self.busy.is_empty() {
                first_connect.into_iter().chain(unpark).min()
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(KeeperError::Poll { source }),
            }
            for event in &events {
                let token = event.token();
                if token == LISTENER {
                    self.accept();
                } else if self.clients.contains_key(&token) {
                    self.serve_client(token);
                } else if self
                    .streams
                    .get(&token)
                    .is_some_and(|stream| !stream.parked)
                    && !self.busy.contains(&token)
                {
                    self.busy.push_back(token);
                }
            }
            self.unpark(Instant::now());
            // One turn for each stream with data: READ_BUDGET bytes at most.
            for _ in 0..self.busy.len() {
                if let Some(token) = self.busy.pop_front() {
                    match self.read_stream(token) {
                        Turn::More => self.busy.push_back(token),
                        Turn::Parked(until) => self.parked.push(Reverse((until, token))),
                        Turn::Drained => {}
                    }
                }
            }
        }
    }

    /// Streams whose budget allows a read again at `now` get their turn.
    fn unpark(&mut self, now: Instant) {
        while let Some(Reverse((until, token))) = self.parked.peek().copied()
            && until <= now
        {
            self.parked.pop();
            if let Some(stream) = self.streams.get_mut(&token) {
                stream.parked = false;
                self.busy.push_back(token);
            }
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn accept(&mut self) {
        loop {
            let socket = match sys::seqpacket_accept(&self.listener) {
                Ok(Some(socket)) => socket,
                Ok(None) => return,
                Err(error) => {
                    log::warn!("log keeper: accepting a spawner: {error}");
                    return;
                }
            };
            match sys::peer_credentials(&socket) {
                Ok(peer) if peer.uid == sys::effective_uid() => {}
                Ok(peer) => {
                    log::warn!(
                        "log keeper: refusing a connection of uid {} (pid {}): only uid {} \
                         may hand it streams",
                        peer.uid,
                        peer.pid,
                        sys::effective_uid()
                    );
                    continue;
                }
                Err(error) => {
                    log::warn!("log keeper: cannot tell who connected: {error}");
                    continue;
                }
            }
            let token = self.token();
            if let Err(error) = self.poll.registry().register(
                &mut SourceFd(&socket.as_raw_fd()),
                token,
                Interest::READABLE,
            ) {
                log::warn!("log keeper: cannot poll a spawner's connection: {error}");
                continue;
            }
            self.ever_connected = true;
            self.clients.insert(token, Client { socket });
        }
    }

    /// Answers every request waiting on a spawner's connection.
    fn serve_client(&mut self, token: Token) {
        let mut packet = vec![0u8; MAX_PACKET];
        loop {
            let Some(client) = self.clients.get(&token) else {
                return;
            };
            let (len, fd) = match sys::recv_packet(&client.socket, &mut packet) {
                Ok((0, _)) => break,
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    log::warn!("log keeper: reading a spawner's connection: {error}");
                    break;
                }
            };
            let reply = match lk::Message::decode(&packet[..len]) {
                Ok(message) => self.on_request(message, fd),
                Err(error) => lk::Message {
                    code: lk::message::Code::Error as i32,
                    correlation_id: None,
                    payload: Some(lk::message::Payload::Error(lk::Error {
                        reason: format!("undecodable log_keeper message: {error}"),
                    })),
                },
            };
            let Some(client) = self.clients.get(&token) else {
                return;
            };
            if let Err(error) = sys::send_packet(&client.socket, &reply.encode_to_vec(), None) {
                log::warn!("log keeper: answering a spawner: {error}");
                break;
            }
        }
        if let Some(client) = self.clients.remove(&token) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&client.socket.as_raw_fd()));
        }
    }

    fn on_request(&mut self, message: lk::Message, fd: Option<OwnedFd>) -> lk::Message {
        let correlation_id = message.correlation_id;
        let result = match (LogKeeper::from_message(message.code, message.payload), fd) {
            (Ok(LogKeeper::AddStream(add)), Some(pipe)) => self.add_stream(&add, pipe),
            (Ok(LogKeeper::AddStream(_)), None) => {
                Err("AddStream needs its payload and a pipe".to_owned())
            }
            (Ok(taken @ (LogKeeper::Ack | LogKeeper::Error(_))), _) => Err(format!(
                "the log keeper does not take {}",
                taken.code().as_str_name()
            )),
            (Err(bad), _) => Err(format!("log_keeper: {bad}")),
        };
        match result {
            Ok(()) => lk::Message {
                code: lk::message::Code::Ack as i32,
                correlation_id,
                payload: None,
            },
            Err(reason) => lk::Message {
                code: lk::message::Code::Error as i32,
                correlation_id,
                payload: Some(lk::message::Payload::Error(lk::Error { reason })),
            },
        }
    }

    fn add_stream(&mut self, add: &lk::AddStream, pipe: OwnedFd) -> Result<(), String> {
        let label = format!("{}.{}", add.service_id, add.instance);
        let sink = match add.destination() {
            lk::add_stream::Destination::Node => Sink::Node,
            lk::add_stream::Destination::File => {
                let path = Path::new(add.path.as_deref().unwrap_or_default());
                let spec = FileSpec {
                    path,
                    service: UserIds {
                        uid: add.uid.unwrap_or_else(sys::effective_uid),
                        gid: add.gid.unwrap_or_else(sys::effective_gid),
                    },
                    trusted_dir: add.trusted_dir.as_deref().map(Path::new),
                    max_bytes: add.max_bytes.unwrap_or_default(),
                    keep: add.keep.unwrap_or_default(),
                    reader_gid: add.reader_gid,
                };
                Sink::File(LogFile::open(&spec)?)
            }
        };
        sys::set_nonblocking(&pipe)
            .map_err(|error| format!("making the pipe non-blocking: {error}"))?;
        let token = self.token();
        self.poll
            .registry()
            .register(&mut SourceFd(&pipe.as_raw_fd()), token, Interest::READABLE)
            .map_err(|error| format!("polling the pipe: {error}"))?;
        log::debug!("log keeper: capturing {label} {}", add.stream);
        self.streams.insert(
            token,
            Stream {
                pipe: File::from(pipe),
                label,
                sink,
                pending: Vec::new(),
                last_problem: None,
                budget: Budget::new(add.max_rate.unwrap_or_default(), Instant::now()),
                parked: false,
            },
        );
        // The pipe may hold data already.
        self.busy.push_back(token);
        Ok(())
    }

    /// Reads one turn's worth of stream `token`, within its budget.
    fn read_stream(&mut self, token: Token) -> Turn {
        let Some(stream) = self.streams.get_mut(&token) else {
            return Turn::Drained;
        };
        let mut read = 0;
        let ended = loop {
            let now = Instant::now();
            let want = self.buffer.len().min(READ_BUDGET - read);
            let allowed = stream.budget.allowance(want, now);
            if allowed == 0 {
                stream.flush();
                return match stream.budget.exhausted_until(now) {
                    Some(until) => {
                        stream.parked = true;
                        Turn::Parked(until)
                    }
                    None => Turn::More,
                };
            }
            match stream.pipe.read(&mut self.buffer[..allowed]) {
                Ok(0) => break true,
                Ok(count) => {
                    read += count;
                    stream.budget.spend(count);
                    stream.take(&self.buffer[..count], now_unix_us());
                    if read >= READ_BUDGET {
                        break false;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    stream.flush();
                    return Turn::Drained;
                }
                Err(error) => {
                    log::warn!("log keeper: reading the pipe of {}: {error}", stream.label);
                    break true;
                }
            }
        };
        if !ended {
            stream.flush();
            return Turn::More;
        }
        if let Some(mut stream) = self.streams.remove(&token) {
            stream.finish(now_unix_us());
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&stream.pipe.as_raw_fd()));
            log::debug!("log keeper: {} closed its output", stream.label);
        }
        Turn::Drained
    }
}

/// What one turn left of a stream.
enum Turn {
    /// Data may be left: another turn at once.
    More,
    /// Its budget is spent: no turn before this instant.
    Parked(Instant),
    /// The pipe is empty (its writer will wake the poll) or closed.
    Drained,
}

impl Stream {
    /// Takes bytes read at `now` (µs since the epoch): whole lines become
    /// records, the rest waits for its newline.
    fn take(&mut self, mut data: &[u8], now: u64) {
        let timestamp = utc_time(now, 6);
        let longest = self.longest_piece(&timestamp);
        while !data.is_empty() {
            let room = longest - self.pending.len();
            match data.iter().position(|byte| *byte == b'\n') {
                Some(end) if end <= room => {
                    self.pending.extend_from_slice(&data[..end]);
                    data = &data[end + 1..];
                    self.emit(&timestamp);
                }
                _ if data.len() >= room => {
                    self.pending.extend_from_slice(&data[..room]);
                    data = &data[room..];
                    self.emit(&timestamp);
                }
                _ => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                }
            }
        }
    }

    /// The longest piece of a line one record holds: [`MAX_LINE`], or
    /// less when a record must fit a smaller file.
    fn longest_piece(&self, timestamp: &str) -> usize {
        let limit = match &self.sink {
            Sink::File(file) => file.max_record(),
            Sink::Node => None,
        };
        limit
            .map_or(MAX_LINE, |limit| {
                limit.saturating_sub(timestamp.len() + 2).min(MAX_LINE)
            })
            .max(1)
    }

    /// Writes `pending` as one record and empties it.
    fn emit(&mut self, timestamp: &str) {
        match &mut self.sink {
            Sink::Node => {
                let mut line = Vec::with_capacity(self.label.len() + self.pending.len() + 4);
                line.extend_from_slice(self.label.as_bytes());
                line.extend_from_slice(b" | ");
                line.extend_from_slice(&self.pending);
                line.push(b'\n');
                let _ = io::stderr().lock().write_all(&line);
            }
            Sink::File(file) => {
                if let Err(problem) = file.push(timestamp, &self.pending) {
                    self.report(problem);
                }
            }
        }
        self.pending.clear();
    }

    /// Writes what is buffered (what fails to be written is counted).
    fn flush(&mut self) {
        if let Sink::File(file) = &mut self.sink {
            match file.flush() {
                Ok(()) => self.last_problem = None,
                Err(problem) => self.report(problem),
            }
        }
    }

    /// The pipe ended: a last line without its newline is written too.
    fn finish(&mut self, now: u64) {
        if !self.pending.is_empty() {
            self.emit(&utc_time(now, 6));
        }
        self.flush();
    }

    /// Logs `problem` unless it is the one last logged for this stream.
    fn report(&mut self, problem: String) {
        if self.last_problem.as_ref() != Some(&problem) {
            log::warn!("log keeper: {}: {problem}", self.label);
            self.last_problem = Some(problem);
        }
    }
}

/// Why the keeper could not start or go on.
#[derive(Debug)]
pub enum KeeperError {
    /// A setup step failed.
    Setup {
        /// What it was doing.
        doing: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Its poll failed.
    Poll {
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for KeeperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeeperError::Setup { doing, source } => {
                write!(f, "log keeper: cannot {doing}: {source}")
            }
            KeeperError::Poll { source } => write!(f, "log keeper: polling: {source}"),
        }
    }
}

impl std::error::Error for KeeperError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeeperError::Setup { source, .. } | KeeperError::Poll { source } => Some(source),
        }
    }
}
