//! The io role: one thread, one `mio::Poll`, the listening socket and every
//! client connection. Only this module touches client sockets.
//!
//! It reads each readable connection until `WouldBlock`, cuts frames and
//! decodes them; at the end of the pass it enters all the pass's requests
//! in the correlation table under one lock (answering duplicate ids there)
//! and sends them to the manager as one [`IoEvent::Requests`] batch.
//!
//! Node info without details it answers itself, with the answer the
//! manager published ([`NodeInfoBoard`]): from a connection with no
//! request at the manager, while the manager has published one (it
//! withdraws it whenever a pass may change what node info shows). Such a
//! request is entered in the correlation table with its two hops, client
//! → io and io → client, and counted for the manager's metrics. A
//! correlation table full of requests in flight refuses none: they are
//! bounded by `max_connections` × `max_inflight_per_connection`. It
//! takes replies from the [`IoReceiver`] (woken through the poll's waker),
//! queues them on their connections and writes them out, watching
//! WRITABLE only while output is pending.
//!
//! Access: each accepted connection's peer credentials are checked against
//! the [`Access`] list before anything else is done for it; a refused peer
//! is told `Error{PERMISSION_DENIED}`, one connection over
//! `max_connections` `Error{BUSY}`, and neither is registered: written to
//! once, shut for writing and closed after [`CLOSE_LINGER`] (at once under
//! a flood). A pass accepts at most [`ACCEPTS_PER_PASS`] connections, so a
//! flood of connections cannot keep the loop from the open ones.
//!
//! Bounds on what clients send: correlation ids, service ids and versions
//! over their limits are refused with `Error{BAD_REQUEST}` as they are
//! decoded ([`Exchange`]), before the correlation table, the manager or the
//! log sees them. Complaints about a peer (refusals, protocol errors,
//! dropped connections) are logged one line per uid per second, with a
//! count of those held back ([`crate::logging`]).
//!
//! Subscribers: an `Event` that would take a connection's unread bytes
//! (unsent here, and unread in its socket) past `max_subscriber_backlog`
//! ends it with `Error{SLOW_SUBSCRIBER}`.
//!
//! Memory: a second after connections close, the pages malloc holds free
//! are given back ([`sys::release_free_memory`]).
//!
//! Back-pressure: a connection with `max_inflight_per_connection` requests
//! unanswered, or more than a quarter of `max_outbound_bytes` unsent, is not
//! read until that drains; past `max_outbound_bytes` it is closed. The io
//! thread never blocks on another role: batches the manager cannot take yet
//! wait in a backlog, retried every millisecond.
//!
//! Protocol errors (a frame over the limit, a body that is not a message)
//! are answered with `Error`, the write side is shut and input is discarded
//! for [`CLOSE_LINGER`] before the connection closes.
//!
//! With `idle_timeout` set, a connection that has sent no request, has
//! none in flight and was sent nothing for that long is closed; this is
//! checked at most once per [`IDLE_CHECK`], not on every pass.
//!
//! If it dies, clients lose their connections; the daemon notices the
//! thread's end and shuts the node down. The socket file is removed when
//! the [`BoundSocket`] drops.

mod access;
mod connection;
mod exchange;
mod http;
mod listener;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conf::NodeConfig;
use crate::logging::{PeerLimiter, Shown, Suppressed};
use crate::sys;
use crate::trace::{IdHashState, Tracer};
pub use crate::wire::link::NodeInfoBoard;
use crate::wire::link::{
    ClientReply, ClientRequest, ConnectionId, IoCommand, IoEvent, IoReceiver, IoSender,
    NodeInfoReader, RequestHead, io_channel,
};
use crate::wire::proto::public_api;
use crate::wire::{encode_frame, error_reply};
pub use access::Access;
use connection::{Connection, ReadEnd};
pub use exchange::{
    Delivery, Exchange, LOCAL_CHUNK, LocalRequest, ProtocolError, answer_locally, begin_requests,
    record_replies,
};
pub use listener::{BoundSocket, ListenError};

