//! The load generator behind `snow-fox-client bench` and the `round_trip`
//! and `services` benchmarks: many connections to one node, all driven
//! from one `mio::Poll` on the caller's thread, so that the client is not
//! what limits the figures.
//!
//! Each connection keeps `inflight` requests outstanding (1 is ping-pong),
//! refilling after every batch of replies it reads and writing the batch
//! with one `write`. Correlation ids are `b<pid>.<client>:<n>`, unique per
//! connection and per bench process; every id sent must come back exactly
//! once. Latencies go into a [`Histogram`] of logarithmic buckets.
//!
//! No threads and no channels. A failure of the connection or of the poll
//! ends the run with a [`BenchError`]; an `Error` reply (or a reply of the
//! wrong kind) does not: it is answered, and counted as an error.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use prost::Message as _;

use super::CLIENT_MAX_FRAME;
use super::json::JsonObject;
use crate::wire::proto::public_api::message::{Code, Payload};
use crate::wire::proto::public_api::{self, NodeInfoRequest, ServiceStatusRequest};
use crate::wire::{FrameDecoder, FrameError, decode_envelope, encode_frame};

/// How often the progress callback is called.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How long the run waits without a single reply while requests are out
/// before it gives up on the node.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes asked of a socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// The request a bench sends, over and over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// `NodeInfoRequest` without details.
    NodeInfo,
    /// `ServiceStatusRequest`, of every service or of the one named.
    Status {
        /// The service asked about; `None` for all.
        service: Option<String>,
    },
    /// `Introduce`.
    Introduce,
}

impl RequestKind {
    /// The name `--request` takes.
    pub fn name(&self) -> &'static str {
        match self {
            RequestKind::NodeInfo => "nodeinfo",
            RequestKind::Status { .. } => "status",
            RequestKind::Introduce => "introduce",
        }
    }

    fn code(&self) -> Code {
        match self {
            RequestKind::NodeInfo => Code::NodeInfoRequest,
            RequestKind::Status { .. } => Code::ServiceStatusRequest,
            RequestKind::Introduce => Code::Introduce,
        }
    }

    fn reply_code(&self) -> Code {
        match self {
            RequestKind::NodeInfo => Code::NodeInfoResponse,
            RequestKind::Status { .. } => Code::ServiceStatusResponse,
            RequestKind::Introduce => Code::Introduce,
        }
    }

    fn payload(&self) -> Option<Payload> {
        match self {
            RequestKind::NodeInfo => Some(Payload::NodeInfoRequest(NodeInfoRequest {
                details: Some(false),
            })),
            RequestKind::Status { service } => {
                Some(Payload::ServiceStatusRequest(ServiceStatusRequest {
                    service_id: service.clone(),
                    metrics: None,
                }))
            }
            RequestKind::Introduce => None,
        }
    }
}

/// When a bench stops sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// After this long of measuring (the warm-up not counted).
    Elapsed(Duration),
    /// Once this many measured requests were sent.
    Sent(u64),
}

/// What a bench does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// The node's socket.
    pub socket: PathBuf,
    /// Connections, all driven from one poll loop.
    pub clients: usize,
    /// Requests each connection keeps outstanding.
    pub inflight: usize,
    /// When to stop sending.
    pub until: Until,
    /// How long to send before measuring starts.
    pub warmup: Duration,
    /// What to send.
    pub request: RequestKind,
}

/// A look at a running bench, given to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Since the bench started, warm-up included.
    pub elapsed: Duration,
    /// Whether measuring has not started yet.
    pub warming_up: bool,
    /// Replies received so far, warm-up included.
    pub answered: u64,
    /// Replies per second since the last progress call.
    pub recent_rate: f64,
    /// `Error` replies so far.
    pub errors: u64,
    /// Requests out right now.
    pub in_flight: usize,
}

