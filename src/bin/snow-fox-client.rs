//! `snow-fox-client`: the command line client of a snow-fox node.
//!
//! Parses its arguments with lexopt, asks the node through
//! [`snow_fox::client::Client`] and prints each reply as an aligned table
//! or, with `--json`, as one JSON object per line. `logs` needs no node:
//! it reads the instance's log files itself. Exit status: 0 success, 1 the
//! node answered with an error, 2 it could not be asked (no connection,
//! bad usage, another local failure); every failure is one line on stderr.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use lexopt::ValueExt;
use snow_fox::client::bench::{self, BenchError, BenchOptions, Progress, RequestKind, Until};
use snow_fox::client::json::{self, JsonObject};
use snow_fox::client::{Client, ClientError, render};
use snow_fox::conf::{parse_cluster_service, parse_duration, paths};
use snow_fox::trace::now_unix_ms;
use snow_fox::wire::proto::public_api::ServiceStatusResponse;
use snow_fox::wire::proto::public_api::message::Code;

const USAGE: &str = "\
usage: snow-fox-client [--socket PATH] [--json] <command>

commands:
  info [--details]         the node's name, version, configuration and health;
                           --details adds one row per role, the config and each service
  status [ID]              the state of every service's instances (or of one service)
  start ID|all             start a service, or every service in turn
  stop ID|all              stop a service, or every service in turn
  restart ID|all           restart a service, or every service in turn
  reload                   reload the configuration and print the resulting status
  watch                    print each service state change as it happens
  logs ID [--instance N] [--stdout|--stderr] [-f] [--log-dir DIR]
                           print an instance's log files (both unless one is chosen);
                           -f keeps printing what is appended;
                           DIR defaults to /var/log/snow-fox for root, else
                           $XDG_STATE_HOME/snow-fox/log or ~/.local/state/snow-fox/log
  trace CORRELATION_ID     the messages a request caused, in order, and its state
  shutdown                 ask the node to shut down
  cluster status           every node of the node's cluster (name, labels, alive,
                           instances) and every cluster instance (node, state, pid)
  cluster apply FILE...    validate cluster service files (a service file plus
                           [placement]; the id is the file's stem), then store them
  cluster remove|start|stop ID
                           remove, start or stop a cluster service
  bench [--clients N] [--inflight K] [--duration D | --requests N] [--warmup D]
        [--request nodeinfo|status|introduce] [--service ID]
                           load the node from N connections (default 1), each keeping K
                           requests out (default 1); D like 500ms, 10s, 2m (default 10s,
                           warm-up 1s); prints requests/s and latency quantiles, with a
                           progress line on stderr each second; --service: status of one

options:
  --socket PATH            the node's socket; default /run/snow-fox/snow-fox.sock for root,
                           else $XDG_RUNTIME_DIR/snow-fox.sock, else /tmp/snow-fox-$UID/snow-fox.sock
  --json                   print each reply as one JSON object per line
  -h, --help               print this help
  -V, --version            print the version

exit status: 0 success, 1 the node answered with an error, 2 could not connect or bad usage
";

/// Exit status when the node could not be asked.
const EXIT_TROUBLE: u8 = 2;

/// How often `logs -f` looks for appended bytes: a person is watching.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let outcome = match parse_args(env::args_os().skip(1)) {
        Ok(invocation) => run(invocation),
        Err(ParseExit::Help) => print_text(USAGE.trim_end()),
        Err(ParseExit::Version) => print_text(&format!(
            "snow-fox-client {} (commit {}, {})",
            env!("CARGO_PKG_VERSION"),
            env!("SNOW_FOX_GIT_COMMIT"),
            env!("SNOW_FOX_GIT_TAINT")
        )),
        Err(ParseExit::Usage(message)) => {
            eprintln!("snow-fox-client: {message} (see snow-fox-client --help)");
            return ExitCode::from(EXIT_TROUBLE);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing is wrong with the node.
        Err(CliError::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("snow-fox-client: {error}");
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(EXIT_TROUBLE))
        }
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq)]
struct Invocation {
    socket: Option<PathBuf>,
    json: bool,
    command: Command,
}

#[derive(Debug, PartialEq)]
enum Command {
    /// Commands that ask the node.
    Node(NodeCommand),
    /// Reads log files; needs no node.
    Logs(LogsOptions),
    /// Loads the node with many connections.
    Bench(BenchPlan),
    /// Asks the node's cluster.
    Cluster(ClusterCommand),
}

