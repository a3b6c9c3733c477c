//! The blocking client of a snow-fox node: one connection to its UNIX
//! socket, used by the `snow-fox-client` binary, the integration tests and
//! the benchmarks.
//!
//! A [`Client`] owns its socket and a frame decoder and runs on the
//! caller's thread; it has no channels and no threads of its own. Either
//! one request at a time ([`Client::request`] and the typed helpers, which
//! wait for the reply carrying their correlation id) or pipelined by hand
//! ([`Client::send`] any number of messages, then [`Client::receive`]).
//! Every failure comes back as a [`ClientError`]; after one that is not
//! [`ClientError::Node`] the connection is in an unknown state and is best
//! dropped. [`render`] and [`json`] turn replies into the text the binary
//! prints; [`bench`](mod@bench) is the many-connection load generator of `bench`.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::wire::proto::public_api::message::{Code, Payload};
use crate::wire::proto::public_api::{
    self, ClientIntroduce, Event, LogsRequest, NodeInfoRequest, NodeInfoResponse, ServiceRestart,
    ServiceStart, ServiceStatusRequest, ServiceStatusResponse, ServiceStop, TraceRequest,
    TraceResponse, error, log_lines,
};
use crate::wire::{DecodeError, Envelope, FrameDecoder, FrameError, decode_envelope, encode_frame};

pub mod bench;
mod cluster;
pub mod help;
pub mod json;
pub mod render;

pub use cluster::{cluster_status_json, cluster_status_text};

/// The largest frame the client accepts from its node: 64 MiB. Far above
/// the node's default limit for requests, because replies can be big (the
/// status of a thousand services) and the client trusts its node.
pub const CLIENT_MAX_FRAME: u32 = 64 << 20;

/// How long a client waits for the node before giving up, unless told
/// otherwise with [`Client::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Numbers the connections of this process, so that clients on several
/// threads never build the same correlation id before their `Introduce`.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// One connection to a node.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    decoder: FrameDecoder,
    read_buf: Box<[u8]>,
    write_buf: Vec<u8>,
    client_id: String,
    counter: u64,
    timeout: Option<Duration>,
    verbose: bool,
}