/// What a bench measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// What was sent.
    pub request: RequestKind,
    /// Connections.
    pub clients: usize,
    /// Requests outstanding per connection.
    pub inflight: usize,
    /// Requests sent, warm-up included.
    pub sent: u64,
    /// Replies matched to a request, warm-up included; equals `sent` when
    /// the run ends.
    pub answered: u64,
    /// Replies that were an `Error` or of the wrong kind.
    pub errors: u64,
    /// The first of those, as "code: reason".
    pub first_error: Option<String>,
    /// Requests sent after the warm-up: the ones timed.
    pub measured: u64,
    /// From the end of the warm-up to the last measured reply.
    pub elapsed: Duration,
    /// Round-trip times of the measured requests, in nanoseconds.
    pub latency: Histogram,
}

impl BenchReport {
    /// Measured requests answered per second.
    pub fn requests_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.measured as f64 / seconds
        } else {
            0.0
        }
    }

    /// The report as one JSON object; times in nanoseconds.
    pub fn to_json(&self) -> String {
        let latency = &self.latency;
        let quantiles = JsonObject::new()
            .int("min", latency.min())
            .int("mean", latency.mean())
            .int("p50", latency.quantile(0.5))
            .int("p90", latency.quantile(0.9))
            .int("p99", latency.quantile(0.99))
            .int("p99_9", latency.quantile(0.999))
            .int("max", latency.max());
        JsonObject::new()
            .string("request", self.request.name())
            .int("clients", self.clients as u64)
            .int("inflight", self.inflight as u64)
            .int("sent", self.sent)
            .int("answered", self.answered)
            .int("errors", self.errors)
            .optional_string("first_error", self.first_error.as_deref())
            .int("measured", self.measured)
            .int("elapsed_ns", duration_ns(self.elapsed))
            .int(
                "requests_per_second",
                self.requests_per_second().round() as u64,
            )
            .object("latency_ns", quantiles)
            .finish()
    }

    /// The report as a few aligned lines for a person.
    pub fn to_text(&self) -> String {
        let latency = &self.latency;
        let mut text = format!(
            "{}: {} clients x {} in flight, {} measured in {:.2} s\n\
             requests/s  {:.0}\n\
             latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n\
             answered    {} of {} sent, {} errors",
            self.request.name(),
            self.clients,
            self.inflight,
            self.measured,
            self.elapsed.as_secs_f64(),
            self.requests_per_second(),
            format_ns(latency.quantile(0.5)),
            format_ns(latency.quantile(0.9)),
            format_ns(latency.quantile(0.99)),
            format_ns(latency.quantile(0.999)),
            format_ns(latency.max()),
            self.answered,
            self.sent,
            self.errors,
        );
        if let Some(first) = &self.first_error {
            text.push_str(&format!(" (first: {first})"));
        }
        text
    }
}