/// `cluster ...`.
#[derive(Debug, PartialEq)]
enum ClusterCommand {
    Status,
    Apply { files: Vec<PathBuf> },
    Change { code: Code, id: String },
}

/// `bench`'s options; the socket comes from the global options.
#[derive(Debug, PartialEq)]
struct BenchPlan {
    clients: usize,
    inflight: usize,
    until: Until,
    warmup: Duration,
    request: RequestKind,
}

impl Default for BenchPlan {
    fn default() -> Self {
        BenchPlan {
            clients: 1,
            inflight: 1,
            until: Until::Elapsed(Duration::from_secs(10)),
            warmup: Duration::from_secs(1),
            request: RequestKind::NodeInfo,
        }
    }
}

#[derive(Debug, PartialEq)]
enum NodeCommand {
    Info { details: bool },
    Status { service: Option<String> },
    Act { action: Action, target: Target },
    Reload,
    Watch,
    Trace { correlation_id: String },
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }

    fn apply(
        self,
        client: &mut Client,
        service: &str,
    ) -> Result<ServiceStatusResponse, ClientError> {
        match self {
            Action::Start => client.start(service),
            Action::Stop => client.stop(service),
            Action::Restart => client.restart(service),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Target {
    All,
    One(String),
}

#[derive(Debug, PartialEq)]
struct LogsOptions {
    service: String,
    instance: u32,
    streams: Streams,
    follow: bool,
    log_dir: Option<PathBuf>,
}

/// Which of an instance's log files to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Streams {
    Both,
    Stdout,
    Stderr,
}

impl Streams {
    fn names(self) -> &'static [&'static str] {
        match self {
            Streams::Both => &["stdout", "stderr"],
            Streams::Stdout => &["stdout"],
            Streams::Stderr => &["stderr"],
        }
    }
}

/// Why the command line does not lead to a run.
#[derive(Debug, PartialEq)]
enum ParseExit {
    Help,
    Version,
    Usage(String),
}

impl From<lexopt::Error> for ParseExit {
    fn from(error: lexopt::Error) -> Self {
        ParseExit::Usage(error.to_string())
    }
}

/// An argument once the global options are taken out.
enum Token {
    /// An option as spelled, e.g. `--details` or `-f`.
    Option(String),
    Word(String),
}

/// The argument stream; takes the global options out wherever they
/// appear, so `status --json` works as well as `--json status`.
struct Args {
    parser: lexopt::Parser,
    socket: Option<PathBuf>,
    json: bool,
}

impl Args {
    fn next(&mut self) -> Result<Option<Token>, ParseExit> {
        use lexopt::Arg::{Long, Short, Value};
        while let Some(arg) = self.parser.next()? {
            match arg {
                Short('h') | Long("help") => return Err(ParseExit::Help),
                Short('V') | Long("version") => return Err(ParseExit::Version),
                Long("socket") => self.socket = Some(self.parser.value()?.into()),
                Long("json") => self.json = true,
                Long(name) => return Ok(Some(Token::Option(format!("--{name}")))),
                Short(letter) => return Ok(Some(Token::Option(format!("-{letter}")))),
                Value(word) => return Ok(Some(Token::Word(word.string()?))),
            }
        }
        Ok(None)
    }

