//! Hostile clients against a real node (issue 6): one test per limit and
//! per access rule, each showing the error a client sees and that other
//! clients are unaffected, and a churn test of hundreds of misbehaving
//! clients while a well-behaved one measures its latency.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use snow_fox::wire::proto::public_api::{
    Message, NodeInfoRequest, ServiceStop, TraceRequest, error::Kind, message::Code,
    message::Payload,
};
use snow_fox::wire::{decode_envelope, encode_frame};

use common::{DEADLINE, Node, Setup, TempDir, wait_for, write_frame};

const NOBODY: u32 = 65534;

fn frame(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(message, &mut out);
    out
}

fn node_info(id: &str) -> Message {
    Message {
        code: Code::NodeInfoRequest as i32,
        correlation_id: Some(id.to_owned()),
        payload: Some(Payload::NodeInfoRequest(NodeInfoRequest {
            details: Some(false),
        })),
    }
}

/// Reads one message; `None` at the end of the stream (or a reset).
fn read_message(stream: &mut UnixStream) -> Option<Message> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(decode_envelope(&body).unwrap())
}

/// The connection-ending `Error` a refused client reads, then the end.
fn expect_refusal(stream: &mut UnixStream, kind: Kind) -> String {
    let message = read_message(stream).expect("an Error before the close");
    let Some(Payload::Error(error)) = message.payload else {
        panic!("expected an Error, got {message:?}");
    };
    assert_eq!(error.kind, kind as i32, "{}", error.reason);
    assert!(message.correlation_id.is_none());
    assert!(read_message(stream).is_none(), "the connection stays open");
    error.reason
}

/// A client that is not part of the abuse still gets prompt answers.
fn assert_served(node: &Node) {
    let mut client = node.client();
    let started = Instant::now();
    client.node_info(false).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_frame_over_max_frame_is_refused_and_one_at_the_limit_is_served() {
    let node = Setup::new("max-frame").node("max_frame = 1024").start();
    let mut bystander = node.client();

    let mut at_limit = node_info("");
    let mut padding = 0;
    while frame(&at_limit).len() != 4 + 1024 {
        padding += 1;
        at_limit.correlation_id = Some("x".repeat(padding));
    }
    let mut stream = node.raw();
    stream.write_all(&frame(&at_limit)).unwrap();
    let reply = read_message(&mut stream).unwrap();
    assert_eq!(reply.code, Code::NodeInfoResponse as i32);

    stream.write_all(&1025u32.to_be_bytes()).unwrap();
    let reason = expect_refusal(&mut stream, Kind::FrameTooLarge);
    assert!(
        reason.contains("1025") && reason.contains("1024"),
        "{reason}"
    );

    bystander.node_info(false).unwrap();
    assert_served(&node);
}

#[test]
fn one_connection_over_max_connections_is_told_busy_and_a_freed_slot_is_reused() {
    let node = Setup::new("max-conns").node("max_connections = 4").start();
    // One at a time: each round trip also lets the node see the start
    // probe's connection close.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = node.client();
        client.introduce().unwrap();
        clients.push(client);
    }
    let mut fifth = node.raw();
    let reason = expect_refusal(&mut fifth, Kind::Busy);
    assert!(reason.contains("at most 4"), "{reason}");
    for client in &mut clients {
        client.node_info(false).unwrap();
    }

    clients.pop();
    let mut again = wait_for("a freed slot", || {
        let mut stream = node.raw();
        write_frame(&mut stream, &frame(&node_info("again"))[4..]);
        let reply = read_message(&mut stream)?;
        (reply.code == Code::NodeInfoResponse as i32).then_some(stream)
    });
    write_frame(&mut again, &frame(&node_info("again-2"))[4..]);
    assert_eq!(
        read_message(&mut again).unwrap().code,
        Code::NodeInfoResponse as i32
    );
    assert!(node.log_text().contains("max_connections = 4"));
}