/// A duration in nanoseconds as a person reads it: `850 ns`, `12.3 µs`,
/// `4.56 ms`, `1.20 s`.
pub fn format_ns(ns: u64) -> String {
    let value = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", value / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", value / 1e6)
    } else {
        format!("{:.2} s", value / 1e9)
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Sub-buckets per doubling: each bucket spans a factor of 2^(1/8), so a
/// quantile is off by at most 9 %.
const STEPS_PER_DOUBLING: f64 = 8.0;

/// Buckets up to 2^48 ns (about 78 hours); longer values land in the last.
const BUCKETS: usize = 48 * 8;

/// A histogram of nanosecond values in logarithmic buckets of 2^(1/8)
/// steps, with the exact minimum, maximum and mean beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.count += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest value; 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    /// The largest value; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean, rounded down; 0 when empty.
    pub fn mean(&self) -> u64 {
        match u128::from(self.count) {
            0 => 0,
            count => u64::try_from(self.sum / count).unwrap_or(u64::MAX),
        }
    }

    /// The value below which a fraction `q` (0 to 1) of the values lie:
    /// the upper bound of the bucket holding it, kept within the exact
    /// minimum and maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_upper_bound(bucket).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// The bucket of `value`: floor(8 · log2(value)), 0 for 0 and 1.
fn bucket_of(value: u64) -> usize {
    if value <= 1 {
        return 0;
    }
    let bucket = ((value as f64).log2() * STEPS_PER_DOUBLING) as usize;
    bucket.min(BUCKETS - 1)
}

/// The smallest value of the bucket after `bucket`.
fn bucket_upper_bound(bucket: usize) -> u64 {
    (((bucket + 1) as f64) / STEPS_PER_DOUBLING).exp2().ceil() as u64
}

/// Why a bench could not run to its end. As with [`ClientError`](super::ClientError),
/// the Display text already includes the cause, so `source` is left empty.
#[derive(Debug)]
pub enum BenchError {
    /// A connection to the node could not be made.
    Connect {
        /// Which connection (0-based).
        client: usize,
        /// The node's socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The poll could not be created, fed or waited on.
    Poll {
        /// What was being done.
        doing: &'static str,
        /// The failure.
        source: io::Error,
    },
    /// Reading from or writing to a connection failed.
    Io {
        /// What was being done.
        doing: &'static str,
        /// Which connection.
        client: usize,
        /// The failure.
        source: io::Error,
    },
    /// The node closed a connection.
    Closed {
        /// Which connection.
        client: usize,
        /// Its requests still unanswered.
        in_flight: usize,
    },
    /// The node sent a frame that cannot be cut out of the stream.
    Frame {
        /// Which connection.
        client: usize,
        /// What was wrong.
        source: FrameError,
    },
    /// The node sent a body that is not a public message.
    Decode {
        /// Which connection.
        client: usize,
        /// What was wrong.
        reason: String,
    },
    /// A reply carries an id this connection has no request out for (never
    /// sent, or answered already).
    Unmatched {
        /// Which connection.
        client: usize,
        /// The reply's correlation id.
        correlation_id: String,
    },
    /// Requests were out and nothing came back for [`STALL_TIMEOUT`].
    Stalled {
        /// Requests out.
        in_flight: usize,
    },
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Connect {
                client,
                path,
                source,
            } => write!(
                f,
                "cannot open bench connection {client} to {}: {source} (is the node running?)",
                path.display()
            ),
            BenchError::Poll { doing, source } => write!(f, "cannot {doing}: {source}"),
            BenchError::Io {
                doing,
                client,
                source,
            } => write!(f, "cannot {doing} on bench connection {client}: {source}"),
            BenchError::Closed { client, in_flight } => write!(
                f,
                "the node closed bench connection {client} with {in_flight} requests unanswered"
            ),
            BenchError::Frame { client, source } => write!(
                f,
                "cannot read a frame on bench connection {client}: {source}"
            ),
            BenchError::Decode { client, reason } => write!(
                f,
                "cannot decode a reply on bench connection {client}: {reason}"
            ),
            BenchError::Unmatched {
                client,
                correlation_id,
            } => write!(
                f,
                "bench connection {client} got a reply to {correlation_id:?}, which it has no request out for"
            ),
            BenchError::Stalled { in_flight } => write!(
                f,
                "no reply within {STALL_TIMEOUT:?} with {in_flight} requests out (is the node stuck?)"
            ),
        }
    }
}

impl std::error::Error for BenchError {}

/// Just the envelope's code and id: a bench has no use for the payload of
/// a good reply, and skipping it keeps the client cheap for big replies.
#[derive(Clone, PartialEq, prost::Message)]
struct ReplyHead {
    #[prost(int32, optional, tag = "1")]
    code: Option<i32>,
    #[prost(string, optional, tag = "2")]
    correlation_id: Option<String>,
}

/// One bench connection.
struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    written: usize,
    /// `b<pid>.<client>:`, the part of every id before the counter.
    prefix: String,
    counter: u64,
    /// Send time of each request out, by counter.
    in_flight: HashMap<u64, Instant>,
}

/// The counters of a run, shared by all connections.
struct Tally {
    sent: u64,
    answered: u64,
    errors: u64,
    first_error: Option<String>,
    measured_sent: u64,
    last_measured_reply: Option<Instant>,
    latency: Histogram,
}

