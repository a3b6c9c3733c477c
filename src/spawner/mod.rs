//! The spawner role: the only role that creates, signals and reaps
//! processes.
//!
//! It owns the pid → service instance map of its own children, the link
//! to the log keeper that captures their output, their readiness pipes
//! and the service table. It reads
//! `manager_spawner` requests (`StartProcess`, `SignalProcess`, `AdoptProcess`) from the
//! manager and answers each with its correlation id (`ProcessStarted`,
//! `Ack` or `Error`); it reports every reaped child as `ProcessExited` and
//! notable events as `LogMessage`. It reads the daemon's `Shutdown`
//! (answered with `Ack`).
//!
//! It sleeps in one `mio::Poll` and wakes only for something to do, never
//! on a timer: a message on one of its channels (their senders wake the
//! poll's waker, [`SpawnerInbox`]), a SIGCHLD (its own handler writes a
//! byte to a socketpair in the poll), the pidfd of an adopted process
//! turning readable, or a readiness pipe with data or closed. The only
//! deadline it keeps is that of an ended instance's cgroup drain (below).
//!
//! It trusts nothing it is told. Where its service table comes from is
//! fixed at construction ([`TableSource`]). As a thread
//! ([`TableSource::FromLinks`]) it takes the table it is sent: before
//! anything else it waits for the daemon's `ServiceTable`, and the manager
//! sends the reloaded one on its own link, in order with the starts it
//! allows; the sender shares its process and credentials, so there is no
//! one to guard against. As the root spawner process
//! ([`TableSource::OwnConfig`]) it builds the table itself from the
//! configuration loaded before the split, with the node's own function for
//! it, and the content of every `ServiceTable` it is sent is ignored: the
//! node process that sends them runs unprivileged and may be compromised,
//! and a table it chose would allow anything. The manager's reloaded table
//! then only says "re-read": the spawner loads the conf dir from disk
//! itself, as root, and puts the table built from it in place. The node's
//! settings (`node.toml`, hence the log dir) stay those loaded at start, as
//! they do in the manager. If the re-read configuration is invalid, the old
//! table stays (the node refused the same one); if the files changed
//! between the node's read and the spawner's, starts that differ are
//! refused until the next reload. A `StartProcess` whose
//! command, user, group, work dir, environment (as a set of name=value)
//! or outputs differ from what the table says for its `service_id` is
//! refused, as is a signal for a pid it did not start or adopt; a refusal is
//! answered with `Error` and logged here too (a compromised node would
//! not log it). The table gives each service's outputs as configured and
//! the node's log dir; the spawner resolves the file a stream of instance
//! N may go to with the node's own function (`conf::Output::path`), so the
//! two sides cannot disagree on the rule. Every number a request carries
//! is bounded by the table too: the instance below the service's
//! `instances`, a file output's rotation size and count equal to the
//! service's (and the count at most [`conf::MAX_LOG_KEEP`]), the
//! readiness fd the service's, a signal number from 1 to 64, a
//! correlation id at most 128 bytes; and an instance that already runs is
//! not started again. Rotation only renames within the allowed file's own
//! `.N` siblings, with the rights of the directory's user.
//!
//! Its own record (`record.rs`, in `spawner_state_dir`) names every
//! process it started: an intent before each fork, the process after it.
//! When the spawner starts, each process the record names that still runs
//! as that very process (a pidfd opened, then the start time checked, so
//! the pidfd surely names it and not a stranger that got its pid) is
//! watched as adopted, and the first message to the manager,
//! `KnownProcesses`, lists them. `AdoptProcess` is then the manager taking
//! one of these back, answered `Ack` only for a process the record holds
//! with that pid, start time, service and instance; anything else is
//! refused and logged. In the spawner process, a start is not carried out
//! once the node at the other end of its link is gone (`poll` for
//! `POLLRDHUP` on the link socket before each), as nobody would learn of
//! it. Adopted processes are not its children, so they cannot be reaped:
//! each one's pidfd is in the poll, and its end is reported when the
//! pidfd turns readable, as `ProcessExited` without exit code or signal
//! (its real parent collects those). Signals to an adopted process go out only after a check that its
//! pidfd has not turned readable, so a pid freed by its end is not
//! signalled. An adopted process's output goes on through its pipe to the
//! log keeper, which outlived the node that started it.
//!
//! Readiness and health checks add two things. A `StartProcess` with
//! `check` set runs one of its service's check commands (the table lists
//! them; a check may run nothing else), as the service's user and with its
//! environment, with both outputs to /dev/null (so a check cannot write
//! where its service does not), and ends as
//! any child does, with `ProcessExited`: the manager tells checks from
//! services by pid. A `StartProcess` with `ready_fd` hands the child the
//! write end of a pipe as that fd (s6/dinit readiness notification); the
//! spawner keeps the read end in its poll and reads it whenever it is
//! readable, until it is not (reads that cannot block). A newline is
//! reported as `ProcessReady`; a child that writes it and ends
//! at once is reported ready before its end, as the pipe is read before
//! the end is reported. The pipe is dropped at the newline, at EOF, or
//! when the child is reaped.
//!
//! Children are started with argv (never a shell), a cleared environment
//! plus a base `PATH` and the service's variables, stdin from /dev/null,
//! and each in its own session and process group, so that a signal to the
//! group reaches the service's whole tree. Users and groups are resolved
//! before the fork; after it the child only calls async-signal-safe
//! functions (see `launch.rs`). A captured output stream is a pipe whose
//! read end only the log keeper holds (see `keeper`): a process apart from
//! the node that timestamps lines, writes and rotates the files with the
//! rights of whoever owns their directory, and outlives the node.
//!
//! Each start also gets its instance's cgroup and rlimits from the table
//! (never from the request; see `contain.rs`): the child joins the cgroup
//! and sets the rlimits before it drops to its user and execs. When a main
//! process ends (reaped, or an adopted one's pidfd turns readable), what
//! is left in its cgroup is killed and its end is reported only once the
//! cgroup is empty (checked every [`DRAIN_POLL`], for at most
//! [`DRAIN_LIMIT`]), with the cgroup's OOM kills and the child's rusage;
//! the cgroup is then removed. A SIGKILL the manager sends kills the
//! cgroup too. An adopted process's cgroup is the one its instance's name
//! gives, if it exists.
//!
//! Reaping is `wait4(-1, WNOHANG)` until nothing is left, on each SIGCHLD
//! notice and after each start. SIGCHLD is the spawner's own in both
//! modes (`signal_hook::low_level::pipe`, removed when it is dropped): no
//! other thread forwards it. A pid stays in the
//! map until it is reaped, so a pid the spawner signals can never have been
//! reused by a stranger; pids that are neither its children nor adopted
//! (above) are refused.
//! Processes that are not its own children (orphans re-parented to a
//! subreaper node) are reaped with only a debug log. `Child` handles are
//! dropped unwaited: waiting on them would race this loop for the same
//! exit.
//!
//! The spawner *thread* is no privilege boundary: threads share
//! credentials, so every role of a node running as root is root. The
//! spawner *process* (privilege separation, set up by the daemon) is: it
//! alone keeps root while the node process drops to an unprivileged user,
//! and this same role runs there, its channels fed by the daemon's link
//! bridges from a socketpair. The table checks run in both; only in the
//! process does the table come from the spawner's own reading of the
//! configuration, so that there they bind even a compromised node.
//!
//! Sends to the manager wait while its channel is full, because an exit
//! notice must never be dropped; so the manager must never block on its
//! channel to the spawner, or each could wait for the other.
//!
//! When it ends: after answering the daemon's `Shutdown` it returns `Ok`,
//! leaving running services alone (the manager has stopped those that
//! should stop). It returns an error when the daemon's channel closes
//! before that, when its poll or SIGCHLD socketpair fails, or when
//! `waitpid` fails; the daemon
//! then decides. A closed manager channel (the manager ends before the
//! spawner in an ordered shutdown) is not an error: later exits are only
//! logged.

