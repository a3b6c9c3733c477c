//! One service's configuration: `services/<id>.toml`, the id being the
//! file's stem.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeValue;

use super::ConfigProblem;

/// The most rotated log files a service may keep (`log_keep`): a bound
/// the spawner enforces too, whatever the node sends.
pub const MAX_LOG_KEEP: u32 = 1000;

/// How fast the log keeper reads each captured stream unless a service
/// says otherwise (`log_max_rate`, bytes a second): about 50,000 lines of
/// 80 bytes a second, far more than a service logs, small enough that a
/// service writing flat out cannot take the CPUs and the disk from the
/// node (README, "Output capture").
pub const DEFAULT_LOG_MAX_RATE: u64 = 4 * 1024 * 1024;

/// The most instances a service may have (`instances`).
pub const MAX_INSTANCES: u32 = 1000;
use super::document::{Document, Entry, expected, to_duration, to_text, whole_number};
use super::resources::{self, Resources};

/// Names the node uses for its own parts in status and requests, so no
/// service may take them.
const RESERVED_IDS: [&str; 8] = [
    "daemon", "manager", "spawner", "io", "config", "state", "node", "cluster",
];
/// The longest legal service id, in bytes; the bound on every service id
/// a client sends.
pub const MAX_ID_LEN: usize = 64;

const COMMAND_FORM: &str = "an array of strings, e.g. [\"/bin/sleep\", \"60\"]; no shell is used";

const SIGNALS: [(&str, i32); 15] = [
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("HUP", libc::SIGHUP),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("WINCH", libc::SIGWINCH),
    ("SEGV", libc::SIGSEGV),
    ("PIPE", libc::SIGPIPE),
];
/// SIGRTMAX on Linux.
const HIGHEST_SIGNAL: i32 = 64;
const SIGNAL_FORM: &str = "a signal name (\"TERM\", \"INT\", \"HUP\", \"QUIT\", \"KILL\", \"USR1\", \"USR2\", ..., with or without \"SIG\") or a number from 1 to 64";

const OUTPUT_FORM: &str = "\"log\" (a file in the log dir), \"null\", \"inherit\", \"node\" or a file path (relative to the log dir)";

const MIB: u64 = 1024 * 1024;

/// `start_grace` when not given.
const DEFAULT_START_GRACE: Duration = Duration::from_millis(300);

const IDS_FORM: &str = "an array of service ids, e.g. [\"db\"]";
const READY_FORM: &str = "\"started\", or a table with one of fd, command or tcp, e.g. { fd = 3 }, { command = [\"/bin/check\"] }, { tcp = \"127.0.0.1:8080\" }";
const HEALTH_FORM: &str =
    "a table with one of command or tcp, e.g. { tcp = \"127.0.0.1:8080\", interval = \"10s\" }";
const TCP_FORM: &str = "an IP address and port, e.g. \"127.0.0.1:8080\"";
/// The lowest readiness fd: 0 to 2 are the child's stdio.
const LOWEST_READY_FD: u64 = 3;
/// The highest readiness fd: the smallest `RLIMIT_NOFILE` in common use.
const HIGHEST_READY_FD: u64 = 1023;

/// One service: what to run, how many, as whom, and how to restart and stop it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// The service's id: its file's stem.
    pub id: String,
    /// `command`: the program and its arguments, run without a shell. Never empty.
    pub command: Vec<String>,
    /// `instances`: how many copies run (default 1; 1 to 1000).
    pub instances: u32,
    /// `env`: variables added to the node's environment for the service.
    pub env: BTreeMap<String, String>,
    /// `work_dir`: the working directory; a relative one is relative to the conf dir.
    pub work_dir: Option<PathBuf>,
    /// `user`: the user to run as, by name or numeric id (default: the node's).
    pub user: Option<String>,
    /// `group`: the group to run as, by name or numeric id (default: the user's).
    pub group: Option<String>,
    /// `autostart`: whether it starts with the node (default true).
    pub autostart: bool,
    /// `restart`: when an exited instance is started again (default on-failure).
    pub restart: RestartPolicy,
    /// `backoff_initial`: the first wait before a restart (default 250ms).
    pub backoff_initial: Duration,
    /// `backoff_max`: the longest wait before a restart, at least
    /// `backoff_initial` (default 30s).
    pub backoff_max: Duration,
    /// `stable_after`: a run this long resets the back-off and counts as a
    /// success (default 5s).
    pub stable_after: Duration,
    /// `give_up_after`: failed starts within `give_up_window` before the
    /// instance is marked failed (default 5; 0 = never give up).
    pub give_up_after: u32,
    /// `give_up_window`: the window `give_up_after` counts in (default 60s).
    pub give_up_window: Duration,
    /// `stop_signal`: the signal that asks it to stop (default SIGTERM).
    pub stop_signal: i32,
    /// `stop_timeout`: how long a stop waits before SIGKILL (default 10s).
    pub stop_timeout: Duration,
    /// `stdout`: where standard output goes (default: a file in the log dir).
    pub stdout: Output,
    /// `stderr`: where standard error goes (default: a file in the log dir).
    pub stderr: Output,
    /// `log_max_bytes`: a log file past this size is rotated (default 1 MiB;
    /// 0 = never rotate).
    pub log_max_bytes: u64,
    /// `log_keep`: how many rotated log files are kept (default 3).
    pub log_keep: u32,
    /// `log_max_rate`: the most bytes a second the log keeper reads from
    /// each of its captured streams (default [`DEFAULT_LOG_MAX_RATE`];
    /// 0 = no limit); a faster writer waits on its full pipe.
    pub log_max_rate: u64,
    /// `on_node_exit`: what happens to it when the node exits (default stop).
    pub on_node_exit: OnNodeExit,
    /// `requires`: services that must be ready before it starts; when one
    /// fails or stops, it is stopped, and started again when it is back.
    pub requires: Vec<String>,
    /// `after`: services it starts after (and stops before) when they start
    /// (stop) together, with no failure coupling.
    pub after: Vec<String>,
    /// `ready`: when a started instance counts as ready (default: once its
    /// process runs).
    pub ready: Readiness,
    /// `health`: a liveness check that restarts the instance when it fails
    /// too often in a row (default: none).
    pub health: Option<Health>,
    /// `limits`, `memory_max`, `memory_high`, `cpu_max`, `pids_max` and
    /// `kill_mode` (default: none, and `"control-group"`).
    pub resources: Resources,
    /// `start_grace`: with `ready = "started"`, how long an instance must
    /// run before a `start` counts it as started (default 300ms), so that
    /// a program that exits at once fails its start.
    pub start_grace: Duration,
    /// `description`: a line about it for people (default: none).
    pub description: Option<String>,
}

