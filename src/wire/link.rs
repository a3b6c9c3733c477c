//! The typed edges between the io thread and the manager: protocol
//! messages wrapped with the connection they came from or go to, and the
//! channel-plus-waker that carries replies into the io thread's poll loop.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::proto::public_api;
use super::{BadRequest, Request};

/// One client connection, unique for the life of the node (never reused,
/// so a late reply cannot reach a newer connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// A decoded public request and the connection it came from.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    /// Where the reply goes.
    pub connection: ConnectionId,
    /// The request's envelope: its code and correlation id (always set),
    /// its payload moved into `request`.
    pub message: public_api::Message,
    /// The request as its type, or why it is none (answered with
    /// `Error{BAD_REQUEST}`).
    pub request: Result<Request, BadRequest>,
}

impl ClientRequest {
    /// A request of `message` from `connection`: its payload moves into
    /// the request's type.
    pub fn new(connection: ConnectionId, mut message: public_api::Message) -> ClientRequest {
        let request = Request::from_message(message.code, message.payload.take());
        ClientRequest {
            connection,
            message,
            request,
        }
    }
}

/// io → manager.
#[derive(Debug)]
pub enum IoEvent {
    /// Requests decoded in one pass of the io loop, in arrival order.
    Requests(Vec<ClientRequest>),
    /// A connection closed: its subscriptions and pending replies are void.
    Closed(ConnectionId),
}

/// A message for one connection.
#[derive(Debug, Clone)]
pub struct ClientReply {
    /// The connection it goes to.
    pub connection: ConnectionId,
    /// The reply or event.
    pub message: public_api::Message,
    /// The payload already encoded, field key included, for a `message`
    /// without one: the manager keeps replies that rarely change encoded,
    /// and the payload is the envelope's last field, so the frame is
    /// `message`'s bytes followed by these.
    pub payload_bytes: Option<Arc<[u8]>>,
    /// Whether this is the request's final reply (an `Event` is not).
    pub last: bool,
    /// When the manager handed it to io, microseconds since the Unix
    /// epoch: io records the manager's hop with the reply's own, under
    /// the lock it takes anyway.
    pub sent_unix_us: u64,
}

/// manager or daemon → io.
#[derive(Debug)]
pub enum IoCommand {
    /// Replies to hand to their connections, in order.
    Replies(Vec<ClientReply>),
    /// Close the listener and every connection, remove the socket file, end.
    Stop,
}

/// The sending end of the manager/daemon → io edge. The io thread sleeps in
/// `mio::Poll`, so a send is followed by a wake; wakes are coalesced: only
/// the send that finds the io loop without pending commands wakes it, which
/// is most of a hop's cost saved under load.
#[derive(Debug, Clone)]
pub struct IoSender {
    commands: Sender<IoCommand>,
    waker: Arc<mio::Waker>,
    pending: Arc<AtomicBool>,
}

/// The io loop's end of [`IoSender`].
#[derive(Debug)]
pub struct IoReceiver {
    commands: Receiver<IoCommand>,
    pending: Arc<AtomicBool>,
}

/// Why a command could not reach the io thread.
#[derive(Debug)]
pub enum IoSendError {
    /// The io thread has ended.
    Disconnected,
    /// The wake-up could not be written.
    Wake(std::io::Error),
}

impl fmt::Display for IoSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoSendError::Disconnected => f.write_str("the io thread has ended"),
            IoSendError::Wake(error) => write!(f, "cannot wake the io thread: {error}"),
        }
    }
}

impl std::error::Error for IoSendError {}

/// Joins the io thread's command channel to its poll's waker. `capacity`
/// bounds the commands waiting; senders wait when it is full (the io
/// thread never waits on anyone, so they are never stuck for long).
pub fn io_channel(waker: mio::Waker, capacity: usize) -> (IoSender, IoReceiver) {
    let (commands, receiver) = crossbeam_channel::bounded(capacity);
    let pending = Arc::new(AtomicBool::new(false));
    (
        IoSender {
            commands,
            waker: Arc::new(waker),
            pending: pending.clone(),
        },
        IoReceiver {
            commands: receiver,
            pending,
        },
    )
}

impl IoSender {
    /// Queues `command` and wakes the io loop unless a wake is pending.
    pub fn send(&self, command: IoCommand) -> Result<(), IoSendError> {
        self.commands
            .send(command)
            .map_err(|_| IoSendError::Disconnected)?;
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake().map_err(IoSendError::Wake)?;
        }
        Ok(())
    }
}

impl IoReceiver {
    /// Takes every queued command. Clears the pending flag first, so a
    /// command sent while draining wakes the loop again.
    pub fn drain(&self, into: &mut Vec<IoCommand>) {
        self.pending.store(false, Ordering::Release);
        into.extend(self.commands.try_iter());
    }
}