mod contain;
pub mod keeper;
mod launch;
mod record;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvError, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::cgroup::InstanceCgroup;
use crate::conf;
use crate::sys::{self, ExitStatusKind};
use crate::trace::{Role, Tracer, now_unix_ms};
use crate::wire::link::{WakingReceiver, WakingSender, waking_channel};
use crate::wire::proto::{daemon_spawner as ds, manager_spawner as ms};
use crate::wire::{DaemonSpawner, ManagerSpawner};
use ds::service_table::output as table_output;
pub use keeper::link::KeeperLaunch;
use keeper::link::KeeperLink;
use ms::message::{Code, Payload};
use record::SpawnerRecord;
pub use record::{RecordError, RecordedProcess};

/// The longest correlation id the spawner takes (`protocol.md` §3).
const MAX_CORRELATION_ID: usize = 128;
/// Processes per `KnownProcesses` message: about 120 kB, well under the
/// frame limit whatever the record holds.
const KNOWN_PER_MESSAGE: usize = 4096;
/// The highest signal number (`SIGRTMAX` on Linux).
const MAX_SIGNAL: i32 = 64;

/// The poll the spawner sleeps in, made before its channels so that
/// their senders can wake it ([`SpawnerInbox::channel`]).
#[derive(Debug)]
pub struct SpawnerInbox {
    poll: Poll,
    waker: Arc<Waker>,
}

impl SpawnerInbox {
    /// A new poll and its waker.
    pub fn new() -> io::Result<SpawnerInbox> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        Ok(SpawnerInbox { poll, waker })
    }

    /// A channel into the spawner holding at most `capacity` messages,
    /// whose sends wake its poll.
    pub fn channel<M>(&self, capacity: usize) -> (WakingSender<M>, WakingReceiver<M>) {
        waking_channel(self.waker.clone(), capacity)
    }
}

/// The spawner's channel ends, created by the daemon.
#[derive(Debug)]
pub struct SpawnerLinks {
    /// The poll the channels into the spawner wake.
    pub inbox: SpawnerInbox,
    /// Requests from the manager.
    pub from_manager: WakingReceiver<ms::Message>,
    /// Replies, exits and log messages to the manager. Sent blocking:
    /// exit notices are never dropped.
    pub to_manager: Sender<ms::Message>,
    /// Orders from the daemon.
    pub from_daemon: WakingReceiver<ds::Message>,
    /// Answers to the daemon.
    pub to_daemon: Sender<ds::Message>,
    /// In the spawner process, the socket its manager link arrives on:
    /// once the node at its other end is gone, starts still queued are
    /// not carried out. None for the spawner thread.
    pub manager_socket: Option<OwnedFd>,
}

/// Where the spawner's service table comes from.
#[derive(Debug)]
pub enum TableSource {
    /// The `ServiceTable`s sent on its links: the daemon's at start, the
    /// manager's after each reload. For the spawner thread, whose senders
    /// share its process and credentials.
    FromLinks,
    /// Its own reading of the configuration: `config` (loaded before the
    /// split) at start, `config.dir` read again from disk when the manager
    /// sends a reloaded table, whose content is ignored. For the root
    /// spawner process, which must not trust the unprivileged node.
    OwnConfig {
        /// The configuration loaded at start.
        config: Box<conf::Config>,
        /// Builds the table from a configuration: the function the node
        /// uses for the tables it sends, handed in by the daemon because
        /// roles do not import each other.
        build_table: fn(&conf::Config) -> ds::ServiceTable,
    },
}

/// The token of the spawner's waker: a message on one of its channels.
const WAKE: Token = Token(0);
/// The token of its SIGCHLD notices.
const CHILD_EXITED: Token = Token(1);
/// Tokens from here on name a pid's pidfd (even) or readiness pipe (odd).
const FIRST_FD_TOKEN: usize = 2;

/// The token of the pidfd of adopted process `pid`.
fn pidfd_token(pid: u32) -> Token {
    Token(FIRST_FD_TOKEN + 2 * pid as usize)
}

/// The token of the readiness pipe of child `pid`.
fn ready_token(pid: u32) -> Token {
    Token(FIRST_FD_TOKEN + 2 * pid as usize + 1)
}

/// What a token other than [`WAKE`] and [`CHILD_EXITED`] names.
enum FdToken {
    Pidfd(u32),
    ReadyPipe(u32),
}

impl FdToken {
    fn of(token: Token) -> Option<FdToken> {
        let index = token.0.checked_sub(FIRST_FD_TOKEN)?;
        let pid = u32::try_from(index / 2).ok()?;
        Some(if index % 2 == 0 {
            FdToken::Pidfd(pid)
        } else {
            FdToken::ReadyPipe(pid)
        })
    }
}

/// How often the cgroups of ended instances are checked for processes
/// left while they are drained.
pub const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How long an ended instance's cgroup may take to empty after its kill
/// before its end is reported anyway (a process stuck in the kernel).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// One of the spawner's own children, until it is reaped; or an adopted
/// process, until it ends.
#[derive(Debug)]
struct OwnChild {
    service_id: String,
    instance: u32,
    /// A readiness or health check, not the instance's own process.
    check: bool,
    /// The correlation id of the last request about it (its start, then
    /// each signal): its exit is reported under it, so the trace of a stop
    /// shows the process ending.
    last_request: Option<String>,
    /// Its instance's cgroup, when it has one.
    cgroup: Option<InstanceCgroup>,
    /// `kill_mode = "process"`: what it leaves in its cgroup is not
    /// killed when it ends.
    kill_process_only: bool,
}

/// How a process ended, as `ProcessExited` reports it.
#[derive(Debug, Clone, Copy, Default)]
struct Ending {
    exit_code: Option<i32>,
    exit_signal: Option<i32>,
    usage: Option<sys::Usage>,
}

/// An instance whose main process ended while its cgroup still holds
/// processes: killed, its end reported once the cgroup is empty.
#[derive(Debug)]
struct Draining {
    pid: u32,
    process: OwnChild,
    ending: Ending,
    /// When its end is reported even if the cgroup has not emptied.
    give_up_at: Instant,
}

/// The spawner role. Build it with [`Spawner::new`], run it on its own
/// thread with [`Spawner::run`].
#[derive(Debug)]
pub struct Spawner {
    /// Where it sleeps: its channels' waker, SIGCHLD notices, the pidfds
    /// of adopted processes and the readiness pipes.
    poll: Poll,
    /// The read end of the socketpair SIGCHLD's handler writes a byte to.
    child_exited: mio::net::UnixStream,
    /// That handler, removed when the spawner is dropped.
    child_exited_action: signal_hook::SigId,
    from_manager: WakingReceiver<ms::Message>,
    /// False once the manager's channel is closed.
    manager_open: bool,
    to_manager: Sender<ms::Message>,
    /// False once the manager's receiving end is gone.
    manager_listening: bool,
    from_daemon: WakingReceiver<ds::Message>,
    to_daemon: Sender<ds::Message>,
    tracer: Tracer,
    children: HashMap<u32, OwnChild>,
    /// Processes adopted from a previous node, with their pidfds (in the
    /// poll while they are here).
    adopted: HashMap<u32, (OwnChild, OwnedFd)>,
    keeper: KeeperLink,
    /// The group of the unprivileged node process, which reads the log
    /// dir's files to serve `logs`; None in thread mode.
    log_reader_gid: Option<u32>,
    /// The read ends of the readiness pipes of children not yet ready (in
    /// the poll while they are here).
    ready_pipes: HashMap<u32, File>,
    /// What each service may be started as, by service id.
    table: HashMap<String, ds::service_table::Service>,
    /// The table's log dir, under which its services' log outputs are.
    log_dir: PathBuf,
    /// Where `table` comes from.
    table_source: TableSource,
    /// Its own record of the processes it started.
    record: SpawnerRecord,
    /// See [`SpawnerLinks::manager_socket`].
    manager_socket: Option<OwnedFd>,
    /// The node's cgroups, opened with the first table.
    containment: contain::Containment,
    /// Ended instances whose cgroups are being emptied.
    draining: Vec<Draining>,
    /// When those are next checked.
    drain_check_at: Instant,
}