/// The run's clock: when measuring starts and when sending stops.
struct Schedule {
    measure_from: Instant,
    until: Until,
}

impl Schedule {
    fn may_send(&self, now: Instant, tally: &Tally) -> bool {
        match self.until {
            Until::Elapsed(length) => now < self.measure_from + length,
            Until::Sent(count) => tally.measured_sent < count,
        }
    }
}

/// Runs a bench against the node at `options.socket`, calling `progress`
/// about once a second, and returns once every request sent is answered.
pub fn run(
    options: &BenchOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<BenchReport, BenchError> {
    let mut poll = Poll::new().map_err(|source| BenchError::Poll {
        doing: "create the bench poll",
        source,
    })?;
    let mut connections = connect_all(&options.socket, options.clients, &poll)?;
    let started = Instant::now();
    let schedule = Schedule {
        measure_from: started + options.warmup,
        until: options.until,
    };
    let mut tally = Tally {
        sent: 0,
        answered: 0,
        errors: 0,
        first_error: None,
        measured_sent: 0,
        last_measured_reply: None,
        latency: Histogram::new(),
    };
    let template = public_api::Message {
        code: options.request.code() as i32,
        correlation_id: None,
        payload: options.request.payload(),
    };
    let reply_code = options.request.reply_code() as i32;
    for (client, connection) in connections.iter_mut().enumerate() {
        connection.refill(options.inflight, &template, &schedule, &mut tally);
        connection.flush(client)?;
    }

    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut next_progress = started + PROGRESS_EVERY;
    let mut answered_at_last_progress = 0;
    let mut last_reply = Instant::now();
    loop {
        let in_flight: usize = connections.iter().map(|c| c.in_flight.len()).sum();
        let now = Instant::now();
        if in_flight == 0 && !schedule.may_send(now, &tally) {
            break;
        }
        if in_flight > 0 && now.duration_since(last_reply) > STALL_TIMEOUT {
            return Err(BenchError::Stalled { in_flight });
        }
        if now >= next_progress {
            let interval = now.duration_since(next_progress - PROGRESS_EVERY);
            progress(&Progress {
                elapsed: now.duration_since(started),
                warming_up: now < schedule.measure_from,
                answered: tally.answered,
                recent_rate: (tally.answered - answered_at_last_progress) as f64
                    / interval.as_secs_f64(),
                errors: tally.errors,
                in_flight,
            });
            answered_at_last_progress = tally.answered;
            next_progress = now + PROGRESS_EVERY;
        }
        let mut wake_at = next_progress;
        if let Until::Elapsed(length) = schedule.until {
            let stop_sending = schedule.measure_from + length;
            if now < stop_sending {
                wake_at = wake_at.min(stop_sending);
            }
        }
        let timeout = wake_at.saturating_duration_since(now).min(STALL_TIMEOUT);
        if let Err(source) = poll.poll(&mut events, Some(timeout)) {
            if source.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(BenchError::Poll {
                doing: "wait for bench events",
                source,
            });
        }
        for event in &events {
            let client = event.token().0;
            let Some(connection) = connections.get_mut(client) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let before = tally.answered;
                connection.read(client, &mut scratch, reply_code, &schedule, &mut tally)?;
                if tally.answered > before {
                    last_reply = Instant::now();
                }
                connection.refill(options.inflight, &template, &schedule, &mut tally);
            }
            connection.flush(client)?;
        }
    }

    let elapsed = tally.last_measured_reply.map_or(Duration::ZERO, |last| {
        last.saturating_duration_since(schedule.measure_from)
    });
    Ok(BenchReport {
        request: options.request.clone(),
        clients: options.clients,
        inflight: options.inflight,
        sent: tally.sent,
        answered: tally.answered,
        errors: tally.errors,
        first_error: tally.first_error,
        measured: tally.measured_sent,
        elapsed,
        latency: tally.latency,
    })
}