fn trace_state(node: &Node, id: &str) -> String {
    let mut client = node.client();
    client
        .trace(id)
        .map(|trace| trace.state)
        .unwrap_or_default()
}

/// Two stops of a service that ignores SIGTERM stay in flight for its
/// stop_timeout; with max_inflight_per_connection = 2 the third request on
/// that connection is not even read until they are answered.
#[test]
fn a_connection_at_max_inflight_is_not_read_until_replies_drain() {
    let node = Setup::new("max-inflight")
        .node("max_inflight_per_connection = 2")
        .service(
            "stubborn",
            "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; while :; do sleep 0.1; done\"]\nstop_timeout = \"3s\"\n",
        )
        .start();
    let mut admin = node.client();
    admin.start("stubborn").unwrap();

    let stop = |id: &str| Message {
        code: Code::ServiceStop as i32,
        correlation_id: Some(id.to_owned()),
        payload: Some(Payload::ServiceStop(ServiceStop {
            service_id: "stubborn".into(),
        })),
    };
    let mut stream = node.raw();
    let burst = [
        frame(&stop("stop-1")),
        frame(&stop("stop-2")),
        frame(&node_info("third")),
    ]
    .concat();
    stream.write_all(&burst).unwrap();

    wait_for("both stops in flight", || {
        (trace_state(&node, "stop-1") == "in_flight" && trace_state(&node, "stop-2") == "in_flight")
            .then_some(())
    });
    let third = trace_state(&node, "third");
    assert!(
        !matches!(third.as_str(), "in_flight" | "done"),
        "read past the limit: {third}"
    );
    assert_served(&node);

    let mut answered = Vec::new();
    while answered.len() < 3 {
        let reply = read_message(&mut stream).expect("every request answered");
        answered.push(reply.correlation_id.unwrap());
    }
    assert_eq!(answered[2], "third", "{answered:?}");
}

/// Many pipelined requests and no reading: the node stops reading the
/// connection (the client's writes stall) yet answers everything once the
/// client reads, and other clients are served meanwhile.
#[test]
fn a_pipelining_client_that_does_not_read_is_paused_then_fully_answered() {
    let node = Setup::new("pipeline")
        .node("max_inflight_per_connection = 8")
        .start();
    let total = 50_000;
    let requests: Vec<u8> = (0..total)
        .flat_map(|n| frame(&node_info(&format!("p{n}"))))
        .collect();
    let mut stream = node.raw();
    stream.set_nonblocking(true).unwrap();
    let mut written = 0;
    let stalled_at = Instant::now() + Duration::from_millis(500);
    while written < requests.len() && Instant::now() < stalled_at {
        match stream.write(&requests[written..]) {
            Ok(n) => written += n,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(error) => panic!("write failed: {error}"),
        }
    }
    assert!(
        written < requests.len(),
        "the node read all {} bytes without the client reading",
        requests.len()
    );
    assert_served(&node);

    let reader = {
        let mut stream = stream.try_clone().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        thread::spawn(move || {
            let mut ids = std::collections::HashSet::new();
            while ids.len() < total {
                let reply = read_message(&mut stream).expect("a reply");
                assert_eq!(reply.code, Code::NodeInfoResponse as i32);
                assert!(ids.insert(reply.correlation_id.unwrap()), "answered twice");
            }
        })
    };
    stream.set_nonblocking(false).unwrap();
    stream.write_all(&requests[written..]).unwrap();
    reader.join().unwrap();
}

fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Client connections the node holds open: its socket fds that
/// `/proc/net/unix` shows bound to the node's path, less the listener.
fn client_connections(node: &Node) -> usize {
    let path = node.socket().display().to_string();
    let inodes: Vec<String> = fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .filter(|line| line.ends_with(&format!(" {path}")))
        .filter_map(|line| {
            line.split_whitespace()
                .nth(6)
                .map(|inode| format!("socket:[{inode}]"))
        })
        .collect();
    let held = fs::read_dir(format!("/proc/{}/fd", node.pid()))
        .unwrap()
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| inodes.iter().any(|inode| Path::new(inode) == target))
        .count();
    held.saturating_sub(1)
}