/// When a started instance counts as ready: `ready = "started"` or
/// `ready = { fd | command | tcp, interval, timeout }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// What says it is ready.
    pub signal: ReadySignal,
    /// `interval`: how often a check is tried until one passes (default
    /// 250ms).
    pub interval: Duration,
    /// `timeout`: how long it may take to become ready before its start
    /// counts as failed (default 30s).
    pub timeout: Duration,
}

/// What tells that an instance is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadySignal {
    /// `"started"`: its process runs.
    Started,
    /// `{ fd = N }`: it writes a newline to fd N (s6 and dinit's
    /// notification).
    Fd(u32),
    /// `{ command = [...] }` or `{ tcp = "..." }`: a check passes.
    Check(Probe),
}

/// A check of a running service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `command`: an argv run as the service (same user, group, work dir
    /// and environment) that passes when it exits 0.
    Command(Vec<String>),
    /// `tcp`: passes when a TCP connection to the address is accepted.
    /// As written: it may hold `{instance}` and `{id}` (see
    /// [`ServiceConfig::for_instance`]); [`Probe::tcp_address`] reads it.
    Tcp(String),
}

impl Probe {
    /// The address of a `tcp` probe, once `{instance}` and `{id}` are
    /// replaced; `None` for a command, or text that is not an address
    /// (which a loaded configuration does not hold).
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        match self {
            Probe::Tcp(text) => text.parse().ok(),
            Probe::Command(_) => None,
        }
    }

    /// This probe as instance `index` of service `id` runs it.
    pub fn for_instance(&self, id: &str, index: u32) -> Probe {
        match self {
            Probe::Command(argv) => {
                Probe::Command(argv.iter().map(|arg| expand(arg, id, index)).collect())
            }
            Probe::Tcp(text) => Probe::Tcp(expand(text, id, index)),
        }
    }
}

/// `text` with `{instance}` replaced by the instance's index and `{id}`
/// by the service's id; any other braces are left as they are.
pub fn expand(text: &str, id: &str, index: u32) -> String {
    if !text.contains('{') {
        return text.to_owned();
    }
    text.replace("{instance}", &index.to_string())
        .replace("{id}", id)
}

/// `health = { command | tcp, interval, timeout, failures }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The check.
    pub probe: Probe,
    /// `interval`: the time between checks (default 10s).
    pub interval: Duration,
    /// `timeout`: how long one check may take before it counts as failed
    /// (default 5s).
    pub timeout: Duration,
    /// `failures`: failed checks in a row that restart the instance
    /// (default 3).
    pub failures: u32,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            signal: ReadySignal::Started,
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(30),
        }
    }
}

impl ServiceConfig {
    /// The fd its process gets to say it is ready (`ready = { fd = N }`).
    pub fn ready_fd(&self) -> Option<u32> {
        match self.ready.signal {
            ReadySignal::Fd(fd) => Some(fd),
            _ => None,
        }
    }

    /// Instance `index` of it: `{instance}` (the index) and `{id}` replaced
    /// in `command`, `env` values, `work_dir`, `stdout`/`stderr` paths and
    /// the readiness and health checks, so that two copies of a server can
    /// listen on two ports and write two files.
    pub fn for_instance(&self, index: u32) -> ServiceConfig {
        let id = &self.id;
        let text = |value: &String| expand(value, id, index);
        let path = |path: &Path| PathBuf::from(expand(&path.to_string_lossy(), id, index));
        let output = |output: &Output| match output {
            Output::Path(file) => Output::Path(path(file)),
            other => other.clone(),
        };
        let mut instance = self.clone();
        instance.command = self.command.iter().map(text).collect();
        instance.env = self
            .env
            .iter()
            .map(|(name, value)| (name.clone(), text(value)))
            .collect();
        instance.work_dir = self.work_dir.as_deref().map(path);
        instance.stdout = output(&self.stdout);
        instance.stderr = output(&self.stderr);
        if let ReadySignal::Check(probe) = &self.ready.signal {
            instance.ready.signal = ReadySignal::Check(probe.for_instance(id, index));
        }
        if let Some(health) = &mut instance.health {
            health.probe = health.probe.for_instance(id, index);
        }
        instance
    }

    /// Whether any of its settings differs between instances: it uses
    /// `{instance}` somewhere.
    pub fn is_per_instance(&self) -> bool {
        self.for_instance(0) != self.for_instance(1)
    }

    /// The check commands it may run, for the spawner's service table.
    pub fn check_commands(&self) -> Vec<&[String]> {
        let ready = match &self.ready.signal {
            ReadySignal::Check(Probe::Command(argv)) => Some(argv.as_slice()),
            _ => None,
        };
        let health = match &self.health {
            Some(Health {
                probe: Probe::Command(argv),
                ..
            }) => Some(argv.as_slice()),
            _ => None,
        };
        ready.into_iter().chain(health).collect()
    }
}

/// When an exited instance is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    /// `"always"`: whatever the exit.
    Always,
    /// `"on-failure"`: after a non-zero exit status or a death by signal.
    OnFailure,
    /// `"never"`: the instance stays exited.
    Never,
}

/// What happens to a service's processes when the node exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnNodeExit {
    /// `"stop"`: they are stopped as part of the node's shutdown.
    Stop,
    /// `"keep"`: they are left running.
    Keep,
}

