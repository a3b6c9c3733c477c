//! What the benches share: a real release `snow-fox` node in a temporary
//! directory, the hop baseline server (the architecture's floor: mio
//! framing plus a crossbeam hop to a worker thread and back), `/proc`
//! readings and table printing.

#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use snow_fox::client::Client;

#[path = "../../tests/common/scratch.rs"]
pub mod scratch;
pub use scratch::{TempDir, poll_until};
use snow_fox::client::bench::{self, BenchOptions, BenchReport, RequestKind, Until};
use snow_fox::wire::proto::public_api::{
    Message,
    message::{Code, Payload},
};
use snow_fox::wire::{DEFAULT_MAX_FRAME, Envelope, FrameDecoder, decode_envelope, encode_frame};

/// How long anything a bench waits for may take before the bench fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Measuring time of each load run, after its warm-up.
pub const RUN: Duration = Duration::from_secs(1);

/// Warm-up of each load run.
pub const WARMUP: Duration = Duration::from_millis(300);

/// The release node binary cargo built for this bench, or `SF_NODE_BIN`
/// (to measure another build, an older commit's, in the same run).
pub fn node_binary() -> PathBuf {
    std::env::var_os("SF_NODE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_snow-fox")),
        PathBuf::from,
    )
}

/// Polls `check` until it returns `Some`; panics after [`DEADLINE`].
pub fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_until(what, DEADLINE, Duration::from_millis(1), check)
}

/// A running node, shut down (and its services stopped) on drop.
pub struct BenchNode {
    dir: TempDir,
    child: Child,
}

impl BenchNode {
    /// Starts a node whose services are `services` (id, TOML text), logging
    /// only warnings so that the figures do not measure logging.
    pub fn start(label: &str, services: &[(String, String)]) -> BenchNode {
        BenchNode::start_with(label, "", services, "warn")
    }

    /// Starts a node with `node_lines` added to its node.toml, logging at
    /// `log_level`. Each node has its own name, so two of one run never
    /// share cgroups.
    pub fn start_with(
        label: &str,
        node_lines: &str,
        services: &[(String, String)],
        log_level: &str,
    ) -> BenchNode {
        let dir = TempDir::new(label);
        let conf = dir.0.join("conf");
        fs::create_dir_all(conf.join("services")).unwrap();
        fs::write(
            conf.join("node.toml"),
            format!(
                "name = \"bench-{label}-{}\"\nsocket = \"{}\"\nstate_dir = \"{}\"\nlog_dir = \"{}\"\n{node_lines}\n",
                std::process::id(),
                dir.0.join("sf.sock").display(),
                dir.0.join("state").display(),
                dir.0.join("log").display(),
            ),
        )
        .unwrap();
        for (id, toml) in services {
            fs::write(conf.join(format!("services/{id}.toml")), toml).unwrap();
        }
        let child = BenchNode::spawn(&dir, log_level);
        let mut node = BenchNode { dir, child };
        node.await_socket();
        node
    }

    /// Runs the node on the configuration in `dir`.
    fn spawn(dir: &TempDir, log_level: &str) -> Child {
        Command::new(node_binary())
            .arg("--conf")
            .arg(dir.0.join("conf"))
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.0.join("node.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap()
    }

    /// Kills the node with SIGKILL (what runs on, runs on) and starts a
    /// new one on the same configuration and state, at `log_level`.
    pub fn crash_and_restart(&mut self, log_level: &str) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = BenchNode::spawn(&self.dir, log_level);
        self.await_socket();
    }