    fn value(&mut self) -> Result<OsString, ParseExit> {
        Ok(self.parser.value()?)
    }
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, ParseExit> {
    let mut args = Args {
        parser: lexopt::Parser::from_args(args),
        socket: None,
        json: false,
    };
    let name = match args.next()? {
        Some(Token::Word(name)) => name,
        Some(Token::Option(option)) => return Err(usage(format!("unknown option {option}"))),
        None => return Err(usage("missing command".to_owned())),
    };
    let no_options = |_: &str, _: &mut Args| Ok(false);
    let command = match name.as_str() {
        "info" => {
            let mut details = false;
            let words = rest(&mut args, &name, |option, _| {
                let known = option == "--details";
                details |= known;
                Ok(known)
            })?;
            no_words(&name, words)?;
            Command::Node(NodeCommand::Info { details })
        }
        "status" => {
            let words = rest(&mut args, &name, no_options)?;
            let service = at_most_one_word(&name, words)?;
            Command::Node(NodeCommand::Status { service })
        }
        "start" | "stop" | "restart" => {
            let action = match name.as_str() {
                "start" => Action::Start,
                "stop" => Action::Stop,
                _ => Action::Restart,
            };
            let words = rest(&mut args, &name, no_options)?;
            let target = match one_word(&name, words, "a service id or `all`")?.as_str() {
                "all" => Target::All,
                service => Target::One(service.to_owned()),
            };
            Command::Node(NodeCommand::Act { action, target })
        }
        "reload" | "watch" | "shutdown" => {
            no_words(&name, rest(&mut args, &name, no_options)?)?;
            Command::Node(match name.as_str() {
                "reload" => NodeCommand::Reload,
                "watch" => NodeCommand::Watch,
                _ => NodeCommand::Shutdown,
            })
        }
        "trace" => {
            let words = rest(&mut args, &name, no_options)?;
            let correlation_id = one_word(&name, words, "a correlation id")?;
            Command::Node(NodeCommand::Trace { correlation_id })
        }
        "logs" => Command::Logs(parse_logs(&mut args)?),
        "bench" => Command::Bench(parse_bench(&mut args)?),
        "cluster" => Command::Cluster(parse_cluster(&mut args)?),
        _ => return Err(usage(format!("unknown command `{name}`"))),
    };
    Ok(Invocation {
        socket: args.socket,
        json: args.json,
        command,
    })
}

fn parse_logs(args: &mut Args) -> Result<LogsOptions, ParseExit> {
    let mut instance = 0;
    let mut streams = Streams::Both;
    let mut follow = false;
    let mut log_dir = None;
    let words = rest(args, "logs", |option, args| {
        match option {
            "--instance" => {
                instance = args.value()?.parse().map_err(|error| {
                    usage(format!("--instance needs an instance number: {error}"))
                })?;
            }
            "--stdout" => streams = Streams::Stdout,
            "--stderr" => streams = Streams::Stderr,
            "-f" | "--follow" => follow = true,
            "--log-dir" => log_dir = Some(PathBuf::from(args.value()?)),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let service = one_word("logs", words, "a service id")?;
    Ok(LogsOptions {
        service,
        instance,
        streams,
        follow,
        log_dir,
    })
}

fn parse_cluster(args: &mut Args) -> Result<ClusterCommand, ParseExit> {
    let no_options = |_: &str, _: &mut Args| Ok(false);
    let mut words = rest(args, "cluster", no_options)?.into_iter();
    let verb = words
        .next()
        .ok_or_else(|| usage("`cluster` needs status, apply, remove, start or stop".to_owned()))?;
    let words: Vec<String> = words.collect();
    let command = format!("cluster {verb}");
    Ok(match verb.as_str() {
        "status" => {
            no_words(&command, words)?;
            ClusterCommand::Status
        }
        "apply" if words.is_empty() => {
            return Err(usage("`cluster apply` needs one or more files".to_owned()));
        }
        "apply" => ClusterCommand::Apply {
            files: words.into_iter().map(PathBuf::from).collect(),
        },
        "remove" | "start" | "stop" => {
            let code = match verb.as_str() {
                "remove" => Code::ClusterRemove,
                "start" => Code::ClusterStart,
                _ => Code::ClusterStop,
            };
            let id = one_word(&command, words, "a cluster service id")?;
            ClusterCommand::Change { code, id }
        }
        other => {
            return Err(usage(format!(
                "unknown cluster command `{other}`: expected status, apply, remove, start or stop"
            )));
        }
    })
}

fn parse_bench(args: &mut Args) -> Result<BenchPlan, ParseExit> {
    let mut plan = BenchPlan::default();
    let mut request = "nodeinfo".to_owned();
    let mut service = None;
    let words = rest(args, "bench", |option, args| {
        match option {
            "--clients" => plan.clients = positive(option, args)?,
            "--inflight" => plan.inflight = positive(option, args)?,
            "--requests" => plan.until = Until::Sent(positive(option, args)?),
            "--duration" => plan.until = Until::Elapsed(duration(option, args)?),
            "--warmup" => plan.warmup = duration(option, args)?,
            "--request" => request = args.value()?.string()?,
            "--service" => service = Some(args.value()?.string()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    no_words("bench", words)?;
    plan.request = match (request.as_str(), service) {
        ("nodeinfo", None) => RequestKind::NodeInfo,
        ("introduce", None) => RequestKind::Introduce,
        ("status", service) => RequestKind::Status { service },
        ("nodeinfo" | "introduce", Some(_)) => {
            return Err(usage("--service goes with --request status".to_owned()));
        }
        (other, _) => {
            return Err(usage(format!(
                "--request takes nodeinfo, status or introduce, not `{other}`"
            )));
        }
    };
    Ok(plan)
}

/// The value of `option` as a whole number of at least 1.
fn positive<T: std::str::FromStr + PartialEq + From<u8>>(
    option: &str,
    args: &mut Args,
) -> Result<T, ParseExit> {
    let text = args.value()?.string()?;
    match text.parse::<T>() {
        Ok(number) if number != T::from(0) => Ok(number),
        _ => Err(usage(format!(
            "{option} needs a whole number of at least 1, not `{text}`"
        ))),
    }
}

/// The value of `option` as a duration such as `500ms` or `10s`.
fn duration(option: &str, args: &mut Args) -> Result<Duration, ParseExit> {
    let text = args.value()?.string()?;
    parse_duration(&text).ok_or_else(|| {
        usage(format!(
            "{option} needs a duration such as 500ms, 10s or 2m, not `{text}`"
        ))
    })
}

/// The words after the command; `option` takes the command's own options
/// (consuming their values from the stream) and says whether it knew one.
fn rest(
    args: &mut Args,
    command: &str,
    mut option: impl FnMut(&str, &mut Args) -> Result<bool, ParseExit>,
) -> Result<Vec<String>, ParseExit> {
    let mut words = Vec::new();
    while let Some(token) = args.next()? {
        match token {
            Token::Word(word) => words.push(word),
            Token::Option(name) => {
                if !option(&name, args)? {
                    return Err(usage(format!("`{command}` has no option {name}")));
                }
            }
        }
    }
    Ok(words)
}

fn no_words(command: &str, words: Vec<String>) -> Result<(), ParseExit> {
    match words.into_iter().next() {
        Some(extra) => Err(unexpected_word(command, &extra)),
        None => Ok(()),
    }
}

fn at_most_one_word(command: &str, words: Vec<String>) -> Result<Option<String>, ParseExit> {
    let mut words = words.into_iter();
    let first = words.next();
    match words.next() {
        Some(extra) => Err(unexpected_word(command, &extra)),
        None => Ok(first),
    }
}

fn one_word(command: &str, words: Vec<String>, what: &str) -> Result<String, ParseExit> {
    at_most_one_word(command, words)?.ok_or_else(|| usage(format!("`{command}` needs {what}")))
}

fn unexpected_word(command: &str, word: &str) -> ParseExit {
    usage(format!("unexpected argument `{word}` for `{command}`"))
}

fn usage(message: String) -> ParseExit {
    ParseExit::Usage(message)
}

/// What went wrong in a run, after the command line was accepted.
#[derive(Debug)]
enum CliError {
    /// Asking the node failed.
    Client(ClientError),
    /// `start|stop|restart all`: the node refused some of the services.
    SomeFailed {
        action: Action,
        total: usize,
        failures: Vec<(String, ClientError)>,
    },
    /// None of the log files asked for exists.
    NoLogs { paths: Vec<PathBuf> },
    /// A log file exists but cannot be read.
    ReadLog { path: PathBuf, source: io::Error },
    /// `bench` could not run to its end.
    Bench(BenchError),
    /// Standard output cannot be written.
    Output(io::Error),
    /// A cluster file cannot be read or is not valid: nothing was sent.
    ClusterFile(String),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Client(error) => error.exit_code(),
            CliError::SomeFailed { .. } | CliError::ClusterFile(_) => 1,
            _ => i32::from(EXIT_TROUBLE),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        CliError::Client(error)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Client(error) => error.fmt(f),
            CliError::SomeFailed {
                action,
                total,
                failures,
            } => {
                write!(
                    f,
                    "{} failed for {} of {total} services: ",
                    action.name(),
                    failures.len()
                )?;
                for (position, (service, error)) in failures.iter().enumerate() {
                    let separator = if position > 0 { "; " } else { "" };
                    write!(f, "{separator}{service}: {error}")?;
                }
                Ok(())
            }
            CliError::NoLogs { paths } => {
                let paths: Vec<String> = paths
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect();
                write!(
                    f,
                    "no log file found at {} (is the service id, --instance or --log-dir wrong?)",
                    paths.join(" or ")
                )
            }
            CliError::ReadLog { path, source } => {
                write!(f, "cannot read log file {}: {source}", path.display())
            }
            CliError::Bench(error) => write!(f, "bench failed: {error}"),
            CliError::Output(source) => write!(f, "cannot write to standard output: {source}"),
            CliError::ClusterFile(problems) => {
                write!(f, "nothing was applied:\n{problems}")
            }
        }
    }
}

impl std::error::Error for CliError {}

fn print_text(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

fn run(invocation: Invocation) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    let outcome = match invocation.command {
        Command::Logs(options) => show_logs(&options, &mut out),
        Command::Bench(plan) => {
            let options = BenchOptions {
                socket: invocation.socket.unwrap_or_else(paths::default_socket_path),
                clients: plan.clients,
                inflight: plan.inflight,
                until: plan.until,
                warmup: plan.warmup,
                request: plan.request,
            };
            run_bench(&options, invocation.json, &mut out)
        }
        Command::Cluster(command) => {
            let socket = invocation.socket.unwrap_or_else(paths::default_socket_path);
            let mut printer = Printer {
                out: &mut out,
                json: invocation.json,
            };
            ask_cluster(command, &socket, &mut printer)
        }
        Command::Node(command) => {
            let socket = match invocation.socket {
                Some(socket) => socket,
                None => paths::default_socket_path(),
            };
            let mut client = Client::connect(&socket)?;
            let mut printer = Printer {
                out: &mut out,
                json: invocation.json,
            };
            ask_node(command, &mut client, &mut printer)
        }
    };
    outcome.and(out.flush().map_err(CliError::Output))
}

/// Runs a bench, a progress line a second on stderr, then the report.
fn run_bench(options: &BenchOptions, as_json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let report = bench::run(options, print_progress).map_err(CliError::Bench)?;
    let text = if as_json {
        report.to_json()
    } else {
        report.to_text()
    };
    writeln!(out, "{text}").map_err(CliError::Output)
}

fn print_progress(progress: &Progress) {
    let phase = if progress.warming_up {
        " (warm-up)"
    } else {
        ""
    };
    eprintln!(
        "bench: {:>4.0} s{phase}  {:>9.0} req/s  {} answered  {} errors  {} in flight",
        progress.elapsed.as_secs_f64(),
        progress.recent_rate,
        progress.answered,
        progress.errors,
        progress.in_flight
    );
}

/// Prints replies, as JSON or as text.
struct Printer<'a> {
    out: &'a mut dyn Write,
    json: bool,
}

impl Printer<'_> {
    fn reply<T>(
        &mut self,
        reply: &T,
        as_json: impl Fn(&T) -> String,
        as_text: impl Fn(&T) -> String,
    ) -> Result<(), CliError> {
        let text = if self.json {
            as_json(reply)
        } else {
            as_text(reply)
        };
        writeln!(self.out, "{text}").map_err(CliError::Output)
    }

    fn status(&mut self, status: &ServiceStatusResponse) -> Result<(), CliError> {
        self.reply(status, json::service_status, |status| {
            render::status_table(&status.services, now_unix_ms())
        })
    }
}

fn ask_node(
    command: NodeCommand,
    client: &mut Client,
    printer: &mut Printer,
) -> Result<(), CliError> {
    match command {
        NodeCommand::Info { details } => printer.reply(
            &client.node_info(details)?,
            json::node_info,
            render::node_info,
        ),
        NodeCommand::Status { service } => printer.status(&client.status(service.as_deref())?),
        NodeCommand::Act {
            action,
            target: Target::One(service),
        } => printer.status(&action.apply(client, &service)?),
        NodeCommand::Act {
            action,
            target: Target::All,
        } => act_on_all(action, client, printer),
        NodeCommand::Reload => printer.status(&client.reload()?),
        NodeCommand::Watch => watch(client, printer),
        NodeCommand::Trace { correlation_id } => {
            printer.reply(&client.trace(&correlation_id)?, json::trace, render::trace)
        }
        NodeCommand::Shutdown => {
            client.shutdown()?;
            printer.reply(
                &(),
                |()| JsonObject::new().bool("acknowledged", true).finish(),
                |()| "shutdown acknowledged".to_owned(),
            )
        }
    }
}

/// Acts on every service the node has, one after the other. A service the
/// node refuses does not stop the others; losing the node does.
fn act_on_all(action: Action, client: &mut Client, printer: &mut Printer) -> Result<(), CliError> {
    let services = client.status(None)?.services;
    let total = services.len();
    let mut results = ServiceStatusResponse::default();
    let mut failures = Vec::new();
    for service in services {
        match action.apply(client, &service.id) {
            Ok(reply) if printer.json => printer.status(&reply)?,
            Ok(reply) => results.services.extend(reply.services),
            Err(error @ ClientError::Node { .. }) => failures.push((service.id, error)),
            Err(error) => return Err(error.into()),
        }
    }
    if !printer.json {
        printer.status(&results)?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::SomeFailed {
            action,
            total,
            failures,
        })
    }
}

/// Prints events until the node goes away; no timeout, since a quiet node
/// is a healthy one.
fn watch(client: &mut Client, printer: &mut Printer) -> Result<(), CliError> {
    client.subscribe()?;
    client.set_timeout(None)?;
    loop {
        printer.reply(&client.next_event()?, json::event, render::event_line)?;
    }
}

fn show_logs(options: &LogsOptions, out: &mut dyn Write) -> Result<(), CliError> {
    let log_dir = match &options.log_dir {
        Some(dir) => dir.clone(),
        None => paths::default_log_dir(),
    };
    let mut tail = LogTail {
        files: options
            .streams
            .names()
            .iter()
            .map(|stream| LogFile {
                path: paths::log_file(&log_dir, &options.service, options.instance, stream),
                file: None,
                shown: 0,
            })
            .collect(),
        last_shown: None,
    };
    tail.show_appended(out)?;
    if tail.files.iter().all(|log| log.file.is_none()) {
        return Err(CliError::NoLogs {
            paths: tail.files.into_iter().map(|log| log.path).collect(),
        });
    }
    if !options.follow {
        return Ok(());
    }
    loop {
        out.flush().map_err(CliError::Output)?;
        thread::sleep(FOLLOW_POLL);
        tail.show_appended(out)?;
    }
}

/// The log files of one instance being shown, like `tail` with several
/// files: a `==> path <==` line marks each switch from one file to another.
struct LogTail {
    files: Vec<LogFile>,
    last_shown: Option<usize>,
}

impl LogTail {
    fn show_appended(&mut self, out: &mut dyn Write) -> Result<(), CliError> {
        let headers = self.files.len() > 1;
        for (position, log) in self.files.iter_mut().enumerate() {
            let unshown = log.unshown()?;
            if unshown == 0 {
                continue;
            }
            if headers && self.last_shown != Some(position) {
                let gap = if self.last_shown.is_some() { "\n" } else { "" };
                writeln!(out, "{gap}==> {} <==", log.path.display()).map_err(CliError::Output)?;
                self.last_shown = Some(position);
            }
            log.show(unshown, out)?;
        }
        Ok(())
    }
}

/// One log file: where it is, and how much of it was shown.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    shown: u64,
}

impl LogFile {
    /// Bytes appended since the last call. A file that does not exist yet
    /// has none; one that shrank was truncated and is shown again from its
    /// start.
    fn unshown(&mut self) -> Result<u64, CliError> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(source) => return Err(read_error(&self.path)(source)),
            }
        }
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let len = file.metadata().map_err(read_error(&self.path))?.len();
        if len < self.shown {
            self.shown = 0;
        }
        Ok(len - self.shown)
    }

    /// Copies the next `count` bytes to `out`, in pieces, so a large log is
    /// never held in memory.
    fn show(&mut self, count: u64, out: &mut dyn Write) -> Result<(), CliError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let read_error = read_error(&self.path);
        file.seek(SeekFrom::Start(self.shown))
            .map_err(&read_error)?;
        let mut buf = vec![0; 64 * 1024];
        let mut remaining = count;
        while remaining > 0 {
            let want = usize::try_from(remaining).map_or(buf.len(), |left| left.min(buf.len()));
            let read = match file.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(read_error(source)),
            };
            out.write_all(&buf[..read]).map_err(CliError::Output)?;
            self.shown += read as u64;
            remaining -= read as u64;
        }
        Ok(())
    }
}

