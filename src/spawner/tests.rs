//! A real `Spawner` on a thread, driven through its channels, with real
//! children.
//!
//! Every test that runs a spawner holds `PROCESS_TESTS` for its whole run:
//! the spawner reaps with `waitpid(-1)`, which takes any exited child of
//! the test process, so two spawners running at once (tests run in
//! parallel threads of one process) would steal each other's exits.
//! Tests elsewhere that run a spawner take the same lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};

use super::*;
use crate::trace::Hop;
use ms::output::Kind;

/// Held by every test that runs a spawner, here or in another module (the
/// daemon's link tests).
pub(crate) static PROCESS_TESTS: Mutex<()> = Mutex::new(());

/// How long anything a test waits for may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(20);

const SIGTERM: i32 = 15;

struct Harness {
    to_spawner: WakingSender<ms::Message>,
    from_spawner: Receiver<ms::Message>,
    daemon_to_spawner: WakingSender<ds::Message>,
    spawner_to_daemon: Receiver<ds::Message>,
    /// Taken when the test waits for the run to end.
    thread: Option<JoinHandle<Result<(), SpawnerError>>>,
    tracer: Tracer,
    next_id: u32,
    /// Messages that arrived while the test waited for another one.
    exits: Vec<ms::ProcessExited>,
    logs: Vec<ms::LogMessage>,
    /// Started children not yet seen exiting, killed if a test fails.
    running: Vec<u32>,
    /// What its first message said its record holds.
    known: Vec<ms::known_processes::Process>,
    _one_spawner_at_a_time: MutexGuard<'static, ()>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_table_source(TableSource::FromLinks)
    }

    /// A spawner taking its table from `table_source`, sent the daemon's
    /// (empty) table first, as the daemon does in both modes.
    fn with_table_source(table_source: TableSource) -> Harness {
        let serial = PROCESS_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
        Harness::on_record(table_source, &temp_dir().join("spawner"), serial)
    }

    /// A spawner keeping its record in `record_dir`.
    fn on_record(
        table_source: TableSource,
        record_dir: &Path,
        serial: MutexGuard<'static, ()>,
    ) -> Harness {
        let inbox = SpawnerInbox::new().unwrap();
        let (to_spawner, from_manager) = inbox.channel(16);
        let (to_manager, from_spawner) = bounded(16);
        let (daemon_to_spawner, from_daemon) = inbox.channel(1);
        let (to_daemon, spawner_to_daemon) = bounded(1);
        let tracer = Tracer::new(64);
        let spawner = Spawner::new(
            SpawnerLinks {
                inbox,
                from_manager,
                to_manager,
                from_daemon,
                to_daemon,
                manager_socket: None,
            },
            tracer.clone(),
            table_source,
            record_dir,
        )
        .unwrap()
        .with_keeper(KeeperLaunch::Thread);
        let thread = thread::Builder::new()
            .name("sf-spawner-test".into())
            .spawn(move || spawner.run())
            .unwrap();
        let thread = Some(thread);
        daemon_to_spawner
            .send(ds::Message {
                code: ds::message::Code::ServiceTable as i32,
                correlation_id: None,
                payload: Some(ds::message::Payload::ServiceTable(
                    ds::ServiceTable::default(),
                )),
            })
            .unwrap();
        Harness {
            to_spawner,
            from_spawner,
            daemon_to_spawner,
            spawner_to_daemon,
            thread,
            tracer,
            next_id: 0,
            exits: Vec::new(),
            logs: Vec::new(),
            running: Vec::new(),
            known: Vec::new(),
            _one_spawner_at_a_time: serial,
        }
        .announced()
    }

    /// Takes the spawner's first message, what its record holds.
    fn announced(mut self) -> Harness {
        let first = self.next_message();
        match first.payload {
            Some(Payload::KnownProcesses(known)) => self.known = known.processes,
            other => panic!("the spawner's first message is not KnownProcesses: {other:?}"),
        }
        self
    }

    fn request(&mut self, code: Code, payload: Payload) -> String {
        self.next_id += 1;
        let id = format!("test:{}", self.next_id);
        self.to_spawner
            .send(ms::Message::new(code, Some(id.clone()), Some(payload)))
            .unwrap();
        id
    }

    /// The next message from the spawner.
    fn next_message(&mut self) -> ms::Message {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.from_spawner.recv_timeout(POLL) {
                Ok(message) => return message,
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(error) => panic!("no message from the spawner in {DEADLINE:?}: {error}"),
            }
        }
    }

    /// The reply carrying `id`, keeping other messages for later.
    fn reply_to(&mut self, id: &str) -> ms::Message {
        loop {
            let message = self.next_message();
            if message.correlation_id.as_deref() == Some(id)
                && message.code != Code::LogMessage as i32
            {
                return message;
            }
            self.keep(message);
        }
    }

    fn keep(&mut self, message: ms::Message) {
        match message.payload {
            Some(Payload::ProcessExited(exited)) => {
                self.running.retain(|&pid| pid != exited.pid);
                self.exits.push(exited);
            }
            Some(Payload::LogMessage(log)) => self.logs.push(log),
            // Sent once at the start; the tables here name no node, so
            // these spawners have no cgroups.
            Some(Payload::CgroupStatus(_)) => {}
            other => panic!("unexpected message from the spawner: {other:?}"),
        }
    }

    /// Sends the manager's table of `services`, in order with requests.
    fn set_table(&mut self, services: Vec<ds::service_table::Service>) {
        self.send_table(ds::ServiceTable {
            services,
            log_dir: None,
            ..Default::default()
        });
    }

    /// Sends the manager's `table`, in order with requests.
    fn send_table(&mut self, table: ds::ServiceTable) {
        let table = Payload::ServiceTable(table);
        self.to_spawner
            .send(ms::Message::new(Code::ServiceTable, None, Some(table)))
            .unwrap();
    }

    /// Starts `request` after a table that allows it.
    fn start(&mut self, request: ms::StartProcess) -> ms::Message {
        self.set_table(vec![allowing(&request)]);
        self.start_as_is(request)
    }

    /// Starts `request` under whatever table the spawner has.
    fn start_as_is(&mut self, request: ms::StartProcess) -> ms::Message {
        let id = self.request(Code::StartProcess, Payload::StartProcess(request));
        let reply = self.reply_to(&id);
        if let Some(Payload::ProcessStarted(started)) = &reply.payload {
            self.running.push(started.pid);
        }
        reply
    }

    fn start_ok(&mut self, request: ms::StartProcess) -> u32 {
        match self.start(request).payload {
            Some(Payload::ProcessStarted(started)) => {
                assert!(started.started_at_unix_ms > 0);
                started.pid
            }
            other => panic!("expected ProcessStarted, got {other:?}"),
        }
    }

    fn start_refused(&mut self, request: ms::StartProcess) -> String {
        match self.start(request).payload {
            Some(Payload::Error(error)) => error.reason,
            other => panic!("expected Error, got {other:?}"),
        }
    }

    fn signal(&mut self, pid: u32, signal: i32) -> ms::Message {
        let request = ms::SignalProcess {
            pid,
            signal,
            group: Some(true),
        };
        let id = self.request(Code::SignalProcess, Payload::SignalProcess(request));
        self.reply_to(&id)
    }

    fn exit_of(&mut self, pid: u32) -> ms::ProcessExited {
        loop {
            if let Some(exited) = self.exits.iter().find(|exited| exited.pid == pid) {
                return *exited;
            }
            let message = self.next_message();
            self.keep(message);
        }
    }

    fn shutdown(mut self) -> (ds::Message, Result<(), SpawnerError>, Tracer) {
        let order = ds::Message {
            code: ds::message::Code::Shutdown as i32,
            correlation_id: Some("test:shutdown".into()),
            payload: None,
        };
        self.daemon_to_spawner.send(order).unwrap();
        let ack = self.spawner_to_daemon.recv_timeout(DEADLINE).unwrap();
        let tracer = self.tracer.clone();
        let result = self.thread_result();
        (ack, result, tracer)
    }

    fn thread_result(&mut self) -> Result<(), SpawnerError> {
        let thread = self.thread.take().unwrap();
        poll_until("the spawner to end", || thread.is_finished());
        thread.join().unwrap()
    }
}

