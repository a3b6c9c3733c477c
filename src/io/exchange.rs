//! A connection's protocol state without its socket: the frame decoder, the
//! requests in flight and the reply bytes not yet written. Pure — bytes in,
//! requests and reply bytes out — so that the io loop drives it with what
//! it reads from a socket, and fuzzers and property tests drive the very
//! same code with arbitrary byte streams.
//!
//! The correlation table is not touched per frame: the caller enters a
//! whole pass's requests with [`begin_requests`] and its replies with
//! [`record_replies`], under one lock each.

use crate::conf::MAX_ID_LEN;
use crate::trace::{CorrelationTable, RequestState, Role};
use crate::wire::link::{ClientReply, ClientRequest, ConnectionId};
use crate::wire::proto::public_api::{self, error::Kind, message::Code, message::Payload};
use crate::wire::{
    Envelope, FRAME_HEADER_LEN, FrameDecoder, FrameError, MAX_CORRELATION_ID, decode_envelope,
    encode_frame_with, error_reply,
};
use prost::Message as _;

use super::IoSettings;

/// A protocol error: the connection must be answered with `Error` and
/// closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The offending body's correlation id, where it could be read.
    pub correlation_id: Option<String>,
    /// `FRAME_TOO_LARGE` or `MALFORMED`.
    pub kind: public_api::error::Kind,
    /// What was wrong, for the reply and the log.
    pub reason: String,
}

/// What became of a reply handed to [`Exchange::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued (or dropped silently: the exchange was sealed already).
    Queued,
    /// An event over the subscriber's backlog budget: the exchange now
    /// ends with `Error{SLOW_SUBSCRIBER}` and must be closed.
    OverBudget,
}

/// One connection's frames, requests in flight and unsent replies.
#[derive(Debug)]
pub struct Exchange {
    id: ConnectionId,
    decoder: FrameDecoder,
    outbound: Vec<u8>,
    in_flight: usize,
    /// Set once a protocol error's `Error` is queued: nothing follows it.
    sealed: bool,
}

impl Exchange {
    /// The state of a new connection `id` that accepts bodies of up to
    /// `max_frame` bytes.
    pub fn new(id: ConnectionId, max_frame: u32) -> Exchange {
        Exchange {
            id,
            decoder: FrameDecoder::new(max_frame),
            outbound: Vec::new(),
            in_flight: 0,
            sealed: false,
        }
    }

    /// The connection this state belongs to.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Appends bytes read from the peer.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.decoder.extend(bytes);
    }

    /// Requests taken and not yet finally answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the connection has as many requests in flight or as many
    /// reply bytes unsent as it may: it is then not read until they drain.
    pub fn is_saturated(&self, limits: &IoSettings) -> bool {
        self.in_flight >= limits.max_inflight_per_connection
            || self.outbound.len() > limits.max_outbound_bytes / 4
    }

    /// Cuts the buffered bytes into requests for the manager, appended to
    /// `batch`, until no frame is whole or the connection is saturated. A
    /// request without a correlation id is given one. A protocol error
    /// stops the cutting and is returned: the caller refuses the
    /// connection. The requests still have to be entered in the
    /// correlation table ([`begin_requests`]).
    pub fn take_requests(
        &mut self,
        limits: &IoSettings,
        batch: &mut Vec<ClientRequest>,
    ) -> Result<(), ProtocolError> {
        while !self.is_saturated(limits) {
            let body = match self.decoder.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => return Ok(()),
                Err(error @ FrameError::TooLarge { .. }) => {
                    return Err(ProtocolError {
                        correlation_id: None,
                        kind: public_api::error::Kind::FrameTooLarge,
                        reason: error.to_string(),
                    });
                }
            };
            let mut message =
                decode_envelope::<public_api::Message>(body).map_err(|error| ProtocolError {
                    correlation_id: error.correlation_id,
                    kind: public_api::error::Kind::Malformed,
                    reason: error.reason,
                })?;
            if let Err(refusal) = check_bounds(&message) {
                log::debug!(
                    "connection {}: request refused: {}",
                    self.id.0,
                    refusal.reason
                );
                let reply = error_reply(refusal.correlation_id, Kind::BadRequest, refusal.reason);
                self.queue(&reply, &[]);
                continue;
            }
            if message.correlation().is_none() {
                message.correlation_id = Some(uuid::Uuid::new_v4().to_string());
            }
            self.in_flight += 1;
            batch.push(ClientRequest {
                connection: self.id,
                message,
            });
        }
        Ok(())
    }

    /// Answers a request [`begin_requests`] found to be a duplicate of one
    /// in flight; it is no longer this connection's to wait for.
    pub fn refuse_duplicate(&mut self, request: ClientRequest) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let id = request.message.correlation_id.unwrap_or_default();
        let reason = format!("correlation id {id} is already in flight");
        self.queue(
            &error_reply(
                Some(id),
                public_api::error::Kind::DuplicateCorrelation,
                reason,
            ),
            &[],
        );
    }

    /// Queues a reply from the manager; a final one ends its request. An
    /// `Event` (a reply that is not final) that would take the unsent
    /// bytes past `max_subscriber_backlog` is not queued: the subscriber
    /// is sent `Error{SLOW_SUBSCRIBER}` instead and the exchange is
    /// sealed ([`Delivery::OverBudget`]; the caller closes it).
    pub fn deliver(&mut self, reply: &ClientReply, limits: &IoSettings) -> Delivery {
        if reply.last {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let payload = reply.payload_bytes.as_deref().unwrap_or_default();
        let size = FRAME_HEADER_LEN + reply.message.encoded_len() + payload.len();
        if !reply.last && !self.sealed && self.outbound.len() + size > limits.max_subscriber_backlog
        {
            let reason = format!(
                "{} bytes of events unread exceed the subscriber limit of {} bytes \
                 (max_subscriber_backlog); closing the connection",
                self.outbound.len() + size,
                limits.max_subscriber_backlog
            );
            self.refuse(ProtocolError {
                correlation_id: reply.message.correlation_id.clone(),
                kind: Kind::SlowSubscriber,
                reason,
            });
            return Delivery::OverBudget;
        }
        self.queue(&reply.message, payload);
        Delivery::Queued
    }

    /// Queues the `Error` that ends the connection; nothing follows it.
    pub fn refuse(&mut self, error: ProtocolError) {
        self.queue(
            &error_reply(error.correlation_id, error.kind, error.reason),
            &[],
        );
        self.sealed = true;
    }

    /// Reply bytes not yet written, oldest first.
    pub fn unsent(&self) -> &[u8] {
        &self.outbound
    }

    /// Drops the first `written` unsent bytes, which the peer now has.
    pub fn sent(&mut self, written: usize) {
        self.outbound.drain(..written.min(self.outbound.len()));
    }

    /// Queues `message`'s frame, `payload_bytes` its encoded payload
    /// when it carries none itself.
    fn queue(&mut self, message: &public_api::Message, payload_bytes: &[u8]) {
        if !self.sealed {
            encode_frame_with(message, payload_bytes, &mut self.outbound);
        }
    }
}