/// Makes the error for a failed read of the log file at `path`.
fn read_error(path: &Path) -> impl Fn(io::Error) -> CliError + '_ {
    |source| CliError::ReadLog {
        path: path.to_owned(),
        source,
    }
}

/// Runs a `cluster` command through the node at `socket`. Files are
/// validated here, as the node will again, before the node is asked.
fn ask_cluster(
    command: ClusterCommand,
    socket: &Path,
    printer: &mut Printer,
) -> Result<(), CliError> {
    let files = match &command {
        ClusterCommand::Apply { files } => read_cluster_files(files)?,
        _ => Vec::new(),
    };
    let mut client = Client::connect(socket)?;
    let acknowledged = |what: String| {
        move |printer: &mut Printer| {
            printer.reply(
                &(),
                |()| {
                    JsonObject::new()
                        .bool("acknowledged", true)
                        .string("done", &what)
                        .finish()
                },
                |()| what.clone(),
            )
        }
    };
    match command {
        ClusterCommand::Status => printer.reply(
            &client.cluster_status()?,
            snow_fox::client::cluster_status_json,
            snow_fox::client::cluster_status_text,
        ),
        ClusterCommand::Apply { .. } => {
            client.cluster_apply(&files)?;
            let ids: Vec<&str> = files.iter().map(|(id, _, _)| id.as_str()).collect();
            acknowledged(format!("applied {}", ids.join(", ")))(printer)
        }
        ClusterCommand::Change { code, id } => {
            client.cluster_change(code, &id)?;
            let verb = match code {
                Code::ClusterRemove => "removed",
                Code::ClusterStart => "started",
                _ => "stopped",
            };
            acknowledged(format!("{verb} {id}"))(printer)
        }
    }
}

