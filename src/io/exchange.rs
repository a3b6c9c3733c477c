//! A connection's protocol state without its socket: the frame decoder, the
//! requests in flight and the reply bytes not yet written. Pure — bytes in,
//! requests and reply bytes out — so that the io loop drives it with what
//! it reads from a socket, and fuzzers and property tests drive the very
//! same code with arbitrary byte streams.
//!
//! The correlation table is not touched per frame: the caller enters a
//! whole pass's requests with [`begin_requests`] (and those io answers
//! itself with [`answer_locally`]) and its replies with
//! [`record_replies`], under one lock each.

use std::sync::Arc;

use crate::conf::MAX_ID_LEN;
use crate::trace::{CorrelationTable, DuplicateId, RequestState, Role, now_unix_us};
use crate::wire::link::{ClientReply, ClientRequest, ConnectionId, RequestHead};
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

/// Node info requests io takes before it answers them: the client reads
/// the first answers (and sends more) while io cuts the next ones, as it
/// would with the manager answering them on the other core.
pub const LOCAL_CHUNK: usize = 16;

/// A `NodeInfoRequest` without details that io answers itself, from the
/// answer the manager published ([`crate::wire::link::NodeInfoBoard`]).
#[derive(Debug)]
pub struct LocalRequest {
    /// Where the reply goes.
    pub connection: ConnectionId,
    /// The request's code and correlation id.
    pub message: RequestHead,
    /// The published `NodeInfoResponse`, encoded, field key included.
    pub payload: Arc<[u8]>,
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
    /// Requests taken and not finally answered, wherever they are answered.
    in_flight: usize,
    /// Those of them handed to the manager: while there are any, node info
    /// goes to the manager too, so that it is answered after them, as it
    /// would be there.
    forwarded: usize,
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
            forwarded: 0,
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
    /// request without a correlation id is given one. A `NodeInfoRequest`
    /// without details goes to `local` instead, to be answered with
    /// `node_info` (the manager's published answer), if there is one and
    /// no request of this connection is at the manager; the cutting stops
    /// when `local` holds [`LOCAL_CHUNK`] of them. A protocol error
    /// stops the cutting and is returned: the caller refuses the
    /// connection. The requests still have to be entered in the
    /// correlation table ([`begin_requests`], [`answer_locally`]).
    pub fn take_requests(
        &mut self,
        limits: &IoSettings,
        node_info: Option<&Arc<[u8]>>,
        batch: &mut Vec<ClientRequest>,
        local: &mut Vec<LocalRequest>,
    ) -> Result<(), ProtocolError> {
        while !self.is_saturated(limits) && local.len() < LOCAL_CHUNK {
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
            let plain_node_info = matches!(
                &request.request,
                Ok(Request::NodeInfoRequest(info)) if !info.details()
            );
            match node_info {
                Some(payload) if plain_node_info && self.forwarded == 0 => {
                    local.push(LocalRequest {
                        connection: self.id,
                        message: request.message,
                        payload: payload.clone(),
                    });
                }
                _ => {
                    self.forwarded += 1;
                    batch.push(request);
                }
            }
        }
        Ok(())
    }