/// A request refused for a string over its bound, before it reaches the
/// correlation table, the manager or the log.
struct Refusal {
    /// The request's id when it is within bounds (to match the reply);
    /// an over-long id is never echoed or copied.
    correlation_id: Option<String>,
    /// Names the field, its length and the limit.
    reason: String,
}

/// Checks every client-supplied string of `message` against its bound:
/// correlation ids (the envelope's, a trace's) [`MAX_CORRELATION_ID`],
/// service ids and versions the longest legal id ([`MAX_ID_LEN`]), none
/// with control characters. Other payloads carry no strings or are
/// bounded by `max_frame` alone.
fn check_bounds(message: &public_api::Message) -> Result<(), Refusal> {
    let id = message.correlation_id.as_deref().unwrap_or_default();
    if let Some(reason) = out_of_bounds("correlation_id", id, MAX_CORRELATION_ID) {
        return Err(Refusal {
            correlation_id: None,
            reason,
        });
    }
    let fields: [(&str, &str, usize); 2] = match &message.payload {
        Some(Payload::ServiceStart(start)) => [
            ("service_id", &start.service_id, MAX_ID_LEN),
            ("version", &start.version, MAX_ID_LEN),
        ],
        Some(Payload::ServiceStop(stop)) => [("service_id", &stop.service_id, MAX_ID_LEN); 2],
        Some(Payload::ServiceRestart(restart)) => {
            [("service_id", &restart.service_id, MAX_ID_LEN); 2]
        }
        Some(Payload::ServiceStatusRequest(status)) => {
            [(
                "service_id",
                status.service_id.as_deref().unwrap_or_default(),
                MAX_ID_LEN,
            ); 2]
        }
        Some(Payload::TraceRequest(trace)) => {
            [(
                "TraceRequest.correlation_id",
                &trace.correlation_id,
                MAX_CORRELATION_ID,
            ); 2]
        }
        _ => return Ok(()),
    };
    for (name, value, max) in fields {
        if let Some(reason) = out_of_bounds(name, value, max) {
            return Err(Refusal {
                correlation_id: message.correlation_id.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Why `value` of field `name` may not enter the node, if it may not:
/// longer than `max` bytes, or holding a control character (which could
/// forge lines in the log, where ids are shown).
fn out_of_bounds(name: &str, value: &str, max: usize) -> Option<String> {
    if value.len() > max {
        Some(format!(
            "{name} of {} bytes exceeds the limit of {max} bytes",
            value.len()
        ))
    } else if value.chars().any(char::is_control) {
        Some(format!("{name} contains a control character"))
    } else {
        None
    }
}

/// Enters a pass's requests in the correlation table, in order: each
/// with its hops from the client to io and from io to the manager. A
/// request whose id is already in flight (on any connection, or earlier in
/// the batch) is taken out of `batch` and handed to `duplicate`.
pub fn begin_requests(
    table: &mut CorrelationTable,
    batch: &mut Vec<ClientRequest>,
    mut duplicate: impl FnMut(ClientRequest),
) {
    const PATH: [(Role, Role); 2] = [(Role::Client, Role::Io), (Role::Io, Role::Manager)];
    let mut begun = 0;
    for index in 0..batch.len() {
        if table.begin(&batch[index].message, &PATH).is_ok() {
            batch.swap(begun, index);
            begun += 1;
        }
    }
    for request in batch.drain(begun..) {
        duplicate(request);
    }
}

/// Enters replies in the correlation table, under one lock: the manager's
/// hop and io's, and the end of each request a final reply answers.
pub fn record_replies(table: &mut CorrelationTable, replies: &[ClientReply]) {
    for reply in replies {
        let last = reply.last.then(|| final_state(&reply.message));
        table.finish(&reply.message, reply.sent_unix_us, last);
    }
}

/// How a final reply ends its request in the correlation table.
fn final_state(reply: &public_api::Message) -> RequestState {
    match &reply.payload {
        Some(Payload::Error(error)) if error.kind == public_api::error::Kind::Timeout as i32 => {
            RequestState::TimedOut
        }
        _ if reply.code == Code::Error as i32 => RequestState::Failed,
        _ => RequestState::Done,
    }
}