/// The uid complaints are counted under when the peer's is unknown.
const UNKNOWN_UID: u32 = u32::MAX - 1;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// The `metrics_listen` socket, when there is one.
const METRICS: Token = Token(usize::MAX);
const FIRST_CONNECTION: usize = 2;

/// How long a connection closed for a protocol error keeps draining input.
pub const CLOSE_LINGER: Duration = Duration::from_millis(250);

/// The longest an idle connection outlives `idle_timeout`.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long after a connection closes the memory it freed is given back
/// to the kernel: once for a whole burst of closes, not per close.
const TRIM_DELAY: Duration = Duration::from_secs(1);

/// How often a backlog the manager could not take yet is retried.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Chunks of node info one read of a connection answers at most, so that a
/// client that keeps writing cannot keep the loop from the others.
const READ_ROUNDS: usize = 4;

/// Connections accepted (or turned away) per poll pass at most, so that a
/// flood of connections cannot keep the loop from serving open ones.
const ACCEPTS_PER_PASS: usize = 32;

/// Refused connections kept open (unread, unwatched) for [`CLOSE_LINGER`]
/// so that a peer that writes before it reads still gets to read its
/// `Error` rather than `EPIPE`; under a flood, those beyond this are
/// closed at once.
const TURNED_AWAY: usize = 256;

/// Commands the manager and daemon may queue before they wait.
const COMMAND_CAPACITY: usize = 256;

/// The io thread's limits, from `node.toml`.
#[derive(Debug, Clone)]
pub struct IoSettings {
    /// Largest frame body accepted.
    pub max_frame: u32,
    /// Connections served at once; one more is told `Error{BUSY}`.
    pub max_connections: usize,
    /// Requests one connection may have unanswered before it is not read.
    pub max_inflight_per_connection: usize,
    /// Unsent reply bytes past which a connection is closed.
    pub max_outbound_bytes: usize,
    /// How long a connection may be idle before it is closed, if at all.
    pub idle_timeout: Option<Duration>,
    /// Unsent bytes past which a subscriber (a connection that has been
    /// sent an `Event`) is told `Error{SLOW_SUBSCRIBER}` and closed.
    pub max_subscriber_backlog: usize,
    /// Who may connect.
    pub access: Access,
    /// Where `GET /metrics` is answered, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl IoSettings {
    /// The settings `node` asks for, its allow-lists resolved to ids, for
    /// a node process running as `own_uid`.
    pub fn from_node(node: &NodeConfig, own_uid: u32) -> Result<IoSettings, IoError> {
        Ok(IoSettings {
            max_frame: node.max_frame,
            max_connections: node.max_connections,
            max_inflight_per_connection: node.max_inflight_per_connection,
            max_outbound_bytes: node.max_outbound_bytes,
            idle_timeout: node.idle_timeout,
            max_subscriber_backlog: node.max_subscriber_backlog,
            access: Access::resolve(&node.allow_users, &node.allow_groups, own_uid)?,
            metrics_listen: node.metrics_listen,
        })
    }
}