    /// Answers a request io took from this connection with the node info
    /// the manager published ([`answer_locally`] entered it).
    pub fn answer_locally(&mut self, request: LocalRequest) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let reply = public_api::Message {
            code: Code::NodeInfoResponse as i32,
            correlation_id: request.message.correlation_id,
            payload: None,
        };
        self.queue(&reply, &request.payload);
    }

    /// Answers a request [`begin_requests`] (`forwarded`) or
    /// [`answer_locally`] found to be a duplicate of one in flight; it is
    /// no longer this connection's to wait for.
    pub fn refuse_duplicate(&mut self, request: RequestHead, forwarded: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if forwarded {
            self.forwarded = self.forwarded.saturating_sub(1);
        }
        let id = request.correlation_id.unwrap_or_default();
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
            self.forwarded = self.forwarded.saturating_sub(1);
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

/// Enters the requests io answers itself in the correlation table, in
/// order: each with its hop from the client to io and, unless its id is
/// already in flight, its reply's hop from io to the client, which ends
/// it. Each request is handed to `answered` with the outcome: `Ok` to be
/// answered ([`Exchange::answer_locally`]), a duplicate to be refused.
pub fn answer_locally(
    table: &mut CorrelationTable,
    local: &mut Vec<LocalRequest>,
    mut answered: impl FnMut(LocalRequest, Result<(), DuplicateId>),
) {
    let now = now_unix_us();
    for request in local.drain(..) {
        let code = Code::NodeInfoResponse as i32;
        let begun = table.begin_answered(&request.message, code, now);
        answered(request, begun);
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
        exchange
            .take_requests(&limits, None, &mut batch, &mut Vec::new())
            .unwrap();
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
        exchange
            .take_requests(&limits, None, &mut batch, &mut Vec::new())
            .unwrap();
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

    #[test]
    fn io_takes_plain_node_info_only_from_a_connection_with_nothing_at_the_manager() {
        let limits = limits(4096);
        let mut exchange = Exchange::new(ConnectionId(1), DEFAULT_MAX_FRAME);
        let node_info = |id: &str, details: Option<bool>| {
            Request::NodeInfoRequest(public_api::NodeInfoRequest { details })
                .into_message(Some(id.to_owned()))
        };
        let published: Arc<[u8]> = Arc::from(&b"published"[..]);
        let send = |exchange: &mut Exchange, messages: &[public_api::Message]| {
            for message in messages {
                let mut frame = Vec::new();
                crate::wire::encode_frame(message, &mut frame);
                exchange.receive(&frame);
            }
        };
        let ids = |batch: &[ClientRequest], local: &[LocalRequest]| {
            let forwarded: Vec<_> = batch
                .iter()
                .map(|r| r.message.correlation_id.clone().unwrap())
                .collect();
            let here: Vec<_> = local
                .iter()
                .map(|r| r.message.correlation_id.clone().unwrap())
                .collect();
            (forwarded, here)
        };
        let (mut batch, mut local) = (Vec::new(), Vec::new());

        // Nothing published: everything goes to the manager.
        send(&mut exchange, &[node_info("a", None)]);
        exchange
            .take_requests(&limits, None, &mut batch, &mut local)
            .unwrap();
        assert_eq!(ids(&batch, &local), (vec!["a".to_owned()], vec![]));
        // "a" is at the manager: node info waits behind it.
        send(&mut exchange, &[node_info("b", None)]);
        exchange
            .take_requests(&limits, Some(&published), &mut batch, &mut local)
            .unwrap();
        assert_eq!(ids(&batch, &local).1, Vec::<String>::new());
        for request in batch.drain(..) {
            let reply = ClientReply {
                connection: ConnectionId(1),
                message: public_api::Message {
                    code: Code::NodeInfoResponse as i32,
                    correlation_id: request.message.correlation_id,
                    payload: None,
                },
                payload_bytes: None,
                last: true,
                sent_unix_us: 0,
            };
            exchange.deliver(&reply, &limits, || 0);
        }
        assert_eq!(exchange.in_flight(), 0);
        exchange.sent(exchange.unsent().len());

        // Nothing at the manager now: plain node info is io's; details and
        // what follows a forwarded request are the manager's.
        send(
            &mut exchange,
            &[
                node_info("c", None),
                node_info("d", Some(false)),
                node_info("e", Some(true)),
                node_info("f", None),
            ],
        );
        exchange
            .take_requests(&limits, Some(&published), &mut batch, &mut local)
            .unwrap();
        assert_eq!(
            ids(&batch, &local),
            (
                vec!["e".to_owned(), "f".to_owned()],
                vec!["c".to_owned(), "d".to_owned()]
            )
        );
        assert_eq!(exchange.in_flight(), 4);

        // Answered here: the published payload after the envelope, and
        // a duplicate of an id in flight refused.
        let mut table = CorrelationTable::new(16, 1 << 20);
        table.begin(&batch[0].message, &[], 0).unwrap();
        local[1].message.correlation_id = Some("e".to_owned());
        let mut outcomes = Vec::new();
        answer_locally(&mut table, &mut local, |request, begun| {
            outcomes.push(begun.is_ok());
            if begun.is_ok() {
                exchange.answer_locally(request);
            } else {
                exchange.refuse_duplicate(request.message, false);
            }
        });
        assert_eq!(outcomes, [true, false]);
        assert_eq!(exchange.in_flight(), 2, "e and f are still at the manager");
        let (state, hops) = table.get("c").unwrap();
        assert_eq!(state, RequestState::Done);
        let path: Vec<_> = hops.iter().map(|hop| (hop.from, hop.to)).collect();
        assert_eq!(path, [(Role::Client, Role::Io), (Role::Io, Role::Client)]);
        let mut frame = Vec::new();
        encode_frame_with(
            &public_api::Message {
                code: Code::NodeInfoResponse as i32,
                correlation_id: Some("c".to_owned()),
                payload: None,
            },
            b"published",
            &mut frame,
        );
        assert!(exchange.unsent().starts_with(&frame));
        let replies = messages(&exchange.unsent()[frame.len()..]);
        let kinds: Vec<_> = replies
            .iter()
            .map(|reply| match &reply.payload {
                Some(Payload::Error(error)) => error.kind,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, [Kind::DuplicateCorrelation as i32]);
    }

    #[test]
    fn io_cuts_node_info_a_chunk_at_a_time() {
        let limits = limits(4096);
        let mut exchange = Exchange::new(ConnectionId(1), DEFAULT_MAX_FRAME);
        for n in 0..LOCAL_CHUNK + 3 {
            let mut frame = Vec::new();
            let message = Request::NodeInfoRequest(public_api::NodeInfoRequest::default())
                .into_message(Some(format!("n:{n}")));
            crate::wire::encode_frame(&message, &mut frame);
            exchange.receive(&frame);
        }
        let published: Arc<[u8]> = Arc::from(&b""[..]);
        let (mut batch, mut local) = (Vec::new(), Vec::new());
        let mut limits = limits;
        limits.max_inflight_per_connection = 1024;
        exchange
            .take_requests(&limits, Some(&published), &mut batch, &mut local)
            .unwrap();
        assert_eq!((batch.len(), local.len()), (0, LOCAL_CHUNK));
        local.clear();
        exchange
            .take_requests(&limits, Some(&published), &mut batch, &mut local)
            .unwrap();
        assert_eq!((batch.len(), local.len()), (0, 3));
    }
}