/// Reads and validates cluster service files: `(id, path, text)` each, or
/// every problem of every file.
fn read_cluster_files(files: &[PathBuf]) -> Result<Vec<(String, String, String)>, CliError> {
    let mut read = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        let id = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Err(error) = parse_cluster_service(&id, path, &text) {
                    problems.push(error.to_string());
                }
                read.push((id, path.display().to_string(), text));
            }
            Err(error) => problems.push(format!("{}: cannot read: {error}", path.display())),
        }
    }
    if problems.is_empty() {
        Ok(read)
    } else {
        Err(CliError::ClusterFile(problems.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, ParseExit> {
        parse_args(args.iter().map(OsString::from))
    }

    fn node_command(args: &[&str]) -> NodeCommand {
        match parse(args).unwrap().command {
            Command::Node(command) => command,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn bench_plan(args: &[&str]) -> BenchPlan {
        match parse(args).unwrap().command {
            Command::Bench(plan) => plan,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn bench_options_and_their_defaults() {
        assert_eq!(bench_plan(&["bench"]), BenchPlan::default());
        assert_eq!(
            bench_plan(&[
                "bench",
                "--clients",
                "64",
                "--inflight=8",
                "--duration",
                "500ms",
                "--warmup",
                "0s",
                "--request",
                "introduce",
                "--json",
            ]),
            BenchPlan {
                clients: 64,
                inflight: 8,
                until: Until::Elapsed(Duration::from_millis(500)),
                warmup: Duration::ZERO,
                request: RequestKind::Introduce,
            }
        );
        let plan = bench_plan(&[
            "bench",
            "--requests",
            "1000",
            "--request",
            "status",
            "--service",
            "web",
        ]);
        assert_eq!(plan.until, Until::Sent(1000));
        assert_eq!(
            plan.request,
            RequestKind::Status {
                service: Some("web".into())
            }
        );
    }

    #[test]
    fn bad_bench_options_are_one_clear_message() {
        assert_eq!(
            usage_error(&["bench", "--clients", "0"]),
            "--clients needs a whole number of at least 1, not `0`"
        );
        assert_eq!(
            usage_error(&["bench", "--inflight", "many"]),
            "--inflight needs a whole number of at least 1, not `many`"
        );
        assert_eq!(
            usage_error(&["bench", "--duration", "10"]),
            "--duration needs a duration such as 500ms, 10s or 2m, not `10`"
        );
        assert_eq!(
            usage_error(&["bench", "--request", "trace"]),
            "--request takes nodeinfo, status or introduce, not `trace`"
        );
        assert_eq!(
            usage_error(&["bench", "--service", "web"]),
            "--service goes with --request status"
        );
        assert_eq!(
            usage_error(&["bench", "--details"]),
            "`bench` has no option --details"
        );
        assert_eq!(
            usage_error(&["bench", "now"]),
            "unexpected argument `now` for `bench`"
        );
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(args) {
            Err(ParseExit::Usage(message)) => message,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let before = parse(&["--socket", "/s.sock", "--json", "info", "--details"]).unwrap();
        let after = parse(&["info", "--details", "--json", "--socket=/s.sock"]).unwrap();
        let expected = Invocation {
            socket: Some(PathBuf::from("/s.sock")),
            json: true,
            command: Command::Node(NodeCommand::Info { details: true }),
        };
        assert_eq!(before, expected);
        assert_eq!(after, expected);
    }

    #[test]
    fn commands_and_their_words() {
        assert_eq!(
            node_command(&["info"]),
            NodeCommand::Info { details: false }
        );
        assert_eq!(
            node_command(&["status"]),
            NodeCommand::Status { service: None }
        );
        assert_eq!(
            node_command(&["status", "web"]),
            NodeCommand::Status {
                service: Some("web".into())
            }
        );
        assert_eq!(
            node_command(&["stop", "all"]),
            NodeCommand::Act {
                action: Action::Stop,
                target: Target::All
            }
        );
        assert_eq!(
            node_command(&["restart", "web"]),
            NodeCommand::Act {
                action: Action::Restart,
                target: Target::One("web".into())
            }
        );
        assert_eq!(node_command(&["reload"]), NodeCommand::Reload);
        assert_eq!(node_command(&["watch"]), NodeCommand::Watch);
        assert_eq!(node_command(&["shutdown"]), NodeCommand::Shutdown);
        assert_eq!(
            node_command(&["trace", "c1:2"]),
            NodeCommand::Trace {
                correlation_id: "c1:2".into()
            }
        );
    }

    #[test]
    fn logs_options() {
        let parsed = parse(&[
            "logs",
            "web",
            "--instance",
            "2",
            "-f",
            "--log-dir",
            "/l",
            "--stderr",
        ])
        .unwrap();
        assert_eq!(
            parsed.command,
            Command::Logs(LogsOptions {
                service: "web".into(),
                instance: 2,
                streams: Streams::Stderr,
                follow: true,
                log_dir: Some(PathBuf::from("/l")),
            })
        );
        let plain = parse(&["logs", "web"]).unwrap();
        assert_eq!(
            plain.command,
            Command::Logs(LogsOptions {
                service: "web".into(),
                instance: 0,
                streams: Streams::Both,
                follow: false,
                log_dir: None,
            })
        );
    }

    #[test]
    fn help_and_version_win_anywhere() {
        assert_eq!(parse(&["--help"]), Err(ParseExit::Help));
        assert_eq!(parse(&["status", "-h"]), Err(ParseExit::Help));
        assert_eq!(parse(&["-V"]), Err(ParseExit::Version));
    }

    #[test]
    fn bad_usage_is_one_clear_message() {
        assert_eq!(usage_error(&[]), "missing command");
        assert_eq!(usage_error(&["frobnicate"]), "unknown command `frobnicate`");
        assert_eq!(
            usage_error(&["start"]),
            "`start` needs a service id or `all`"
        );
        assert_eq!(
            usage_error(&["status", "a", "b"]),
            "unexpected argument `b` for `status`"
        );
        assert_eq!(
            usage_error(&["reload", "now"]),
            "unexpected argument `now` for `reload`"
        );
        assert_eq!(
            usage_error(&["status", "--details"]),
            "`status` has no option --details"
        );
        assert_eq!(usage_error(&["--bogus"]), "unknown option --bogus");
        assert!(
            usage_error(&["logs", "web", "--instance", "x"])
                .starts_with("--instance needs an instance number"),
        );
        assert!(usage_error(&["--socket"]).contains("missing argument"));
    }

    #[test]
    fn logs_show_both_files_with_headers_and_then_only_what_was_appended() {
        let dir = std::env::temp_dir().join(format!("snow-fox-client-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stdout_path = dir.join("web.1.stdout.log");
        let stderr_path = dir.join("web.1.stderr.log");
        std::fs::write(&stdout_path, "out one\n").unwrap();
        std::fs::write(&stderr_path, "err one\n").unwrap();
        let mut tail = LogTail {
            files: [&stdout_path, &stderr_path]
                .iter()
                .map(|path| LogFile {
                    path: path.to_path_buf(),
                    file: None,
                    shown: 0,
                })
                .collect(),
            last_shown: None,
        };
        let mut out = Vec::new();
        tail.show_appended(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "==> {} <==\nout one\n\n==> {} <==\nerr one\n",
                stdout_path.display(),
                stderr_path.display()
            )
        );

        std::fs::OpenOptions::new()
            .append(true)
            .open(&stderr_path)
            .unwrap()
            .write_all(b"err two\n")
            .unwrap();
        let mut out = Vec::new();
        tail.show_appended(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "err two\n");

        std::fs::write(&stdout_path, "fresh\n").unwrap();
        let mut out = Vec::new();
        tail.show_appended(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("\n==> {} <==\nfresh\n", stdout_path.display()),
            "a truncated file is shown again from its start"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_logs_name_every_path_looked_at() {
        let options = LogsOptions {
            service: "ghost".into(),
            instance: 0,
            streams: Streams::Both,
            follow: false,
            log_dir: Some(
                std::env::temp_dir()
                    .join(format!("snow-fox-client-no-logs-{}", std::process::id())),
            ),
        };
        let error = show_logs(&options, &mut Vec::new()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("ghost.0.stdout.log or "), "{text}");
        assert!(text.contains("ghost.0.stderr.log"), "{text}");
        assert_eq!(error.exit_code(), 2);
    }
}