    /// Waits until the node answers on its socket.
    fn await_socket(&mut self) {
        let socket = self.socket();
        wait_for("the node's socket", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("node exited early with {status}: {}", self.log_text());
            }
            Client::connect(&socket).ok()
        });
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.0.join("sf.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket()).unwrap()
    }

    /// The node's log size in bytes.
    pub fn log_bytes(&self) -> u64 {
        fs::metadata(self.dir.0.join("node.log")).map_or(0, |metadata| metadata.len())
    }

    /// The node's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.0.join("node.log")).unwrap_or_default()
    }

    /// Resident memory in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// CPU time used so far by all its threads, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        scratch::stat_cpu_ticks(Path::new(&format!("/proc/{}/stat", self.pid())))
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        if let Ok(mut client) = Client::connect(&self.socket())
            && client.shutdown().is_ok()
        {
            let deadline = Instant::now() + DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` line of /proc/<pid>/status, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// A service file for `/bin/sleep 3600`, output discarded, restarted
/// whatever the reason it ends, stable after 1 s.
pub fn sleep_service(autostart: bool) -> String {
    format!(
        "command = [\"/bin/sleep\", \"3600\"]\nautostart = {autostart}\nstdout = \"null\"\nstderr = \"null\"\nrestart = \"always\"\nstable_after = \"1s\"\n"
    )
}

/// `count` sleep services named s0000, s0001, ...
pub fn sleep_services(count: usize, autostart: bool) -> Vec<(String, String)> {
    (0..count)
        .map(|index| (format!("s{index:04}"), sleep_service(autostart)))
        .collect()
}

/// Runs the bench engine against `socket` with no progress output.
pub fn load(socket: &Path, clients: usize, inflight: usize, request: RequestKind) -> BenchReport {
    let options = BenchOptions {
        socket: socket.to_owned(),
        clients,
        inflight,
        until: Until::Elapsed(RUN),
        warmup: WARMUP,
        request,
    };
    let report = bench::run(&options, |_| {}).unwrap();
    assert_eq!(report.answered, report.sent, "every request answered");
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    report
}

/// An aligned text table, printed at once.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|cell| (*cell).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let columns = self.header.len();
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&self.header);
        let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
        line(&rule);
        for row in &self.rows {
            line(row);
        }
        println!();
    }
}

/// `a / b` as a ratio with two decimals.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".to_owned()
    }
}

/// Milliseconds with two decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// The median of some durations.
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
const HOP_CAPACITY: usize = 1 << 16;

/// The hop baseline: a mio loop that cuts frames and hands each body to a
/// worker thread over a bounded crossbeam channel, one send per frame;
/// the worker decodes the envelope and answers with an empty reply of
/// the right code and the same correlation id, one send per reply, and
/// wakes the loop only when no wake is pending (the reply queue went from
/// empty to non-empty). The loop appends replies to the connection's
/// buffer and writes each touched connection once. No correlation table,
/// no validation, no limits: the floor under snow-fox's architecture.
pub struct HopServer {
    dir: TempDir,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    io: Option<JoinHandle<()>>,
    worker: Option<JoinHandle<()>>,
}

impl HopServer {
    pub fn start() -> HopServer {
        let dir = TempDir::new("hop");
        let listener = UnixListener::bind(dir.0.join("hop.sock")).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicBool::new(false));
        let (request_tx, request_rx) = crossbeam_channel::bounded(HOP_CAPACITY);
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(HOP_CAPACITY);
        let worker = {
            let waker = waker.clone();
            let pending = pending.clone();
            thread::Builder::new()
                .name("hop-worker".into())
                .spawn(move || hop_worker(&request_rx, &reply_tx, &waker, &pending))
                .unwrap()
        };
        let io = {
            let stop = stop.clone();
            thread::Builder::new()
                .name("hop-io".into())
                .spawn(move || {
                    HopLoop {
                        poll,
                        listener,
                        connections: Vec::new(),
                        requests: request_tx,
                        replies: reply_rx,
                        pending,
                        stop,
                    }
                    .run();
                })
                .unwrap()
        };
        HopServer {
            dir,
            stop,
            waker,
            io: Some(io),
            worker: Some(worker),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.0.join("hop.sock")
    }

    /// CPU time its two threads used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|task| {
                fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|name| name.starts_with("hop-"))
            })
            .map(|task| scratch::stat_cpu_ticks(&task.path().join("stat")))
            .sum()
    }
}

impl Drop for HopServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        for handle in [self.io.take(), self.worker.take()].into_iter().flatten() {
            let _ = handle.join();
        }
    }
}

fn hop_worker(
    requests: &Receiver<(usize, Vec<u8>)>,
    replies: &Sender<(usize, Vec<u8>)>,
    waker: &Waker,
    pending: &AtomicBool,
) {
    for (connection, body) in requests {
        let Ok(request) = decode_envelope::<Message>(&body) else {
            continue;
        };
        let code = match Code::try_from(request.code) {
            Ok(Code::NodeInfoRequest) => Code::NodeInfoResponse,
            Ok(Code::ServiceStatusRequest) => Code::ServiceStatusResponse,
            _ => Code::Introduce,
        };
        let reply = Message {
            code: code as i32,
            correlation_id: request.correlation().map(str::to_owned),
            payload: None,
        };
        let mut frame = Vec::new();
        encode_frame(&reply, &mut frame);
        if replies.send((connection, frame)).is_err() {
            return;
        }
        if !pending.swap(true, Ordering::AcqRel) && waker.wake().is_err() {
            return;
        }
    }
}

struct HopConnection {
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    written: usize,
}

struct HopLoop {
    poll: Poll,
    listener: UnixListener,
    connections: Vec<Option<HopConnection>>,
    requests: Sender<(usize, Vec<u8>)>,
    replies: Receiver<(usize, Vec<u8>)>,
    pending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl HopLoop {
    fn run(mut self) {
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; 64 * 1024];
        let mut touched = Vec::new();
        loop {
            if let Err(error) = self.poll.poll(&mut events, None) {
                assert_eq!(error.kind(), io::ErrorKind::Interrupted, "{error}");
                continue;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        if self.stop.load(Ordering::Acquire) {
                            return;
                        }
                    }
                    Token(token) => {
                        let index = token - FIRST_CONNECTION;
                        if event.is_readable() && !self.read(index, &mut scratch) {
                            self.connections[index] = None;
                            continue;
                        }
                        if event.is_writable() {
                            touched.push(index);
                        }
                    }
                }
            }
            self.pending.store(false, Ordering::Release);
            for (index, frame) in self.replies.try_iter() {
                if let Some(connection) = &mut self.connections[index] {
                    connection.out.extend_from_slice(&frame);
                    touched.push(index);
                }
            }
            for index in touched.drain(..) {
                if let Some(connection) = &mut self.connections[index]
                    && !connection.flush()
                {
                    self.connections[index] = None;
                }
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((mut stream, _)) = self.listener.accept() {
            let index = self.connections.len();
            self.poll
                .registry()
                .register(
                    &mut stream,
                    Token(index + FIRST_CONNECTION),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .unwrap();
            self.connections.push(Some(HopConnection {
                stream,
                decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
                out: Vec::new(),
                written: 0,
            }));
        }
    }

    /// Reads until the socket is empty, handing every frame to the worker;
    /// false once the peer has gone.
    fn read(&mut self, index: usize, scratch: &mut [u8]) -> bool {
        let Some(connection) = &mut self.connections[index] else {
            return true;
        };
        loop {
            match connection.stream.read(scratch) {
                Ok(0) => return false,
                Ok(count) => connection.decoder.extend(&scratch[..count]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            while let Ok(Some(body)) = connection.decoder.next_frame() {
                if self.requests.send((index, body.to_vec())).is_err() {
                    return false;
                }
            }
        }
    }
}

impl HopConnection {
    /// Writes what is queued until done or the socket is full; false once
    /// the peer has gone.
    fn flush(&mut self) -> bool {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return false,
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.clear();
        self.written = 0;
        true
    }
}

/// Sends the requests all pipelined on one connection and waits for
/// every reply; returns the time, checking that each is an `Ack`.
pub fn pipelined(
    client: &mut Client,
    requests: impl IntoIterator<Item = (Code, Payload)>,
) -> Duration {
    pipelined_at_most(client, requests, usize::MAX)
}

/// [`pipelined`] with at most `window` requests unanswered: a client
/// that writes thousands of requests before it reads fills its own
/// socket with answers the node then cannot deliver, so the node stops
/// reading it, and the client's writes block for ever.
pub fn pipelined_at_most(
    client: &mut Client,
    requests: impl IntoIterator<Item = (Code, Payload)>,
    window: usize,
) -> Duration {
    let started = Instant::now();
    let mut unanswered = 0;
    let receive = |client: &mut Client| {
        let reply = client.receive().unwrap();
        assert_eq!(reply.code, Code::Ack as i32, "{reply:?}");
    };
    for (code, payload) in requests {
        if unanswered == window {
            receive(client);
            unanswered -= 1;
        }
        let correlation_id = client.next_correlation_id();
        client
            .send(&Message {
                code: code as i32,
                correlation_id: Some(correlation_id),
                payload: Some(payload),
            })
            .unwrap();
        unanswered += 1;
    }
    for _ in 0..unanswered {
        receive(client);
    }
    started.elapsed()
}