impl Spawner {
    /// A spawner over its links, recording every message it sends, taking
    /// its service table from `table_source`, keeping its record of the
    /// processes it starts in `record_dir`. What that record names and
    /// still runs (same pid, same start time) it watches as adopted from
    /// the start; the rest it forgets. It starts log keepers by running
    /// this program (`--log-keeper`); see [`Spawner::with_keeper`].
    pub fn new(
        links: SpawnerLinks,
        tracer: Tracer,
        table_source: TableSource,
        record_dir: &Path,
    ) -> Result<Spawner, SpawnerError> {
        let (record, found, problems) =
            SpawnerRecord::open(record_dir).map_err(SpawnerError::Record)?;
        for problem in problems {
            log::warn!("spawner record in {}: {problem}", record_dir.display());
        }
        let poll = links.inbox.poll;
        let (mut child_exited, notifier) =
            mio::net::UnixStream::pair().map_err(SpawnerError::ChildExitNotices)?;
        poll.registry()
            .register(&mut child_exited, CHILD_EXITED, Interest::READABLE)
            .map_err(SpawnerError::ChildExitNotices)?;
        let child_exited_action =
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, notifier)
                .map_err(SpawnerError::ChildExitNotices)?;
        let mut spawner = Spawner {
            poll,
            child_exited,
            child_exited_action,
            from_manager: links.from_manager,
            manager_open: true,
            to_manager: links.to_manager,
            manager_listening: true,
            from_daemon: links.from_daemon,
            to_daemon: links.to_daemon,
            tracer,
            children: HashMap::new(),
            adopted: HashMap::new(),
            keeper: KeeperLink::new(match std::env::current_exe() {
                Ok(program) => KeeperLaunch::Exec(program),
                Err(error) => {
                    log::warn!(
                        "spawner: cannot tell which program this is ({error}); \
                         log keepers run as `snow-fox` from PATH"
                    );
                    KeeperLaunch::Exec(PathBuf::from("snow-fox"))
                }
            }),
            log_reader_gid: None,
            ready_pipes: HashMap::new(),
            table: HashMap::new(),
            log_dir: PathBuf::new(),
            table_source,
            record,
            manager_socket: links.manager_socket,
            containment: contain::Containment::Unopened,
            draining: Vec::new(),
            drain_check_at: Instant::now(),
        };
        if let TableSource::OwnConfig {
            config,
            build_table,
        } = &spawner.table_source
        {
            let table = build_table(config);
            spawner.set_table(table);
        }
        for process in found {
            spawner.watch_recorded(process);
        }
        spawner.save_record();
        Ok(spawner)
    }

    /// Watches a process its record names, if it still runs as that very
    /// process; the record keeps it only then.
    fn watch_recorded(&mut self, process: RecordedProcess) {
        let name = format!(
            "{}#{} (pid {})",
            process.service_id, process.instance, process.pid
        );
        if self.adopted.contains_key(&process.pid) {
            return;
        }
        let request = ms::AdoptProcess {
            pid: process.pid,
            start_time: process.start_time,
            service_id: None,
            instance: None,
        };
        match watch(&request) {
            Ok(pidfd) => {
                log::info!("spawner: {name}, which it started, still runs: watching it");
                let cgroup = self
                    .containment
                    .existing(&process.service_id, process.instance)
                    .filter(|cgroup| cgroup.contains(process.pid));
                let kill_process_only = self
                    .table
                    .get(&process.service_id)
                    .and_then(|service| service.kill_process_only)
                    .unwrap_or(false);
                let own = OwnChild {
                    service_id: process.service_id.clone(),
                    instance: process.instance,
                    check: false,
                    last_request: None,
                    cgroup,
                    kill_process_only,
                };
                if self.watch_pidfd(process.pid, &pidfd) {
                    self.adopted.insert(process.pid, (own, pidfd));
                    self.record.insert(process);
                }
            }
            Err(reason) => log::info!("spawner: {name} from its record has ended ({reason})"),
        }
    }

    /// Writes its record if it changed. A failed write is logged; the
    /// intents of the processes it misses stay until the next write.
    fn save_record(&mut self) {
        if let Err(error) = self.record.save() {
            log::error!("{error}");
        }
    }

    /// Tells the manager every live process its record holds: the first
    /// messages it sends, in pieces, the last without `more`.
    fn announce_known_processes(&mut self) {
        let processes: Vec<ms::known_processes::Process> = self
            .record
            .processes()
            .map(|process| ms::known_processes::Process {
                pid: process.pid,
                start_time: process.start_time,
                service_id: process.service_id.clone(),
                instance: process.instance,
            })
            .collect();
        for known in known_pieces(processes) {
            self.send_to_manager(ms::Message::new(
                Code::KnownProcesses,
                None,
                Some(Payload::KnownProcesses(known)),
            ));
        }
    }

    /// Whether the node at the other end of the manager link is gone (the
    /// spawner process only): then nobody would learn of a start.
    fn node_gone(&self) -> bool {
        self.manager_socket
            .as_ref()
            .is_some_and(|socket| sys::peer_hung_up(socket.as_fd()).unwrap_or(true))
    }

    /// Starts log keepers with `launch` instead.
    pub fn with_keeper(mut self, launch: KeeperLaunch) -> Spawner {
        self.keeper = KeeperLink::new(launch);
        self.keeper.set_log_dir(&self.log_dir);
        self
    }

    /// Lets group `gid` (the unprivileged node process's) read the log
    /// dir (if the spawner creates it) and the files in it.
    pub fn with_log_reader(mut self, gid: u32) -> Spawner {
        self.log_reader_gid = Some(gid);
        self
    }

    /// Waits for the daemon's service table (when it takes it from its
    /// links), then serves requests, SIGCHLD notices, pidfds and readiness
    /// pipes until
    /// the daemon's `Shutdown`, which it answers before returning `Ok`.
    pub fn run(mut self) -> Result<(), SpawnerError> {
        self.announce_known_processes();
        // A spawner reading its own configuration built its table already.
        let mut waiting_for_table = matches!(self.table_source, TableSource::FromLinks);
        while waiting_for_table {
            let message = self
                .from_daemon
                .recv()
                .map_err(|source| SpawnerError::DaemonChannelClosed { source })?;
            waiting_for_table = message.code != ds::message::Code::ServiceTable as i32;
            if self.on_daemon_message(message)? {
                return Ok(());
            }
        }
        self.report_cgroups();
        let mut events = Events::with_capacity(256);
        loop {
            // Only the drain of an ended instance's cgroup has a deadline.
            let timeout = (!self.draining.is_empty()).then(|| {
                self.drain_check_at
                    .saturating_duration_since(Instant::now())
            });
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(SpawnerError::Poll { source }),
            }
            for event in &events {
                match event.token() {
                    WAKE => {}
                    CHILD_EXITED => {
                        self.take_child_exit_notices()?;
                        self.reap_exited()?;
                    }
                    token => match FdToken::of(token) {
                        Some(FdToken::Pidfd(pid)) => self.adopted_ended(pid),
                        Some(FdToken::ReadyPipe(pid)) => self.read_ready_pipe(pid),
                        None => {}
                    },
                }
            }
            // Channels are drained on every pass: a wake may have been
            // coalesced with another event.
            if self.on_messages()? {
                return Ok(());
            }
            if !self.draining.is_empty() && Instant::now() >= self.drain_check_at {
                self.reap_exited()?;
                self.check_draining();
                self.drain_check_at = Instant::now() + DRAIN_POLL;
            }
            self.save_record();
        }
    }

    /// Handles every message queued on its channels, the daemon's first
    /// (a table it took off its channel is in place before any request
    /// sent after); true when the spawner should end (the daemon's
    /// `Shutdown`).
    fn on_messages(&mut self) -> Result<bool, SpawnerError> {
        let mut orders = Vec::new();
        let daemon_closed = self.from_daemon.drain(&mut orders);
        for message in orders {
            if self.on_daemon_message(message)? {
                return Ok(true);
            }
        }
        if daemon_closed {
            return Err(SpawnerError::DaemonChannelClosed { source: RecvError });
        }
        let mut requests = Vec::new();
        if self.manager_open && self.from_manager.drain(&mut requests) {
            log::debug!("spawner: the manager's channel closed");
            self.manager_open = false;
        }
        // A burst of starts is one write of the record.
        for message in requests {
            self.on_manager_message(message)?;
        }
        Ok(false)
    }

    /// Empties the SIGCHLD socketpair: one byte per signal, coalesced by
    /// the reaping that follows.
    fn take_child_exit_notices(&mut self) -> Result<(), SpawnerError> {
        let mut bytes = [0u8; 64];
        loop {
            match self.child_exited.read(&mut bytes) {
                Ok(0) => {
                    return Err(SpawnerError::ChildExitNotices(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the SIGCHLD handler's socket closed",
                    )));
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(SpawnerError::ChildExitNotices(error)),
            }
        }
    }

    /// Puts `fd` in the poll under `token`; false (logged) when it cannot.
    fn watch_fd(&self, fd: &impl AsRawFd, token: Token, what: &str) -> bool {
        let raw = fd.as_raw_fd();
        match self
            .poll
            .registry()
            .register(&mut SourceFd(&raw), token, Interest::READABLE)
        {
            Ok(()) => true,
            Err(error) => {
                log::warn!("spawner: cannot watch {what}: {error}");
                false
            }
        }
    }

    /// Takes `fd` out of the poll before it is closed.
    fn unwatch_fd(&self, fd: &impl AsRawFd, what: &str) {
        let raw = fd.as_raw_fd();
        if let Err(error) = self.poll.registry().deregister(&mut SourceFd(&raw)) {
            log::debug!("spawner: cannot stop watching {what}: {error}");
        }
    }

    /// Watches the pidfd of adopted process `pid`; false when it cannot.
    fn watch_pidfd(&self, pid: u32, pidfd: &OwnedFd) -> bool {
        self.watch_fd(pidfd, pidfd_token(pid), &format!("the pidfd of pid {pid}"))
    }

    /// Forgets adopted process `pid` and its pidfd.
    fn forget_adopted(&mut self, pid: u32) -> Option<OwnChild> {
        let (process, pidfd) = self.adopted.remove(&pid)?;
        self.unwatch_fd(&pidfd, &format!("the pidfd of pid {pid}"));
        self.record.forget(pid);
        Some(process)
    }

    fn on_manager_message(&mut self, message: ms::Message) -> Result<(), SpawnerError> {
        let correlation_id = message.correlation_id;
        if let Some(length) = correlation_id
            .as_ref()
            .map(String::len)
            .filter(|length| *length > MAX_CORRELATION_ID)
        {
            let reason = format!(
                "a correlation id of {length} bytes is longer than {MAX_CORRELATION_ID}: \
                 request refused"
            );
            log::warn!("spawner: {reason}");
            self.send_to_manager(ms::Message::error(None, reason));
            return Ok(());
        }
        let refusal = match ManagerSpawner::from_message(message.code, message.payload) {
            // Children that end meanwhile are reaped on their SIGCHLD: a
            // `wait4(-1)` after each start would look at every child each
            // time (quadratic in a mass start).
            Ok(ManagerSpawner::StartProcess(request)) => {
                self.start(correlation_id, &request);
                return Ok(());
            }
            Ok(ManagerSpawner::SignalProcess(request)) => {
                // A child that ended is reaped (its end reported) first, so
                // that a signal to it is refused, not sent to its zombie;
                // only that child is looked at.
                self.reap_ended(request.pid)?;
                self.signal(correlation_id, request);
                return Ok(());
            }
            Ok(ManagerSpawner::ServiceTable(table)) => {
                self.on_reloaded_table(table);
                return Ok(());
            }
            Ok(ManagerSpawner::AdoptProcess(request)) => {
                self.adopt(correlation_id, request);
                return Ok(());
            }
            Ok(ManagerSpawner::Ack) => return Ok(()),
            Ok(
                taken @ (ManagerSpawner::LogMessage(_)
                | ManagerSpawner::ProcessStarted(_)
                | ManagerSpawner::ProcessExited(_)
                | ManagerSpawner::Error(_)
                | ManagerSpawner::ProcessReady(_)
                | ManagerSpawner::KnownProcesses(_)
                | ManagerSpawner::CgroupStatus(_)),
            ) => format!("the spawner does not take {}", taken.code().as_str_name()),
            Err(bad) => format!("manager_spawner: {bad}"),
        };
        log::warn!("spawner: refused a manager message: {refusal}");
        self.send_to_manager(ms::Message::error(correlation_id, refusal));
        Ok(())
    }

    fn start(&mut self, correlation_id: Option<String>, request: &ms::StartProcess) {
        let service_id = request.service_id.clone().unwrap_or_default();
        let instance = request.instance.unwrap_or_default();
        let allowed = if self.node_gone() {
            Err("the node's link is closed, so nobody would learn of this start".to_owned())
        } else {
            self.allow(&service_id, request)
        };
        if let Err(reason) = allowed {
            log::warn!("spawner: refused to start {service_id}#{instance}: {reason}");
            self.send_to_manager(ms::Message::error(correlation_id, reason));
            return;
        }
        let (cgroup, rlimits) = match self.contain(&service_id, request) {
            Ok(contained) => contained,
            Err(reason) => {
                log::warn!("spawner: cannot start {service_id}#{instance}: {reason}");
                self.send_to_manager(ms::Message::error(correlation_id, reason));
                return;
            }
        };
        let cgroup_procs = match cgroup.as_ref().map(InstanceCgroup::procs_files).transpose() {
            Ok(files) => files.unwrap_or_default(),
            Err(error) => {
                Self::remove_cgroup(cgroup.as_ref());
                self.send_to_manager(ms::Message::error(correlation_id, error.to_string()));
                return;
            }
        };
        let setup = sys::ChildSetup {
            cgroup_procs,
            rlimits,
            ids: None,
        };
        // Checks are not recorded: they end by themselves, and are no
        // instance's process for a later node to adopt.
        let intent = match request.check {
            Some(_) => None,
            None => match self.record.intent(&service_id, instance) {
                Ok(intent) => Some(intent),
                Err(error) => {
                    Self::remove_cgroup(cgroup.as_ref());
                    let reason = format!("not started, as it could not be recorded: {error}");
                    log::error!("spawner: {service_id}#{instance} {reason}");
                    self.send_to_manager(ms::Message::error(correlation_id, reason));
                    return;
                }
            },
        };
        create_log_dir(&self.log_dir, self.log_reader_gid);
        let mut capture = launch::Capture {
            keeper: &mut self.keeper,
            log_dir: &self.log_dir,
            reader_gid: self.log_reader_gid,
            max_rate: self
                .table
                .get(&service_id)
                .and_then(|service| service.log_max_rate),
        };
        let intent_fd = intent.as_ref().map(|_| self.record.intents_log());
        let launched = match launch::launch(request, intent_fd, &mut capture, setup) {
            Ok(launched) => launched,
            Err(error) => {
                // An intent whose start failed names no process that runs
                // (its child, if any, wrote its stat line and exited), and
                // goes with the log at the next write of the record.
                Self::remove_cgroup(cgroup.as_ref());
                let reason = error.to_string();
                self.log_to_manager(
                    log::Level::Warn,
                    correlation_id.clone(),
                    format!("start of {service_id}#{instance} refused: {reason}"),
                );
                self.send_to_manager(ms::Message::error(correlation_id, reason));
                return;
            }
        };
        let pid = launched.pid;
        log::debug!("spawner: started {service_id}#{instance} as pid {pid}");
        // The child wrote its own start time after its intent; else /proc
        // has it (not reaped yet, so the pid is surely still this child's).
        let start_time = intent
            .as_ref()
            .and_then(|intent| self.record.written_start_time(intent, pid))
            .or_else(|| {
                sys::process_start_time(pid)
                    .inspect_err(|error| {
                        log::warn!(
                            "spawner: no start time for {service_id}#{instance} (pid {pid}), \
                             so it cannot be re-adopted after a crash: {error}"
                        );
                    })
                    .ok()
            });
        if let (Some(start_time), Some(_)) = (start_time, intent) {
            self.record.started(RecordedProcess {
                service_id: service_id.clone(),
                instance,
                pid,
                start_time,
            });
        }
        if let Some(pipe) = launched.ready_pipe
            && self.watch_fd(
                &pipe,
                ready_token(pid),
                &format!("the readiness pipe of pid {pid}"),
            )
        {
            self.ready_pipes.insert(pid, pipe);
        }
        let cgroup_dirs = cgroup
            .as_ref()
            .map(InstanceCgroup::to_wire)
            .unwrap_or_default();
        let kill_process_only = self
            .table
            .get(&service_id)
            .and_then(|service| service.kill_process_only)
            .unwrap_or(false);
        self.children.insert(
            pid,
            OwnChild {
                service_id,
                instance,
                check: request.check.is_some(),
                last_request: correlation_id.clone(),
                cgroup,
                kill_process_only,
            },
        );
        self.send_to_manager(ms::Message::new(
            Code::ProcessStarted,
            correlation_id,
            Some(Payload::ProcessStarted(ms::ProcessStarted {
                pid,
                started_at_unix_ms: now_unix_ms(),
                start_time,
                cgroup: cgroup_dirs,
            })),
        ));
    }

    /// The cgroup and rlimits the table gives a start of `service_id`
    /// (none for a check); the reason it cannot start otherwise.
    fn contain(
        &self,
        service_id: &str,
        request: &ms::StartProcess,
    ) -> Result<(Option<InstanceCgroup>, Vec<sys::Rlimit>), String> {
        match self.table.get(service_id) {
            Some(service) if request.check.is_none() => self
                .containment
                .prepare(service, request.instance.unwrap_or_default()),
            _ => Ok((None, Vec::new())),
        }
    }

    /// Removes a cgroup that is no longer used, logging why it cannot be.
    fn remove_cgroup(cgroup: Option<&InstanceCgroup>) {
        if let Some(cgroup) = cgroup
            && let Err(error) = cgroup.remove()
        {
            log::warn!("spawner: {error}");
        }
    }

    /// Tells the manager what the node can do with cgroups.
    fn report_cgroups(&mut self) {
        let (available, description) = self.containment.status();
        self.send_to_manager(ms::Message::new(
            Code::CgroupStatus,
            None,
            Some(Payload::CgroupStatus(ms::CgroupStatus {
                available,
                description,
            })),
        ));
    }

    /// Takes the manager's table after a reload: as it is, or (reading
    /// its own configuration) as the signal to read the conf dir again.
    /// An invalid configuration leaves the table as it was.
    fn on_reloaded_table(&mut self, sent: ds::ServiceTable) {
        let TableSource::OwnConfig {
            config,
            build_table,
        } = &mut self.table_source
        else {
            self.set_table(sent);
            return;
        };
        log::debug!(
            "spawner: ignoring the content of the manager's service table ({} services): \
             reading {} again instead",
            sent.services.len(),
            config.dir.display()
        );
        match conf::Config::load(&config.dir) {
            Ok(loaded) => {
                config.services = loaded.services;
                let table = build_table(config);
                self.set_table(table);
            }
            Err(error) => log::error!(
                "spawner: keeping the service table: the configuration in {} read again \
                 is invalid: {}",
                config.dir.display(),
                error.to_string().lines().collect::<Vec<_>>().join("; ")
            ),
        }
    }

    /// Puts `table` in place of the service table; the first one opens
    /// the node's cgroups.
    fn set_table(&mut self, table: ds::ServiceTable) {
        if !self.containment.is_open() {
            self.containment = contain::Containment::open(&table);
        }
        self.log_dir = PathBuf::from(table.log_dir.unwrap_or_default());
        self.keeper.set_log_dir(&self.log_dir);
        self.table = table
            .services
            .into_iter()
            .map(|service| (service.id.clone(), service))
            .collect();
        log::debug!("spawner: {} services in the table", self.table.len());
    }

    /// Whether the table lets `request` start; the reason when not. A
    /// check may run one of its service's check commands instead of the
    /// service's own, with the service's environment, and must send both
    /// outputs to /dev/null, so that it cannot write where the service
    /// does not.
    fn allow(&self, service_id: &str, request: &ms::StartProcess) -> Result<(), String> {
        let service = self
            .table
            .get(service_id)
            .ok_or_else(|| format!("service `{service_id}` is not in the service table"))?;
        let instance = request.instance.unwrap_or_default();
        let instances = service.instances.unwrap_or(1).min(conf::MAX_INSTANCES);
        if instance >= instances {
            return Err(format!(
                "instance {instance} is out of range: `{service_id}` has {instances}"
            ));
        }
        if request.check.is_none() {
            if let Some(pid) = self.running_as(service_id, instance) {
                return Err(format!(
                    "{service_id}#{instance} already runs as pid {pid}: an instance runs once"
                ));
            }
            self.check_rotation(service, request)?;
            if request.ready_fd != service.ready_fd {
                return Err(format!(
                    "its ready_fd is not the one the service table gives `{service_id}`"
                ));
            }
        } else if request.ready_fd.is_some() {
            return Err("a check gets no ready_fd".to_owned());
        }
        // The table holds the service's settings as written; a start is
        // of one instance, with `{instance}` and `{id}` replaced.
        let expand = |text: &String| conf::expand(text, service_id, instance);
        let expand_all = |argv: &[String]| argv.iter().map(expand).collect::<Vec<_>>();
        let (command_differs, stdout, stderr) = if request.check.is_some() {
            let differs = !service
                .checks
                .iter()
                .any(|check| expand_all(&check.command) == request.command);
            (differs, Destination::Null, Destination::Null)
        } else {
            (
                expand_all(&service.command) != request.command,
                self.allowed_destination(service, service.stdout.as_ref(), "stdout", instance),
                self.allowed_destination(service, service.stderr.as_ref(), "stderr", instance),
            )
        };
        let allowed_values: Vec<Option<String>> = service
            .environment
            .iter()
            .map(|item| item.value.as_ref().map(expand))
            .collect();
        let allowed_environment = service
            .environment
            .iter()
            .zip(&allowed_values)
            .map(|(item, value)| (item.name.as_deref(), value.as_deref()));
        let allowed_work_dir = service.work_dir.as_ref().map(expand);
        let requested_environment = request
            .environment
            .iter()
            .map(|item| (item.name.as_deref(), item.value.as_deref()));
        let differing = [
            ("command", command_differs),
            ("user", !same(&service.user, &request.user_name)),
            ("group", !same(&service.group, &request.group_name)),
            ("work_dir", !same(&allowed_work_dir, &request.work_dir)),
            (
                "environment",
                env_set(allowed_environment) != env_set(requested_environment),
            ),
            (
                "stdout",
                requested_destination(request.stdout.as_ref()) != Some(stdout),
            ),
            (
                "stderr",
                requested_destination(request.stderr.as_ref()) != Some(stderr),
            ),
        ];
        match differing.iter().find(|(_, differs)| *differs) {
            Some((field, _)) => Err(format!(
                "its {field} is not the one the service table gives `{service_id}`"
            )),
            None => Ok(()),
        }
    }

    /// The pid of the process (its own child or adopted) that runs as
    /// instance `instance` of `service_id`, checks aside.
    fn running_as(&self, service_id: &str, instance: u32) -> Option<u32> {
        let is_it = |process: &OwnChild| {
            !process.check && process.instance == instance && process.service_id == service_id
        };
        self.children
            .iter()
            .find(|(_, child)| is_it(child))
            .or_else(|| {
                self.adopted
                    .iter()
                    .map(|(pid, (process, _))| (pid, process))
                    .find(|(_, process)| is_it(process))
            })
            .map(|(pid, _)| *pid)
    }

    /// Refuses rotation numbers other than the service's, or beyond the
    /// bounds of the configuration.
    fn check_rotation(
        &self,
        service: &ds::service_table::Service,
        request: &ms::StartProcess,
    ) -> Result<(), String> {
        for (stream, output) in [("stdout", &request.stdout), ("stderr", &request.stderr)] {
            let Some(output) = output
                .as_ref()
                .filter(|output| output.kind == ms::output::Kind::File as i32)
            else {
                continue;
            };
            let keep = output.keep.unwrap_or_default();
            if keep > conf::MAX_LOG_KEEP {
                return Err(format!(
                    "its {stream} keeps {keep} rotated files, more than {}",
                    conf::MAX_LOG_KEEP
                ));
            }
            if output.rotate_bytes != service.log_max_bytes || output.keep != service.log_keep {
                return Err(format!(
                    "its {stream} rotation is not the one the service table gives `{}`",
                    service.id
                ));
            }
        }
        Ok(())
    }

    /// Where the table lets stream `stream` of instance `instance` of
    /// `service` go: its configured output resolved as the node resolves
    /// it ([`conf::Output::path`]). An output the table does not give is
    /// inherited, as in a `StartProcess`; one of an unknown kind allows
    /// nothing.
    fn allowed_destination(
        &self,
        service: &ds::service_table::Service,
        output: Option<&ds::service_table::Output>,
        stream: &str,
        instance: u32,
    ) -> Destination {
        let Some(output) = output else {
            return Destination::Inherit;
        };
        let configured = match table_output::Kind::try_from(output.kind) {
            Ok(table_output::Kind::Log) => conf::Output::LogDir,
            Ok(table_output::Kind::Path) => {
                conf::Output::Path(PathBuf::from(output.path.clone().unwrap_or_default()))
            }
            Ok(table_output::Kind::Null) => return Destination::Null,
            Ok(table_output::Kind::Inherit) => return Destination::Inherit,
            Ok(table_output::Kind::Node) => return Destination::Node,
            Err(_) => return Destination::Unknown,
        };
        configured
            .path(&service.id, stream, instance, &self.log_dir)
            .map_or(Destination::Unknown, Destination::File)
    }

    /// Watches a process a previous node started, if its pid still names
    /// it; answers `Ack`, or `Error` when it cannot.
    fn adopt(&mut self, correlation_id: Option<String>, request: ms::AdoptProcess) {
        let pid = request.pid;
        let service_id = request.service_id.clone().unwrap_or_default();
        let instance = request.instance.unwrap_or_default();
        // Where its instance has a cgroup, only a member is its process.
        let cgroup = self.containment.existing(&service_id, instance);
        if let Some(cgroup) = &cgroup
            && !cgroup.contains(pid)
        {
            let reason =
                format!("pid {pid} is not in the cgroup of {service_id}.{instance}; not adopted");
            log::warn!("spawner: {reason}");
            // Out of its instance's cgroup it is no longer the instance:
            // not watched as it, nor in the record, so that the instance
            // can start again; not signalled either.
            if self.adopted.get(&pid).is_some_and(|(process, _)| {
                process.service_id == service_id && process.instance == instance
            }) {
                self.forget_adopted(pid);
                self.save_record();
            }
            self.send_to_manager(ms::Message::error(correlation_id, reason));
            return;
        }
        let kill_process_only = self
            .table
            .get(&service_id)
            .and_then(|service| service.kill_process_only)
            .unwrap_or(false);
        // An ended process is reported, and so not found below.
        self.check_adopted();
        let recorded = self.record.get(pid).filter(|recorded| {
            recorded.start_time == request.start_time
                && request.service_id.as_deref() == Some(recorded.service_id.as_str())
                && request.instance == Some(recorded.instance)
        });
        let reply = match (recorded, self.adopted.get_mut(&pid)) {
            (Some(_), Some((process, _))) => {
                process.cgroup = cgroup;
                process.kill_process_only = kill_process_only;
                log::debug!(
                    "spawner: the manager adopts {}#{} (pid {pid})",
                    process.service_id,
                    process.instance
                );
                process.last_request.clone_from(&correlation_id);
                ms::Message::new(Code::Ack, correlation_id, None)
            }
            _ => {
                let reason = format!(
                    "pid {pid} (start time {}) is not a running process the spawner's record \
                     holds as {}#{}: not adopted",
                    request.start_time,
                    request.service_id.as_deref().unwrap_or("?"),
                    request.instance.unwrap_or_default()
                );
                log::warn!("spawner: {reason}");
                ms::Message::error(correlation_id, reason)
            }
        };
        self.send_to_manager(reply);
    }

    /// Reports every adopted process whose pidfd says it ended: before a
    /// request about one, which its poll event may not have reached yet.
    fn check_adopted(&mut self) {
        let pids: Vec<u32> = self.adopted.keys().copied().collect();
        let pidfds: Vec<_> = pids.iter().map(|pid| self.adopted[pid].1.as_fd()).collect();
        let ended = match sys::readable_fds(&pidfds) {
            Ok(ended) => ended,
            Err(error) => {
                log::warn!("spawner: cannot poll the pidfds of adopted processes: {error}");
                return;
            }
        };
        for (pid, _) in pids.into_iter().zip(ended).filter(|(_, ended)| *ended) {
            self.adopted_ended(pid);
        }
    }

    /// Reports the end of adopted process `pid`, whose pidfd turned
    /// readable (nothing if it was reported already).
    fn adopted_ended(&mut self, pid: u32) {
        if let Some(process) = self.forget_adopted(pid) {
            log::debug!(
                "spawner: adopted {}#{} (pid {pid}) ended",
                process.service_id,
                process.instance
            );
            self.ended(pid, process, Ending::default());
        }
    }

    /// Reads the readiness pipe of child `pid`, which the poll says is
    /// readable, for as long as it is (the poll reports only new data);
    /// drops it, out of the poll, once it has said all it will.
    fn read_ready_pipe(&mut self, pid: u32) {
        let Some(mut pipe) = self.ready_pipes.remove(&pid) else {
            return;
        };
        while sys::readable_fds(&[pipe.as_fd()]).unwrap_or_default() == [true] {
            if !self.read_ready(pid, &mut pipe) {
                self.unwatch_fd(&pipe, &format!("the readiness pipe of pid {pid}"));
                return;
            }
        }
        self.ready_pipes.insert(pid, pipe);
    }

    /// Reads what child `pid` wrote to its readiness pipe, which must not
    /// block (it is readable); reports `ProcessReady` at a newline. True
    /// while the child may still say it is ready.
    fn read_ready(&mut self, pid: u32, pipe: &mut File) -> bool {
        let mut buffer = [0u8; 512];
        match pipe.read(&mut buffer) {
            Ok(0) => {
                log::debug!("spawner: pid {pid} closed its readiness fd without a newline");
                false
            }
            Ok(count) if buffer[..count].contains(&b'\n') => {
                let correlation_id = self
                    .children
                    .get(&pid)
                    .and_then(|child| child.last_request.clone());
                self.send_to_manager(ms::Message::new(
                    Code::ProcessReady,
                    correlation_id,
                    Some(Payload::ProcessReady(ms::ProcessReady { pid })),
                ));
                false
            }
            Ok(_) => true,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => true,
            Err(error) => {
                log::warn!("spawner: reading the readiness pipe of pid {pid}: {error}");
                false
            }
        }
    }

    fn signal(&mut self, correlation_id: Option<String>, request: ms::SignalProcess) {
        if self.adopted.contains_key(&request.pid) {
            // An ended process's pid may be anyone's by now: report the end
            // first, and the signal is refused below.
            self.check_adopted();
        }
        let own = self.children.get_mut(&request.pid);
        let adopted = self
            .adopted
            .get_mut(&request.pid)
            .map(|(process, _)| process);
        if let Some(process) = own.or(adopted) {
            process.last_request.clone_from(&correlation_id);
        }
        let reply = match self.send_signal(request) {
            Ok(()) => ms::Message::new(Code::Ack, correlation_id, None),
            Err(reason) => {
                log::warn!("spawner: signal refused: {reason}");
                ms::Message::error(correlation_id, reason)
            }
        };
        self.send_to_manager(reply);
    }

    /// Signals one of its own children or adopted processes (or its
    /// process group); the reason when it cannot.
    /// A SIGKILL kills the instance's whole cgroup too, so children that
    /// left its process group with `setsid` die with it.
    fn send_signal(&self, request: ms::SignalProcess) -> Result<(), String> {
        let pid = request.pid;
        if !(1..=MAX_SIGNAL).contains(&request.signal) {
            return Err(format!(
                "signal {} to pid {pid} is not a signal number (1 to {MAX_SIGNAL})",
                request.signal
            ));
        }
        let process = self
            .children
            .get(&pid)
            .or_else(|| self.adopted.get(&pid).map(|(process, _)| process));
        let target = i32::try_from(pid)
            .ok()
            .filter(|_| process.is_some())
            .ok_or_else(|| format!("pid {pid} is not a live child of the spawner"))?;
        if request.signal == libc::SIGKILL
            && let Some(cgroup) = process.and_then(|process| process.cgroup.as_ref())
        {
            cgroup.kill();
        }
        let (target, what) = if request.group() {
            (-target, "process group")
        } else {
            (target, "process")
        };
        sys::kill(target, request.signal)
            .map_err(|error| format!("signal {} to {what} {pid}: {error}", request.signal))
    }

    /// Reaps every exited child and reports each of its own.
    fn reap_exited(&mut self) -> Result<(), SpawnerError> {
        while let Some((pid, status, usage)) =
            sys::reap_any().map_err(|source| SpawnerError::Reap { source })?
        {
            self.reaped(pid, status, usage);
        }
        Ok(())
    }

    /// Reaps its child `pid` if it has ended, and reports that.
    fn reap_ended(&mut self, pid: u32) -> Result<(), SpawnerError> {
        if self.children.contains_key(&pid)
            && let Some((pid, status, usage)) =
                sys::reap_child(pid).map_err(|source| SpawnerError::Reap { source })?
        {
            self.reaped(pid, status, usage);
        }
        Ok(())
    }

    /// Child `pid` was reaped: reports its end if it is one of its own.
    fn reaped(&mut self, pid: u32, status: ExitStatusKind, usage: sys::Usage) {
        let Some(child) = self.children.remove(&pid) else {
            log::debug!("spawner: reaped pid {pid}, not a child it started ({status:?})");
            return;
        };
        self.record.forget(pid);
        // A child may say it is ready and end at once: the newline is
        // still in the pipe, and comes before its end.
        self.read_ready_pipe(pid);
        if let Some(pipe) = self.ready_pipes.remove(&pid) {
            self.unwatch_fd(&pipe, &format!("the readiness pipe of pid {pid}"));
        }
        log::debug!(
            "spawner: {}#{} (pid {pid}, last request {}) ended: {status:?}",
            child.service_id,
            child.instance,
            child.last_request.as_deref().unwrap_or("none"),
        );
        let (exit_code, exit_signal) = match status {
            ExitStatusKind::Code(code) => (Some(code), None),
            ExitStatusKind::Signal(signal) => (None, Some(signal)),
        };
        let ending = Ending {
            exit_code,
            exit_signal,
            usage: Some(usage),
        };
        self.ended(pid, child, ending);
    }

    /// The main process `pid` of an instance ended: what is left in its
    /// cgroup is killed (unless its kill mode is "process"), and its end
    /// reported once the cgroup is empty.
    fn ended(&mut self, pid: u32, process: OwnChild, ending: Ending) {
        let drain = process
            .cgroup
            .as_ref()
            .is_some_and(|cgroup| !process.kill_process_only && !cgroup.is_empty());
        if !drain {
            self.report_exit(pid, process, ending);
            return;
        }
        if let Some(cgroup) = &process.cgroup {
            log::debug!(
                "spawner: {}#{} (pid {pid}) ended; killing what is left in its cgroup",
                process.service_id,
                process.instance
            );
            cgroup.kill();
        }
        if self.draining.is_empty() {
            self.drain_check_at = Instant::now() + DRAIN_POLL;
        }
        self.draining.push(Draining {
            pid,
            process,
            ending,
            give_up_at: Instant::now() + DRAIN_LIMIT,
        });
    }

    /// Reports each drained instance whose cgroup is empty (or has taken
    /// too long), and kills again in the others: a member may have forked
    /// between the kill and its end.
    fn check_draining(&mut self) {
        let now = Instant::now();
        let mut still = Vec::new();
        for draining in std::mem::take(&mut self.draining) {
            let cgroup = draining.process.cgroup.as_ref();
            let empty = cgroup.is_none_or(InstanceCgroup::is_empty);
            if empty || now >= draining.give_up_at {
                if !empty {
                    log::warn!(
                        "spawner: the cgroup of {}#{} still holds processes {:?} after {DRAIN_LIMIT:?}; \
                         reporting its end anyway",
                        draining.process.service_id,
                        draining.process.instance,
                        cgroup.map(InstanceCgroup::members).unwrap_or_default()
                    );
                }
                self.report_exit(draining.pid, draining.process, draining.ending);
            } else {
                if let Some(cgroup) = cgroup {
                    cgroup.kill();
                }
                still.push(draining);
            }
        }
        self.draining = still;
    }

    /// Tells the manager that process `pid` ended, under the correlation
    /// id of the last request about it, with its cgroup's OOM kills; the
    /// cgroup is removed when empty.
    fn report_exit(&mut self, pid: u32, process: OwnChild, ending: Ending) {
        let oom_kills = process.cgroup.as_ref().map(InstanceCgroup::oom_kills);
        if let Some(cgroup) = process.cgroup.as_ref().filter(|cgroup| cgroup.is_empty()) {
            Self::remove_cgroup(Some(cgroup));
        }
        let exited = ms::Message::new(
            Code::ProcessExited,
            process.last_request,
            Some(Payload::ProcessExited(ms::ProcessExited {
                pid,
                exit_code: ending.exit_code,
                exit_signal: ending.exit_signal,
                at_unix_ms: now_unix_ms(),
                oom_kills: oom_kills.filter(|kills| *kills > 0),
                cpu_usec: ending.usage.map(|usage| usage.cpu_usec),
                max_rss_bytes: ending.usage.map(|usage| usage.max_rss_bytes),
            })),
        );
        self.tracer.record(Role::Process, Role::Spawner, &exited);
        self.send_to_manager(exited);
    }

    /// Handles a daemon message; true when the spawner should end.
    fn on_daemon_message(&mut self, message: ds::Message) -> Result<bool, SpawnerError> {
        match DaemonSpawner::from_message(message.code, message.payload) {
            Ok(DaemonSpawner::Shutdown) => {}
            Ok(DaemonSpawner::ServiceTable(table)) => {
                match self.table_source {
                    TableSource::FromLinks => self.set_table(table),
                    TableSource::OwnConfig { .. } => log::debug!(
                        "spawner: ignoring the daemon's service table ({} services): \
                         the table comes from the configuration read before the split",
                        table.services.len()
                    ),
                }
                return Ok(false);
            }
            Ok(DaemonSpawner::Ack) => {
                log::warn!("spawner: ignoring the daemon's Ack: it asked the daemon nothing");
                return Ok(false);
            }
            Err(bad) => {
                log::warn!("spawner: ignoring a daemon message: daemon_spawner: {bad}");
                return Ok(false);
            }
        }
        self.reap_exited()?;
        // What services kept running (on_node_exit = keep) still uses
        // stays; the rest of the node's cgroups go.
        self.containment.close();
        let ack = ds::Message {
            code: ds::message::Code::Ack as i32,
            correlation_id: message.correlation_id,
            payload: None,
        };
        self.tracer.record(Role::Spawner, Role::Daemon, &ack);
        self.to_daemon
            .send(ack)
            .map_err(|_| SpawnerError::ShutdownAckUndelivered)?;
        log::debug!(
            "spawner: shut down, leaving {} running children and {} adopted processes",
            self.children.len(),
            self.adopted.len()
        );
        Ok(true)
    }

    /// Sends a `LogMessage`; its `level` is `log::Level`'s number
    /// (1 error, 2 warn, 3 info, 4 debug, 5 trace).
    fn log_to_manager(&mut self, level: log::Level, correlation_id: Option<String>, text: String) {
        self.send_to_manager(ms::Message::new(
            Code::LogMessage,
            correlation_id,
            Some(Payload::LogMessage(ms::LogMessage {
                level: level as u32,
                target: module_path!().to_owned(),
                text,
            })),
        ));
    }

    /// Records and sends `message`, waiting while the manager's channel is
    /// full. Once the manager is gone, messages are only logged.
    fn send_to_manager(&mut self, message: ms::Message) {
        if !self.manager_listening {
            log::info!("spawner: the manager is gone; not sent: {message:?}");
            return;
        }
        self.tracer.record(Role::Spawner, Role::Manager, &message);
        if let Err(unsent) = self.to_manager.send(message) {
            self.manager_listening = false;
            log::info!("spawner: the manager is gone; not sent: {:?}", unsent.0);
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Its SIGCHLD handler would write into a socket nobody reads.
        signal_hook::low_level::unregister(self.child_exited_action);
    }
}