/// Where one output stream of a service goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `"log"`: `<log_dir>/<id>.<index>.<stream>.log`.
    LogDir,
    /// A file path as written; a relative one is relative to the log dir.
    Path(PathBuf),
    /// `"null"`: discarded.
    Null,
    /// `"inherit"`: the node's own stream.
    Inherit,
    /// `"node"`: captured, each line prefixed `id.index | `, and written
    /// to the node's stderr (for a node that is a container's main process).
    Node,
}

impl Output {
    /// Where stream `stream` ("stdout" or "stderr") of instance `index` of
    /// service `id` goes: LogDir resolves to `<log_dir>/<id>.<index>.<stream>.log`,
    /// a relative Path to `<log_dir>/<path>`; None for Null/Inherit. (A
    /// `Path` is shared by all instances.) The manager puts this path in its
    /// `StartProcess` and the spawner checks it with this same function.
    pub fn path(&self, id: &str, stream: &str, index: u32, log_dir: &Path) -> Option<PathBuf> {
        match self {
            Output::LogDir => Some(super::paths::log_file(log_dir, id, index, stream)),
            Output::Path(path) => Some(log_dir.join(expand(&path.to_string_lossy(), id, index))),
            Output::Null | Output::Inherit | Output::Node => None,
        }
    }
}

/// Checks that `id` (a file's stem) can name a service; the error says why not.
pub(super) fn check_id(id: &str) -> Result<(), String> {
    if RESERVED_IDS.contains(&id) {
        return Err(format!(
            "the service id `{id}` (the file's name) is reserved for the node's own parts ({}); rename the file",
            RESERVED_IDS.join(", ")
        ));
    }
    let valid_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid_chars || id.is_empty() || id.len() > MAX_ID_LEN || id.starts_with('.') {
        return Err(format!(
            "the service id `{id}` (the file's name) is not valid: expected 1 to {MAX_ID_LEN} of A-Z a-z 0-9 _ . - \
             not starting with '.'; rename the file"
        ));
    }
    Ok(())
}

/// What a service file says besides the service: where it names other
/// services, for problems found once all services are known, and the env
/// file it read, whose text is part of the service's version.
#[derive(Debug, Default, Clone)]
pub(super) struct ServiceFacts {
    /// The line of `requires`.
    pub(super) requires: Option<usize>,
    /// The line of `after`.
    pub(super) after: Option<usize>,
    /// `env_file` and its text.
    pub(super) env_file: Option<(PathBuf, String)>,
}

