//! A compromised node (issue 11): the test plays the unprivileged node's
//! side of both spawner links against a real root spawner process (the
//! `snow-fox` binary started as `--spawner-process`, exactly as the node
//! starts it), forging every `manager_spawner` and `daemon_spawner`
//! message a node can send. Each forgery must be refused with a logged
//! reason, and the victims the test made (a root process, a root file)
//! must be untouched. A genuine start is carried out in the same run, so
//! the refusals are the checks at work, not a spawner that refuses all.
//! Every test needs root.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use snow_fox::sys;
use snow_fox::wire::proto::{daemon_spawner as ds, manager_spawner as ms};
use snow_fox::wire::{DEFAULT_MAX_FRAME, Envelope, FrameDecoder, decode_envelope, encode_frame};

use common::{DEADLINE, TempDir, Victim, wait_for};
use ms::message::{Code, Payload};

/// The content of the victim file, which no forgery may change.
const VICTIM_TEXT: &str = "root's own file\n";

/// A real spawner process and the test's ends of its links.
struct Spawner {
    child: Child,
    manager: UnixStream,
    daemon: UnixStream,
    decoder: FrameDecoder,
    log: std::path::PathBuf,
    next_id: u32,
}

/// `snow-fox --spawner-process` on the configuration in `dir`, logging to
/// `log`, given the far ends of `manager` and `daemon`, the test's ends.
fn spawner_command(dir: &Path, log: &Path, links: [&UnixStream; 2]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_snow-fox"));
    command
        .arg("--spawner-process")
        .arg("--conf")
        .arg(dir.join("conf"))
        .arg("--manager-fd")
        .arg(links[0].as_raw_fd().to_string())
        .arg("--daemon-fd")
        .arg(links[1].as_raw_fd().to_string())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(fs::File::create(log).unwrap());
    for link in links {
        sys::pass_fd(&mut command, link.as_fd(), link.as_raw_fd());
    }
    command
}

impl Spawner {
    /// Starts `snow-fox --spawner-process` on the configuration in `dir`.
    /// Its first message says what its record holds.
    fn start(dir: &Path) -> Spawner {
        let mut spawner = Spawner::start_after(dir, |_| {});
        let first = spawner.next();
        assert_eq!(first.code, Code::KnownProcesses as i32, "{first:?}");
        spawner
    }

    /// Starts it once `before` has had the manager link (say, written
    /// requests into it, then closed it).
    fn start_after(dir: &Path, before: impl FnOnce(&mut UnixStream)) -> Spawner {
        let (mut manager, spawner_manager) = UnixStream::pair().unwrap();
        let (daemon, spawner_daemon) = UnixStream::pair().unwrap();
        for link in [&manager, &daemon] {
            link.set_read_timeout(Some(DEADLINE)).unwrap();
        }
        before(&mut manager);
        let log = dir.join(format!("spawner-{}.log", std::process::id()));
        let child = spawner_command(dir, &log, [&spawner_manager, &spawner_daemon])
            .spawn()
            .unwrap();
        Spawner {
            child,
            manager,
            daemon,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            log,
            next_id: 0,
        }
    }

    fn send<M: Envelope>(socket: &mut UnixStream, message: &M) {
        let mut out = Vec::new();
        encode_frame(message, &mut out);
        socket.write_all(&out).unwrap();
    }