fn connect_all(path: &Path, clients: usize, poll: &Poll) -> Result<Vec<Connection>, BenchError> {
    let pid = std::process::id();
    (0..clients)
        .map(|client| {
            let connect_error = |source| BenchError::Connect {
                client,
                path: path.to_owned(),
                source,
            };
            let stream = std::os::unix::net::UnixStream::connect(path).map_err(connect_error)?;
            stream.set_nonblocking(true).map_err(connect_error)?;
            let mut stream = UnixStream::from_std(stream);
            // Edge-triggered: a WRITABLE event comes only after a write
            // hit WouldBlock, so watching it always costs nothing.
            poll.registry()
                .register(
                    &mut stream,
                    Token(client),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|source| BenchError::Poll {
                    doing: "watch a bench connection",
                    source,
                })?;
            Ok(Connection {
                stream,
                decoder: FrameDecoder::new(CLIENT_MAX_FRAME),
                out: Vec::new(),
                written: 0,
                prefix: format!("b{pid}.{client}:"),
                counter: 0,
                in_flight: HashMap::new(),
            })
        })
        .collect()
}

impl Connection {
    /// Queues requests until `inflight` are out or the schedule says stop.
    fn refill(
        &mut self,
        inflight: usize,
        template: &public_api::Message,
        schedule: &Schedule,
        tally: &mut Tally,
    ) {
        let mut request = template.clone();
        while self.in_flight.len() < inflight {
            let now = Instant::now();
            if !schedule.may_send(now, tally) {
                return;
            }
            self.counter += 1;
            request.correlation_id = Some(format!("{}{}", self.prefix, self.counter));
            encode_frame(&request, &mut self.out);
            self.in_flight.insert(self.counter, now);
            tally.sent += 1;
            if now >= schedule.measure_from {
                tally.measured_sent += 1;
            }
        }
    }

    /// Writes what is queued until done or the socket is full.
    fn flush(&mut self, client: usize) -> Result<(), BenchError> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => {
                    return Err(BenchError::Closed {
                        client,
                        in_flight: self.in_flight.len(),
                    });
                }
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(BenchError::Io {
                        doing: "send requests",
                        client,
                        source,
                    });
                }
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(())
    }

    /// Reads until the socket is empty and accounts for every reply.
    fn read(
        &mut self,
        client: usize,
        scratch: &mut [u8],
        reply_code: i32,
        schedule: &Schedule,
        tally: &mut Tally,
    ) -> Result<(), BenchError> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    return Err(BenchError::Closed {
                        client,
                        in_flight: self.in_flight.len(),
                    });
                }
                Ok(count) => self.decoder.extend(&scratch[..count]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(BenchError::Io {
                        doing: "read replies",
                        client,
                        source,
                    });
                }
            }
            let received = Instant::now();
            while let Some(body) = self
                .decoder
                .next_frame()
                .map_err(|source| BenchError::Frame { client, source })?
            {
                let head = ReplyHead::decode(body).map_err(|error| BenchError::Decode {
                    client,
                    reason: error.to_string(),
                })?;
                let id = head.correlation_id.unwrap_or_default();
                let sent = id
                    .strip_prefix(self.prefix.as_str())
                    .and_then(|counter| counter.parse().ok())
                    .and_then(|counter: u64| self.in_flight.remove(&counter))
                    .ok_or_else(|| BenchError::Unmatched {
                        client,
                        correlation_id: id.clone(),
                    })?;
                tally.answered += 1;
                let code = head.code.unwrap_or_default();
                if code != reply_code {
                    tally.errors += 1;
                    if tally.first_error.is_none() {
                        tally.first_error = Some(describe_wrong_reply(body, code));
                    }
                }
                if sent >= schedule.measure_from {
                    tally.latency.record(duration_ns(received - sent));
                    tally.last_measured_reply = Some(received);
                }
            }
        }
    }
}

