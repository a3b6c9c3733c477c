//! The typed edges between the io thread and the manager: protocol
//! messages wrapped with the connection they came from or go to, and the
//! channel-plus-waker that carries replies into the io thread's poll loop.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::proto::public_api;
use super::{BadRequest, Envelope, Protocol, Request};

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
    pub message: RequestHead,
    /// The request as its type, or why it is none (answered with
    /// `Error{BAD_REQUEST}`).
    pub request: Result<Request, BadRequest>,
}

impl ClientRequest {
    /// A request of `message` from `connection`: its payload moves into
    /// the request's type.
    pub fn new(connection: ConnectionId, message: public_api::Message) -> ClientRequest {
        ClientRequest {
            connection,
            request: Request::from_message(message.code, message.payload),
            message: RequestHead {
                code: message.code,
                correlation_id: message.correlation_id,
            },
        }
    }
}

/// A public request's envelope without its payload: what io, the
/// correlation table and the log need of it. A request is moved a few
/// times on its way to the manager, and a whole `public_api::Message`
/// would carry room for the largest payload of all along.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestHead {
    /// The request's code (`public_api::message::Code`).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The request's correlation id.
    #[prost(string, optional, tag = "2")]
    pub correlation_id: Option<String>,
}

impl Envelope for RequestHead {
    const PROTOCOL: Protocol = Protocol::Public;
    fn code_number(&self) -> i32 {
        self.code
    }
    fn correlation(&self) -> Option<&str> {
        self.correlation_id.as_deref().filter(|id| !id.is_empty())
    }
}

/// The manager's answer to a `NodeInfoRequest` without details, published
/// for io to answer such requests itself, without the hop to the manager
/// and back. The manager withdraws it at the start of every pass (and
/// after a record write changed the `state` subsystem) and publishes it
/// again at the end of a pass that answered one, before that pass's
/// replies leave: io never answers from a state older than one a client
/// could have seen in a reply. io counts the requests it answers here,
/// for the manager's metrics.
#[derive(Debug, Clone, Default)]
pub struct NodeInfoBoard {
    shared: Arc<Board>,
}

#[derive(Debug, Default)]
struct Board {
    /// Bumped with every change of `payload`, under its lock: io looks at
    /// the payload only when this moved.
    generation: AtomicU64,
    /// The encoded payload (field key included), or none while the
    /// manager answers node info itself.
    payload: Mutex<Option<Arc<[u8]>>>,
    /// `NodeInfoRequest`s io answered from the board.
    answered: AtomicU64,
}

impl NodeInfoBoard {
    /// Publishes `payload` (the encoded `NodeInfoResponse`, field key
    /// included), or withdraws the answer with `None`.
    pub fn publish(&self, payload: Option<Arc<[u8]>>) {
        let mut slot = self
            .shared
            .payload
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = payload;
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// io's view of the board.
    pub fn reader(&self) -> NodeInfoReader {
        NodeInfoReader {
            board: self.clone(),
            seen: u64::MAX,
            payload: None,
        }
    }

    /// `NodeInfoRequest`s io answered from the board so far.
    pub fn answered_by_io(&self) -> u64 {
        self.shared.answered.load(Ordering::Relaxed)
    }
}

/// io's copy of what the [`NodeInfoBoard`] holds, refreshed only when the
/// manager changed it.
#[derive(Debug)]
pub struct NodeInfoReader {
    board: NodeInfoBoard,
    /// The generation `payload` is of.
    seen: u64,
    payload: Option<Arc<[u8]>>,
}

impl NodeInfoReader {
    /// The answer published now, if any: one atomic load when nothing
    /// changed.
    pub fn current(&mut self) -> Option<&Arc<[u8]>> {
        let shared = &self.board.shared;
        if shared.generation.load(Ordering::Acquire) != self.seen {
            let slot = shared
                .payload
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.payload.clone_from(&slot);
            self.seen = shared.generation.load(Ordering::Relaxed);
        }
        self.payload.as_ref()
    }

    /// Counts `count` requests answered from the board.
    pub fn count_answered(&self, count: u64) {
        self.board
            .shared
            .answered
            .fetch_add(count, Ordering::Relaxed);
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

/// The sending end of the manager/daemon → io edge: the io thread sleeps
/// in `mio::Poll`.
pub type IoSender = WakingSender<IoCommand>;

/// The io loop's end of [`IoSender`].
pub type IoReceiver = WakingReceiver<IoCommand>;

/// The sending end of a channel into a thread that sleeps in `mio::Poll`
/// (io, the spawner), so a send is followed by a wake; wakes are
/// coalesced: only the send that finds the receiver without pending
/// messages wakes it, which is most of a hop's cost saved under load. The
/// last sender's drop wakes it too, so that it sees the channel closed.
#[derive(Debug)]
pub struct WakingSender<M> {
    /// Always `Some` but in `drop`, which drops it before its last wake.
    messages: Option<Sender<M>>,
    waker: Arc<mio::Waker>,
    pending: Arc<AtomicBool>,
}

impl<M> Clone for WakingSender<M> {
    fn clone(&self) -> Self {
        WakingSender {
            messages: self.messages.clone(),
            waker: self.waker.clone(),
            pending: self.pending.clone(),
        }
    }
}

/// The polling thread's end of a [`WakingSender`].
#[derive(Debug)]
pub struct WakingReceiver<M> {
    messages: Receiver<M>,
    pending: Arc<AtomicBool>,
    /// Kept so that the waker's eventfd outlives the last sender: closed
    /// with it, it would take the last sender's wake out of the poll.
    _waker: Arc<mio::Waker>,
}

/// Why a message could not reach a polling thread.
#[derive(Debug)]
pub enum WakingSendError {
    /// The receiving thread has ended.
    Disconnected,
    /// The wake-up could not be written.
    Wake(std::io::Error),
}

impl fmt::Display for WakingSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WakingSendError::Disconnected => f.write_str("the receiving thread has ended"),
            WakingSendError::Wake(error) => write!(f, "cannot wake the receiving thread: {error}"),
        }
    }
}