/// `processes` as `KnownProcesses` messages of at most
/// [`KNOWN_PER_MESSAGE`] each, every one but the last saying `more`; one
/// empty message when there are none.
fn known_pieces(processes: Vec<ms::known_processes::Process>) -> Vec<ms::KnownProcesses> {
    let pieces = processes.len().div_ceil(KNOWN_PER_MESSAGE).max(1);
    let mut chunks = processes.chunks(KNOWN_PER_MESSAGE);
    (0..pieces)
        .map(|piece| ms::KnownProcesses {
            processes: chunks.next().map(<[_]>::to_vec).unwrap_or_default(),
            more: (piece + 1 < pieces).then_some(true),
        })
        .collect()
}

/// Resolves `user` (a name or uid) and `group` (a name or gid; without
/// it, the user's primary group) exactly as a service's are resolved. The
/// daemon drops the node process to these ids.
pub fn resolve_user(user: &str, group: Option<&str>) -> Result<sys::UserIds, UserError> {
    conf::host::run_as(Some(user), group)
        .map_err(|reason| UserError(launch::LaunchError::Account { reason }))
}

/// Why [`resolve_user`] failed: the user or group does not exist, or the
/// database could not be read.
#[derive(Debug)]
pub struct UserError(launch::LaunchError);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Where a child's output stream goes, as the table check compares it.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// The node's (and spawner's) own stream.
    Inherit,
    /// /dev/null.
    Null,
    /// Captured for the node's stderr.
    Node,
    /// Appended to this file.
    File(PathBuf),
    /// Nothing a request can match: a table output the spawner cannot
    /// read.
    Unknown,
}

