//! `Client` against a fake node: a thread on a UNIX listener in a temp dir
//! that cuts frames with the real decoder and answers from a script.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::*;
use crate::wire::proto::public_api::node_info_response::SystemStatus;
use crate::wire::{DEFAULT_MAX_FRAME, FrameDecoder};

/// A socket path in a directory of its own.
struct TempSocket {
    dir: PathBuf,
}

impl TempSocket {
    fn new() -> TempSocket {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "snow-fox-client-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempSocket { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("node.sock")
    }
}

impl Drop for TempSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn message(
    code: Code,
    correlation_id: Option<&str>,
    payload: Option<Payload>,
) -> public_api::Message {
    public_api::Message {
        code: code as i32,
        correlation_id: correlation_id.map(str::to_owned),
        payload,
    }
}

fn event(correlation_id: &str, state: &str) -> public_api::Message {
    message(
        Code::Event,
        Some(correlation_id),
        Some(Payload::Event(Event {
            service_id: "web".into(),
            index: 0,
            state: state.into(),
            pid: Some(99),
            at_unix_ms: 1,
            exit_code: None,
            exit_signal: None,
            reason: None,
            ..Default::default()
        })),
    )
}

/// The fake node's answers to one request, by its code.
fn answer(request: &public_api::Message) -> Vec<public_api::Message> {
    let id = request.correlation_id.as_deref();
    let code = Code::try_from(request.code).unwrap();
    match (code, &request.payload) {
        (Code::Introduce, _) => vec![message(
            Code::Introduce,
            id,
            Some(Payload::ClientIntroduce(ClientIntroduce {
                client_id: "fake-7".into(),
                node_name: "fake".into(),
                protocol_version: Some(1),
                max_frame: Some(DEFAULT_MAX_FRAME),
            })),
        )],
        // An event of some subscription comes first: request() must skip it.
        (Code::NodeInfoRequest, Some(Payload::NodeInfoRequest(asked))) => vec![
            event("sub:1", "running"),
            message(
                Code::NodeInfoResponse,
                id,
                Some(Payload::NodeInfoResponse(NodeInfoResponse {
                    node: None,
                    overall: Some(SystemStatus {
                        colour: 0,
                        code: Some(0),
                        reason: format!("details={}", asked.details.unwrap_or(false)),
                    }),
                    details: Vec::new(),
                })),
            ),
        ],
        (Code::ServiceStart, Some(Payload::ServiceStart(start))) => vec![message(
            Code::Error,
            id,
            Some(Payload::Error(public_api::Error {
                kind: error::Kind::UnknownService as i32,
                reason: format!("no service `{}` is configured", start.service_id),
            })),
        )],
        (Code::ServiceStatusRequest, _) => vec![message(
            Code::ServiceStatusResponse,
            Some("someone-else:1"),
            Some(Payload::ServiceStatusResponse(
                ServiceStatusResponse::default(),
            )),
        )],
        (Code::Subscribe, _) => vec![
            message(Code::Ack, id, None),
            event(id.unwrap(), "starting"),
            event(id.unwrap(), "running"),
        ],
        (Code::Shutdown, _) => vec![message(Code::Ack, id, None)],
        // TraceRequest is never answered: the timeout test relies on it.
        _ => Vec::new(),
    }
}

/// Serves one connection; returns the correlation ids it received. A
/// frame it cannot decode gets an `Error` without correlation id; a
/// `Shutdown` is acknowledged and ends the connection.
fn fake_node(listener: UnixListener) -> JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut seen = Vec::new();
        let mut buf = [0; 4096];
        loop {
            // A client that left with replies unread resets the connection.
            let read = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return seen,
                Ok(read) => read,
            };
            decoder.extend(&buf[..read]);
            while let Some(body) = decoder.next_frame().unwrap() {
                let request = decode_envelope::<public_api::Message>(body);
                let replies = match &request {
                    Ok(request) => {
                        seen.push(request.correlation_id.clone().unwrap_or_default());
                        answer(request)
                    }
                    Err(error) => vec![message(
                        Code::Error,
                        None,
                        Some(Payload::Error(public_api::Error {
                            kind: error::Kind::Malformed as i32,
                            reason: error.reason.clone(),
                        })),
                    )],
                };
                if write_all(&mut stream, &replies).is_err() {
                    return seen;
                }
                if matches!(request, Ok(request) if request.code == Code::Shutdown as i32) {
                    return seen;
                }
            }
        }
    })
}

