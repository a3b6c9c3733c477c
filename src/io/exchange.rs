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
use crate::trace::{CorrelationTable, RequestState, Role, now_unix_us};
use crate::wire::link::{ClientReply, ClientRequest, ConnectionId};
use crate::wire::proto::public_api::{self, error::Kind, message::Code, message::Payload};
use crate::wire::proto::public_api::{
    ServiceDefinitionRequest, ServiceEnable, ServiceRestart, ServiceStop,
};
use crate::wire::{
    Envelope, FRAME_HEADER_LEN, FrameDecoder, FrameError, MAX_CORRELATION_ID, Request,
    decode_envelope, encode_frame_with, error_reply,
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
    /// Bytes of the frame at the head of `outbound` still unsent, when a
    /// write stopped inside it (0: `outbound` starts with a whole frame).
    head_left: usize,
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
            head_left: 0,
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
            let message =
                decode_envelope::<public_api::Message>(body).map_err(|error| ProtocolError {
                    correlation_id: error.correlation_id,
                    kind: public_api::error::Kind::Malformed,
                    reason: error.reason,
                })?;
            let mut request = ClientRequest::new(self.id, message);
            if let Err(refusal) = check_bounds(&request) {
                log::debug!(
                    "connection {}: request refused: {}",
                    self.id.0,
                    refusal.reason
                );
                let reply = error_reply(refusal.correlation_id, Kind::BadRequest, refusal.reason);
                self.queue(&reply, &[]);
                continue;
            }
            if request.message.correlation().is_none() {
                request.message.correlation_id = Some(uuid::Uuid::new_v4().to_string());
            }
            self.in_flight += 1;
            batch.push(request);
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
    /// `Event` (a reply that is not final) that would take the bytes the
    /// subscriber has not read — unsent here, and `in_socket()` in its
    /// socket — past `max_subscriber_backlog` is not queued: the subscriber
    /// is sent `Error{SLOW_SUBSCRIBER}` instead and the exchange is
    /// sealed ([`Delivery::OverBudget`]; the caller closes it). The events
    /// not yet written are dropped then: the subscriber reads the ones
    /// its socket holds, then the `Error`.
    pub fn deliver(
        &mut self,
        reply: &ClientReply,
        limits: &IoSettings,
        in_socket: impl FnOnce() -> usize,
    ) -> Delivery {
        if reply.last {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let payload = reply.payload_bytes.as_deref().unwrap_or_default();
        // Only an event's size is needed before it is encoded.
        let unread = (!reply.last && !self.sealed).then(|| {
            let size = FRAME_HEADER_LEN + reply.message.encoded_len() + payload.len();
            self.outbound.len() + size + in_socket()
        });
        if let Some(unread) = unread.filter(|&unread| unread > limits.max_subscriber_backlog) {
            let reason = format!(
                "{unread} bytes of events unread exceed the subscriber limit of {} bytes \
                 (max_subscriber_backlog); closing the connection",
                limits.max_subscriber_backlog
            );
            // The unsent events are dropped (all but the rest of a frame
            // partly written), so the Error is the next thing the
            // subscriber reads once it reads again.
            self.outbound.truncate(self.head_left);
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
        let written = written.min(self.outbound.len());
        if written == self.outbound.len() {
            self.head_left = 0;
            self.outbound.clear();
            return;
        }
        // Outbound holds whole frames after the head's rest: walk them to
        // learn where the write stopped.
        let (mut at, mut left) = (0, self.head_left);
        while at < written {
            if left == 0 {
                let Some(header) = self.outbound[at..].first_chunk::<FRAME_HEADER_LEN>() else {
                    break;
                };
                left = FRAME_HEADER_LEN + u32::from_be_bytes(*header) as usize;
            }
            let step = left.min(written - at);
            left -= step;
            at += step;
        }
        self.head_left = left;
        self.outbound.drain(..written);
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

/// Checks every client-supplied string of `request` against its bound:
/// correlation ids (the envelope's, a trace's) [`MAX_CORRELATION_ID`],
/// service ids and versions the longest legal id ([`MAX_ID_LEN`]), none
/// with control characters. Other payloads carry no strings or are
/// bounded by `max_frame` alone (cluster requests are checked by the
/// cluster role, logs requests where their ids are looked up).
fn check_bounds(request: &ClientRequest) -> Result<(), Refusal> {
    let message = &request.message;
    let id = message.correlation_id.as_deref().unwrap_or_default();
    if let Some(reason) = out_of_bounds("correlation_id", id, MAX_CORRELATION_ID) {
        return Err(Refusal {
            correlation_id: None,
            reason,
        });
    }
    let Ok(request) = &request.request else {
        return Ok(());
    };
    let fields: [(&str, &str, usize); 2] = match request {
        Request::ServiceStart(start) => [
            ("service_id", &start.service_id, MAX_ID_LEN),
            ("version", &start.version, MAX_ID_LEN),
        ],
        Request::ServiceSignal(signal) => [
            ("service_id", &signal.service_id, MAX_ID_LEN),
            ("signal", &signal.signal, MAX_ID_LEN),
        ],
        Request::ServiceStop(ServiceStop { service_id })
        | Request::ServiceRestart(ServiceRestart { service_id })
        | Request::ServiceEnable(ServiceEnable { service_id, .. })
        | Request::ServiceDefinitionRequest(ServiceDefinitionRequest { service_id }) => {
            [("service_id", service_id, MAX_ID_LEN); 2]
        }
        Request::ServiceStatusRequest(status) => {
            [(
                "service_id",
                status.service_id.as_deref().unwrap_or_default(),
                MAX_ID_LEN,
            ); 2]
        }
        Request::TraceRequest(trace) => {
            [(
                "TraceRequest.correlation_id",
                &trace.correlation_id,
                MAX_CORRELATION_ID,
            ); 2]
        }
        Request::ClusterApply(_)
        | Request::ClusterRemove(_)
        | Request::ClusterStart(_)
        | Request::ClusterStop(_)
        | Request::LogsRequest(_)
        | Request::NodeInfoRequest(_)
        | Request::Introduce
        | Request::Shutdown
        | Request::ConfigReload
        | Request::Subscribe
        | Request::ClusterStatusRequest
        | Request::MetricsRequest => return Ok(()),
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
    } else if has_control(value) {
        Some(format!("{name} contains a control character"))
    } else {
        None
    }
}

/// Whether `value` holds a control character (Unicode's `Cc`). Ids are
/// printable ASCII as a rule: their bytes are counted (without an early
/// exit, which the compiler makes vector code), and only a value with
/// another byte is decoded.
fn has_control(value: &str) -> bool {
    let unusual = value
        .bytes()
        .filter(|byte| !(b' '..=b'~').contains(byte))
        .count();
    unusual != 0 && value.chars().any(char::is_control)
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
    let now = now_unix_us();
    for index in 0..batch.len() {
        if table.begin(&batch[index].message, &PATH, now).is_ok() {
            // A swap moves a large request three times: only when a
            // duplicate came before it.
            if begun != index {
                batch.swap(begun, index);
            }
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
    let now = now_unix_us();
    for reply in replies {
        let last = reply.last.then(|| final_state(&reply.message));
        table.finish(&reply.message, reply.sent_unix_us, now, last);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Access;
    use crate::wire::DEFAULT_MAX_FRAME;

    fn limits(backlog: usize) -> IoSettings {
        IoSettings {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 4,
            max_inflight_per_connection: 4,
            max_outbound_bytes: 1 << 20,
            idle_timeout: None,
            max_subscriber_backlog: backlog,
            access: Access::resolve(&[], &[], crate::sys::effective_uid()).unwrap(),
            metrics_listen: None,
        }
    }

    fn event(n: u32) -> ClientReply {
        ClientReply {
            connection: ConnectionId(1),
            message: public_api::Message {
                code: Code::Event as i32,
                correlation_id: Some("sub".into()),
                payload: Some(Payload::Event(public_api::Event {
                    service_id: "svc".into(),
                    index: n,
                    state: "running".into(),
                    ..Default::default()
                })),
            },
            payload_bytes: None,
            last: false,
            sent_unix_us: 0,
        }
    }

    /// Cuts `bytes` into messages, expecting whole frames only.
    fn messages(mut bytes: &[u8]) -> Vec<public_api::Message> {
        let mut out = Vec::new();
        while let Some(header) = bytes.first_chunk::<4>() {
            let len = u32::from_be_bytes(*header) as usize;
            out.push(decode_envelope(&bytes[4..4 + len]).unwrap());
            bytes = &bytes[4 + len..];
        }
        out
    }

    #[test]
    fn a_subscriber_over_its_backlog_reads_the_rest_of_a_partial_frame_then_the_error() {
        let limits = limits(4096);
        let mut exchange = Exchange::new(ConnectionId(1), DEFAULT_MAX_FRAME);
        let mut read = Vec::new();
        let mut n = 0;
        while exchange.deliver(&event(n), &limits, || 0) == Delivery::Queued {
            n += 1;
            // The client reads a few odd-sized pieces now and then.
            if n % 10 == 0 {
                let take = exchange.unsent().len().min(37);
                read.extend_from_slice(&exchange.unsent()[..take]);
                exchange.sent(take);
            }
            assert!(exchange.unsent().len() <= 4096);
        }
        assert!(n > 10, "{n} events before the budget ran out");
        read.extend_from_slice(exchange.unsent());
        let got = messages(&read);
        let last = got.last().unwrap();
        let Some(Payload::Error(error)) = &last.payload else {
            panic!("the last message is {last:?}");
        };
        assert_eq!(error.kind, Kind::SlowSubscriber as i32);
        assert!(error.reason.contains("4096"), "{}", error.reason);
        assert_eq!(last.correlation_id.as_deref(), Some("sub"));
        assert!(
            got[..got.len() - 1]
                .iter()
                .all(|m| m.code == Code::Event as i32)
        );
        assert_eq!(exchange.deliver(&event(0), &limits, || 0), Delivery::Queued);
        assert!(exchange.unsent().len() < 512, "nothing follows the Error");
    }

    #[test]
    fn over_long_or_control_character_strings_are_refused_with_the_limit() {
        let limits = limits(4096);
        let mut exchange = Exchange::new(ConnectionId(1), DEFAULT_MAX_FRAME);
        let request = |id: String, service: &str| public_api::Message {
            code: Code::ServiceStop as i32,
            correlation_id: Some(id),
            payload: Some(Payload::ServiceStop(public_api::ServiceStop {
                service_id: service.into(),
            })),
        };
        let cases = [
            request("x".repeat(129), "svc"),
            request("a\nb".into(), "svc"),
            request("ok:1".into(), &"s".repeat(65)),
            request("x".repeat(128), &"s".repeat(64)),
        ];
        for case in &cases {
            let mut frame = Vec::new();
            crate::wire::encode_frame(case, &mut frame);
            exchange.receive(&frame);
        }
        let mut batch = Vec::new();
        exchange.take_requests(&limits, &mut batch).unwrap();
        assert_eq!(batch.len(), 1, "only the request at the limits is taken");
        let replies = messages(exchange.unsent());
        let reasons: Vec<_> = replies
            .iter()
            .map(|reply| match &reply.payload {
                Some(Payload::Error(error)) if error.kind == Kind::BadRequest as i32 => {
                    (reply.correlation_id.clone(), error.reason.clone())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    None,
                    "correlation_id of 129 bytes exceeds the limit of 128 bytes".to_owned()
                ),
                (
                    None,
                    "correlation_id contains a control character".to_owned()
                ),
                (
                    Some("ok:1".to_owned()),
                    "service_id of 65 bytes exceeds the limit of 64 bytes".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn the_ascii_shortcut_finds_exactly_the_control_characters_chars_would() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for value in [c.to_string(), format!("id-{c}-x"), format!("é{c}")] {
                assert_eq!(has_control(&value), c.is_control(), "{value:?}");
            }
        }
    }

    #[test]
    fn the_strings_of_signal_enable_and_definition_requests_are_bounded_too() {
        let limits = limits(4096);
        let mut exchange = Exchange::new(ConnectionId(1), DEFAULT_MAX_FRAME);
        let long = "s".repeat(65);
        let cases = [
            Request::ServiceSignal(public_api::ServiceSignal {
                service_id: long.clone(),
                signal: "HUP".into(),
                instance: None,
            }),
            Request::ServiceSignal(public_api::ServiceSignal {
                service_id: "web".into(),
                signal: "HUP\n".into(),
                instance: None,
            }),
            Request::ServiceEnable(ServiceEnable {
                service_id: long.clone(),
                enabled: true,
            }),
            Request::ServiceDefinitionRequest(ServiceDefinitionRequest { service_id: long }),
        ];
        for (index, case) in cases.into_iter().enumerate() {
            let mut frame = Vec::new();
            crate::wire::encode_frame(&case.into_message(Some(format!("c:{index}"))), &mut frame);
            exchange.receive(&frame);
        }
        let mut batch = Vec::new();
        exchange.take_requests(&limits, &mut batch).unwrap();
        assert!(batch.is_empty(), "{batch:?}");
        let reasons: Vec<String> = messages(exchange.unsent())
            .into_iter()
            .map(|reply| match reply.payload {
                Some(Payload::Error(error)) if error.kind == Kind::BadRequest as i32 => {
                    error.reason
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "service_id of 65 bytes exceeds the limit of 64 bytes",
                "signal contains a control character",
                "service_id of 65 bytes exceeds the limit of 64 bytes",
                "service_id of 65 bytes exceeds the limit of 64 bytes",
            ]
        );
    }
}