impl Client {
    /// Connects to the node listening at `path`, with the default timeout.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        let connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1;
        let mut client = Client {
            stream,
            path: path.to_owned(),
            decoder: FrameDecoder::new(CLIENT_MAX_FRAME),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            write_buf: Vec::new(),
            client_id: format!("c{}.{connection}", std::process::id()),
            counter: 0,
            timeout: None,
            verbose: false,
        };
        client.set_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(client)
    }

    /// How long a read (and a write) may wait for the node; `None` waits
    /// for ever. Writes get the same bound because a node that stopped
    /// reading this connection must not hang the client either.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(timeout)
            .and_then(|()| self.stream.set_write_timeout(timeout))
            .map_err(|source| self.io_error("set the timeout of the connection", source))?;
        self.timeout = timeout;
        Ok(())
    }

    /// With `verbose`, each request's code and correlation id is written
    /// to stderr as it is sent (`snow-fox-client --verbose`), for `trace`.
    pub fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    /// A correlation id no earlier request of this client used:
    /// `<client_id>:<counter>`, where `client_id` is the node's from
    /// [`Client::introduce`], or `c<pid>.<connection>` before that.
    pub fn next_correlation_id(&mut self) -> String {
        self.counter += 1;
        format!("{}:{}", self.client_id, self.counter)
    }

    /// The correlation id of the last request this client built.
    pub fn last_correlation_id(&self) -> String {
        format!("{}:{}", self.client_id, self.counter)
    }

    /// Sends one message as one frame, without waiting for anything.
    pub fn send(&mut self, message: &public_api::Message) -> Result<(), ClientError> {
        self.write_buf.clear();
        encode_frame(message, &mut self.write_buf);
        self.stream
            .write_all(&self.write_buf)
            .map_err(|source| self.io_error("send a request to the node", source))
    }

    /// Sends arbitrary bytes, for tests of what the node does with bad
    /// input.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .map_err(|source| self.io_error("send bytes to the node", source))
    }

    /// The next message from the node, whatever it is.
    /// [`ClientError::Closed`] when the node closed the connection.
    pub fn receive(&mut self) -> Result<public_api::Message, ClientError> {
        loop {
            if let Some(body) = self.decoder.next_frame().map_err(ClientError::Frame)? {
                return decode_envelope(body).map_err(ClientError::Decode);
            }
            let read = match self.stream.read(&mut self.read_buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(self.io_error("read a reply from the node", source)),
            };
            self.decoder.extend(&self.read_buf[..read]);
        }
    }

    /// Sends a request with a fresh correlation id and returns the reply
    /// carrying that id. `Event`s of a subscription on this connection
    /// that arrive meanwhile are skipped (and lost); an `Error` reply
    /// becomes [`ClientError::Node`].
    pub fn request(
        &mut self,
        code: Code,
        payload: Option<Payload>,
    ) -> Result<public_api::Message, ClientError> {
        let correlation_id = self.next_correlation_id();
        if self.verbose {
            eprintln!("request {} {correlation_id}", code.as_str_name());
        }
        self.send(&public_api::Message {
            code: code as i32,
            correlation_id: Some(correlation_id.clone()),
            payload,
        })?;
        loop {
            let reply = self.receive()?;
            let answers_us = reply.correlation() == Some(correlation_id.as_str());
            // An Error without an id is the node giving up on the whole
            // connection (a frame it could not read); it is ours too.
            let connection_error =
                reply.correlation().is_none() && reply.code == Code::Error as i32;
            if answers_us || connection_error {
                return refuse_errors(reply);
            }
            if reply.code != Code::Event as i32 {
                return Err(ClientError::Unmatched {
                    waiting_for: correlation_id,
                    got_code: reply.code_name(),
                    got_id: reply.correlation_id.unwrap_or_default(),
                });
            }
        }
    }

    /// Asks the node who this connection is; later correlation ids are
    /// built from the `client_id` it answers with.
    pub fn introduce(&mut self) -> Result<ClientIntroduce, ClientError> {
        let reply = self.request(Code::Introduce, None)?;
        let introduce =
            take_payload(
                reply,
                Code::Introduce,
                "a ClientIntroduce",
                |payload| match payload {
                    Payload::ClientIntroduce(introduce) => Some(introduce),
                    _ => None,
                },
            )?;
        if !introduce.client_id.is_empty() {
            self.client_id.clone_from(&introduce.client_id);
        }
        Ok(introduce)
    }

    /// The node's name, version, configuration and health; per role,
    /// configuration and service as well when `details` is set.
    pub fn node_info(&mut self, details: bool) -> Result<NodeInfoResponse, ClientError> {
        let request = Payload::NodeInfoRequest(NodeInfoRequest {
            details: Some(details),
        });
        let reply = self.request(Code::NodeInfoRequest, Some(request))?;
        take_payload(
            reply,
            Code::NodeInfoResponse,
            "a NodeInfoResponse",
            |payload| match payload {
                Payload::NodeInfoResponse(info) => Some(info),
                _ => None,
            },
        )
    }

    /// The node's metrics in the Prometheus text format.
    pub fn metrics(&mut self) -> Result<String, ClientError> {
        let reply = self.request(Code::MetricsRequest, None)?;
        take_payload(
            reply,
            Code::MetricsResponse,
            "a MetricsResponse",
            |payload| match payload {
                Payload::MetricsResponse(metrics) => Some(metrics.text),
                _ => None,
            },
        )
    }

    /// The messages the request with `correlation_id` caused, in order.
    pub fn trace(&mut self, correlation_id: &str) -> Result<TraceResponse, ClientError> {
        let request = Payload::TraceRequest(TraceRequest {
            correlation_id: correlation_id.to_owned(),
        });
        let reply = self.request(Code::TraceRequest, Some(request))?;
        take_payload(
            reply,
            Code::TraceResponse,
            "a TraceResponse",
            |payload| match payload {
                Payload::TraceResponse(trace) => Some(trace),
                _ => None,
            },
        )
    }

    /// Asks the node to shut down; returns once it acknowledged.
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        let reply = self.request(Code::Shutdown, None)?;
        expect_ack(&reply)
    }

    /// The state of every service, or of the one named.
    pub fn status(&mut self, service: Option<&str>) -> Result<ServiceStatusResponse, ClientError> {
        self.status_request(service, false)
    }

    /// [`Client::status`] with what each running instance uses now (the
    /// reply's `metrics`).
    pub fn status_with_metrics(
        &mut self,
        service: Option<&str>,
    ) -> Result<ServiceStatusResponse, ClientError> {
        self.status_request(service, true)
    }

    fn status_request(
        &mut self,
        service: Option<&str>,
        metrics: bool,
    ) -> Result<ServiceStatusResponse, ClientError> {
        let request = Payload::ServiceStatusRequest(ServiceStatusRequest {
            service_id: service.map(str::to_owned),
            metrics: metrics.then_some(true),
        });
        let reply = self.request(Code::ServiceStatusRequest, Some(request))?;
        take_payload(
            reply,
            Code::ServiceStatusResponse,
            "a ServiceStatusResponse",
            status_payload,
        )
    }

    /// Starts a service of the loaded configuration; answered once it runs
    /// (or failed to start).
    pub fn start(&mut self, service: &str) -> Result<ServiceStatusResponse, ClientError> {
        let request = Payload::ServiceStart(ServiceStart {
            service_id: service.to_owned(),
            version: String::new(),
        });
        self.service_action(Code::ServiceStart, request)
    }

    /// Stops a service; answered once its processes have exited.
    pub fn stop(&mut self, service: &str) -> Result<ServiceStatusResponse, ClientError> {
        let request = Payload::ServiceStop(ServiceStop {
            service_id: service.to_owned(),
        });
        self.service_action(Code::ServiceStop, request)
    }

    /// Stops, then starts a service.
    pub fn restart(&mut self, service: &str) -> Result<ServiceStatusResponse, ClientError> {
        let request = Payload::ServiceRestart(ServiceRestart {
            service_id: service.to_owned(),
        });
        self.service_action(Code::ServiceRestart, request)
    }

    /// Has the node load its configuration again; returns the status after.
    pub fn reload(&mut self) -> Result<ServiceStatusResponse, ClientError> {
        let reply = self.request(Code::ConfigReload, None)?;
        take_payload(
            reply,
            Code::Ack,
            "an Ack with a ServiceStatusResponse",
            status_payload,
        )
    }

    /// Sends `signal` (a name such as "HUP" or a number) to the process
    /// group of each running instance of a service, or of `instance`.
    pub fn signal(
        &mut self,
        service: &str,
        signal: &str,
        instance: Option<u32>,
    ) -> Result<ServiceStatusResponse, ClientError> {
        let request = Payload::ServiceSignal(public_api::ServiceSignal {
            service_id: service.to_owned(),
            signal: signal.to_owned(),
            instance,
        });
        self.service_action(Code::ServiceSignal, request)
    }

    /// Turns a service's autostart on or off, for good (until its
    /// definition changes); starts or stops nothing.
    pub fn enable(
        &mut self,
        service: &str,
        enabled: bool,
    ) -> Result<ServiceStatusResponse, ClientError> {
        let request = Payload::ServiceEnable(public_api::ServiceEnable {
            service_id: service.to_owned(),
            enabled,
        });
        self.service_action(Code::ServiceEnable, request)
    }

    /// A service's definition as the node loaded it.
    pub fn definition(
        &mut self,
        service: &str,
    ) -> Result<public_api::ServiceDefinitionResponse, ClientError> {
        let request = Payload::ServiceDefinitionRequest(public_api::ServiceDefinitionRequest {
            service_id: service.to_owned(),
        });
        let reply = self.request(Code::ServiceDefinitionRequest, Some(request))?;
        take_payload(
            reply,
            Code::ServiceDefinitionResponse,
            "a ServiceDefinitionResponse",
            |payload| match payload {
                Payload::ServiceDefinitionResponse(definition) => Some(*definition),
                _ => None,
            },
        )
    }

    /// Subscribes this connection to service state changes; read them with
    /// [`Client::next_event`].
    pub fn subscribe(&mut self) -> Result<(), ClientError> {
        let reply = self.request(Code::Subscribe, None)?;
        expect_ack(&reply)
    }

    /// The next `Event` of the subscription, waiting for it as long as the
    /// timeout allows (set it to `None` to watch for ever).
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        let message = refuse_errors(self.receive()?)?;
        take_payload(message, Code::Event, "an Event", |payload| match payload {
            Payload::Event(event) => Some(event),
            _ => None,
        })
    }

    /// Asks for captured output: afterwards [`Client::next_logs`] gives
    /// the lines on disk, then [`Logs::CaughtUp`], then (with `follow`)
    /// lines as they arrive. Use this connection for nothing else meanwhile.
    pub fn logs(&mut self, request: LogsRequest) -> Result<(), ClientError> {
        let correlation_id = self.next_correlation_id();
        self.send(&public_api::Message {
            code: Code::LogsRequest as i32,
            correlation_id: Some(correlation_id),
            payload: Some(Payload::LogsRequest(request)),
        })
    }

    /// The next answer to [`Client::logs`], waiting as long as the timeout
    /// allows (set it to `None` to follow for ever).
    pub fn next_logs(&mut self) -> Result<Logs, ClientError> {
        let message = refuse_errors(self.receive()?)?;
        if message.code == Code::Ack as i32 {
            return Ok(Logs::CaughtUp);
        }
        take_payload(
            message,
            Code::LogLines,
            "LogLines",
            |payload| match payload {
                Payload::LogLines(lines) => Some(Logs::Lines(lines.lines)),
                _ => None,
            },
        )
    }

    fn service_action(
        &mut self,
        code: Code,
        request: Payload,
    ) -> Result<ServiceStatusResponse, ClientError> {
        let reply = self.request(code, Some(request))?;
        take_payload(
            reply,
            Code::Ack,
            "an Ack with a ServiceStatusResponse",
            status_payload,
        )
    }

    fn io_error(&self, doing: &'static str, source: io::Error) -> ClientError {
        match (source.kind(), self.timeout) {
            (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(after)) => {
                ClientError::Timeout {
                    doing,
                    path: self.path.clone(),
                    after,
                }
            }
            _ => ClientError::Io {
                doing,
                path: self.path.clone(),
                source,
            },
        }
    }
}