/// Reads service `id` from `text`, the content of `file`, adding every
/// problem to `problems`. `None` only when the file is not valid TOML; a
/// returned service is complete only if no problem was added.
pub(super) fn parse(
    id: String,
    file: &Path,
    text: &str,
    conf_dir: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<(ServiceConfig, ServiceFacts)> {
    let mut doc = match Document::parse(file, text) {
        Ok(doc) => doc,
        Err(syntax) => {
            problems.push(syntax);
            return None;
        }
    };
    let (mut service, mut facts) = parse_document(id, &mut doc, conf_dir);
    // Only a file of the conf dir may name an env file (a cluster
    // definition comes from the store, not from this host).
    if let Some(env_file) = doc.path("env_file", conf_dir) {
        let line = doc.line_of("env_file");
        facts.env_file = read_env_file(&env_file, file, line, &mut service.env, problems)
            .map(|text| (env_file, text));
    }
    problems.extend(doc.finish());
    Some((service, facts))
}

/// Reads a service's keys from `doc`, recording their problems in it; the
/// caller finishes the document (a cluster file has more keys).
pub(super) fn parse_document(
    id: String,
    doc: &mut Document<'_>,
    conf_dir: &Path,
) -> (ServiceConfig, ServiceFacts) {
    let service = ServiceConfig {
        id,
        command: command(doc),
        instances: doc
            .number("instances", 1..=MAX_INSTANCES.into())
            .unwrap_or(1),
        env: environment(doc),
        work_dir: doc.path("work_dir", conf_dir),
        user: doc.text("user"),
        group: doc.text("group"),
        autostart: doc.flag("autostart").unwrap_or(true),
        restart: doc
            .choice(
                "restart",
                &[
                    ("always", RestartPolicy::Always),
                    ("on-failure", RestartPolicy::OnFailure),
                    ("never", RestartPolicy::Never),
                ],
            )
            .unwrap_or(RestartPolicy::OnFailure),
        backoff_initial: doc
            .duration("backoff_initial")
            .unwrap_or(Duration::from_millis(250)),
        backoff_max: doc
            .positive_duration("backoff_max")
            .unwrap_or(Duration::from_secs(30)),
        stable_after: doc
            .duration("stable_after")
            .unwrap_or(Duration::from_secs(5)),
        give_up_after: doc
            .number("give_up_after", 0..=u32::MAX.into())
            .unwrap_or(5),
        give_up_window: doc
            .positive_duration("give_up_window")
            .unwrap_or(Duration::from_secs(60)),
        stop_signal: doc
            .scalar("stop_signal", to_signal)
            .unwrap_or(libc::SIGTERM),
        stop_timeout: doc
            .duration("stop_timeout")
            .unwrap_or(Duration::from_secs(10)),
        stdout: doc.scalar("stdout", to_output).unwrap_or(Output::LogDir),
        stderr: doc.scalar("stderr", to_output).unwrap_or(Output::LogDir),
        log_max_bytes: doc.number("log_max_bytes", 0..=u64::MAX).unwrap_or(MIB),
        log_keep: doc.number("log_keep", 0..=MAX_LOG_KEEP.into()).unwrap_or(3),
        log_max_rate: doc
            .number("log_max_rate", 0..=u64::MAX)
            .unwrap_or(DEFAULT_LOG_MAX_RATE),
        on_node_exit: doc
            .choice(
                "on_node_exit",
                &[("stop", OnNodeExit::Stop), ("keep", OnNodeExit::Keep)],
            )
            .unwrap_or(OnNodeExit::Stop),
        requires: doc.text_list("requires", IDS_FORM).unwrap_or_default(),
        after: doc.text_list("after", IDS_FORM).unwrap_or_default(),
        ready: readiness(doc),
        health: health(doc),
        resources: resources::parse(doc),
        start_grace: doc.duration("start_grace").unwrap_or(DEFAULT_START_GRACE),
        description: doc.text("description"),
    };
    check_backoff(doc, &service);
    check_tcp_per_instance(doc, &service);
    let facts = ServiceFacts {
        requires: doc.line_of("requires"),
        after: doc.line_of("after"),
        env_file: None,
    };
    (service, facts)
}

/// Adds the variables of `env_file` (`KEY=VALUE` lines; blank lines and
/// lines starting with `#` are skipped; no quotes, no expansion, no
/// shell) to `env`, where `env` does not set them already: the service
/// file's own `env` wins. Problems name the env file and its line; one
/// reading it names the service `file`'s `env_file` line. Its text, once
/// read.
fn read_env_file(
    env_file: &Path,
    file: &Path,
    line: Option<usize>,
    env: &mut BTreeMap<String, String>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<String> {
    let text = match std::fs::read_to_string(env_file) {
        Ok(text) => text,
        Err(error) => {
            problems.push(ConfigProblem {
                file: file.to_owned(),
                line,
                key: Some("env_file".to_owned()),
                message: format!("cannot read {}: {error}", env_file.display()),
            });
            return None;
        }
    };
    for (at, content) in text.lines().enumerate() {
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let problem = |message: String, key: Option<String>| ConfigProblem {
            file: env_file.to_owned(),
            line: Some(at + 1),
            key,
            message,
        };
        match trimmed.split_once('=') {
            Some((name, value)) if !name.is_empty() && !name.contains(['\0', ' ', '\t']) => {
                if value.contains('\0') {
                    problems.push(problem(
                        "a value may not hold a NUL character".to_owned(),
                        Some(name.to_owned()),
                    ));
                } else if !env.contains_key(name) {
                    env.insert(name.to_owned(), value.to_owned());
                }
            }
            _ => problems.push(problem(
                format!("expected KEY=VALUE, found `{}`", content.trim()),
                None,
            )),
        }
    }
    Some(text)
}

/// The required, non-empty argv; empty (with a problem recorded) otherwise.
fn command(doc: &mut Document<'_>) -> Vec<String> {
    match doc.text_list("command", COMMAND_FORM) {
        Some(argv) if argv.is_empty() => {
            let line = doc.line_of("command");
            doc.report(
                line,
                "command",
                format!("expected {COMMAND_FORM}, found an empty array"),
            );
        }
        Some(argv) => return argv,
        None if doc.line_of("command").is_none() => {
            doc.report(None, "command", format!("missing; expected {COMMAND_FORM}"));
        }
        None => {}
    }
    Vec::new()
}

fn environment(doc: &mut Document<'_>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (name, entry) in doc.table("env").unwrap_or_default() {
        let key = format!("env.{name}");
        if name.is_empty() || name.contains(['=', '\0']) {
            let message = "expected a variable name without '=' or NUL characters".to_owned();
            doc.report(Some(entry.line), key, message);
            continue;
        }
        match to_env_value(entry.value.get_ref()) {
            Ok(value) => {
                env.insert(name, value);
            }
            Err(message) => doc.report(Some(entry.line), key, message),
        }
    }
    env
}

/// `ready`: "started" or a table naming one kind of signal.
fn readiness(doc: &mut Document<'_>) -> Readiness {
    let default = Readiness::default();
    let Some(entry) = doc.take("ready") else {
        return default;
    };
    let line = entry.line;
    let value = entry.value.into_inner();
    if value.as_str() == Some("started") {
        return default;
    }
    let entries = match doc.entries(value) {
        Ok(entries) => entries,
        Err(value) => {
            doc.report(Some(line), "ready", expected(READY_FORM, &value));
            return default;
        }
    };
    let mut table = SubTable::new(doc, "ready", line, entries);
    let fd = table.value("fd", |value| {
        whole_number(value)
            .filter(|fd| (LOWEST_READY_FD..=HIGHEST_READY_FD).contains(fd))
            .and_then(|fd| u32::try_from(fd).ok())
            .ok_or_else(|| {
                expected(
                    &format!("a file descriptor from {LOWEST_READY_FD} to {HIGHEST_READY_FD}"),
                    value,
                )
            })
    });
    let probe = table.probe();
    let interval = table.value("interval", positive_duration);
    let timeout = table.value("timeout", positive_duration);
    let signal = match (fd, probe) {
        (Some(fd), None) => Some(ReadySignal::Fd(fd)),
        (None, Some(probe)) => Some(ReadySignal::Check(probe)),
        _ => None,
    };
    let found = table.finish(READY_FORM);
    Readiness {
        signal: signal
            .filter(|_| found == 1)
            .unwrap_or(ReadySignal::Started),
        interval: interval.unwrap_or(default.interval),
        timeout: timeout.unwrap_or(default.timeout),
    }
}

/// `health`: a table naming one check, with its interval, timeout and
/// failure threshold.
fn health(doc: &mut Document<'_>) -> Option<Health> {
    let entry = doc.take("health")?;
    let line = entry.line;
    let entries = match doc.entries(entry.value.into_inner()) {
        Ok(entries) => entries,
        Err(value) => {
            doc.report(Some(line), "health", expected(HEALTH_FORM, &value));
            return None;
        }
    };
    let mut table = SubTable::new(doc, "health", line, entries);
    let probe = table.probe();
    let interval = table.value("interval", positive_duration);
    let timeout = table.value("timeout", positive_duration);
    let failures = table.value("failures", |value| {
        whole_number(value)
            .filter(|count| *count >= 1)
            .and_then(|count| u32::try_from(count).ok())
            .ok_or_else(|| expected("a whole number from 1 to 4294967295", value))
    });
    let found = table.finish(HEALTH_FORM);
    Some(Health {
        probe: probe.filter(|_| found == 1)?,
        interval: interval.unwrap_or(Duration::from_secs(10)),
        timeout: timeout.unwrap_or(Duration::from_secs(5)),
        failures: failures.unwrap_or(3),
    })
}

fn positive_duration(value: &DeValue<'_>) -> Result<Duration, String> {
    match to_duration(value)? {
        Duration::ZERO => Err(expected("a duration longer than zero", value)),
        duration => Ok(duration),
    }
}

/// The keys of an inline table such as `ready = { ... }`, read one by one;
/// problems name them `table.key`.
struct SubTable<'d, 'r, 't> {
    doc: &'d mut Document<'r>,
    name: &'static str,
    line: usize,
    entries: Vec<(String, Entry<'t>)>,
    asked: Vec<&'static str>,
    /// How many of the check kinds (fd, command, tcp) it names.
    kinds: usize,
}

impl<'d, 'r, 't> SubTable<'d, 'r, 't> {
    fn new(
        doc: &'d mut Document<'r>,
        name: &'static str,
        line: usize,
        entries: Vec<(String, Entry<'t>)>,
    ) -> Self {
        SubTable {
            doc,
            name,
            line,
            entries,
            asked: Vec::new(),
            kinds: 0,
        }
    }

    /// The value of `key` converted by `convert`; its problem is reported.
    fn value<T>(
        &mut self,
        key: &'static str,
        convert: impl FnOnce(&DeValue<'_>) -> Result<T, String>,
    ) -> Option<T> {
        self.asked.push(key);
        let position = self.entries.iter().position(|(name, _)| name == key)?;
        let (_, entry) = self.entries.remove(position);
        if matches!(key, "fd" | "command" | "tcp") {
            self.kinds += 1;
        }
        match convert(entry.value.get_ref()) {
            Ok(value) => Some(value),
            Err(message) => {
                let name = format!("{}.{key}", self.name);
                self.doc.report(Some(entry.line), name, message);
                None
            }
        }
    }

    /// `command = [...]` or `tcp = "address"`.
    fn probe(&mut self) -> Option<Probe> {
        let command = self.value("command", |value| {
            let form = "a non-empty array of strings; no shell is used";
            let DeValue::Array(items) = value else {
                return Err(expected(form, value));
            };
            let argv = items
                .iter()
                .map(|item| to_text(item.get_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| expected(form, value))?;
            if argv.is_empty() {
                return Err(expected(form, value));
            }
            Ok(Probe::Command(argv))
        });
        let tcp = self.value("tcp", |value| {
            value
                .as_str()
                .filter(|text| expand(text, "id", 0).parse::<SocketAddr>().is_ok())
                .map(|text| Probe::Tcp(text.to_owned()))
                .ok_or_else(|| expected(TCP_FORM, value))
        });
        command.or(tcp)
    }

    /// Reports unknown keys and a count of check kinds other than one;
    /// returns that count.
    fn finish(self, form: &str) -> usize {
        let known = self.asked.join(", ");
        for (key, entry) in self.entries {
            let message = format!("unknown key; expected one of: {known}");
            self.doc
                .report(Some(entry.line), format!("{}.{key}", self.name), message);
        }
        if self.kinds != 1 && !self.doc.has_problem_under(self.name) {
            let message = format!("expected {form}, found {} check kinds", self.kinds);
            self.doc.report(Some(self.line), self.name, message);
        }
        self.kinds
    }
}

/// A back-off that starts above its own ceiling is a mistake, not a policy.
/// Reports a `tcp` check address that is not one for some instance once
/// `{instance}` is replaced (a port past 65535).
fn check_tcp_per_instance(doc: &mut Document<'_>, service: &ServiceConfig) {
    for index in 0..service.instances {
        let instance = service.for_instance(index);
        let probes = [
            (
                "ready",
                match &instance.ready.signal {
                    ReadySignal::Check(probe) => Some(probe),
                    _ => None,
                },
            ),
            (
                "health",
                instance.health.as_ref().map(|health| &health.probe),
            ),
        ];
        for (key, probe) in probes {
            if let Some(Probe::Tcp(text)) = probe
                && probe.and_then(Probe::tcp_address).is_none()
            {
                let line = doc.line_of(key);
                doc.report(
                    line,
                    format!("{key}.tcp"),
                    format!("for instance {index} this is `{text}`, not {TCP_FORM}"),
                );
                return;
            }
        }
    }
}

fn check_backoff(doc: &mut Document<'_>, service: &ServiceConfig) {
    if service.backoff_max >= service.backoff_initial
        || doc.has_problem("backoff_initial")
        || doc.has_problem("backoff_max")
    {
        return;
    }
    let line = doc
        .line_of("backoff_max")
        .or_else(|| doc.line_of("backoff_initial"));
    let message = format!(
        "expected a duration no shorter than backoff_initial ({:?}), found {:?}",
        service.backoff_initial, service.backoff_max
    );
    doc.report(line, "backoff_max", message);
}

/// A string, which unlike other strings may be empty.
fn to_env_value(value: &DeValue<'_>) -> Result<String, String> {
    match value.as_str() {
        Some("") => Ok(String::new()),
        Some(_) => to_text(value),
        None => Err(expected("a string", value)),
    }
}

/// The number of signal `text`: a name such as "TERM", "sigterm" or
/// "SIGTERM", or a number from 1 to 64.
pub fn signal_by_name(text: &str) -> Option<i32> {
    let name = text.to_ascii_uppercase();
    let short = name.strip_prefix("SIG").unwrap_or(&name);
    SIGNALS
        .iter()
        .find(|(known, _)| *known == short)
        .map(|(_, signal)| *signal)
        .or_else(|| {
            text.parse::<i32>()
                .ok()
                .filter(|number| (1..=HIGHEST_SIGNAL).contains(number))
        })
}

/// The short name ("TERM") of signal `signal`, where it has one here.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    SIGNALS
        .iter()
        .find(|(_, known)| *known == signal)
        .map(|(name, _)| *name)
}

fn to_signal(value: &DeValue<'_>) -> Result<i32, String> {
    let signal = match value {
        DeValue::String(name) => signal_by_name(name).filter(|_| name.parse::<i32>().is_err()),
        _ => whole_number(value)
            .and_then(|number| i32::try_from(number).ok())
            .filter(|number| (1..=HIGHEST_SIGNAL).contains(number)),
    };
    signal.ok_or_else(|| expected(SIGNAL_FORM, value))
}

fn to_output(value: &DeValue<'_>) -> Result<Output, String> {
    match value.as_str() {
        Some("log") => Ok(Output::LogDir),
        Some("null") => Ok(Output::Null),
        Some("inherit") => Ok(Output::Inherit),
        Some("node") => Ok(Output::Node),
        _ => to_text(value)
            .map(|path| Output::Path(PathBuf::from(path)))
            .map_err(|_| expected(OUTPUT_FORM, value)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const FILE: &str = "conf/services/web.toml";

    /// Service `id` with every key at its default.
    pub(in crate::conf) fn minimal(id: &str) -> ServiceConfig {
        let mut service = valid("command = [\"/bin/true\"]\n");
        service.id = id.to_owned();
        service
    }

    fn parse_service(text: &str) -> (Option<ServiceConfig>, Vec<ConfigProblem>) {
        let mut problems = Vec::new();
        let service = parse(
            "web".to_owned(),
            Path::new(FILE),
            text,
            Path::new("/srv/conf"),
            &mut problems,
        );
        (service.map(|(service, _)| service), problems)
    }

    fn valid(text: &str) -> ServiceConfig {
        let (service, problems) = parse_service(text);
        assert_eq!(problems, []);
        service.unwrap()
    }

    #[test]
    fn instance_and_id_are_replaced_per_instance_and_nothing_else() {
        let service = valid(
            "command = [\"srv\", \"--port\", \"80{instance}\", \"{other}\"]\ninstances = 2\n\
             env = { NAME = \"{id}-{instance}\" }\nwork_dir = \"/w/{instance}\"\n\
             stdout = \"{id}.{instance}.out\"\nready = { tcp = \"127.0.0.1:80{instance}\" }\n",
        );
        assert!(service.is_per_instance());
        let one = service.for_instance(1);
        assert_eq!(one.command, ["srv", "--port", "801", "{other}"]);
        assert_eq!(one.env["NAME"], "web-1");
        assert_eq!(one.work_dir.as_deref(), Some(Path::new("/w/1")));
        assert_eq!(
            one.stdout.path("web", "stdout", 1, Path::new("/log")),
            Some(PathBuf::from("/log/web.1.out"))
        );
        let ReadySignal::Check(probe) = &one.ready.signal else {
            panic!("{:?}", one.ready);
        };
        assert_eq!(probe.tcp_address(), "127.0.0.1:801".parse().ok());
        assert!(!valid("command = [\"/bin/true\"]\ninstances = 3\n").is_per_instance());
    }

    #[test]
    fn a_check_address_must_be_one_for_every_instance() {
        let (_, problems) = parse_service(
            "command = [\"srv\"]\ninstances = 12\nready = { tcp = \"127.0.0.1:6553{instance}\" }\n",
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key.as_deref(), Some("ready.tcp"));
        assert!(
            problems[0]
                .message
                .contains("for instance 6 this is `127.0.0.1:65536`"),
            "{problems:?}"
        );
    }

    #[test]
    fn defaults() {
        let service = valid("command = [\"/bin/sleep\", \"60\"]\n");
        assert_eq!(
            service,
            ServiceConfig {
                id: "web".to_owned(),
                command: vec!["/bin/sleep".to_owned(), "60".to_owned()],
                instances: 1,
                env: BTreeMap::new(),
                work_dir: None,
                user: None,
                group: None,
                autostart: true,
                restart: RestartPolicy::OnFailure,
                backoff_initial: Duration::from_millis(250),
                backoff_max: Duration::from_secs(30),
                stable_after: Duration::from_secs(5),
                give_up_after: 5,
                give_up_window: Duration::from_secs(60),
                stop_signal: libc::SIGTERM,
                stop_timeout: Duration::from_secs(10),
                stdout: Output::LogDir,
                stderr: Output::LogDir,
                log_max_bytes: MIB,
                log_keep: 3,
                log_max_rate: DEFAULT_LOG_MAX_RATE,
                on_node_exit: OnNodeExit::Stop,
                requires: Vec::new(),
                after: Vec::new(),
                ready: Readiness {
                    signal: ReadySignal::Started,
                    interval: Duration::from_millis(250),
                    timeout: Duration::from_secs(30),
                },
                health: None,
                resources: Resources::default(),
                start_grace: Duration::from_millis(300),
                description: None,
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let service = valid(
            r#"
command = ["/usr/bin/env"]
instances = 3
env = { A = "1", B = "" }
work_dir = "data"
user = "nobody"
group = "65534"
autostart = false
restart = "always"
backoff_initial = "1s"
backoff_max = "2m"
stable_after = 30
give_up_after = 0
give_up_window = "1h"
stop_signal = "SIGINT"
stop_timeout = "500ms"
stdout = "web.out"
stderr = "null"
log_max_bytes = 0
log_keep = 7
log_max_rate = 0
on_node_exit = "keep"
"#,
        );
        assert_eq!(service.instances, 3);
        assert_eq!(service.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(service.env.get("B").map(String::as_str), Some(""));
        assert_eq!(service.work_dir, Some(PathBuf::from("/srv/conf/data")));
        assert_eq!(service.user.as_deref(), Some("nobody"));
        assert_eq!(service.group.as_deref(), Some("65534"));
        assert!(!service.autostart);
        assert_eq!(service.restart, RestartPolicy::Always);
        assert_eq!(service.backoff_initial, Duration::from_secs(1));
        assert_eq!(service.backoff_max, Duration::from_secs(120));
        assert_eq!(service.stable_after, Duration::from_secs(30));
        assert_eq!(service.give_up_after, 0);
        assert_eq!(service.give_up_window, Duration::from_secs(3600));
        assert_eq!(service.stop_signal, libc::SIGINT);
        assert_eq!(service.stop_timeout, Duration::from_millis(500));
        assert_eq!(service.stdout, Output::Path(PathBuf::from("web.out")));
        assert_eq!(service.stderr, Output::Null);
        assert_eq!(service.log_max_bytes, 0);
        assert_eq!(service.log_keep, 7);
        assert_eq!(service.log_max_rate, 0);
        assert_eq!(service.on_node_exit, OnNodeExit::Keep);
    }

    #[test]
    fn env_as_a_section() {
        let service = valid("command = [\"/bin/true\"]\n[env]\nPATH = \"/bin\"\n");
        assert_eq!(service.env.get("PATH").map(String::as_str), Some("/bin"));
    }

    /// Each key with a bad value, on line 3 after a comment and the command:
    /// the problem names the file, the line and the key, and says what was expected.
    #[test]
    fn each_bad_value_names_file_line_and_key() {
        let cases = [
            (
                "instances",
                "\"x\"",
                "expected a whole number from 1 to 1000, found \"x\"",
            ),
            (
                "instances",
                "0",
                "expected a whole number from 1 to 1000, found 0",
            ),
            (
                "instances",
                "1001",
                "expected a whole number from 1 to 1000, found 1001",
            ),
            (
                "env",
                "\"A=1\"",
                "expected a table, e.g. env = { NAME = \"value\" }",
            ),
            ("work_dir", "5", "expected a non-empty string, found 5"),
            (
                "work_dir",
                "\"\"",
                "expected a non-empty string, found \"\"",
            ),
            ("user", "1000", "expected a non-empty string, found 1000"),
            (
                "group",
                "[]",
                "expected a non-empty string, found an empty array",
            ),
            (
                "autostart",
                "\"yes\"",
                "expected true or false, found \"yes\"",
            ),
            (
                "restart",
                "\"sometimes\"",
                "expected one of \"always\", \"on-failure\", \"never\", found \"sometimes\"",
            ),
            ("backoff_initial", "\"soon\"", "expected a duration such as"),
            (
                "backoff_max",
                "\"0s\"",
                "expected a duration longer than zero, found \"0s\"",
            ),
            ("stable_after", "-1", "expected a duration such as"),
            (
                "give_up_after",
                "-1",
                "expected a whole number from 0 to 4294967295, found -1",
            ),
            (
                "give_up_window",
                "0",
                "expected a duration longer than zero, found 0",
            ),
            ("stop_signal", "\"TERMINATE\"", "expected a signal name"),
            ("stop_signal", "0", "expected a signal name"),
            ("stop_signal", "65", "or a number from 1 to 64, found 65"),
            ("stop_timeout", "1.5", "found 1.5"),
            (
                "stdout",
                "true",
                "expected \"log\" (a file in the log dir), \"null\", \"inherit\", \"node\" or a file path",
            ),
            (
                "stderr",
                "\"\"",
                "or a file path (relative to the log dir), found \"\"",
            ),
            (
                "log_max_bytes",
                "\"1M\"",
                "expected a whole number of at least 0, found \"1M\"",
            ),
            (
                "log_max_rate",
                "-1",
                "expected a whole number of at least 0, found -1",
            ),
            (
                "log_keep",
                "4000000000",
                "expected a whole number from 0 to 1000, found 4000000000",
            ),
            (
                "on_node_exit",
                "\"abandon\"",
                "expected one of \"stop\", \"keep\", found \"abandon\"",
            ),
        ];
        for (key, value, message) in cases {
            let text = format!("# web\ncommand = [\"/bin/true\"]\n{key} = {value}\n");
            let (_, problems) = parse_service(&text);
            assert_eq!(problems.len(), 1, "{key} = {value}: {problems:?}");
            let problem = &problems[0];
            assert_eq!(problem.file, Path::new(FILE), "{key}");
            assert_eq!(problem.line, Some(3), "{key}");
            assert_eq!(problem.key.as_deref(), Some(key));
            assert!(
                problem.message.contains(message),
                "{key} = {value}: {}",
                problem.message
            );
        }
    }

    #[test]
    fn command_is_required_and_is_an_argv_array() {
        let form = "an array of strings, e.g. [\"/bin/sleep\", \"60\"]; no shell is used";
        let (_, problems) = parse_service("# web\ncommand = \"sleep 60\"\n");
        assert_eq!(
            problems[0].to_string(),
            format!("{FILE}:2: key `command`: expected {form}, found \"sleep 60\"")
        );
        let (_, problems) = parse_service("command = []\n");
        assert_eq!(
            problems[0].message,
            format!("expected {form}, found an empty array")
        );
        assert_eq!(problems[0].line, Some(1));
        let (_, problems) = parse_service("instances = 2\n");
        assert_eq!(
            problems[0].to_string(),
            format!("{FILE}: key `command`: missing; expected {form}")
        );
        let (_, problems) = parse_service("command = [\n  \"/bin/sleep\",\n  60,\n]\n");
        assert_eq!(
            problems[0].to_string(),
            format!("{FILE}:3: key `command[1]`: expected a non-empty string, found 60")
        );
    }

    #[test]
    fn env_entries_are_checked_one_by_one() {
        let (_, problems) =
            parse_service("command = [\"/bin/true\"]\n[env]\nA = 1\n\"B=C\" = \"x\"\nD = \"ok\"\n");
        let shown: Vec<_> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                format!("{FILE}:3: key `env.A`: expected a string, found 1"),
                format!(
                    "{FILE}:4: key `env.B=C`: expected a variable name without '=' or NUL characters"
                ),
            ]
        );
    }

    #[test]
    fn readiness_and_health_take_one_check_each() {
        let command = "command = [\"/bin/true\"]\n";
        let service = valid(&format!(
            "{command}ready = {{ fd = 3, timeout = \"5s\" }}\n"
        ));
        assert_eq!(service.ready.signal, ReadySignal::Fd(3));
        assert_eq!(service.ready.timeout, Duration::from_secs(5));
        let service = valid(&format!(
            "{command}ready = {{ tcp = \"127.0.0.1:8080\", interval = \"100ms\" }}\n\
             health = {{ command = [\"/bin/check\", \"-q\"], failures = 2 }}\n"
        ));
        assert_eq!(
            service.ready.signal,
            ReadySignal::Check(Probe::Tcp("127.0.0.1:8080".to_owned()))
        );
        assert_eq!(service.ready.interval, Duration::from_millis(100));
        let health = service.health.clone().unwrap();
        assert_eq!(
            health.probe,
            Probe::Command(vec!["/bin/check".into(), "-q".into()])
        );
        assert_eq!(
            (health.interval, health.timeout, health.failures),
            (Duration::from_secs(10), Duration::from_secs(5), 2)
        );
        assert_eq!(service.check_commands(), [&["/bin/check", "-q"][..]]);
        assert_eq!(
            valid(&format!("{command}ready = \"started\"\n")).ready,
            Readiness::default()
        );
        for (value, key, message) in [
            ("\"soon\"", "ready", "expected \"started\", or a table"),
            (
                "{ fd = 1 }",
                "ready.fd",
                "expected a file descriptor from 3 to 1023, found 1",
            ),
            (
                "{ tcp = \"localhost\" }",
                "ready.tcp",
                "expected an IP address and port",
            ),
            (
                "{ fd = 3, tcp = \"127.0.0.1:1\" }",
                "ready",
                "found 2 check kinds",
            ),
            ("{ timeout = \"1s\" }", "ready", "found 0 check kinds"),
            (
                "{ fd = 3, every = 1 }",
                "ready.every",
                "unknown key; expected one of: fd, command, tcp, interval, timeout",
            ),
            (
                "{ command = [] }",
                "ready.command",
                "expected a non-empty array of strings",
            ),
        ] {
            let (_, problems) = parse_service(&format!("{command}ready = {value}\n"));
            assert_eq!(problems.len(), 1, "{value}: {problems:?}");
            assert_eq!(problems[0].line, Some(2), "{value}");
            assert_eq!(problems[0].key.as_deref(), Some(key), "{value}");
            assert!(
                problems[0].message.contains(message),
                "{value}: {}",
                problems[0].message
            );
        }
        let (_, problems) = parse_service(&format!("{command}health = {{ fd = 3 }}\n"));
        assert_eq!(problems[0].key.as_deref(), Some("health.fd"));
        let (_, problems) = parse_service(&format!(
            "{command}health = {{ tcp = \"127.0.0.1:1\", failures = 0 }}\n"
        ));
        assert_eq!(problems[0].key.as_deref(), Some("health.failures"));
    }

    #[test]
    fn signals_by_name_or_number() {
        for (written, signal) in [
            ("\"TERM\"", libc::SIGTERM),
            ("\"SIGHUP\"", libc::SIGHUP),
            ("\"quit\"", libc::SIGQUIT),
            ("\"KILL\"", libc::SIGKILL),
            ("\"USR1\"", libc::SIGUSR1),
            ("\"SIGUSR2\"", libc::SIGUSR2),
            ("2", libc::SIGINT),
            ("64", 64),
        ] {
            let service = valid(&format!(
                "command = [\"/bin/true\"]\nstop_signal = {written}\n"
            ));
            assert_eq!(service.stop_signal, signal, "{written}");
        }
    }

    #[test]
    fn backoff_max_must_not_be_below_backoff_initial() {
        let (_, problems) = parse_service(
            "command = [\"/bin/true\"]\nbackoff_max = \"1s\"\nbackoff_initial = \"2s\"\n",
        );
        assert_eq!(
            problems[0].to_string(),
            format!(
                "{FILE}:2: key `backoff_max`: expected a duration no shorter than backoff_initial (2s), found 1s"
            )
        );
        let (_, problems) = parse_service("command = [\"/bin/true\"]\nbackoff_initial = \"1m\"\n");
        assert_eq!(problems[0].line, Some(2));
        assert_eq!(problems[0].key.as_deref(), Some("backoff_max"));
        let (_, problems) = parse_service(
            "command = [\"/bin/true\"]\nbackoff_initial = \"x\"\nbackoff_max = \"1ms\"\n",
        );
        assert_eq!(problems.len(), 1, "no follow-on problem: {problems:?}");
        assert_eq!(
            valid("command = [\"/bin/true\"]\nbackoff_initial = \"1s\"\nbackoff_max = 1\n")
                .backoff_max,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn all_problems_of_a_file_come_together_in_line_order() {
        let (_, problems) = parse_service("instnces = 2\nrestart = \"no\"\nstop_timeout = \"x\"\n");
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.line, p.key.clone().unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                (None, "command".to_owned()),
                (Some(1), "instnces".to_owned()),
                (Some(2), "restart".to_owned()),
                (Some(3), "stop_timeout".to_owned()),
            ]
        );
        assert!(
            problems[1]
                .message
                .starts_with("unknown key; expected one of: command, instances, env, ")
        );
    }

    #[test]
    fn ids_follow_the_file_name_rules() {
        for good in ["web", "a", "web-1.blue_2", "A.B", &"x".repeat(64)] {
            assert_eq!(check_id(good), Ok(()), "{good}");
        }
        for bad in ["", ".hidden", "a b", "wéb", "a/b", &"x".repeat(65)] {
            let message = check_id(bad).unwrap_err();
            assert!(
                message.contains("is not valid: expected 1 to 64 of"),
                "{bad}: {message}"
            );
        }
        for reserved in RESERVED_IDS {
            let message = check_id(reserved).unwrap_err();
            assert!(message.contains("is reserved"), "{message}");
        }
        assert!(check_id("Daemon").is_ok());
    }

    #[test]
    fn log_paths() {
        let log_dir = Path::new("/var/log/snow-fox");
        assert_eq!(
            Output::LogDir.path("web", "stdout", 2, log_dir),
            Some(PathBuf::from("/var/log/snow-fox/web.2.stdout.log"))
        );
        assert_eq!(
            Output::Path(PathBuf::from("web.out")).path("web", "stderr", 0, log_dir),
            Some(PathBuf::from("/var/log/snow-fox/web.out"))
        );
        assert_eq!(
            Output::Path(PathBuf::from("/tmp/web.out")).path("web", "stderr", 0, log_dir),
            Some(PathBuf::from("/tmp/web.out"))
        );
        assert_eq!(Output::Null.path("web", "stdout", 0, log_dir), None);
        assert_eq!(Output::Inherit.path("web", "stdout", 0, log_dir), None);
    }
}