/// Kills what a failing test left running, so no sleeper outlives it, and
/// ends the spawner before the next test may start one: it reaps on every
/// SIGCHLD, so a spawner left running would take the next one's exits.
impl Drop for Harness {
    fn drop(&mut self) {
        for &pid in &self.running {
            let _ = sys::kill(-(pid as i32), 9);
        }
        // Its sends to a full channel fail once the receiver is gone, so
        // it comes round to see its daemon channel closed.
        drop(std::mem::replace(&mut self.from_spawner, bounded(1).1));
        let (closed, _) = SpawnerInbox::new().unwrap().channel(1);
        drop(std::mem::replace(&mut self.daemon_to_spawner, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn command(argv: &[&str]) -> ms::StartProcess {
    ms::StartProcess {
        command: argv.iter().map(|arg| arg.to_string()).collect(),
        service_id: Some("test".into()),
        instance: Some(0),
        ..Default::default()
    }
}

/// The table entry that lets `request` start.
fn allowing(request: &ms::StartProcess) -> ds::service_table::Service {
    ds::service_table::Service {
        id: request.service_id.clone().unwrap_or_default(),
        command: request.command.clone(),
        user: request.user_name.clone(),
        group: request.group_name.clone(),
        work_dir: request.work_dir.clone(),
        checks: Vec::new(),
        environment: request
            .environment
            .iter()
            .map(|item| ds::service_table::EnvItem {
                name: item.name.clone(),
                value: item.value.clone(),
            })
            .collect(),
        stdout: request.stdout.as_ref().map(configured_as),
        stderr: request.stderr.as_ref().map(configured_as),
        instances: Some(request.instance.unwrap_or_default() + 1),
        log_max_bytes: rotation(request, |output| output.rotate_bytes),
        log_keep: rotation(request, |output| output.keep),
        ready_fd: request.ready_fd,
        ..Default::default()
    }
}

/// What a FILE output of `request` says about rotation.
fn rotation<T>(request: &ms::StartProcess, field: impl Fn(&ms::Output) -> Option<T>) -> Option<T> {
    [&request.stdout, &request.stderr]
        .into_iter()
        .flatten()
        .filter(|output| output.kind == Kind::File as i32)
        .find_map(field)
}

/// The table output that allows `output` (a file as an absolute path).
fn configured_as(output: &ms::Output) -> ds::service_table::Output {
    let kind = match Kind::try_from(output.kind).unwrap() {
        Kind::File => table_output::Kind::Path,
        Kind::Null => table_output::Kind::Null,
        Kind::Inherit => table_output::Kind::Inherit,
        Kind::Node => table_output::Kind::Node,
    };
    ds::service_table::Output {
        kind: kind as i32,
        path: output.path.clone(),
    }
}

fn file_output(path: &Path, rotate_bytes: Option<u64>, keep: Option<u32>) -> Option<ms::Output> {
    Some(ms::Output {
        kind: Kind::File as i32,
        path: Some(path.display().to_string()),
        rotate_bytes,
        keep,
    })
}

fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sf-spawner-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Field 6 (session id) of /proc/<pid>/stat; the command name before it
/// may hold spaces and parentheses, so fields are counted after its `)`.
fn session_of(pid: u32) -> i64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap()
}

fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(POLL);
    }
}

#[test]
fn a_child_leads_its_own_session_and_dies_by_the_signal_sent() {
    let mut harness = Harness::new();
    let pid = harness.start_ok(command(&["/bin/sleep", "30"]));
    assert_eq!(session_of(pid), i64::from(pid));
    let ack = harness.signal(pid, SIGTERM);
    assert_eq!(ack.code, Code::Ack as i32, "{ack:?}");
    let exited = harness.exit_of(pid);
    assert_eq!(
        (exited.exit_code, exited.exit_signal),
        (None, Some(SIGTERM))
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} left a zombie"
    );