/// Why the io thread stopped.
#[derive(Debug)]
pub enum IoError {
    /// Creating or waiting on the poll failed.
    Poll {
        /// What was being done.
        doing: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A name in `allow_users` or `allow_groups` is not a known user or
    /// group, nor a number.
    Allow {
        /// `allow_users` or `allow_groups`.
        key: &'static str,
        /// The name.
        name: String,
        /// The lookup's error, if it failed rather than found nothing.
        source: Option<io::Error>,
    },
    /// The `metrics_listen` address could not be bound.
    MetricsListen {
        /// The address.
        address: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Poll { doing, source } => write!(f, "io thread cannot {doing}: {source}"),
            IoError::MetricsListen { address, source } => {
                write!(f, "cannot listen on metrics_listen = {address}: {source}")
            }
            IoError::Allow {
                key,
                name,
                source: Some(source),
            } => write!(f, "cannot look up `{name}` of {key} in node.toml: {source}"),
            IoError::Allow {
                key,
                name,
                source: None,
            } => write!(
                f,
                "`{name}` of {key} in node.toml is neither a known name nor a number"
            ),
        }
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IoError::Poll { source, .. } | IoError::MetricsListen { source, .. } => Some(source),
            IoError::Allow { source, .. } => source
                .as_ref()
                .map(|source| source as &(dyn std::error::Error + 'static)),
        }
    }
}

/// The io role.
#[derive(Debug)]
pub struct Io {
    poll: Poll,
    socket: BoundSocket,
    settings: IoSettings,
    to_manager: Sender<IoEvent>,
    commands: IoReceiver,
    tracer: Tracer,
    /// Looked up per event and per reply: hashed with the correlation
    /// table's hasher, not SipHash (tokens are the node's own numbers).
    connections: HashMap<Token, Connection, IdHashState>,
    next_token: usize,
    /// Requests decoded in this pass, sent as one batch at its end.
    batch: Vec<ClientRequest>,
    /// Node info requests of this pass io answers itself at its end.
    local: Vec<LocalRequest>,
    /// The node info answer the manager published.
    node_info: NodeInfoReader,
    /// Connections paused for back-pressure that answers given here eased:
    /// read again at the start of the next pass (not at once, so that one
    /// busy client cannot keep the loop to itself).
    resume_next: Vec<Token>,
    /// Events the manager's channel had no room for yet.
    backlog: VecDeque<IoEvent>,
    /// When idle connections are next looked for (with `idle_timeout`).
    next_idle_check: Option<Instant>,
    /// The listener may hold connections not yet accepted: the last pass
    /// stopped at [`ACCEPTS_PER_PASS`], and edge-triggered polling will
    /// not report them again.
    accept_pending: bool,
    /// Complaints about peers (refusals, protocol errors), one line per
    /// uid per interval.
    complaints: PeerLimiter,
    /// When freed memory is next given back, after connections closed.
    trim_at: Option<Instant>,
    /// Refused connections, answered and shut for writing, closed at
    /// their instant (oldest first; at most [`TURNED_AWAY`]).
    turned_away: VecDeque<(Instant, mio::net::UnixStream)>,
    /// The `metrics_listen` endpoint and its connections.
    metrics: Option<http::Endpoint>,
    http: HashMap<Token, http::HttpConnection, IdHashState>,
    /// Metrics requests sent, for their correlation ids.
    http_requests: u64,
}

impl Io {
    /// Sets up the poll over `socket`. The returned sender is how the
    /// manager and the daemon reach this thread; `node_info` is where the
    /// manager publishes node info's answer.
    pub fn new(
        mut socket: BoundSocket,
        settings: IoSettings,
        to_manager: Sender<IoEvent>,
        tracer: Tracer,
        node_info: &NodeInfoBoard,
    ) -> Result<(Io, IoSender), IoError> {
        let poll = Poll::new().map_err(|source| IoError::Poll {
            doing: "create its poll",
            source,
        })?;
        poll.registry()
            .register(&mut socket.listener, LISTENER, Interest::READABLE)
            .map_err(|source| IoError::Poll {
                doing: "register the listener",
                source,
            })?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(|source| IoError::Poll {
            doing: "create its waker",
            source,
        })?;
        let metrics = settings
            .metrics_listen
            .map(|address| listen_for_metrics(&poll, address))
            .transpose()?;
        let (sender, commands) = io_channel(waker, COMMAND_CAPACITY);
        let io = Io {
            poll,
            socket,
            settings,
            to_manager,
            commands,
            tracer,
            connections: HashMap::with_hasher(IdHashState::random()),
            next_token: FIRST_CONNECTION,
            batch: Vec::new(),
            local: Vec::new(),
            node_info: node_info.reader(),
            resume_next: Vec::new(),
            backlog: VecDeque::new(),
            next_idle_check: None,
            accept_pending: false,
            complaints: PeerLimiter::new(),
            trim_at: None,
            turned_away: VecDeque::new(),
            metrics,
            http: HashMap::with_hasher(IdHashState::random()),
            http_requests: 0,
        };
        Ok((io, sender))
    }

