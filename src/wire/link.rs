//! The typed edges between the io thread and the manager: protocol
//! messages wrapped with the connection they came from or go to.

use super::proto::public_api;

/// One client connection, unique for the life of the node (never reused,
/// so a late reply cannot reach a newer connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// A decoded public request and the connection it came from.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    /// Where the reply goes.
    pub connection: ConnectionId,
    /// The request, its correlation id always set.
    pub message: public_api::Message,
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
    /// Whether this is the request's final reply (an `Event` is not).
    pub last: bool,
}

/// manager or daemon → io.
#[derive(Debug)]
pub enum IoCommand {
    /// Replies to hand to their connections, in order.
    Replies(Vec<ClientReply>),
    /// Close the listener and every connection, remove the socket file, end.
    Stop,
}
