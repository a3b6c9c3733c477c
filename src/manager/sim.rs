//! The manager without processes, threads or waiting: a fake spawner
//! answers its `manager_spawner` requests the way the real one does, and
//! the clock is an [`Instant`] the test moves. Each [`Sim::settle`] is
//! what a pass of [`Manager::run`] does, at the sim's `now`, until nothing
//! is left to do, so the decisions (requests, dependencies, reload,
//! restart policy and back-off) are tested as the node makes them.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use mio::{Poll, Token, Waker};

use super::record::Record;
use super::{Input, Manager, ManagerLinks, NodeIdentity};
use crate::conf::Config;
use crate::trace::Tracer;
use crate::wire::link::{
    ClientRequest, ConnectionId, IoCommand, IoEvent, IoReceiver, NodeInfoBoard, WakingReceiver,
    io_channel, waking_channel,
};
use crate::wire::proto::public_api::{self, message::Code, message::Payload};
use crate::wire::proto::{daemon_manager as dm, manager_spawner as ms};

/// A process the fake spawner runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Process {
    pub service: String,
    pub instance: u32,
}

/// A manager on a configuration of its own, its spawner faked.
pub(super) struct Sim {
    pub manager: Manager,
    /// The clock every pass reads.
    pub now: Instant,
    /// What the fake spawner runs, by pid.
    pub running: BTreeMap<u32, Process>,
    /// Every request the manager sent the spawner, in order.
    pub asked: Vec<ms::Message>,
    /// Services whose starts the fake spawner refuses.
    pub refuse: Vec<String>,
    /// Whether its processes ignore SIGTERM (they still die of SIGKILL).
    pub ignore_stop: bool,
    /// Whether the fake spawner leaves requests unanswered, as a stuck
    /// one would.
    pub stalled: bool,
    /// Replies and events for clients, in order.
    pub replies: Vec<(ConnectionId, public_api::Message)>,
    spawner: Sender<ms::Message>,
    from_manager: WakingReceiver<ms::Message>,
    io: Sender<IoEvent>,
    to_io: IoReceiver,
    daemon: Sender<dm::Message>,
    to_daemon: Receiver<dm::Message>,
    next_pid: u32,
    next_correlation: u32,
    dir: PathBuf,
    /// The polls the io and spawner wakers belong to (one waker per poll,
    /// as mio requires), never polled: the test reads the channels.
    _polls: [Poll; 2],
}

impl Sim {
    /// A manager on `services` (id, TOML) that has come up: the spawner
    /// knew no process, and what autostarts has been started.
    pub fn new(services: &[(&str, &str)]) -> Sim {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "snow-fox-manager-sim-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(dir.join("conf/services")).unwrap();
        fs::write(
            dir.join("conf/node.toml"),
            format!(
                "name = \"sim\"\nsocket = \"{0}/sf.sock\"\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\n",
                dir.display()
            ),
        )
        .unwrap();
        for (id, toml) in services {
            fs::write(dir.join(format!("conf/services/{id}.toml")), toml).unwrap();
        }
        let config = Config::load(&dir.join("conf")).unwrap();
        let (spawner, from_spawner) = unbounded();
        let (io, from_io) = unbounded();
        let (daemon, from_daemon) = unbounded();
        let (to_daemon_sender, to_daemon) = unbounded();
        let polls = [Poll::new().unwrap(), Poll::new().unwrap()];
        let waker = Waker::new(polls[0].registry(), Token(0)).unwrap();
        let (to_io, replies) = io_channel(waker, 1 << 16);
        let waker = Arc::new(Waker::new(polls[1].registry(), Token(0)).unwrap());
        let (to_spawner, from_manager) = waking_channel(waker, 1 << 16);
        let links = ManagerLinks {
            from_io,
            to_io,
            from_daemon,
            to_daemon: to_daemon_sender,
            from_spawner,
            to_spawner,
            cluster: None,
            node_info: NodeInfoBoard::default(),
        };
        let identity = NodeIdentity {
            name: "sim".to_owned(),
            commit: String::new(),
            taint: "unknown".to_owned(),
            version: String::new(),
            spawner_mode: "thread".to_owned(),
            user: String::new(),
        };
        let tracer = Tracer::bounded(config.node.trace_capacity, config.node.trace_memory);
        let mut manager = Manager::new(links, tracer, config, identity);
        spawner
            .send(ms::Message::new(
                ms::message::Code::KnownProcesses,
                None,
                ms::message::Payload::KnownProcesses(ms::KnownProcesses::default()),
            ))
            .unwrap();
        let known = manager.await_known_processes();
        let now = Instant::now();
        manager.bring_up(known, now);
        let mut sim = Sim {
            manager,
            now,
            running: BTreeMap::new(),
            asked: Vec::new(),
            refuse: Vec::new(),
            ignore_stop: false,
            stalled: false,
            replies: Vec::new(),
            spawner,
            from_manager,
            io,
            to_io: replies,
            daemon,
            to_daemon,
            next_pid: 1000,
            next_correlation: 0,
            dir,
            _polls: polls,
        };
        sim.settle();
        sim
    }