/// Where a `StartProcess` sends a stream (absent: inherited, as
/// `launch` does); None for an output kind `launch` would refuse.
fn requested_destination(output: Option<&ms::Output>) -> Option<Destination> {
    let Some(output) = output else {
        return Some(Destination::Inherit);
    };
    match ms::output::Kind::try_from(output.kind).ok()? {
        ms::output::Kind::File => Some(Destination::File(PathBuf::from(
            output.path.as_deref().unwrap_or_default(),
        ))),
        ms::output::Kind::Null => Some(Destination::Null),
        ms::output::Kind::Inherit => Some(Destination::Inherit),
        ms::output::Kind::Node => Some(Destination::Node),
    }
}

/// Creates the node's log dir (and its parents) if it is missing: the one
/// directory of the node's own configuration that output goes to, writable
/// by the spawner's user only (0750, group `reader_gid` when given) so that
/// its files are the keeper's to handle. Output paths elsewhere are never
/// created.
fn create_log_dir(log_dir: &Path, reader_gid: Option<u32>) {
    use std::os::unix::fs::DirBuilderExt;
    if log_dir.as_os_str().is_empty() || log_dir.is_dir() {
        return;
    }
    let created = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(log_dir)
        .and_then(|()| std::os::unix::fs::chown(log_dir, None, reader_gid));
    if let Err(error) = created {
        log::warn!(
            "spawner: cannot create the log dir {}: {error}",
            log_dir.display()
        );
    }
}