fn status_payload(payload: Payload) -> Option<ServiceStatusResponse> {
    match payload {
        Payload::ServiceStatusResponse(status) => Some(status),
        _ => None,
    }
}

/// Turns an `Error` message into [`ClientError::Node`] and lets every
/// other message through.
fn refuse_errors(message: public_api::Message) -> Result<public_api::Message, ClientError> {
    if message.code != Code::Error as i32 {
        return Ok(message);
    }
    let correlation_id = message.correlation_id.filter(|id| !id.is_empty());
    match message.payload {
        Some(Payload::Error(error)) => Err(ClientError::Node {
            kind: error.kind,
            reason: error.reason,
            correlation_id,
        }),
        _ => Err(ClientError::Unexpected {
            expected: "an Error with its payload",
            got: "an Error without one".to_owned(),
        }),
    }
}

/// The payload of a reply that must have `code` and a payload `take`
/// accepts; `expected` names that payload for the error otherwise.
fn take_payload<T>(
    reply: public_api::Message,
    code: Code,
    expected: &'static str,
    take: impl FnOnce(Payload) -> Option<T>,
) -> Result<T, ClientError> {
    let got_code = reply.code_name();
    let got = match reply.payload {
        Some(payload) if reply.code == code as i32 => match take(payload) {
            Some(value) => return Ok(value),
            None => format!("{got_code} with another payload"),
        },
        Some(_) => got_code.to_owned(),
        None => format!("{got_code} without payload"),
    };
    Err(ClientError::Unexpected { expected, got })
}

