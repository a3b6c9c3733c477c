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

/// `message`'s frame grown to a body of exactly `body_len` bytes with an
/// unknown field (number 1000, bytes), which decoders skip: the largest
/// request a client can send carries nothing the node copies.
fn padded(message: &Message, body_len: usize) -> Vec<u8> {
    let mut body = Vec::new();
    prost::Message::encode(message, &mut body).unwrap();
    // Key of field 1000, wire type 2: (1000 << 3) | 2 as a varint.
    let key = [0xc2, 0x3e];
    let room = body_len - body.len() - key.len();
    // The length varint takes 1 to 3 bytes; find the fill that fits.
    let (fill, varint) = (0..room)
        .rev()
        .map(|fill| (fill, varint(fill as u64)))
        .find(|(fill, varint)| fill + varint.len() == room)
        .unwrap();
    body.extend_from_slice(&key);
    body.extend_from_slice(&varint);
    body.resize(body.len() + fill, b'p');
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
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

/// A client that is not part of the abuse is still answered (how fast is
/// `benches/hostile`'s figure: this shared machine bounds no latency).
fn assert_served(node: &Node) {
    let mut client = node.client();
    client.node_info(false).unwrap();
}

#[test]
fn a_frame_over_max_frame_is_refused_and_one_at_the_limit_is_served() {
    let node = Setup::new("max-frame").node("max_frame = 1024").start();
    let mut bystander = node.client();

    let at_limit = padded(&node_info("at-limit"), 1024);
    assert_eq!(at_limit.len(), 4 + 1024);
    let mut stream = node.raw();
    stream.write_all(&at_limit).unwrap();
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
    fd_targets(pid).len()
}

/// What each of `pid`'s descriptors is open on, sorted.
fn fd_targets(pid: i32) -> Vec<String> {
    let mut targets: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|fd| {
            fs::read_link(fd.path()).map_or_else(
                |error| format!("? ({error})"),
                |target| target.display().to_string(),
            )
        })
        .collect();
    targets.sort();
    targets
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
        .node("max_outbound_bytes = 65536")
        .start();
    let rss_before = rss_kib(node.pid());
    // About 400 bytes a reply (details, a long id): the first pass takes
    // max_inflight_per_connection of them, 400 KiB of replies, more than
    // the socket's buffer and the bound together.
    let requests: Vec<u8> = (0..2000)
        .flat_map(|n| {
            let mut request = node_info(&format!("{n}:{:0>120}", ""));
            request.payload = Some(Payload::NodeInfoRequest(NodeInfoRequest {
                details: Some(true),
            }));
            frame(&request)
        })
        .collect();
    let mut greedy = node.raw();
    let writer = {
        let mut greedy = greedy.try_clone().unwrap();
        // The write fails once the node has closed the connection.
        thread::spawn(move || greedy.write_all(&requests).is_ok())
    };
    let log = wait_for("the disconnection to be logged", || {
        let log = node.log_text();
        log.contains("max_outbound_bytes = 65536").then_some(log)
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
    // Before the connect: the node's idle clock starts at its accept.
    let started = Instant::now();
    let mut idle = node.raw();
    let mut busy = node.client();
    let watcher = thread::spawn(move || {
        let closed = read_message(&mut idle).is_none();
        (closed, started.elapsed())
    });
    // The busy connection is used more often than idle_timeout, for as
    // long as the idle one stays open.
    let mut served = 0;
    while !watcher.is_finished() {
        assert!(
            started.elapsed() < common::DEADLINE,
            "the idle connection stayed open"
        );
        busy.node_info(false).unwrap();
        served += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let (closed, after) = watcher.join().unwrap();
    assert!(closed);
    assert!(
        after >= Duration::from_millis(400),
        "closed after {after:?}"
    );
    assert!(
        served >= 4,
        "the busy one outlived idle_timeout: {served} requests"
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
    // Default limits: trace_capacity 10000 in trace_memory 2 MiB.
    let node = Setup::new("churn").start();
    let pid = node.pid();
    // Warm up: fill the correlation table to its bounds first.
    let mut warm = node.client();
    for _ in 0..12_000 {
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
    let served_during_churn = latencies.lock().unwrap().len();
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
    // Served throughout (each request answered, `expect` above), and
    // during the churn, not only after it; its latency is
    // `benches/hostile`'s figure.
    assert!(
        served_during_churn > 0,
        "the well-behaved client waited out the churn"
    );

    // The well-behaved client's connection is gone now too.
    wait_for("the node's fds to return to the start count", || {
        (client_connections(&node) == 0 && open_fds(pid) == start_fds).then_some(())
    });
    // At most 8 MB at default limits (issue 12; a debug build's node is
    // bigger), and less than 4 MiB more than before the churn (the table
    // was full then), once the node has given back what the closed
    // connections freed (a second after the last close).
    let limit = if cfg!(debug_assertions) {
        16_000
    } else {
        8_000_000 / 1024
    };
    let end_rss = wait_for("the node's RSS to settle", || {
        let rss = rss_kib(pid);
        (rss <= limit && rss.saturating_sub(start_rss) < 4 * 1024).then_some(rss)
    });
    let grown = end_rss.saturating_sub(start_rss);
    eprintln!("churn: RSS {start_rss} KiB before, {end_rss} KiB after (grew by {grown} KiB)");
    assert_served(&node);
}

// Issue 12: bounded under abuse. Each attack runs against the real node
// beside a well-behaved client; the asserts are on bytes and memory, the
// latency figures are in `benches/hostile.rs`.

/// The node's log size now.
fn log_bytes(node: &Node) -> usize {
    fs::metadata(&node.log).map_or(0, |metadata| metadata.len() as usize)
}

/// The `Error` in `message`, or a panic naming what came instead.
fn error_of(message: &Message) -> &snow_fox::wire::proto::public_api::Error {
    match &message.payload {
        Some(Payload::Error(error)) => error,
        _ => panic!("expected an Error, got {message:?}"),
    }
}

/// Requests `count` times over one pipelined connection, reading as it
/// writes: `make(n)` builds the n-th frame; returns the replies.
fn pipelined(
    node: &Node,
    count: usize,
    make: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> Vec<Message> {
    let mut stream = node.raw();
    let mut writer = stream.try_clone().unwrap();
    let writing = thread::spawn(move || {
        for n in 0..count {
            writer.write_all(&make(n)).unwrap();
        }
    });
    let replies = (0..count)
        .map(|_| read_message(&mut stream).expect("a reply to every request"))
        .collect();
    writing.join().unwrap();
    replies
}

#[test]
fn correlation_ids_over_128_bytes_are_refused_never_stored_and_memory_stays_flat() {
    let node = Setup::new("long-ids").start();
    let mut bystander = node.client();
    bystander.node_info(false).unwrap();
    let (rss_before, log_before) = (rss_kib(node.pid()), log_bytes(&node));

    // 1 MiB ids, as many as fill a few hundred MiB if they were kept.
    let replies = pipelined(&node, 200, |n| {
        frame(&node_info(&format!("{n}:{}", "x".repeat(1_000_000))))
    });
    for reply in &replies {
        let error = error_of(reply);
        assert_eq!(error.kind, Kind::BadRequest as i32);
        assert!(
            error.reason.contains("limit of 128 bytes"),
            "{}",
            error.reason
        );
        assert!(
            reply.correlation_id.is_none(),
            "an over-long id is not echoed"
        );
    }
    bystander.node_info(false).unwrap();

    // At the limit it is served and traced; one byte over it is refused,
    // and so is a trace of an id over it.
    let at_limit = "y".repeat(128);
    let mut stream = node.raw();
    stream.write_all(&frame(&node_info(&at_limit))).unwrap();
    let reply = read_message(&mut stream).unwrap();
    assert_eq!(reply.code, Code::NodeInfoResponse as i32);
    assert_eq!(reply.correlation_id.as_deref(), Some(at_limit.as_str()));
    assert_eq!(bystander.trace(&at_limit).unwrap().state, "done");
    stream
        .write_all(&frame(&node_info(&"y".repeat(129))))
        .unwrap();
    let reply = read_message(&mut stream).unwrap();
    assert!(error_of(&reply).reason.contains("129 bytes"), "{reply:?}");
    let error = bystander.trace(&"z".repeat(129)).unwrap_err();
    assert!(error.to_string().contains("limit of 128"), "{error}");
    drop(stream);

    let grown = rss_kib(node.pid()).saturating_sub(rss_before);
    assert!(grown < 4 * 1024, "RSS grew by {grown} KiB");
    let logged = log_bytes(&node) - log_before;
    assert!(logged < 1024, "{logged} bytes logged: {}", node.log_text());
    assert_served(&node);
}

#[test]
fn refused_requests_and_protocol_errors_add_a_bounded_number_of_log_bytes() {
    let node = Setup::new("log-flood")
        .service(
            "svc",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n",
        )
        .start();
    let mut bystander = node.client();
    bystander.node_info(false).unwrap();
    let log_before = log_bytes(&node);
    let started = Instant::now();

    // 1 MiB service ids: refused where they enter, never logged.
    let start = |id: String, service: String| Message {
        code: Code::ServiceStart as i32,
        correlation_id: Some(id),
        payload: Some(Payload::ServiceStart(
            snow_fox::wire::proto::public_api::ServiceStart {
                service_id: service,
                version: String::new(),
            },
        )),
    };
    let replies = pipelined(&node, 200, move |n| {
        frame(&start(format!("big:{n}"), "s".repeat(1_000_000)))
    });
    for reply in &replies {
        let error = error_of(reply);
        assert_eq!(error.kind, Kind::BadRequest as i32);
        assert!(
            error.reason.contains("service_id of 1000000 bytes"),
            "{}",
            error.reason
        );
    }
    // Unknown services and lines a client tries to forge: answered, and
    // logged only at debug.
    let replies = pipelined(&node, 2000, move |n| {
        frame(&start(
            format!("unknown:{n}"),
            format!("no-such-{n}\nWARN forged"),
        ))
    });
    assert!(replies.iter().all(|reply| reply.code == Code::Error as i32));
    // Protocol errors, each ending its connection: one line a second.
    for _ in 0..300 {
        let mut stream = node.raw();
        write_frame(&mut stream, b"\xff\xff\xff garbage");
        expect_refusal(&mut stream, Kind::Malformed);
    }
    bystander.node_info(false).unwrap();

    let seconds = started.elapsed().as_secs() as usize + 1;
    let log = node.log_text();
    let logged = log_bytes(&node) - log_before;
    assert!(
        logged <= 256 * seconds,
        "{logged} bytes in {seconds} s: {log}"
    );
    assert!(!log.contains("forged"), "{log}");
    let malformed = log.matches("undecodable").count();
    assert!(
        (1..=seconds).contains(&malformed),
        "{malformed} lines: {log}"
    );
    assert_served(&node);
}

#[test]
fn subscriptions_per_connection_are_bounded() {
    let node = Setup::new("subs")
        .node("max_subscriptions_per_connection = 3")
        .start();
    let mut stream = node.raw();
    for n in 0..5 {
        let subscribe = Message {
            code: Code::Subscribe as i32,
            correlation_id: Some(format!("sub:{n}")),
            payload: None,
        };
        stream.write_all(&frame(&subscribe)).unwrap();
    }
    let mut answers: Vec<(String, i32)> = Vec::new();
    while answers.len() < 5 {
        let reply = read_message(&mut stream).unwrap();
        if reply.code != Code::Event as i32 {
            answers.push((reply.correlation_id.clone().unwrap(), reply.code));
            if reply.code == Code::Error as i32 {
                let error = error_of(&reply);
                assert_eq!(error.kind, Kind::TooManySubscriptions as i32);
                assert!(error.reason.contains("= 3"), "{}", error.reason);
            }
        }
    }
    answers.sort();
    let codes: Vec<i32> = answers.iter().map(|(_, code)| *code).collect();
    let (ack, error) = (Code::Ack as i32, Code::Error as i32);
    assert_eq!(codes, [ack, ack, ack, error, error]);
    // Another connection has its own allowance.
    let mut other = node.client();
    other.subscribe().unwrap();
    assert_served(&node);
}

/// A service that exits at once and is restarted at once, forever.
const FLAPPING: &str = "command = [\"/bin/true\"]\ninstances = 10\nrestart = \"always\"\n\
     backoff_initial = \"10ms\"\nbackoff_max = \"20ms\"\ngive_up_after = 0\n";

#[test]
fn subscribers_that_never_read_are_told_and_dropped_and_one_that_reads_is_kept() {
    const SILENT: usize = 50;
    let node = Setup::new("slow-subs")
        .node("max_subscriber_backlog = 8192")
        .service("flap", FLAPPING)
        .start();
    let rss_before = rss_kib(node.pid());
    let mut reader = node.client();
    reader.subscribe().unwrap();
    let events = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reading = {
        let events = events.clone();
        thread::spawn(move || {
            while reader.next_event().is_ok() {
                events.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut silent: Vec<UnixStream> = (0..SILENT)
        .map(|n| {
            let mut stream = node.raw();
            let subscribe = Message {
                code: Code::Subscribe as i32,
                correlation_id: Some(format!("silent:{n}")),
                payload: None,
            };
            stream.write_all(&frame(&subscribe)).unwrap();
            stream
        })
        .collect();
    // A write to a socket the node has closed fails (EPIPE): each silent
    // subscriber sends a request now and then (it reads nothing), until
    // its write fails.
    for (n, stream) in silent.iter_mut().enumerate() {
        let mut probe = 0;
        wait_for(&format!("silent subscriber {n} to be dropped"), || {
            probe += 1;
            let request = frame(&node_info(&format!("probe:{n}:{probe}")));
            stream.write_all(&request).is_err().then_some(())
        });
    }
    let seen = events.load(Ordering::Relaxed);
    wait_for("the reading subscriber to go on getting events", || {
        (events.load(Ordering::Relaxed) > seen + 20).then_some(())
    });
    let mut told = 0;
    for stream in &mut silent {
        // Whole events, then (if its socket had room) the Error, then the
        // end: never a torn frame.
        let mut last = None;
        while let Some(message) = read_message(stream) {
            assert!(last != Some(Code::Error as i32), "{message:?}");
            last = Some(message.code);
            if message.code == Code::Error as i32 {
                let error = error_of(&message);
                assert_eq!(error.kind, Kind::SlowSubscriber as i32);
                assert!(error.reason.contains("8192"), "{}", error.reason);
                told += 1;
            }
        }
    }
    assert_eq!(
        told, SILENT,
        "each silent subscriber reads the Error once it reads"
    );
    let log = node.log_text();
    let lines = log.matches("max_subscriber_backlog = 8192").count();
    assert!((1..SILENT).contains(&lines), "{lines} lines: {log}");
    let grown = rss_kib(node.pid()).saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
    assert_served(&node);
    drop(node);
    reading.join().unwrap();
}

/// Runs as `nobody` in a child process of `a_flood_of_refused_connections`:
/// connects and hangs up as fast as it can until `SF_FLOOD_UNTIL` (a Unix
/// time in ms), then prints how many connections it made. A no-op when
/// run on its own.
#[test]
#[ignore = "a helper that a_flood_of_refused_connections runs as nobody"]
fn flood_helper() {
    let (Ok(socket), Ok(until)) = (
        std::env::var("SF_FLOOD_SOCKET"),
        std::env::var("SF_FLOOD_UNTIL"),
    ) else {
        return;
    };
    let until: u128 = until.parse().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let socket = socket.clone();
            thread::spawn(move || {
                let mut made = 0u64;
                while now() < until {
                    if UnixStream::connect(&socket).is_ok() {
                        made += 1;
                    }
                }
                made
            })
        })
        .collect();
    let made: u64 = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .sum();
    println!("flood: {made} connections");
}

#[test]
#[ignore = "needs root"]
fn a_flood_of_refused_connections_is_logged_a_line_a_second_and_an_allowed_client_is_served() {
    const FLOOD: Duration = Duration::from_secs(5);
    let node = Setup::new("refused-flood")
        .node("allow_users = [\"4242\"]")
        .start();
    fs::set_permissions(&node.setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let pid = node.pid();
    let mut allowed = node.client();
    allowed.node_info(false).unwrap();
    let (rss_before, fds_before, log_before) = (rss_kib(pid), fd_targets(pid), log_bytes(&node));

    let until = std::time::SystemTime::now() + FLOOD;
    let until_ms = until
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let flood = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flood_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SF_FLOOD_SOCKET", node.socket())
        .env("SF_FLOOD_UNTIL", until_ms.to_string())
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut answered = 0;
    while std::time::SystemTime::now() < until {
        allowed
            .node_info(false)
            .expect("the allowed client is served");
        answered += 1;
    }
    let output = flood.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let made: u64 = stdout
        .lines()
        .find_map(|line| line.split("flood: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("the flood helper said: {stdout}"));
    eprintln!("flood: {made} refused connections, {answered} answers to the allowed client");
    assert!(made > 1000, "the flood made only {made} connections");
    assert!(answered > 0);

    let log = node.log_text();
    let lines = log.matches("refusing connection").count();
    let seconds = FLOOD.as_secs() as usize + 2;
    assert!(
        (1..=seconds).contains(&lines),
        "{lines} lines for {made} refusals"
    );
    assert!(log.contains("more from this uid not logged"), "{log}");
    let logged = log_bytes(&node) - log_before;
    assert!(logged <= 256 * seconds, "{logged} bytes logged");
    // Polled until the deadline, then compared, so that a failure names
    // the descriptors that stayed.
    let deadline = Instant::now() + common::DEADLINE;
    while fd_targets(pid).len() != fds_before.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let fds_after = fd_targets(pid);
    assert_eq!(
        fds_after.len(),
        fds_before.len(),
        "the node's descriptors after the flood: {fds_after:?}; before: {fds_before:?}"
    );
    let grown = rss_kib(pid).saturating_sub(rss_before);
    assert!(grown < 4 * 1024, "RSS grew by {grown} KiB");
    assert_served(&node);
}

#[test]
#[ignore = "needs root"]
fn the_spawner_link_survives_the_largest_valid_request_in_process_mode() {
    let setup = Setup::new("link-bounds").node("user = \"nobody\"").service(
        "svc",
        "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n",
    );
    fs::set_permissions(&setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let mut node = setup.start();
    let mut client = node.client();
    let info = client.node_info(true).unwrap();
    let spawner = info.details.iter().find(|s| s.name == "spawner").unwrap();
    assert!(
        spawner.status.reason.contains("process"),
        "{:?}",
        spawner.status
    );

    let start = |id: &str| Message {
        code: Code::ServiceStart as i32,
        correlation_id: Some(id.to_owned()),
        payload: Some(Payload::ServiceStart(
            snow_fox::wire::proto::public_api::ServiceStart {
                service_id: "svc".into(),
                version: String::new(),
            },
        )),
    };
    // The largest valid request: a whole max_frame, the longest id, the
    // rest an unknown field (which nothing copies).
    let longest = "i".repeat(128);
    let mut stream = node.raw();
    stream
        .write_all(&padded(&start(&longest), 1 << 20))
        .unwrap();
    let reply = read_message(&mut stream).unwrap();
    assert_eq!(reply.code, Code::Ack as i32, "{reply:?}");
    let hops = common::finished_hops(&mut client, &longest);
    assert!(
        hops.contains(&"manager>spawner:StartProcess".to_owned()),
        "{hops:?}"
    );
    // What cut the link before: a frame-sized request with a 1 MiB id.
    stream
        .write_all(&frame(&start(&"x".repeat(1_000_000))))
        .unwrap();
    let reply = read_message(&mut stream).unwrap();
    assert_eq!(error_of(&reply).kind, Kind::BadRequest as i32);

    // The link still works both ways: stop, start, and an ordered
    // shutdown that stops the service.
    client.stop("svc").unwrap();
    let status = client.start("svc").unwrap();
    let pid = status.services[0].instances[0].pid.unwrap();
    assert!(common::pid_alive(pid));
    client.shutdown().unwrap();
    assert!(node.wait_exit().success(), "{}", node.log_text());
    wait_for("the service to be stopped with the node", || {
        (!common::pid_alive(pid)).then_some(())
    });
}