    /// Writes (or rewrites) services/<id>.toml, for a later reload.
    pub fn write_service(&self, id: &str, toml: &str) {
        fs::write(self.dir.join(format!("conf/services/{id}.toml")), toml).unwrap();
    }

    /// Removes services/<id>.toml, for a later reload.
    pub fn remove_service(&self, id: &str) {
        fs::remove_file(self.dir.join(format!("conf/services/{id}.toml"))).unwrap();
    }

    /// Runs passes at `now` until neither the manager nor the fake spawner
    /// has anything left to do.
    pub fn settle(&mut self) {
        loop {
            let mut asked = Vec::new();
            self.from_manager.drain(&mut asked);
            let mut moved = !asked.is_empty();
            for message in asked {
                self.answer(message);
            }
            let inputs: Vec<Input> = std::iter::from_fn(|| {
                let links = &self.manager.links;
                links
                    .from_io
                    .try_recv()
                    .map(Input::Io)
                    .or_else(|_| links.from_daemon.try_recv().map(Input::Daemon))
                    .or_else(|_| links.from_spawner.try_recv().map(Input::Spawner))
                    .ok()
            })
            .collect();
            moved |= !inputs.is_empty();
            for input in inputs {
                self.manager.on_input(input, self.now);
            }
            self.manager.on_input(Input::Tick, self.now);
            self.manager.end_pass(self.now);
            let mut commands = Vec::new();
            self.to_io.drain(&mut commands);
            for command in commands {
                if let IoCommand::Replies(replies) = command {
                    self.assert_record_written_before_replies();
                    self.replies.extend(
                        replies
                            .into_iter()
                            .map(|reply| (reply.connection, reply.message)),
                    );
                }
            }
            self.to_daemon.try_iter().for_each(drop);
            let mut asked = Vec::new();
            self.from_manager.drain(&mut asked);
            if !moved && asked.is_empty() {
                return;
            }
            for message in asked {
                self.answer(message);
            }
        }
    }

    /// What the manager promises a client: any reply leaves only once the
    /// record on disk holds what the manager knows, so that a node killed
    /// right after a reply comes back to what the reply said.
    fn assert_record_written_before_replies(&self) {
        let on_disk = Record::load(&self.manager.config.node.state_dir)
            .unwrap()
            .unwrap_or_default();
        assert_eq!(
            on_disk.encode(),
            self.manager.record().encode(),
            "a reply left before the record was written"
        );
    }