    let table = harness.tracer.lock();
    let (_, hops) = table.get("test:1").unwrap();
    let sent: Vec<_> = hops
        .iter()
        .map(|hop: &Hop| (hop.from, hop.to, hop.code))
        .collect();
    assert_eq!(sent, [(Role::Spawner, Role::Manager, "ProcessStarted")]);
}

#[test]
fn exit_codes_are_reported() {
    let mut harness = Harness::new();
    let pid = harness.start_ok(command(&["/bin/sh", "-c", "exit 3"]));
    let exited = harness.exit_of(pid);
    assert_eq!((exited.exit_code, exited.exit_signal), (Some(3), None));
}

#[test]
fn refused_starts_name_what_failed() {
    let mut harness = Harness::new();
    let reason = harness.start_refused(command(&["/nonexistent/sf-nope"]));
    assert!(
        reason.starts_with("exec /nonexistent/sf-nope: No such file or directory"),
        "{reason}"
    );
    let mut unknown_user = command(&["/bin/true"]);
    unknown_user.user_name = Some("sf-nosuch".into());
    assert_eq!(
        harness.start_refused(unknown_user),
        "user `sf-nosuch` does not exist"
    );
    let mut missing_dir = command(&["/bin/true"]);
    missing_dir.work_dir = Some("/nonexistent/sf-dir".into());
    assert!(
        harness
            .start_refused(missing_dir)
            .starts_with("chdir to work dir /nonexistent/sf-dir: /nonexistent does not exist")
    );
    assert!(harness.start_refused(command(&[])).contains("empty"));
    assert_eq!(harness.logs.len(), 4);
    assert!(
        harness.logs[0].text.contains("refused"),
        "{:?}",
        harness.logs[0]
    );
}

#[test]
fn environment_work_dir_and_file_output_are_applied() {
    let mut harness = Harness::new();
    let dir = temp_dir();
    let work = dir.join("work");
    fs::create_dir(&work).unwrap();
    let out = dir.join("out.log");
    let mut request = command(&[
        "/bin/sh",
        "-c",
        "echo \"$FOO|$HOME|$PATH\"; pwd; echo err >&2",
    ]);
    request.environment = vec![ms::start_process::EnvItem {
        name: Some("FOO".into()),
        value: Some("bar".into()),
    }];
    request.work_dir = Some(work.display().to_string());
    request.stdout = file_output(&out, None, None);
    request.stderr = Some(ms::Output {
        kind: Kind::Null as i32,
        ..Default::default()
    });
    let pid = harness.start_ok(request);
    assert_eq!(harness.exit_of(pid).exit_code, Some(0));
    // HOME is the user's, as systemd sets it (issue 13).
    let home = crate::sys::lookup_account(crate::sys::effective_uid())
        .unwrap()
        .map(|account| account.home)
        .unwrap_or_default();
    let expected = format!(
        "bar|{home}|{}\n{}\n",
        launch::BASE_PATH,
        work.canonicalize().unwrap().display()
    );
    poll_until("the output in its file", || captured(&out) == expected);
    fs::remove_dir_all(dir).unwrap();
}