impl std::error::Error for WakingSendError {}

/// Joins the io thread's command channel to its poll's waker. `capacity`
/// bounds the commands waiting; senders wait when it is full (the io
/// thread never waits on anyone, so they are never stuck for long).
pub fn io_channel(waker: mio::Waker, capacity: usize) -> (IoSender, IoReceiver) {
    waking_channel(Arc::new(waker), capacity)
}

/// A bounded channel whose sends wake `waker`'s poll. Several channels
/// may share one waker: each has its own pending flag.
pub fn waking_channel<M>(
    waker: Arc<mio::Waker>,
    capacity: usize,
) -> (WakingSender<M>, WakingReceiver<M>) {
    let (messages, receiver) = crossbeam_channel::bounded(capacity);
    let pending = Arc::new(AtomicBool::new(false));
    (
        WakingSender {
            messages: Some(messages),
            waker: waker.clone(),
            pending: pending.clone(),
        },
        WakingReceiver {
            messages: receiver,
            pending,
            _waker: waker,
        },
    )
}

impl<M> WakingSender<M> {
    /// Queues `message`, waiting while the channel is full, and wakes the
    /// receiver unless a wake is pending.
    pub fn send(&self, message: M) -> Result<(), WakingSendError> {
        let messages = self
            .messages
            .as_ref()
            .ok_or(WakingSendError::Disconnected)?;
        messages
            .send(message)
            .map_err(|_| WakingSendError::Disconnected)?;
        self.wake().map_err(WakingSendError::Wake)
    }

    /// Queues `message` if the channel has room, and wakes the receiver
    /// unless a wake is pending. A wake that cannot be written is logged:
    /// the message is queued, and the next send wakes again.
    pub fn try_send(&self, message: M) -> Result<(), TrySendError<M>> {
        let Some(messages) = &self.messages else {
            return Err(TrySendError::Disconnected(message));
        };
        messages.try_send(message)?;
        if let Err(error) = self.wake() {
            log::error!("cannot wake the receiving thread: {error}");
        }
        Ok(())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.messages.as_ref().is_none_or(Sender::is_empty)
    }

    fn wake(&self) -> std::io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.waker.wake().inspect_err(|_| {
            self.pending.store(false, Ordering::Release);
        })
    }
}

impl<M> Drop for WakingSender<M> {
    fn drop(&mut self) {
        // The channel closes with the last sender, so the wake comes after
        // it is dropped; another sender's wake is a pass that finds
        // nothing. A receiver that is gone needs none.
        drop(self.messages.take());
        let _ = self.waker.wake();
    }
}

impl<M> WakingReceiver<M> {
    /// Waits for the next message, for a loop not in its poll yet.
    pub fn recv(&self) -> Result<M, crossbeam_channel::RecvError> {
        self.pending.store(false, Ordering::Release);
        self.messages.recv()
    }

    /// The plain receiver, for a thread that blocks on it instead of
    /// polling (a link bridge): its wakes then go unread, and are soon no
    /// longer written, as the pending flag stays set.
    pub fn into_inner(self) -> Receiver<M> {
        self.messages
    }

    /// Takes every queued message; true when every sender is gone (and
    /// so nothing more will come). Clears the pending flag first, so a
    /// message sent while draining wakes the loop again.
    pub fn drain(&self, into: &mut Vec<M>) -> bool {
        self.pending.store(false, Ordering::Release);
        loop {
            match self.messages.try_recv() {
                Ok(message) => into.push(message),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    #[test]
    fn the_last_senders_drop_wakes_the_poll_and_shows_the_channel_closed() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), Token(0)).unwrap());
        let (sender, receiver) = waking_channel::<u32>(waker, 4);
        sender.send(1).unwrap();
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().count(), 1, "a send wakes");
        let mut taken = Vec::new();
        assert!(!receiver.drain(&mut taken));
        assert_eq!(taken, [1]);
        let other = sender.clone();
        drop(sender);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(!receiver.drain(&mut taken), "one sender is left");
        // The last one, the waker's last sender too, on another thread.
        std::thread::spawn(move || drop(other)).join().unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(events.iter().count(), 1, "the last drop woke it");
        assert!(receiver.drain(&mut taken), "closed");
    }
}