/// "code: reason" of a reply that is not the one expected.
fn describe_wrong_reply(body: &[u8], code: i32) -> String {
    match decode_envelope::<public_api::Message>(body) {
        Ok(public_api::Message {
            payload: Some(Payload::Error(error)),
            ..
        }) => {
            let kind = public_api::error::Kind::try_from(error.kind)
                .map_or("unknown kind", |kind| kind.as_str_name());
            format!("Error {kind}: {}", error.reason)
        }
        _ => {
            let name = Code::try_from(code).map_or("unknown code", |code| code.as_str_name());
            format!("unexpected {name} reply")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_lies_in_its_bucket() {
        for value in [2u64, 3, 7, 100, 1_000, 65_537, 1 << 30, 123_456_789] {
            let bucket = bucket_of(value);
            assert!(
                bucket_upper_bound(bucket) > value,
                "{value} below its bound"
            );
            assert!(
                bucket == 0 || bucket_upper_bound(bucket - 1) <= value,
                "{value} above its lower bound"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_spread_are_within_a_bucket() {
        let mut histogram = Histogram::new();
        for micros in 1..=1000u64 {
            histogram.record(micros * 1000);
        }
        for (q, exact) in [(0.5, 500_000.0), (0.9, 900_000.0), (0.99, 990_000.0)] {
            let got = histogram.quantile(q) as f64;
            assert!(
                got >= exact && got <= exact * 1.0906,
                "q{q}: {got} for {exact}"
            );
        }
        assert_eq!(histogram.quantile(1.0), 1_000_000);
        assert_eq!(histogram.max(), 1_000_000);
        assert_eq!(histogram.min(), 1000);
        assert_eq!(histogram.mean(), 500_500);
        assert_eq!(histogram.count(), 1000);
    }

    #[test]
    fn quantiles_stay_within_min_and_max_and_in_order() {
        let mut histogram = Histogram::new();
        histogram.record(12_345);
        assert_eq!(histogram.quantile(0.0), 12_345);
        assert_eq!(histogram.quantile(0.5), 12_345);
        assert_eq!(histogram.quantile(0.999), 12_345);
        for value in [10, 20_000, 20_001, 5_000_000] {
            histogram.record(value);
        }
        let quantiles: Vec<u64> = [0.5, 0.9, 0.99, 0.999]
            .iter()
            .map(|&q| histogram.quantile(q))
            .collect();
        assert!(quantiles.is_sorted(), "{quantiles:?}");
        assert!(quantiles[3] <= histogram.max());
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let histogram = Histogram::new();
        assert_eq!(histogram.quantile(0.5), 0);
        assert_eq!(
            (histogram.min(), histogram.max(), histogram.mean()),
            (0, 0, 0)
        );
    }

    #[test]
    fn merging_adds_counts_and_keeps_extremes() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(100);
        b.record(1_000_000);
        b.record(50);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!((a.min(), a.max()), (50, 1_000_000));
    }

    #[test]
    fn nanoseconds_read_in_their_unit() {
        assert_eq!(format_ns(850), "850 ns");
        assert_eq!(format_ns(12_340), "12.3 µs");
        assert_eq!(format_ns(4_560_000), "4.56 ms");
        assert_eq!(format_ns(1_200_000_000), "1.20 s");
    }

    #[test]
    fn the_json_report_has_every_figure() {
        let mut latency = Histogram::new();
        latency.record(2_000);
        let report = BenchReport {
            request: RequestKind::NodeInfo,
            clients: 2,
            inflight: 3,
            sent: 10,
            answered: 10,
            errors: 0,
            first_error: None,
            measured: 4,
            elapsed: Duration::from_millis(2),
            latency,
        };
        assert_eq!(
            report.to_json(),
            "{\"request\":\"nodeinfo\",\"clients\":2,\"inflight\":3,\"sent\":10,\
             \"answered\":10,\"errors\":0,\"first_error\":null,\"measured\":4,\
             \"elapsed_ns\":2000000,\"requests_per_second\":2000,\"latency_ns\":{\"min\":2000,\
             \"mean\":2000,\"p50\":2000,\"p90\":2000,\"p99\":2000,\"p99_9\":2000,\"max\":2000}}"
        );
    }
}