fn expect_ack(reply: &public_api::Message) -> Result<(), ClientError> {
    if reply.code == Code::Ack as i32 {
        Ok(())
    } else {
        Err(ClientError::Unexpected {
            expected: "an Ack",
            got: reply.code_name().to_owned(),
        })
    }
}

/// One answer to a logs request.
#[derive(Debug, Clone, PartialEq)]
pub enum Logs {
    /// Lines, in the order they arrived.
    Lines(Vec<log_lines::Line>),
    /// Everything on disk was sent; with `follow`, new lines come next.
    CaughtUp,
}

/// What went wrong talking to a node. The Display text is one sentence
/// that already includes the cause, so [`std::error::Error::source`] is
/// left empty rather than printing the cause twice.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made to the node's socket.
    Connect {
        /// The socket tried.
        path: PathBuf,
        /// Why the connection failed.
        source: io::Error,
    },
    /// Reading, writing or configuring the connection failed.
    Io {
        /// What was being done, e.g. "send a request to the node".
        doing: &'static str,
        /// The node's socket.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The node did not answer (or take the request) within the timeout.
    Timeout {
        /// What was being done.
        doing: &'static str,
        /// The node's socket.
        path: PathBuf,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The node closed the connection.
    Closed,
    /// The node sent a frame whose body is not a public API message.
    Decode(DecodeError),
    /// The node sent a frame longer than [`CLIENT_MAX_FRAME`].
    Frame(FrameError),
    /// The node answered with an `Error`.
    Node {
        /// The error's kind: an `error::Kind` number (kept raw, so a newer
        /// node's kinds survive); see [`ClientError::node_kind`].
        kind: i32,
        /// The node's one-sentence reason.
        reason: String,
        /// The request's correlation id, for `trace`; `None` when the
        /// node could not read one (a broken frame).
        correlation_id: Option<String>,
    },
    /// The node's reply has the wrong code or payload for the request.
    Unexpected {
        /// What the request should have been answered with.
        expected: &'static str,
        /// What came instead.
        got: String,
    },
    /// A reply to another request arrived while waiting in
    /// [`Client::request`]: a reply of an earlier [`Client::send`] was
    /// left unread.
    Unmatched {
        /// The correlation id being waited for.
        waiting_for: String,
        /// The code of the message that came.
        got_code: &'static str,
        /// Its correlation id.
        got_id: String,
    },
}

impl ClientError {
    /// The exit code a command line tool reports this with: 1 when the
    /// node answered with an error, 2 when it could not be asked.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Node { .. } => 1,
            _ => 2,
        }
    }

    /// The kind of a [`ClientError::Node`], if this snow-fox knows it.
    pub fn node_kind(&self) -> Option<error::Kind> {
        match self {
            ClientError::Node { kind, .. } => error::Kind::try_from(*kind).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { path, source } => write!(
                f,
                "cannot connect to {}: {} (is the node running?)",
                path.display(),
                os_message(source)
            ),
            ClientError::Io {
                doing,
                path,
                source,
            } => write!(
                f,
                "cannot {doing} at {}: {}",
                path.display(),
                os_message(source)
            ),
            ClientError::Timeout { doing, path, after } => write!(
                f,
                "cannot {doing} at {}: no progress within {after:?} (is the node overloaded or stuck?)",
                path.display()
            ),
            ClientError::Closed => f.write_str("the node closed the connection"),
            ClientError::Decode(error) => {
                write!(f, "cannot decode a message from the node: {error}")
            }
            ClientError::Frame(error) => write!(f, "cannot read a message from the node: {error}"),
            ClientError::Node {
                kind,
                reason,
                correlation_id,
            } => {
                let kind_name = error::Kind::try_from(*kind)
                    .map(|known| known.as_str_name().to_owned())
                    .unwrap_or_else(|_| format!("error kind {kind}"));
                match correlation_id {
                    Some(id) => write!(f, "{reason} ({kind_name}, request {id})"),
                    None => write!(f, "{reason} ({kind_name})"),
                }
            }
            ClientError::Unexpected { expected, got } => {
                write!(f, "the node sent {got} where {expected} was expected")
            }
            ClientError::Unmatched {
                waiting_for,
                got_code,
                got_id,
            } => write!(
                f,
                "the node answered request {got_id:?} with {got_code} while the client waited for {waiting_for:?} (was a reply left unread?)"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// An I/O error's message without std's "(os error N)" suffix, which says
/// nothing to a person reading the line.
fn os_message(error: &io::Error) -> String {
    let text = error.to_string();
    match error.raw_os_error() {
        Some(code) => match text.strip_suffix(&format!(" (os error {code})")) {
            Some(message) => message.to_owned(),
            None => text,
        },
        None => text,
    }
}

#[cfg(test)]
mod tests;