    /// The next message on the manager link.
    fn next(&mut self) -> ms::Message {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(body) = self.decoder.next_frame().unwrap() {
                return decode_envelope(body).unwrap();
            }
            let read = self.manager.read(&mut chunk).unwrap();
            assert!(read > 0, "the spawner closed the manager link");
            self.decoder.extend(&chunk[..read]);
        }
    }

    /// Sends a request and returns the reply that carries its id,
    /// skipping log messages and exits.
    fn ask(&mut self, code: Code, payload: Payload) -> ms::Message {
        self.next_id += 1;
        let id = format!("forged:{}", self.next_id);
        Spawner::send(
            &mut self.manager,
            &ms::Message::new(code, Some(id.clone()), Some(payload)),
        );
        loop {
            let message = self.next();
            if message.correlation_id.as_deref() == Some(id.as_str())
                && message.code != Code::LogMessage as i32
                && message.code != Code::ProcessExited as i32
            {
                return message;
            }
        }
    }

    /// The refusal's reason; fails the test if `reply` is not one.
    fn refused(reply: ms::Message, what: &str) -> String {
        match reply.payload {
            Some(Payload::Error(error)) => error.reason,
            other => panic!("{what} was not refused: {other:?}"),
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks for shutdown on the daemon link and waits for its Ack and the
    /// process's exit.
    fn shutdown(mut self) -> String {
        Spawner::send(
            &mut self.daemon,
            &ds::Message {
                code: ds::message::Code::Shutdown as i32,
                correlation_id: Some("forged:shutdown".into()),
                payload: None,
            },
        );
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut chunk = [0u8; 4096];
        let ack: ds::Message = loop {
            if let Some(body) = decoder.next_frame().unwrap() {
                break decode_envelope(body).unwrap();
            }
            let read = self.daemon.read(&mut chunk).unwrap();
            assert!(
                read > 0,
                "the spawner closed the daemon link: {}",
                self.log_text()
            );
            decoder.extend(&chunk[..read]);
        };
        assert_eq!(ack.code, ds::message::Code::Ack as i32);
        let status = wait_for("the spawner process to exit", || {
            self.child.try_wait().unwrap()
        });
        assert!(status.success(), "{status}: {}", self.log_text());
        self.log_text()
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration with one service, `app`: `/bin/sleep 300` as nobody,
/// output to its log files, rotating at 1 MiB keeping 3; and a root-owned
/// victim file beside it.
fn setup(label: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(label);
    let root = &dir.0;
    fs::create_dir_all(root.join("conf/services")).unwrap();
    fs::write(
        root.join("conf/node.toml"),
        format!(
            "state_dir = \"{}\"\nlog_dir = \"{}\"\n",
            root.join("state").display(),
            root.join("log").display()
        ),
    )
    .unwrap();
    fs::write(
        root.join("conf/services/app.toml"),
        "command = [\"/bin/sleep\", \"300\"]\nuser = \"nobody\"\nenv = { MODE = \"prod\" }\n",
    )
    .unwrap();
    let victim = root.join("victim");
    fs::write(&victim, VICTIM_TEXT).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    (dir, victim)
}

/// The genuine start of `app` instance `instance`, as the node sends it.
fn genuine(dir: &Path, instance: u32) -> ms::StartProcess {
    let log = |stream: &str| ms::Output {
        kind: ms::output::Kind::File as i32,
        path: Some(
            dir.join(format!("log/app.{instance}.{stream}.log"))
                .display()
                .to_string(),
        ),
        rotate_bytes: Some(1024 * 1024),
        keep: Some(3),
    };
    ms::StartProcess {
        environment: vec![ms::start_process::EnvItem {
            name: Some("MODE".into()),
            value: Some("prod".into()),
        }],
        user_name: Some("nobody".into()),
        command: vec!["/bin/sleep".into(), "300".into()],
        stdout: Some(log("stdout")),
        stderr: Some(log("stderr")),
        service_id: Some("app".into()),
        instance: Some(instance),
        ..Default::default()
    }
}

fn start(request: ms::StartProcess) -> Payload {
    Payload::StartProcess(request)
}

#[test]
#[ignore = "needs root"]
fn every_forged_request_is_refused_and_the_victims_are_untouched() {
    let (dir, victim_file) = setup("forged-requests");
    let mut victim = Victim::start();
    let victim_start = sys::process_start_time(victim.pid()).unwrap();
    let mut spawner = Spawner::start(&dir.0);
    let base = || genuine(&dir.0, 0);
    let victim_path = victim_file.display().to_string();
    let to_victim = Some(ms::Output {
        kind: ms::output::Kind::File as i32,
        path: Some(victim_path.clone()),
        rotate_bytes: Some(1024 * 1024),
        keep: Some(3),
    });
    let shell = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("echo pwned > {victim_path}; kill -9 {}", victim.pid()),
    ];
    let forged_starts: Vec<(&str, ms::StartProcess)> = vec![
        (
            "another command",
            ms::StartProcess {
                command: shell.clone(),
                ..base()
            },
        ),
        (
            "root instead of nobody",
            ms::StartProcess {
                user_name: None,
                ..base()
            },
        ),
        (
            "root by name",
            ms::StartProcess {
                user_name: Some("root".into()),
                ..base()
            },
        ),
        (
            "another group",
            ms::StartProcess {
                group_name: Some("root".into()),
                ..base()
            },
        ),
        (
            "LD_PRELOAD added",
            ms::StartProcess {
                environment: [
                    base().environment,
                    vec![ms::start_process::EnvItem {
                        name: Some("LD_PRELOAD".into()),
                        value: Some("/tmp/evil.so".into()),
                    }],
                ]
                .concat(),
                ..base()
            },
        ),
        (
            "stdout into the victim file",
            ms::StartProcess {
                stdout: to_victim.clone(),
                ..base()
            },
        ),
        (
            "stderr into the victim file",
            ms::StartProcess {
                stderr: to_victim,
                ..base()
            },
        ),
        (
            "another work dir",
            ms::StartProcess {
                work_dir: Some("/root".into()),
                ..base()
            },
        ),
        (
            "a service that does not exist",
            ms::StartProcess {
                service_id: Some("ghost".into()),
                command: shell.clone(),
                ..base()
            },
        ),
        ("instance 1 of a service of 1", genuine(&dir.0, 1)),
        ("instance 4294967295", genuine(&dir.0, u32::MAX)),
        (
            "log_keep 4000000000",
            ms::StartProcess {
                stdout: base().stdout.map(|output| ms::Output {
                    keep: Some(4_000_000_000),
                    ..output
                }),
                ..base()
            },
        ),
        (
            "rotation at every byte",
            ms::StartProcess {
                stdout: base().stdout.map(|output| ms::Output {
                    rotate_bytes: Some(1),
                    ..output
                }),
                ..base()
            },
        ),
        (
            "a readiness fd the service has not",
            ms::StartProcess {
                ready_fd: Some(3),
                ..base()
            },
        ),
        (
            "a check running the shell",
            ms::StartProcess {
                check: Some("health".into()),
                command: shell.clone(),
                stdout: None,
                stderr: None,
                ..base()
            },
        ),
    ];
    let mut reasons = Vec::new();
    for (what, request) in forged_starts {
        let reply = spawner.ask(Code::StartProcess, start(request));
        reasons.push((what, Spawner::refused(reply, what)));
    }

    // Signals and adoption of a process snow-fox never started.
    for (what, signal) in [
        ("SIGKILL to the victim's group", (victim.pid(), 9, true)),
        ("SIGKILL to the victim", (victim.pid(), 9, false)),
        ("SIGTERM to init", (1, 15, false)),
        ("signal -1 to the victim", (victim.pid(), -1, false)),
        ("signal 1000 to the victim", (victim.pid(), 1000, false)),
    ] {
        let (pid, signal, group) = signal;
        let request = ms::SignalProcess {
            pid,
            signal,
            group: Some(group),
        };
        let reply = spawner.ask(Code::SignalProcess, Payload::SignalProcess(request));
        reasons.push((what, Spawner::refused(reply, what)));
    }
    let adopt = ms::AdoptProcess {
        pid: victim.pid(),
        start_time: victim_start,
        service_id: Some("app".into()),
        instance: Some(0),
    };
    let reply = spawner.ask(Code::AdoptProcess, Payload::AdoptProcess(adopt));
    reasons.push(("adopting the victim", Spawner::refused(reply, "adopt")));
    let kill = ms::SignalProcess {
        pid: victim.pid(),
        signal: 9,
        group: Some(true),
    };
    let reply = spawner.ask(Code::SignalProcess, Payload::SignalProcess(kill));
    reasons.push((
        "SIGKILL after the adoption",
        Spawner::refused(reply, "signal after adopt"),
    ));

    // A forged table on either link allows nothing.
    let allow_shell = ds::ServiceTable {
        services: vec![ds::service_table::Service {
            id: "app".into(),
            command: shell.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Spawner::send(
        &mut spawner.daemon,
        &ds::Message {
            code: ds::message::Code::ServiceTable as i32,
            correlation_id: None,
            payload: Some(ds::message::Payload::ServiceTable(allow_shell.clone())),
        },
    );
    Spawner::send(
        &mut spawner.manager,
        &ms::Message::new(
            Code::ServiceTable,
            None,
            Some(Payload::ServiceTable(allow_shell)),
        ),
    );
    let plain_shell = ms::StartProcess {
        command: shell,
        user_name: None,
        environment: Vec::new(),
        stdout: None,
        stderr: None,
        ..base()
    };
    let reply = spawner.ask(Code::StartProcess, start(plain_shell));
    reasons.push((
        "the shell after forged tables",
        Spawner::refused(reply, "the shell"),
    ));

    // An over-long correlation id is refused without being echoed.
    let long = ms::Message::new(
        Code::StartProcess,
        Some("x".repeat(100_000)),
        Some(start(base())),
    );
    Spawner::send(&mut spawner.manager, &long);
    let reply = loop {
        let message = spawner.next();
        if message.code == Code::Error as i32 {
            break message;
        }
    };
    assert_eq!(reply.correlation_id, None);
    reasons.push((
        "a 100 kB correlation id",
        Spawner::refused(reply, "long id"),
    ));

    // The genuine start still works: the refusals were the checks at work.
    let started = spawner.ask(Code::StartProcess, start(base()));
    let Some(Payload::ProcessStarted(started)) = started.payload else {
        panic!("the genuine start failed: {started:?}");
    };
    // Even a genuine start runs an instance once.
    let again = spawner.ask(Code::StartProcess, start(base()));
    reasons.push((
        "a second start of the running instance",
        Spawner::refused(again, "a second start"),
    ));
    let signal = ms::SignalProcess {
        pid: started.pid,
        signal: 15,
        group: Some(true),
    };
    let ack = spawner.ask(Code::SignalProcess, Payload::SignalProcess(signal));
    assert_eq!(ack.code, Code::Ack as i32, "{ack:?}");

    let log = spawner.shutdown();
    for (what, reason) in &reasons {
        assert!(
            log.contains(reason.as_str()),
            "the refusal of {what} ({reason}) is not logged: {log}"
        );
    }
    assert!(victim.alive(), "the victim process was killed");
    let metadata = fs::metadata(&victim_file).unwrap();
    assert_eq!(fs::read_to_string(&victim_file).unwrap(), VICTIM_TEXT);
    assert_eq!((metadata.uid(), metadata.mode() & 0o777), (0, 0o600));
    let by_reason: Vec<String> = reasons
        .iter()
        .map(|(what, reason)| format!("{what}: {reason}"))
        .collect();
    println!("{}", by_reason.join("\n"));
}

/// A frame over the link's limit, or one that does not decode, ends the
/// manager link: nothing in it is carried out, the victims are untouched,
/// and the spawner still answers its daemon link.
#[test]
#[ignore = "needs root"]
fn over_long_and_undecodable_frames_end_the_link_and_nothing_else() {
    let (dir, victim_file) = setup("forged-frames");
    let mut victim = Victim::start();
    for (what, bytes) in [
        (
            "a 4 GiB length prefix",
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        ),
        (
            "a body that is not protobuf",
            vec![0, 0, 0, 3, 0xff, 0xff, 0xff],
        ),
        ("a message without its code", vec![0, 0, 0, 2, 0x12, 0]),
    ] {
        let mut spawner = Spawner::start(&dir.0);
        spawner.manager.write_all(&bytes).unwrap();
        // A start sent after the bad frame is never read.
        let after = ms::Message::new(
            Code::StartProcess,
            Some("after".into()),
            Some(start(genuine(&dir.0, 0))),
        );
        let mut out = Vec::new();
        encode_frame(&after, &mut out);
        let _ = spawner.manager.write_all(&out);
        wait_for(&format!("the spawner to end the link after {what}"), || {
            let log = spawner.log_text();
            log.contains("the manager_spawner link").then_some(())
        });
        let log = spawner.shutdown();
        assert!(!log.contains("started app"), "{what}: {log}");
        assert!(victim.alive(), "{what}: the victim process was killed");
        assert_eq!(fs::read_to_string(&victim_file).unwrap(), VICTIM_TEXT);
    }
    assert!(
        common::recorded_pids(&dir.0.join("state-spawner/processes"), "process").is_empty(),
        "nothing was started"
    );
}

/// The spawner's record is root's: a record the node's user could write
/// is refused, and the spawner does not start.
#[test]
#[ignore = "needs root"]
fn a_spawner_record_directory_others_can_write_is_refused() {
    let (dir, _) = setup("forged-record-dir");
    let record = dir.0.join("state-spawner");
    fs::create_dir(&record).unwrap();
    std::os::unix::fs::chown(&record, Some(65534), Some(65534)).unwrap();
    let log = dir.0.join("spawner.log");
    let (_manager, spawner_manager) = UnixStream::pair().unwrap();
    let (_daemon, spawner_daemon) = UnixStream::pair().unwrap();
    let status = spawner_command(&dir.0, &log, [&spawner_manager, &spawner_daemon])
        .status()
        .unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("spawner record: refusing") && text.contains("expected uid 0, mode 0700"),
        "{text}"
    );
}

/// Finding 4's root cause: the node dies with starts queued on its link.
/// Fifty genuine starts wait in the manager link, and the node's end is
/// closed, before the spawner process reads anything: it carries out none
/// of them (nobody would learn of them), and says so for each.
#[test]
#[ignore = "needs root"]
fn starts_queued_by_a_node_that_is_gone_are_not_carried_out() {
    const COUNT: u32 = 50;
    let (dir, _) = setup("forged-dead-node");
    fs::write(
        dir.0.join("conf/services/many.toml"),
        format!(
            "command = [\"/bin/sleep\", \"300\"]\ninstances = {COUNT}\n\
             stdout = \"null\"\nstderr = \"null\"\n"
        ),
    )
    .unwrap();
    let null = || {
        Some(ms::Output {
            kind: ms::output::Kind::Null as i32,
            ..Default::default()
        })
    };
    let spawner = Spawner::start_after(&dir.0, |manager| {
        let mut out = Vec::new();
        for instance in 0..COUNT {
            let request = ms::StartProcess {
                command: vec!["/bin/sleep".into(), "300".into()],
                stdout: null(),
                stderr: null(),
                service_id: Some("many".into()),
                instance: Some(instance),
                ..Default::default()
            };
            let message = ms::Message::new(
                Code::StartProcess,
                Some(format!("queued:{instance}")),
                Some(start(request)),
            );
            encode_frame(&message, &mut out);
        }
        manager.write_all(&out).unwrap();
        manager.shutdown(std::net::Shutdown::Both).unwrap();
    });
    wait_for("every queued start to be refused", || {
        let log = spawner.log_text();
        // One refusal line per start (a later line may quote the
        // refusal it could not send).
        let refused = log
            .lines()
            .filter(|line| {
                line.contains("refused to start many#")
                    && line.contains("the node's link is closed")
            })
            .count();
        (refused == COUNT as usize).then_some(())
    });
    let log = spawner.shutdown();
    let started = common::recorded_pids(&dir.0.join("state-spawner/processes"), "process");
    assert!(started.is_empty(), "started {started:?}: {log}");
}