/// A captured log file's lines without their timestamps, "" while it is
/// missing; each line must have a timestamp.
fn captured(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (time, rest) = line.split_once(' ').unwrap();
            assert!(crate::trace::parse_utc_time(time).is_some(), "{line:?}");
            format!("{rest}\n")
        })
        .collect()
}

#[test]
fn an_output_directory_is_never_created() {
    let mut harness = Harness::new();
    let dir = temp_dir();
    let mut request = command(&["/bin/true"]);
    request.stdout = file_output(&dir.join("missing/out.log"), None, None);
    let reason = harness.start_refused(request);
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(!dir.join("missing").exists());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_large_output_file_is_rotated_while_its_child_runs() {
    let mut harness = Harness::new();
    let dir = temp_dir();
    let out = dir.join("out.log");
    let script = "i=0; while [ $i -lt 300 ]; do echo \"line $i of the rotation test\"; \
                  i=$((i+1)); done; exec /bin/sleep 30";
    let mut request = command(&["/bin/sh", "-c", script]);
    request.stdout = file_output(&out, Some(1000), Some(2));
    let pid = harness.start_ok(request);
    let rotated = dir.join("out.log.2");
    poll_until("the output to be rotated twice", || {
        rotated.exists() && captured(&out).contains("line 299 ")
    });
    let mut lines = String::new();
    for name in ["out.log.2", "out.log.1", "out.log"] {
        assert!(fs::metadata(dir.join(name)).unwrap().len() <= 1000);
        lines.push_str(&captured(&dir.join(name)));
    }
    let numbers: Vec<u32> = lines
        .lines()
        .map(|line| line.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    let first = numbers[0];
    assert_eq!(numbers, (first..300).collect::<Vec<_>>());
    assert!(!dir.join("out.log.3").exists());
    harness.signal(pid, SIGTERM);
    assert_eq!(harness.exit_of(pid).exit_signal, Some(SIGTERM));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn strangers_are_never_signalled() {
    let mut harness = Harness::new();
    for pid in [1, 0, u32::MAX] {
        match harness.signal(pid, SIGTERM).payload {
            Some(Payload::Error(error)) => assert_eq!(
                error.reason,
                format!("pid {pid} is not a live child of the spawner")
            ),
            other => panic!("signal to pid {pid} was not refused: {other:?}"),
        }
    }
}

#[test]
fn a_service_user_is_applied_when_root() {
    if sys::effective_uid() != 0 {
        eprintln!("skipped: changing users needs root");
        return;
    }
    let mut harness = Harness::new();
    let mut request = command(&["/bin/sleep", "30"]);
    request.user_name = Some("nobody".into());
    let pid = harness.start_ok(request);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let nobody = sys::lookup_user("nobody").unwrap().unwrap();
    let uid = nobody.uid.to_string();
    let gid = nobody.gid.to_string();
    assert_eq!(field("Uid:"), [uid.as_str(); 4]);
    assert_eq!(field("Gid:"), [gid.as_str(); 4]);
    assert!(field("Groups:").is_empty(), "{status}");
    harness.signal(pid, SIGTERM);
    harness.exit_of(pid);
}

#[test]
fn shutdown_is_acknowledged_and_ends_the_run_even_after_the_manager() {
    let mut harness = Harness::new();
    let pid = harness.start_ok(command(&["/bin/sh", "-c", "exit 0"]));
    harness.exit_of(pid);
    let (closed_sender, _) = SpawnerInbox::new().unwrap().channel(1);
    harness.to_spawner = closed_sender;
    let (ack, result, tracer) = harness.shutdown();
    assert_eq!(ack.code, ds::message::Code::Ack as i32);
    assert_eq!(ack.correlation_id.as_deref(), Some("test:shutdown"));
    result.unwrap();
    let table = tracer.lock();
    let (_, hops) = table.get("test:shutdown").unwrap();
    assert_eq!(
        (hops[0].from, hops[0].to, hops[0].code),
        (Role::Spawner, Role::Daemon, "Ack")
    );
}

#[test]
fn a_closed_daemon_channel_ends_the_run_with_an_error() {
    let mut harness = Harness::new();
    let (closed_sender, _) = SpawnerInbox::new().unwrap().channel(1);
    harness.daemon_to_spawner = closed_sender;
    let error = harness.thread_result().unwrap_err();
    assert!(
        matches!(error, SpawnerError::DaemonChannelClosed { .. }),
        "{error}"
    );
}

#[test]
fn starts_the_service_table_does_not_allow_are_refused() {
    let mut harness = Harness::new();
    let allowed = command(&["/bin/sleep", "30"]);
    harness.set_table(vec![allowing(&allowed)]);
    let mut other_user = allowed.clone();
    other_user.user_name = Some("root".into());
    let mut other_dir = allowed.clone();
    other_dir.work_dir = Some("/".into());
    let mut unknown = command(&["/bin/sh", "-c", "id"]);
    unknown.service_id = Some("forged".into());
    let cases = [
        (
            command(&["/bin/sh", "-c", "id"]),
            "its command is not the one",
        ),
        (other_user, "its user is not the one"),
        (other_dir, "its work_dir is not the one"),
        (unknown, "service `forged` is not in the service table"),
    ];
    for (request, expected) in cases {
        match harness.start_as_is(request).payload {
            Some(Payload::Error(error)) => assert!(error.reason.contains(expected), "{error:?}"),
            other => panic!("a start outside the table was not refused: {other:?}"),
        }
    }
    let pid = match harness.start_as_is(allowed).payload {
        Some(Payload::ProcessStarted(started)) => started.pid,
        other => panic!("the allowed start failed: {other:?}"),
    };
    harness.running.push(pid);
    harness.signal(pid, SIGTERM);
    harness.exit_of(pid);
}

/// Issue 13: a table entry with `{instance}` allows each instance only
/// its own expansion; a start of instance 1 with instance 0's settings is
/// refused.
#[test]
fn an_instance_may_start_only_with_its_own_expansion_of_the_table() {
    let mut harness = Harness::new();
    let template = command(&["/bin/sleep", "3{instance}"]);
    let mut entry = allowing(&template);
    entry.work_dir = Some("/tmp/{id}-{instance}".into());
    // Two instances, so that instance 1 is in range (issue 11's bound).
    entry.instances = Some(2);
    harness.set_table(vec![entry]);
    let mut borrowed = command(&["/bin/sleep", "30"]);
    borrowed.instance = Some(1);
    match harness.start_as_is(borrowed).payload {
        Some(Payload::Error(error)) => {
            assert!(
                error.reason.contains("its command is not the one"),
                "{error:?}"
            );
        }
        other => panic!("instance 1 started with instance 0's command: {other:?}"),
    }
    let mut wrong_dir = command(&["/bin/sleep", "30"]);
    wrong_dir.work_dir = Some("/tmp/test-1".into());
    match harness.start_as_is(wrong_dir).payload {
        Some(Payload::Error(error)) => {
            assert!(
                error.reason.contains("its work_dir is not the one"),
                "{error:?}"
            );
        }
        other => panic!("instance 0 started in instance 1's dir: {other:?}"),
    }
    let mut literal = command(&["/bin/sleep", "3{instance}"]);
    literal.instance = Some(0);
    match harness.start_as_is(literal).payload {
        Some(Payload::Error(error)) => {
            assert!(
                error.reason.contains("its command is not the one"),
                "{error:?}"
            );
        }
        other => panic!("the unexpanded template was allowed: {other:?}"),
    }
}

/// Issue 11: a spawner adopts only what its own record holds. A process
/// it started lives on past its end (as after a crash of the node); the
/// next spawner on the same record announces it, adopts it when asked with
/// its start time, signals it and reports its end without status; a
/// stranger with its own session is refused, whatever the request says.
#[test]
fn only_processes_of_its_own_record_are_adopted_and_signalled() {
    let serial = PROCESS_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
    let record_dir = temp_dir().join("spawner");
    let mut first = Harness::on_record(TableSource::FromLinks, &record_dir, serial);
    assert!(first.known.is_empty());
    let pid = first.start_ok(command(&["/bin/sleep", "30"]));
    // It outlives this spawner, as services outlive a crashed node.
    first.running.clear();
    let (_, result, _) = first.shutdown();
    result.unwrap();

    let serial = PROCESS_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut harness = Harness::on_record(TableSource::FromLinks, &record_dir, serial);
    harness.running.push(pid);
    let start_time = sys::process_start_time(pid).unwrap();
    assert_eq!(
        harness
            .known
            .iter()
            .map(|p| (p.pid, p.start_time, p.service_id.as_str(), p.instance))
            .collect::<Vec<_>>(),
        [(pid, start_time, "test", 0)]
    );
    let mut sleeper = std::process::Command::new("sleep");
    sleeper.arg("30");
    #[expect(clippy::zombie_processes, reason = "reaped by the spawner under test")]
    let stranger = sys::start_in_new_session(&mut sleeper).spawn().unwrap();
    let stranger_pid = stranger.id();
    harness.running.push(stranger_pid);
    let adopt = |harness: &mut Harness, pid, start_time, service: &str| {
        let request = ms::AdoptProcess {
            pid,
            start_time,
            service_id: Some(service.into()),
            instance: Some(0),
        };
        let id = harness.request(Code::AdoptProcess, Payload::AdoptProcess(request));
        harness.reply_to(&id)
    };
    let refused = |reply: ms::Message| match reply.payload {
        Some(Payload::Error(error)) => error.reason,
        other => panic!("expected Error, got {other:?}"),
    };
    let stranger_start = sys::process_start_time(stranger_pid).unwrap();
    let reason = refused(adopt(&mut harness, stranger_pid, stranger_start, "test"));
    assert!(
        reason.contains("is not a running process the spawner's record holds"),
        "{reason}"
    );
    assert!(refused(harness.signal(stranger_pid, SIGTERM)).contains("not a live child"));
    refused(adopt(&mut harness, pid, start_time + 1, "test"));
    refused(adopt(&mut harness, pid, start_time, "other"));
    let adopted = adopt(&mut harness, pid, start_time, "test");
    assert_eq!(adopted.code, Code::Ack as i32, "{adopted:?}");
    assert_eq!(harness.signal(pid, SIGTERM).code, Code::Ack as i32);
    let exited = harness.exit_of(pid);
    assert_eq!((exited.exit_code, exited.exit_signal), (None, None));
    refused(adopt(&mut harness, pid, start_time, "test"));
    assert!(is_alive(stranger_pid), "the stranger was left alone");
    let _ = sys::kill(stranger_pid as i32, 9);
    harness.shutdown().1.unwrap();
    let _ = fs::remove_dir_all(record_dir.parent().unwrap());
}

#[test]
fn an_adopted_process_that_ends_by_itself_is_reported_through_its_pidfd() {
    let serial = PROCESS_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
    let record_dir = temp_dir().join("spawner");
    let mut first = Harness::on_record(TableSource::FromLinks, &record_dir, serial);
    let pid = first.start_ok(command(&["/bin/sleep", "30"]));
    first.running.clear();
    first.shutdown().1.unwrap();

    let serial = PROCESS_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut harness = Harness::on_record(TableSource::FromLinks, &record_dir, serial);
    harness.running.push(pid);
    assert_eq!(harness.known.len(), 1, "{:?}", harness.known);
    // Killed by someone else: no request about it reaches the spawner,
    // and being no child of this spawner's, it is not reaped as one.
    sys::kill(pid as i32, 9).unwrap();
    let exited = harness.exit_of(pid);
    assert_eq!((exited.exit_code, exited.exit_signal), (None, None));
    // Gone from its record too: a new spawner would not adopt it.
    harness.shutdown().1.unwrap();
    let serial = PROCESS_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
    let third = Harness::on_record(TableSource::FromLinks, &record_dir, serial);
    assert!(third.known.is_empty(), "{:?}", third.known);
    third.shutdown().1.unwrap();
    let _ = fs::remove_dir_all(record_dir.parent().unwrap());
}

#[test]
fn a_readiness_pipe_is_read_at_each_write_and_a_closed_one_says_nothing() {
    let mut harness = Harness::new();
    // Closes its readiness fd without a newline, and runs on.
    let mut request = command(&["/bin/sh", "-c", "exec 3>&-; exec sleep 30"]);
    request.ready_fd = Some(3);
    let closed = harness.start_ok(request);
    // Half a line, then the rest a while later: two writes, two wake-ups.
    let mut request = command(&[
        "/bin/sh",
        "-c",
        "printf partial >&3; sleep 0.2; echo >&3; exec sleep 30",
    ]);
    request.service_id = Some("other".into());
    request.ready_fd = Some(3);
    let ready = harness.start_ok(request);
    let message = harness.next_message();
    assert_eq!(
        message.payload,
        Some(Payload::ProcessReady(ms::ProcessReady { pid: ready })),
        "the closed pipe said nothing, the other was read to its newline"
    );
    for pid in [closed, ready] {
        harness.signal(pid, SIGTERM);
        harness.exit_of(pid);
    }
}

/// Whether `pid` runs (and is not a zombie).
fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn a_newline_on_the_readiness_fd_is_reported_before_the_end() {
    let mut harness = Harness::new();
    let mut request = command(&["/bin/sh", "-c", "sleep 0.2; echo >&3; exec sleep 30"]);
    request.ready_fd = Some(3);
    let pid = harness.start_ok(request);
    let ready = harness.next_message();
    assert_eq!(
        ready.payload,
        Some(Payload::ProcessReady(ms::ProcessReady { pid }))
    );
    harness.signal(pid, SIGTERM);
    harness.exit_of(pid);

    // Ready and gone at once: the newline still counts, and comes first.
    let mut request = command(&["/bin/sh", "-c", "echo >&7"]);
    request.ready_fd = Some(7);
    let pid = harness.start_ok(request);
    let ready = harness.next_message();
    assert_eq!(
        ready.payload,
        Some(Payload::ProcessReady(ms::ProcessReady { pid }))
    );
    assert_eq!(harness.exit_of(pid).exit_code, Some(0));

    let mut request = command(&["/bin/true"]);
    request.ready_fd = Some(1);
    assert!(
        harness
            .start_refused(request)
            .contains("would replace the child's stdin, stdout or stderr")
    );
}

#[test]
fn a_check_may_run_only_its_services_check_commands() {
    let mut harness = Harness::new();
    let service = command(&["/bin/sleep", "30"]);
    let mut entry = allowing(&service);
    entry.checks = vec![ds::service_table::CheckCommand {
        command: vec!["/bin/true".into()],
    }];
    harness.set_table(vec![entry]);
    let mut check = service.clone();
    check.command = vec!["/bin/true".into()];
    check.check = Some("health".into());
    let null = Some(ms::Output {
        kind: Kind::Null as i32,
        ..Default::default()
    });
    check.stdout.clone_from(&null);
    check.stderr = null;
    let mut forged = check.clone();
    forged.command = vec!["/bin/sh".into(), "-c".into(), "id".into()];
    let mut unmarked = check.clone();
    unmarked.check = None;
    for request in [forged, unmarked] {
        match harness.start_as_is(request).payload {
            Some(Payload::Error(error)) => {
                assert!(
                    error.reason.contains("its command is not the one"),
                    "{error:?}"
                );
            }
            other => panic!("a check outside the table was not refused: {other:?}"),
        }
    }
    let pid = match harness.start_as_is(check).payload {
        Some(Payload::ProcessStarted(started)) => started.pid,
        other => panic!("the allowed check failed: {other:?}"),
    };
    assert_eq!(harness.exit_of(pid).exit_code, Some(0));
}

#[test]
fn outputs_and_environment_the_service_table_does_not_allow_are_refused() {
    let mut harness = Harness::new();
    let log_dir = temp_dir();
    let env = |name: &str, value: &str| ms::start_process::EnvItem {
        name: Some(name.into()),
        value: Some(value.into()),
    };
    let mut genuine = command(&["/bin/sh", "-c", "echo \"$A$B\"; echo err >&2"]);
    genuine.instance = Some(2);
    genuine.environment = vec![env("A", "1"), env("B", "2")];
    genuine.stdout = file_output(&log_dir.join("test.2.stdout.log"), None, None);
    genuine.stderr = file_output(&log_dir.join("test.err"), None, None);
    let mut entry = allowing(&genuine);
    entry.environment.reverse();
    entry.stdout = Some(ds::service_table::Output {
        kind: table_output::Kind::Log as i32,
        path: None,
    });
    entry.stderr = Some(ds::service_table::Output {
        kind: table_output::Kind::Path as i32,
        path: Some("test.err".into()),
    });
    entry.checks = vec![ds::service_table::CheckCommand {
        command: vec!["/bin/true".into()],
    }];
    harness.send_table(ds::ServiceTable {
        services: vec![entry],
        log_dir: Some(log_dir.display().to_string()),
        ..Default::default()
    });

    let mut forged_path = genuine.clone();
    forged_path.stdout = file_output(&log_dir.join("passwd"), None, None);
    let mut other_instance = genuine.clone();
    other_instance.instance = Some(1);
    let mut inherited = genuine.clone();
    inherited.stderr = None;
    let mut preload = genuine.clone();
    preload.environment.push(env("LD_PRELOAD", "/tmp/evil.so"));
    let mut changed_value = genuine.clone();
    changed_value.environment[1] = env("B", "3");
    let mut missing = genuine.clone();
    missing.environment.pop();
    let mut check_to_file = genuine.clone();
    check_to_file.command = vec!["/bin/true".into()];
    check_to_file.check = Some("health".into());
    let null = Some(ms::Output {
        kind: Kind::Null as i32,
        ..Default::default()
    });
    let mut check = check_to_file.clone();
    check.stdout.clone_from(&null);
    check.stderr.clone_from(&null);
    let mut check_with_env = check.clone();
    check_with_env
        .environment
        .push(env("LD_PRELOAD", "/tmp/evil.so"));
    let cases = [
        (forged_path, "its stdout is not the one"),
        (other_instance, "its stdout is not the one"),
        (inherited, "its stderr is not the one"),
        (preload, "its environment is not the one"),
        (changed_value, "its environment is not the one"),
        (missing, "its environment is not the one"),
        (check_to_file, "its stdout is not the one"),
        (check_with_env, "its environment is not the one"),
    ];
    for (request, expected) in cases {
        match harness.start_as_is(request).payload {
            Some(Payload::Error(error)) => assert!(error.reason.contains(expected), "{error:?}"),
            other => panic!("a start outside the table was not refused: {other:?}"),
        }
    }
    assert!(!log_dir.join("passwd").exists());

    let pid = match harness.start_as_is(genuine).payload {
        Some(Payload::ProcessStarted(started)) => started.pid,
        other => panic!("the genuine start failed: {other:?}"),
    };
    assert_eq!(harness.exit_of(pid).exit_code, Some(0));
    let read = |name: &str| captured(&log_dir.join(name));
    poll_until("both outputs", || {
        read("test.2.stdout.log") == "12\n" && read("test.err") == "err\n"
    });
    let pid = match harness.start_as_is(check).payload {
        Some(Payload::ProcessStarted(started)) => started.pid,
        other => panic!("the genuine check failed: {other:?}"),
    };
    assert_eq!(harness.exit_of(pid).exit_code, Some(0));
    fs::remove_dir_all(log_dir).unwrap();
}

/// Issue 7: as the root spawner process, the spawner's table is its own
/// reading of the configuration. A table a compromised node sends changes
/// nothing; the manager's reloaded table only makes it read the conf dir
/// again, and an invalid conf dir leaves the table as it was.
#[test]
fn a_spawner_reading_its_own_configuration_ignores_the_tables_it_is_sent() {
    let conf_dir = temp_dir();
    let service_file = conf_dir.join("services/app.toml");
    fs::create_dir_all(service_file.parent().unwrap()).unwrap();
    let write_service = |command: &str| {
        let text = format!("command = {command}\nstdout = \"null\"\nstderr = \"null\"\n");
        fs::write(&service_file, text).unwrap();
    };
    write_service(r#"["/bin/true"]"#);
    let config = conf::Config::load(&conf_dir).unwrap();
    let mut harness = Harness::with_table_source(TableSource::OwnConfig {
        config: Box::new(config),
        build_table: crate::manager::service_table,
    });
    let app = |argv: &[&str]| {
        let null = Some(ms::Output {
            kind: Kind::Null as i32,
            ..Default::default()
        });
        ms::StartProcess {
            service_id: Some("app".into()),
            stdout: null.clone(),
            stderr: null,
            ..command(argv)
        }
    };
    let shell = app(&["/bin/sh", "-c", "exit 0"]);
    let assert_refused = |harness: &mut Harness, request: &ms::StartProcess| match harness
        .start_as_is(request.clone())
        .payload
    {
        Some(Payload::Error(error)) => assert_eq!(
            error.reason,
            "its command is not the one the service table gives `app`"
        ),
        other => panic!("{:?} was not refused: {other:?}", request.command),
    };
    let assert_started = |harness: &mut Harness, request: &ms::StartProcess| match harness
        .start_as_is(request.clone())
        .payload
    {
        Some(Payload::ProcessStarted(started)) => {
            harness.exit_of(started.pid);
        }
        other => panic!("{:?} was not started: {other:?}", request.command),
    };

    assert_started(&mut harness, &app(&["/bin/true"]));
    let forged = || ds::ServiceTable {
        services: vec![allowing(&shell)],
        log_dir: None,
        ..Default::default()
    };
    harness
        .daemon_to_spawner
        .send(ds::Message {
            code: ds::message::Code::ServiceTable as i32,
            correlation_id: None,
            payload: Some(ds::message::Payload::ServiceTable(forged())),
        })
        .unwrap();
    // Taken off the channel, so handled before any request sent after.
    poll_until("the spawner to take the daemon's table", || {
        harness.daemon_to_spawner.is_empty()
    });
    assert_refused(&mut harness, &shell);
    harness.send_table(forged());
    assert_refused(&mut harness, &shell);
    assert_started(&mut harness, &app(&["/bin/true"]));

    write_service(r#"["/bin/sh", "-c", "exit 0"]"#);
    harness.send_table(ds::ServiceTable::default());
    assert_started(&mut harness, &shell);
    assert_refused(&mut harness, &app(&["/bin/true"]));

    fs::write(&service_file, "command = 7\n").unwrap();
    harness.send_table(forged());
    assert_started(&mut harness, &shell);

    let (ack, result, _) = harness.shutdown();
    assert_eq!(ack.code, ds::message::Code::Ack as i32);
    result.unwrap();
    fs::remove_dir_all(conf_dir).unwrap();
}

/// Issue 11: the child writes its own stat line to its start's intent
/// between fork and exec, and the program it execs holds no descriptor of
/// the spawner's record: a service cannot write what the spawner trusts.
#[test]
fn a_service_holds_no_descriptor_of_the_spawners_record() {
    let serial = PROCESS_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = temp_dir();
    let record_dir = dir.join("spawner");
    let mut harness = Harness::on_record(TableSource::FromLinks, &record_dir, serial);
    let out = dir.join("fds.txt");
    let request = ms::StartProcess {
        stdout: file_output(&out, None, None),
        ..command(&[
            "/bin/sh",
            "-c",
            "for fd in /proc/$$/fd/*; do readlink $fd; done; echo done",
        ])
    };
    let pid = harness.start_ok(request);
    assert_eq!(harness.exit_of(pid).exit_code, Some(0));
    // The keeper writes the last lines after the child has ended.
    poll_until("the child's last line on disk", || {
        fs::read_to_string(&out).is_ok_and(|fds| fds.ends_with("done\n"))
    });
    let fds = fs::read_to_string(&out).unwrap();
    let record = record_dir.display().to_string();
    assert!(
        !fds.contains(&record),
        "the service holds the record's files: {fds}"
    );
    harness.shutdown().1.unwrap();
    fs::remove_dir_all(dir).unwrap();
}

/// However many processes the record holds, each announcement stays well
/// under the frame limit, and the manager knows which is the last.
#[test]
fn a_long_list_of_known_processes_comes_in_pieces_under_the_frame_limit() {
    use prost::Message as _;
    let processes: Vec<_> = (0..10_000)
        .map(|pid| ms::known_processes::Process {
            pid,
            start_time: u64::MAX,
            service_id: "a-service-with-a-long-id-of-forty-bytes".into(),
            instance: 999,
        })
        .collect();
    let pieces = known_pieces(processes);
    let sizes: Vec<usize> = pieces.iter().map(|p| p.processes.len()).collect();
    assert_eq!(sizes, [4096, 4096, 1808]);
    let more: Vec<_> = pieces.iter().map(|p| p.more).collect();
    assert_eq!(more, [Some(true), Some(true), None]);
    assert!(pieces.iter().all(|p| p.encoded_len() < 512 * 1024));
    let none = known_pieces(Vec::new());
    assert_eq!((none.len(), none[0].more), (1, None));
}