/// Environment items as a set of (name, value), absent meaning "": the
/// order of items does not matter, and a repeated item changes nothing.
fn env_set<'a>(
    items: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> BTreeSet<(&'a str, &'a str)> {
    items
        .map(|(name, value)| (name.unwrap_or_default(), value.unwrap_or_default()))
        .collect()
}

/// Whether a table field and a request field say the same, "" meaning
/// absent in both.
fn same(allowed: &Option<String>, requested: &Option<String>) -> bool {
    launch::present(allowed.as_deref()) == launch::present(requested.as_deref())
}

/// A pidfd of the process `request` names: opened first, then the pid's
/// start time checked, so a pid recycled before the open is caught (after
/// it, the pidfd holds on to the process it names). The reason otherwise.
fn watch(request: &ms::AdoptProcess) -> Result<OwnedFd, String> {
    let pid = request.pid;
    let pidfd = sys::pidfd_open(pid).map_err(|error| format!("cannot watch pid {pid}: {error}"))?;
    match sys::process_start_time(pid) {
        Ok(start_time) if start_time == request.start_time => Ok(pidfd),
        Ok(_) => Err(format!(
            "pid {pid} now names another process (its start time differs); not adopted"
        )),
        Err(error) => Err(format!("cannot read the start time of pid {pid}: {error}")),
    }
}