    /// Moves the clock on by `by` and settles.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.settle();
    }

    /// Moves the clock to the manager's next deadline, if it has one, and
    /// settles; how far it moved.
    pub fn skip_to_next_deadline(&mut self) -> Option<Duration> {
        let at = self.manager.next_deadline()?;
        let by = at.saturating_duration_since(self.now);
        self.now = self.now.max(at);
        self.settle();
        Some(by)
    }

    /// The fake spawner's answer to one request, as the real one gives it:
    /// each request answered once, in order.
    fn answer(&mut self, message: ms::Message) {
        self.asked.push(message.clone());
        if self.stalled {
            return;
        }
        let correlation = message.correlation_id.clone();
        let reply = match message.payload {
            Some(ms::message::Payload::StartProcess(start)) => {
                let service = start.service_id.clone().unwrap_or_default();
                if self.refuse.contains(&service) {
                    ms::Message::error(correlation, format!("cannot start {service}: refused"))
                } else {
                    let pid = self.next_pid;
                    self.next_pid += 1;
                    self.running.insert(
                        pid,
                        Process {
                            service,
                            instance: start.instance.unwrap_or_default(),
                        },
                    );
                    ms::Message::new(
                        ms::message::Code::ProcessStarted,
                        correlation,
                        ms::message::Payload::ProcessStarted(ms::ProcessStarted {
                            pid,
                            start_time: Some(u64::from(pid)),
                            ..Default::default()
                        }),
                    )
                }
            }
            Some(ms::message::Payload::SignalProcess(signal)) => {
                self.spawner.send(ack(correlation)).unwrap();
                let stops = signal.signal == libc::SIGTERM && !self.ignore_stop;
                if stops || signal.signal == libc::SIGKILL {
                    self.exit(signal.pid, None, Some(signal.signal));
                }
                return;
            }
            Some(ms::message::Payload::ServiceTable(_)) => return,
            _ => ack(correlation),
        };
        self.spawner.send(reply).unwrap();
    }

    /// Reports the end of `pid`, if the fake spawner runs it.
    pub fn exit(&mut self, pid: u32, code: Option<i32>, signal: Option<i32>) {
        if self.running.remove(&pid).is_none() {
            return;
        }
        self.spawner
            .send(ms::Message::new(
                ms::message::Code::ProcessExited,
                None,
                ms::message::Payload::ProcessExited(ms::ProcessExited {
                    pid,
                    exit_code: code,
                    exit_signal: signal,
                    ..Default::default()
                }),
            ))
            .unwrap();
    }

    /// Reports that `pid` wrote to its readiness fd.
    pub fn ready(&mut self, pid: u32) {
        self.spawner
            .send(ms::Message::new(
                ms::message::Code::ProcessReady,
                None,
                ms::message::Payload::ProcessReady(ms::ProcessReady { pid }),
            ))
            .unwrap();
        self.settle();
    }

    /// The pid the fake spawner runs for `service`.`instance`.
    pub fn pid(&self, service: &str, instance: u32) -> Option<u32> {
        self.running
            .iter()
            .find(|(_, process)| process.service == service && process.instance == instance)
            .map(|(pid, _)| *pid)
    }

    /// Sends a client request on connection 1; its correlation id.
    pub fn request(&mut self, code: Code, payload: Payload) -> String {
        self.next_correlation += 1;
        let correlation = format!("sim-{}", self.next_correlation);
        let message = public_api::Message {
            code: code as i32,
            correlation_id: Some(correlation.clone()),
            payload: Some(payload),
        };
        self.io
            .send(IoEvent::Requests(vec![ClientRequest::new(
                ConnectionId(1),
                message,
            )]))
            .unwrap();
        self.settle();
        correlation
    }

    /// Orders a reload, as the daemon does on SIGHUP.
    pub fn reload(&mut self) {
        self.daemon
            .send(dm::Message {
                code: dm::message::Code::Reload as i32,
                correlation_id: Some("sim-reload".to_owned()),
            })
            .unwrap();
        self.settle();
    }

    /// The reply to `correlation`, if it came: its code (an `Error`'s
    /// kind as its reason's prefix is left to the test).
    pub fn reply(&self, correlation: &str) -> Option<&public_api::Message> {
        self.replies
            .iter()
            .map(|(_, message)| message)
            .find(|message| message.correlation_id.as_deref() == Some(correlation))
    }

    /// Instance `index` of `service`'s state, as status shows it.
    pub fn state(&self, service: &str, index: usize) -> &'static str {
        self.manager.registry[service].instances[index]
            .state
            .as_str()
    }

    /// The spawner requests of one kind, in order.
    pub fn asked(&self, code: ms::message::Code) -> Vec<&ms::Message> {
        self.asked
            .iter()
            .filter(|message| message.code == code as i32)
            .collect()
    }

    /// The services the manager asked the spawner to start, in order.
    pub fn started(&self) -> Vec<String> {
        self.asked(ms::message::Code::StartProcess)
            .into_iter()
            .filter_map(|message| match &message.payload {
                Some(ms::message::Payload::StartProcess(start)) => start.service_id.clone(),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn ack(correlation: Option<String>) -> ms::Message {
    ms::Message::new(ms::message::Code::Ack, correlation, None)
}