#[test]
fn a_client_that_never_reads_is_disconnected_past_max_outbound_bytes() {
    let node = Setup::new("max-outbound")
        .node("max_outbound_bytes = 262144")
        .start();
    let rss_before = rss_kib(node.pid());
    // Replies echo the correlation id, so 64 KiB ids make 64 KiB replies.
    let requests: Vec<u8> = (0..64)
        .flat_map(|n| frame(&node_info(&format!("{n}:{}", "x".repeat(64 * 1024)))))
        .collect();
    let mut greedy = node.raw();
    let writer = {
        let mut greedy = greedy.try_clone().unwrap();
        // The write fails once the node has closed the connection.
        thread::spawn(move || greedy.write_all(&requests).is_ok())
    };
    let log = wait_for("the disconnection to be logged", || {
        let log = node.log_text();
        log.contains("max_outbound_bytes = 262144").then_some(log)
    });
    let _ = writer.join().unwrap();
    assert_served(&node);

    let mut unread = Vec::new();
    let end = greedy.read_to_end(&mut unread);
    assert!(
        end.is_ok() || end.is_err_and(|error| error.kind() == ErrorKind::ConnectionReset),
        "the connection is closed"
    );
    assert_eq!(log.matches("max_outbound_bytes").count(), 1, "{log}");
    let grown = rss_kib(node.pid()).saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn an_idle_connection_is_closed_after_idle_timeout_and_a_busy_one_is_not() {
    let node = Setup::new("idle").node("idle_timeout = \"400ms\"").start();
    let mut idle = node.raw();
    let mut busy = node.client();
    let started = Instant::now();
    let watcher = thread::spawn(move || {
        let closed = read_message(&mut idle).is_none();
        (closed, started.elapsed())
    });
    while started.elapsed() < Duration::from_millis(1500) {
        busy.node_info(false).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    let (closed, after) = watcher.join().unwrap();
    assert!(closed);
    assert!(
        after >= Duration::from_millis(400),
        "closed after {after:?}"
    );
    assert!(
        after < Duration::from_millis(1500),
        "closed after {after:?}"
    );
    busy.node_info(false).unwrap();
}

/// The client binary, copied where `nobody` can execute it.
fn client_for_nobody(dir: &TempDir) -> std::path::PathBuf {
    let copy = dir.0.join("snow-fox-client");
    fs::copy(env!("CARGO_BIN_EXE_snow-fox-client"), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn run_as_nobody(client: &Path, socket: &Path) -> std::process::Output {
    Command::new(client)
        .arg("--socket")
        .arg(socket)
        .arg("info")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs root"]
fn a_peer_not_allowed_is_refused_naming_its_uid() {
    let node = Setup::new("access-refused").start();
    let mut bystander = node.client();
    let client = client_for_nobody(&node.setup.dir);
    let socket = node.socket();
    assert_eq!(fs::metadata(&socket).unwrap().mode() & 0o777, 0o600);
    // Open the file up: peer credentials must stop nobody on their own.
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();

    let output = run_as_nobody(&client, &socket);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("uid 65534"), "{stderr}");
    assert!(stderr.contains("PERMISSION_DENIED"), "{stderr}");
    let log = node.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("uid 65534"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    bystander.node_info(false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_user_in_allow_users_may_connect() {
    let node = Setup::new("access-user")
        .node("allow_users = [\"nobody\"]")
        .start();
    let client = client_for_nobody(&node.setup.dir);
    let output = run_as_nobody(&client, &node.socket());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("test-node"));
}

#[test]
#[ignore = "needs root"]
fn a_member_of_allow_groups_may_connect_through_a_0660_socket() {
    let node = Setup::new("access-group")
        .node(&format!("allow_groups = [\"{NOBODY}\"]"))
        .start();
    let metadata = fs::metadata(node.socket()).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o660);
    assert_eq!(metadata.gid(), NOBODY);
    let client = client_for_nobody(&node.setup.dir);
    let output = run_as_nobody(&client, &node.socket());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

/// What one churning client does on one connection.
fn churn_once(socket: &Path, round: usize) {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return;
    };
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let id = format!("churn-{round}");
    match round % 6 {
        0 => {
            stream.write_all(&frame(&node_info(&id))).unwrap();
            let reply = read_message(&mut stream).expect("a reply to a valid request");
            assert_eq!(reply.code, Code::NodeInfoResponse as i32, "{reply:?}");
        }
        1 => {
            write_frame(&mut stream, b"\xff\xff\xff garbage");
            let _ = read_message(&mut stream);
        }
        2 => {
            let _ = stream.write_all(&u32::MAX.to_be_bytes());
            let _ = read_message(&mut stream);
        }
        3 => {
            // Half a frame, then gone.
            let whole = frame(&node_info(&id));
            let _ = stream.write_all(&whole[..whole.len() / 2]);
        }
        4 => {
            // Requests sent, replies never read: they are answered into a
            // socket nobody reads, and dropped with the connection.
            let burst: Vec<u8> = (0..10)
                .flat_map(|n| frame(&node_info(&format!("{id}-{n}"))))
                .collect();
            let _ = stream.write_all(&burst);
        }
        _ => {
            let trace = Message {
                code: Code::TraceRequest as i32,
                correlation_id: Some(id),
                payload: Some(Payload::TraceRequest(TraceRequest {
                    correlation_id: "churn-0".into(),
                })),
            };
            let _ = stream.write_all(&frame(&trace));
        }
    }
}

/// How long the churn runs: `SF_CHURN_SECS` seconds, 10 by default (a
/// soak is the same test run longer).
fn churn_time() -> Duration {
    let seconds = std::env::var("SF_CHURN_SECS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(seconds)
}

#[test]
fn churn_of_hundreds_of_bad_clients_leaks_nothing_and_stalls_no_one() {
    const CLIENTS: usize = 200;
    let node = Setup::new("churn").node("trace_capacity = 4000").start();
    let pid = node.pid();
    // Warm up: fill the correlation table to its capacity first.
    let mut warm = node.client();
    for _ in 0..4500 {
        warm.node_info(false).unwrap();
    }
    drop(warm);
    let start_fds = wait_for("the warm-up connection to close", || {
        (client_connections(&node) == 0).then(|| open_fds(pid))
    });
    let start_rss = rss_kib(pid);

    let done = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let well_behaved = {
        let mut client = node.client();
        let (done, latencies) = (done.clone(), latencies.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                client
                    .node_info(false)
                    .expect("the well-behaved client is served");
                latencies.lock().unwrap().push(started.elapsed());
            }
        })
    };
    let started = Instant::now();
    let until = started + churn_time();
    let churners: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let socket = node.socket();
            thread::spawn(move || {
                let mut rounds = 0;
                while Instant::now() < until {
                    churn_once(&socket, client * 1_000_000 + rounds);
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let connections: usize = churners
        .into_iter()
        .map(|churner| churner.join().unwrap())
        .sum();
    let churn_time = started.elapsed();
    done.store(true, Ordering::Relaxed);
    well_behaved.join().unwrap();

    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "churn: {CLIENTS} clients made {connections} connections in {churn_time:?}; well-behaved client: {} requests, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    assert!(!latencies.is_empty());
    assert!(at(1.0) < Duration::from_secs(2), "a request stalled");

    // The well-behaved client's connection is gone now too.
    wait_for("the node's fds to return to the start count", || {
        (client_connections(&node) == 0 && open_fds(pid) == start_fds).then_some(())
    });
    let grown = rss_kib(pid).saturating_sub(start_rss);
    eprintln!("churn: RSS {start_rss} KiB before, grew by {grown} KiB");
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
    assert_served(&node);
}