    /// Serves until [`IoCommand::Stop`] or until every sender is gone.
    pub fn run(mut self) -> Result<(), IoError> {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; READ_CHUNK];
        let mut commands = Vec::new();
        log::info!("listening on {}", self.socket.path().display());
        loop {
            let timeout = self.poll_timeout();
            if let Err(source) = self.poll.poll(&mut events, timeout) {
                if source.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(IoError::Poll {
                    doing: "wait for events",
                    source,
                });
            }
            if self.accept_pending {
                self.accept();
            }
            let mut resume = std::mem::take(&mut self.resume_next);
            resume.sort_unstable();
            resume.dedup();
            for token in resume {
                self.resume(token, &mut scratch);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    METRICS => self.accept_http(),
                    token if self.http.contains_key(&token) => {
                        self.serve_http(token, event.is_writable(), &mut scratch);
                    }
                    token => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(token, &mut scratch);
                        }
                        if event.is_writable() {
                            self.flush(token);
                            // Replies written may ease a connection paused
                            // with none in flight elsewhere (all answered
                            // here) that nothing else would resume.
                            self.resume(token, &mut scratch);
                        }
                    }
                }
            }
            self.commands.drain(&mut commands);
            for command in commands.drain(..) {
                match command {
                    IoCommand::Replies(replies) => self.deliver(replies, &mut scratch),
                    IoCommand::Stop => {
                        self.stop();
                        return Ok(());
                    }
                }
            }
            self.end_lingering();
            self.end_idle();
            let now = Instant::now();
            while self
                .turned_away
                .front()
                .is_some_and(|(until, _)| *until <= now)
            {
                self.turned_away.pop_front();
            }
            if self.trim_at.is_some_and(|at| at <= now) {
                self.trim_at = None;
                sys::release_free_memory();
            }
            self.send_to_manager(&mut scratch);
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.accept_pending || !self.resume_next.is_empty() {
            return Some(Duration::ZERO);
        }
        if !self.backlog.is_empty() {
            return Some(BACKLOG_RETRY);
        }
        let now = Instant::now();
        self.connections
            .values()
            .filter_map(|connection| connection.closing_until)
            .chain(self.next_idle_check)
            .chain(self.trim_at)
            .chain(self.turned_away.front().map(|(until, _)| *until))
            .min()
            .map(|until| until.saturating_duration_since(now))
    }

    /// Accepts up to [`ACCEPTS_PER_PASS`] connections. Each peer's
    /// credentials are checked first: a refused peer (not allowed, or one
    /// over `max_connections`) is answered and closed at once, before it
    /// costs a registration, a buffer or a slot.
    fn accept(&mut self) {
        self.accept_pending = false;
        let mut open = self
            .connections
            .values()
            .filter(|connection| connection.closing_until.is_none())
            .count();
        for _ in 0..ACCEPTS_PER_PASS {
            let (stream, _) = match self.socket.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // EMFILE and friends: the pending connection stays
                    // queued; new events come when it can be taken.
                    complain(
                        &mut self.complaints,
                        UNKNOWN_UID,
                        format_args!("cannot accept a connection: {error}"),
                    );
                    return;
                }
            };
            let token = Token(self.next_token);
            self.next_token += 1;
            let peer = sys::peer_credentials(&stream);
            let uid = peer.as_ref().map_or(UNKNOWN_UID, |peer| peer.uid);
            if let Some(reason) = self.refusal(&peer) {
                complain(
                    &mut self.complaints,
                    uid,
                    format_args!("refusing connection {}: {reason}", token.0),
                );
                self.turn_away(stream, public_api::error::Kind::PermissionDenied, reason);
                continue;
            }
            if open >= self.settings.max_connections {
                complain(
                    &mut self.complaints,
                    uid,
                    format_args!(
                        "refusing connection {}: {open} connections open (max_connections = {})",
                        token.0, self.settings.max_connections
                    ),
                );
                let reason = format!(
                    "too many connections: the node serves at most {} at once",
                    self.settings.max_connections
                );
                self.turn_away(stream, public_api::error::Kind::Busy, reason);
                continue;
            }
            let mut connection = Connection::new(
                ConnectionId(token.0 as u64),
                stream,
                self.settings.max_frame,
                uid,
            );
            if let Err(error) =
                self.poll
                    .registry()
                    .register(&mut connection.stream, token, Interest::READABLE)
            {
                log::warn!("cannot watch connection {}: {error}", token.0);
                continue;
            }
            self.connections.insert(token, connection);
            open += 1;
            self.tracer.count_connection(true);
            if let Some(idle_timeout) = self.settings.idle_timeout
                && self.next_idle_check.is_none()
            {
                self.next_idle_check = Some(Instant::now() + IDLE_CHECK.min(idle_timeout));
            }
        }
        self.accept_pending = true;
    }

    /// Answers a refused peer with `Error{kind}` without registering it
    /// (the frame fits any socket buffer) and shuts its write side; the
    /// socket is closed after [`CLOSE_LINGER`], or at once when
    /// [`TURNED_AWAY`] others wait already.
    fn turn_away(
        &mut self,
        mut stream: mio::net::UnixStream,
        kind: public_api::error::Kind,
        reason: String,
    ) {
        let mut frame = Vec::new();
        encode_frame(&error_reply(None, kind, reason), &mut frame);
        // A peer that is gone, or whose buffer is full, loses only its Error.
        let _ = std::io::Write::write(&mut stream, &frame);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        if self.turned_away.len() < TURNED_AWAY {
            self.turned_away
                .push_back((Instant::now() + CLOSE_LINGER, stream));
        }
    }

    /// Why a peer may not connect, if it may not.
    fn refusal(&self, peer: &io::Result<sys::PeerCredentials>) -> Option<String> {
        match peer {
            Ok(peer) if self.settings.access.allows(peer) => None,
            Ok(peer) => Some(format!(
                "uid {} (pid {}) is not allowed to use this node (allow_users, allow_groups)",
                peer.uid, peer.pid
            )),
            Err(error) => Some(format!("cannot read the peer's credentials: {error}")),
        }
    }

    /// Answers a protocol error and starts closing the connection.
    fn refuse(
        &mut self,
        token: Token,
        correlation_id: Option<String>,
        kind: public_api::error::Kind,
        reason: String,
    ) {
        if let Some(connection) = self.connections.get_mut(&token) {
            connection.exchange.refuse(ProtocolError {
                correlation_id,
                kind,
                reason,
            });
            connection.closing_until = Some(Instant::now() + CLOSE_LINGER);
        }
        self.flush(token);
    }

    /// Reads a connection, answering the node info it asks for a chunk at
    /// a time ([`LOCAL_CHUNK`]); after [`READ_ROUNDS`] chunks it is read
    /// again in the next pass, after the others.
    fn read(&mut self, token: Token, scratch: &mut [u8]) {
        for _ in 0..READ_ROUNDS {
            let more = self.read_chunk(token, scratch);
            self.answer_node_info();
            if !more {
                return;
            }
        }
        if let Some(connection) = self.connections.get_mut(&token) {
            connection.read_paused = true;
            self.resume_next.push(token);
        }
    }

    /// Reads a connection until it would block, is saturated or has given
    /// a chunk of node info requests to answer here: true for the last,
    /// when there may be more to read.
    fn read_chunk(&mut self, token: Token, scratch: &mut [u8]) -> bool {
        let Some(connection) = self.connections.get_mut(&token) else {
            return false;
        };
        let limits = &self.settings;
        let (batch, local) = (&mut self.batch, &mut self.local);
        // Looked at after the replies io has taken: a client that read the
        // reply to a change never gets node info from before it.
        let node_info = self.node_info.current();
        let taken_before = batch.len() + local.len();
        let mut outcome = Ok(());
        let end = connection.read(scratch, |exchange| {
            outcome = exchange.take_requests(limits, node_info, batch, local);
            outcome.is_ok() && !exchange.is_saturated(limits) && local.len() < LOCAL_CHUNK
        });
        connection.read_paused = connection.exchange.is_saturated(limits);
        let chunk_full = local.len() >= LOCAL_CHUNK;
        if batch.len() + local.len() > taken_before {
            connection.last_request = Instant::now();
        }
        let pending_replies = !connection.exchange.unsent().is_empty();
        let uid = connection.uid;
        if let Err(error) = outcome {
            complain(
                &mut self.complaints,
                uid,
                format_args!("connection {}: {}; closing it", token.0, error.reason),
            );
            self.refuse(token, error.correlation_id, error.kind, error.reason);
            return false;
        }
        if pending_replies {
            self.flush(token);
        }
        if end == ReadEnd::Gone {
            self.close(token);
            return false;
        }
        chunk_full
    }

    /// Hands replies to their connections, writes them out, and resumes
    /// reading connections whose back-pressure has eased.
    fn deliver(&mut self, replies: Vec<ClientReply>, scratch: &mut [u8]) {
        let mut touched = Vec::new();
        record_replies(&mut self.tracer.lock(), &replies);
        let now = Instant::now();
        // What each subscriber's socket holds unread, asked once per batch
        // (nothing is written to it before the batch is queued).
        let mut in_sockets = HashMap::with_hasher(*self.connections.hasher());
        // By reference: a reply is large, and io only reads it.
        for reply in &replies {
            let token = Token(reply.connection.0 as usize);
            let Some(connection) = self.connections.get_mut(&token) else {
                if let Some(http) = self.http.get_mut(&token) {
                    let next = http.answer(&reply.message);
                    self.after_http(token, next);
                }
                continue;
            };
            // What the subscriber's socket holds unread counts too: the
            // backlog must run out while the socket still has room for
            // the Error that says so. Asked only for events.
            let stream = &connection.stream;
            let in_socket = || {
                *in_sockets
                    .entry(token)
                    .or_insert_with(|| sys::unread_by_peer(stream).unwrap_or(0))
            };
            let delivery = connection
                .exchange
                .deliver(reply, &self.settings, in_socket);
            if delivery == Delivery::OverBudget {
                let (uid, unsent) = (connection.uid, connection.exchange.unsent().len());
                connection.closing_until = Some(now + CLOSE_LINGER);
                complain(
                    &mut self.complaints,
                    uid,
                    format_args!(
                        "connection {}: a subscriber with {unsent} bytes of events unread \
                         (max_subscriber_backlog = {}); closing it",
                        token.0, self.settings.max_subscriber_backlog
                    ),
                );
                touched.push(token);
                continue;
            }
            connection.last_request = now;
            if touched.last() != Some(&token) {
                touched.push(token);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for token in touched {
            self.flush(token);
            self.resume(token, scratch);
        }
    }

    fn accept_http(&mut self) {
        let Some(endpoint) = &self.metrics else {
            return;
        };
        loop {
            let (mut stream, peer) = match endpoint.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    log::warn!("cannot accept a metrics connection: {error}");
                    return;
                }
            };
            if self.http.len() >= self.settings.max_connections {
                log::warn!("refusing metrics connection from {peer}: too many open");
                continue;
            }
            let token = Token(self.next_token);
            self.next_token += 1;
            if let Err(error) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("cannot watch metrics connection from {peer}: {error}");
                continue;
            }
            log::debug!("metrics connection {} from {peer}", token.0);
            self.http.insert(token, http::HttpConnection::new(stream));
        }
    }

    fn serve_http(&mut self, token: Token, writable: bool, scratch: &mut [u8]) {
        let Some(connection) = self.http.get_mut(&token) else {
            return;
        };
        let mut next = connection.read(scratch);
        if next == http::Next::Write && writable {
            next = connection.flush();
        }
        self.after_http(token, next);
    }

    /// Carries out what an HTTP connection wants next.
    fn after_http(&mut self, token: Token, next: http::Next) {
        match next {
            http::Next::Read | http::Next::Write => {}
            http::Next::AskManager => {
                self.http_requests += 1;
                let message = public_api::Message {
                    code: public_api::message::Code::MetricsRequest as i32,
                    correlation_id: Some(format!("http-{}", self.http_requests)),
                    payload: None,
                };
                self.batch
                    .push(ClientRequest::new(ConnectionId(token.0 as u64), message));
            }
            http::Next::Close => {
                if let Some(mut connection) = self.http.remove(&token) {
                    let _ = self.poll.registry().deregister(&mut connection.stream);
                }
            }
        }
    }

    /// Reads a connection paused for back-pressure that has eased:
    /// edge-triggered polling will not report data that arrived while
    /// reading was paused.
    fn resume(&mut self, token: Token, scratch: &mut [u8]) {
        let resumable = self.connections.get(&token).is_some_and(|connection| {
            connection.read_paused
                && connection.closing_until.is_none()
                && !connection.exchange.is_saturated(&self.settings)
        });
        if resumable {
            self.read(token, scratch);
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(connection) = self.connections.get_mut(&token) else {
            return;
        };
        let done = match connection.flush() {
            Ok(done) => done,
            Err(error) => {
                log::debug!("connection {}: write failed: {error}", token.0);
                self.close(token);
                return;
            }
        };
        if connection.exchange.unsent().len() > self.settings.max_outbound_bytes {
            let (uid, unsent) = (connection.uid, connection.exchange.unsent().len());
            complain(
                &mut self.complaints,
                uid,
                format_args!(
                    "connection {}: {unsent} bytes of replies unread (max_outbound_bytes = {}); closing it",
                    token.0, self.settings.max_outbound_bytes
                ),
            );
            self.close(token);
            return;
        }
        if done == connection.watching_writable {
            let interest = if done {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            match self
                .poll
                .registry()
                .reregister(&mut connection.stream, token, interest)
            {
                Ok(()) => connection.watching_writable = !done,
                Err(error) => {
                    log::warn!("cannot watch connection {}: {error}", token.0);
                    self.close(token);
                }
            }
        }
    }

    fn close(&mut self, token: Token) {
        let Some(mut connection) = self.connections.remove(&token) else {
            return;
        };
        self.tracer.count_connection(false);
        // Deregistering a socket that is about to be closed cannot matter.
        let _ = self.poll.registry().deregister(&mut connection.stream);
        log::debug!("connection {} closed", token.0);
        self.trim_at
            .get_or_insert_with(|| Instant::now() + TRIM_DELAY);
        self.backlog
            .push_back(IoEvent::Closed(connection.exchange.id()));
    }

    /// Closes connections whose post-error linger has run out.
    fn end_lingering(&mut self) {
        let now = Instant::now();
        let expired: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, connection)| connection.closing_until.is_some_and(|until| until <= now))
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            self.close(token);
        }
    }

    /// Closes connections idle for `idle_timeout`, at most once per
    /// [`IDLE_CHECK`]; the check stops while no connection is open.
    fn end_idle(&mut self) {
        let (Some(idle_timeout), Some(check_at)) =
            (self.settings.idle_timeout, self.next_idle_check)
        else {
            return;
        };
        let now = Instant::now();
        if now < check_at {
            return;
        }
        let idle: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, connection)| {
                connection.closing_until.is_none()
                    && connection.exchange.in_flight() == 0
                    && connection.exchange.unsent().is_empty()
                    && now.saturating_duration_since(connection.last_request) >= idle_timeout
            })
            .map(|(token, _)| *token)
            .collect();
        for token in idle {
            log::debug!(
                "connection {}: idle for {idle_timeout:?} (idle_timeout); closing it",
                token.0
            );
            self.close(token);
        }
        self.next_idle_check =
            (!self.connections.is_empty()).then(|| now + IDLE_CHECK.min(idle_timeout));
    }

    /// Enters this pass's requests in the correlation table under one
    /// lock, answers duplicates, and sends the rest and any backlog without
    /// ever waiting.
    fn send_to_manager(&mut self, scratch: &mut [u8]) {
        // Answering a duplicate may resume a saturated connection, whose
        // reads add to the batch again.
        while !self.batch.is_empty() {
            // The next pass's batch starts with this one's room, rather
            // than growing again from nothing.
            let room = Vec::with_capacity(self.batch.len());
            let mut batch = std::mem::replace(&mut self.batch, room);
            let mut duplicates = Vec::new();
            begin_requests(&mut self.tracer.lock(), &mut batch, |request| {
                duplicates.push(request)
            });
            for request in duplicates {
                let token = Token(request.connection.0 as usize);
                if self.refuse_duplicate(token, request.message, true) {
                    self.resume(token, scratch);
                }
            }
            if !batch.is_empty() {
                self.backlog.push_back(IoEvent::Requests(batch));
            }
        }
        while let Some(event) = self.backlog.pop_front() {
            match self.to_manager.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    log::warn!("the manager is gone; dropping requests until shutdown");
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// Answers the node info requests io took itself, entered in the
    /// correlation table under one lock, and writes the answers out.
    /// Connections they eased are read again in the next pass.
    fn answer_node_info(&mut self) {
        if self.local.is_empty() {
            return;
        }
        // Drained, it keeps its room for the next pass.
        let mut local = std::mem::take(&mut self.local);
        let mut touched: Vec<Token> = Vec::new();
        let mut duplicates = Vec::new();
        let mut answered = 0;
        let connections = &mut self.connections;
        answer_locally(&mut self.tracer.lock(), &mut local, |request, begun| {
            let token = Token(request.connection.0 as usize);
            match begun {
                Err(_) => duplicates.push((token, request.message)),
                Ok(()) => {
                    answered += 1;
                    if let Some(connection) = connections.get_mut(&token) {
                        connection.exchange.answer_locally(request);
                        if touched.last() != Some(&token) {
                            touched.push(token);
                        }
                    }
                }
            }
        });
        self.local = local;
        self.node_info.count_answered(answered);
        for (token, request) in duplicates {
            if self.refuse_duplicate(token, request, false)
                && self.connections.get(&token).is_some_and(|c| c.read_paused)
            {
                self.resume_next.push(token);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let now = Instant::now();
        for token in touched {
            let Some(connection) = self.connections.get_mut(&token) else {
                continue;
            };
            connection.last_request = now;
            if connection.read_paused {
                self.resume_next.push(token);
            }
            self.flush(token);
        }
    }

    /// Refuses `request`, a duplicate of a request in flight, on
    /// connection `token` (`forwarded`: it was meant for the manager);
    /// false if the connection is gone.
    fn refuse_duplicate(&mut self, token: Token, request: RequestHead, forwarded: bool) -> bool {
        let Some(connection) = self.connections.get_mut(&token) else {
            return false;
        };
        let uid = connection.uid;
        let id = request.correlation_id.clone().unwrap_or_default();
        connection.exchange.refuse_duplicate(request, forwarded);
        complain(
            &mut self.complaints,
            uid,
            format_args!(
                "connection {}: duplicate correlation id {}",
                token.0,
                Shown(&id)
            ),
        );
        self.flush(token);
        true
    }

    fn stop(&mut self) {
        let tokens: Vec<Token> = self.connections.keys().copied().collect();
        for token in tokens {
            if let Some(connection) = self.connections.get_mut(&token) {
                // Last replies (a Shutdown's Ack) go out if the socket
                // takes them now; nobody waits for slow readers here.
                let _ = connection.flush();
            }
        }
        self.connections.clear();
        log::info!("stopped listening on {}", self.socket.path().display());
    }
}

/// Logs a complaint about peer `uid`, unless one about it was logged
/// within the interval; then it is only counted, and the count goes with
/// the next line let through.
fn complain(limiter: &mut PeerLimiter, uid: u32, line: fmt::Arguments<'_>) {
    if let Some(suppressed) = limiter.admit(uid, Instant::now()) {
        log::warn!("{line}{}", Suppressed(suppressed));
    }
}

/// Binds `address` for `GET /metrics` and registers it in `poll`.
fn listen_for_metrics(
    poll: &Poll,
    address: std::net::SocketAddr,
) -> Result<http::Endpoint, IoError> {
    let failed = |source| IoError::MetricsListen { address, source };
    let listener = std::net::TcpListener::bind(address).map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, METRICS, Interest::READABLE)
        .map_err(failed)?;
    log::info!("answering GET /metrics on {address}");
    Ok(http::Endpoint { listener })
}