/// Why the spawner ended other than by the daemon's `Shutdown`.
#[derive(Debug)]
pub enum SpawnerError {
    /// The daemon's channel closed before it sent `Shutdown`.
    DaemonChannelClosed {
        /// The channel's error.
        source: RecvError,
    },
    /// Its SIGCHLD notices could not be set up or read, so exits could no
    /// longer be noticed.
    ChildExitNotices(io::Error),
    /// Waiting in its poll failed.
    Poll {
        /// The OS error.
        source: io::Error,
    },
    /// The daemon stopped listening before the `Ack` of its `Shutdown`.
    ShutdownAckUndelivered,
    /// `waitpid(-1, WNOHANG)` failed.
    Reap {
        /// The OS error.
        source: io::Error,
    },
    /// Its own record cannot be opened: it would not know what it started.
    Record(RecordError),
}

impl fmt::Display for SpawnerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnerError::DaemonChannelClosed { source } => write!(
                f,
                "spawner: the daemon's channel closed before it asked for shutdown: {source}"
            ),
            SpawnerError::ChildExitNotices(source) => write!(
                f,
                "spawner: SIGCHLD notices through a socketpair, without which child exits \
                 would go unnoticed: {source}"
            ),
            SpawnerError::Poll { source } => write!(f, "spawner: waiting in its poll: {source}"),
            SpawnerError::ShutdownAckUndelivered => f.write_str(
                "spawner: could not acknowledge shutdown: the daemon's channel is closed",
            ),
            SpawnerError::Reap { source } => {
                write!(f, "spawner: reaping children with waitpid: {source}")
            }
            SpawnerError::Record(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for SpawnerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnerError::DaemonChannelClosed { source } => Some(source),
            SpawnerError::ShutdownAckUndelivered => None,
            SpawnerError::ChildExitNotices(source)
            | SpawnerError::Poll { source }
            | SpawnerError::Reap { source } => Some(source),
            SpawnerError::Record(error) => Some(error),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