fn write_all(stream: &mut UnixStream, messages: &[public_api::Message]) -> io::Result<()> {
    let mut out = Vec::new();
    for message in messages {
        encode_frame(message, &mut out);
    }
    stream.write_all(&out)
}

fn start_fake() -> (TempSocket, Client, JoinHandle<Vec<String>>) {
    let socket = TempSocket::new();
    let listener = UnixListener::bind(socket.path()).unwrap();
    let node = fake_node(listener);
    let client = Client::connect(&socket.path()).unwrap();
    (socket, client, node)
}

#[test]
fn correlation_ids_match_and_follow_the_introduced_client_id() {
    let (_socket, mut client, node) = start_fake();
    let introduce = client.introduce().unwrap();
    assert_eq!(introduce.client_id, "fake-7");
    assert_eq!(introduce.node_name, "fake");
    let info = client.node_info(true).unwrap();
    assert_eq!(info.overall.unwrap().reason, "details=true");
    drop(client);

    let seen = node.join().unwrap();
    assert_eq!(seen.len(), 2);
    let prefix = format!("c{}.", std::process::id());
    assert!(
        seen[0].starts_with(&prefix) && seen[0].ends_with(":1"),
        "{seen:?}"
    );
    assert_eq!(seen[1], "fake-7:2");
}

#[test]
fn connections_of_one_process_get_distinct_ids() {
    let (_first_socket, mut first, first_node) = start_fake();
    let (_second_socket, mut second, second_node) = start_fake();
    assert_ne!(first.next_correlation_id(), second.next_correlation_id());
    drop((first, second));
    first_node.join().unwrap();
    second_node.join().unwrap();
}

#[test]
fn an_error_reply_becomes_a_node_error_with_exit_code_1() {
    let (_socket, mut client, node) = start_fake();
    let error = client.start("ghost").unwrap_err();
    assert_eq!(error.node_kind(), Some(error::Kind::UnknownService));
    assert_eq!(error.exit_code(), 1);
    let text = error.to_string();
    assert!(text.contains("no service `ghost` is configured"), "{text}");
    assert!(text.contains("UNKNOWN_SERVICE"), "{text}");
    assert!(text.contains(":1)"), "names the request: {text}");
    drop(client);
    node.join().unwrap();
}

#[test]
fn an_error_without_correlation_id_ends_the_waiting_request() {
    let (_socket, mut client, node) = start_fake();
    client.send_raw(&[0, 0, 0, 1, 0xff]).unwrap();
    let error = client.introduce().unwrap_err();
    assert_eq!(error.node_kind(), Some(error::Kind::Malformed));
    assert!(
        matches!(
            error,
            ClientError::Node {
                correlation_id: None,
                ..
            }
        ),
        "{error:?}"
    );
    drop(client);
    node.join().unwrap();
}

#[test]
fn a_reply_to_another_request_is_reported_not_swallowed() {
    let (_socket, mut client, node) = start_fake();
    let error = client.status(None).unwrap_err();
    assert!(
        matches!(&error, ClientError::Unmatched { got_id, .. } if got_id == "someone-else:1"),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 2);
    drop(client);
    node.join().unwrap();
}

#[test]
fn subscribe_then_events_arrive_in_order() {
    let (_socket, mut client, node) = start_fake();
    client.subscribe().unwrap();
    assert_eq!(client.next_event().unwrap().state, "starting");
    assert_eq!(client.next_event().unwrap().state, "running");
    drop(client);
    node.join().unwrap();
}

#[test]
fn shutdown_is_acknowledged_and_then_the_connection_is_closed() {
    let (_socket, mut client, node) = start_fake();
    client.shutdown().unwrap();
    node.join().unwrap();
    assert!(matches!(client.receive(), Err(ClientError::Closed)));
}

#[test]
fn a_silent_node_times_out() {
    let (_socket, mut client, node) = start_fake();
    client.set_timeout(Some(Duration::from_millis(50))).unwrap();
    let error = client.trace("nobody:1").unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains("within 50ms"), "{error}");
    drop(client);
    node.join().unwrap();
}

#[test]
fn connecting_to_nothing_names_the_path_and_asks_if_the_node_runs() {
    let socket = TempSocket::new();
    let error = Client::connect(&socket.path()).unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert_eq!(
        error.to_string(),
        format!(
            "cannot connect to {}: No such file or directory (is the node running?)",
            socket.path().display()
        )
    );
}
