//! `snow-fox-client`: the command line client of a snow-fox node.
//!
//! Parses its arguments with lexopt, asks the node through
//! [`snow_fox::client::Client`] and prints each reply as an aligned table
//! or, with `--json`, as one JSON object per line. Its help, each command's,
//! the man pages and the completions come from [`help::CLIENT`]. Exit
//! status: 0 success, 1 the node answered with an error, 2 it could not
//! be asked (no connection, bad usage, another local failure), 3 `status`
//! or `is-active` found something not green or not running; every failure
//! is one line (a reload's problems, one line each) on stderr.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lexopt::ValueExt;
use snow_fox::client::bench::{self, BenchError, BenchOptions, Progress, RequestKind, Until};
use snow_fox::client::json::{self, JsonObject};
use snow_fox::client::{Client, ClientError, Logs, help, render};
use snow_fox::conf::{parse_cluster_service, parse_duration, paths};
use snow_fox::trace::{now_unix_ms, now_unix_us, parse_utc_time};
use snow_fox::wire::proto::public_api::logs_request::Stream as LogStream;
use snow_fox::wire::proto::public_api::message::Code;
use snow_fox::wire::proto::public_api::{
    LogsRequest, ServiceDefinitionResponse, ServiceStatusResponse, StatusColour, error,
};

/// Exit status when the node could not be asked.
const EXIT_TROUBLE: u8 = 2;

/// Exit status of `status` and `is-active` when something shown is not
/// green or not running (systemctl's).
const EXIT_NOT_GREEN: u8 = 3;

/// How long `wait` waits when not told.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// How many of the last lines of each output file `status ID` shows.
const OUTPUT_LINES: usize = 10;

fn main() -> ExitCode {
    let outcome = match parse_args(env::args_os().skip(1)) {
        Ok(invocation) => run(invocation),
        Err(ParseExit::Help(None)) => print_text(&help::CLIENT.usage()),
        Err(ParseExit::Help(Some(command))) => print_text(
            &help::CLIENT
                .command_usage(&command)
                .unwrap_or_else(|| help::CLIENT.usage()),
        ),
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
    verbose: bool,
    colour: ColourChoice,
    command: Command,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColourChoice {
    Auto,
    Always,
    Never,
}

impl ColourChoice {
    /// Whether to colour standard output: `auto` on a terminal unless
    /// `NO_COLOR` is set (to anything non-empty).
    fn wanted(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColourChoice::Always => true,
            ColourChoice::Never => false,
            ColourChoice::Auto => {
                env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
                    && io::stdout().is_terminal()
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Command {
    /// Commands that ask the node.
    Node(NodeCommand),
    /// Loads the node with many connections.
    Bench(BenchPlan),
    /// Prints a completion script or a man page.
    Generate(Generated),
    /// Asks the node's cluster.
    Cluster(ClusterCommand),
}

/// What `completions` and `man` print.
#[derive(Debug, PartialEq)]
enum Generated {
    Completions(String),
    ManClient,
    ManNode,
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
    Info {
        details: bool,
    },
    Status {
        targets: Vec<String>,
    },
    Act {
        action: Action,
        targets: Vec<String>,
    },
    Cat {
        service: String,
    },
    IsActive {
        targets: Vec<String>,
    },
    Wait {
        service: String,
        state: String,
        timeout: Duration,
    },
    Reload,
    Watch,
    Trace {
        correlation_id: String,
    },
    Shutdown,
    Logs(LogsOptions),
    Metrics,
    Top {
        order: render::TopOrder,
        interval: Duration,
        count: Option<u64>,
    },
}

/// What a command does to each service it names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Restart,
    Signal {
        signal: String,
        instance: Option<u32>,
    },
    Enable(bool),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Signal { .. } => "signal",
            Action::Enable(true) => "enable",
            Action::Enable(false) => "disable",
        }
    }

    fn apply(
        &self,
        client: &mut Client,
        service: &str,
    ) -> Result<ServiceStatusResponse, ClientError> {
        match self {
            Action::Start => client.start(service),
            Action::Stop => client.stop(service),
            Action::Restart => client.restart(service),
            Action::Signal { signal, instance } => client.signal(service, signal, *instance),
            Action::Enable(on) => client.enable(service, *on),
        }
    }
}

#[derive(Debug, PartialEq)]
struct LogsOptions {
    services: Vec<String>,
    instance: Option<u32>,
    stream: LogStream,
    follow: bool,
    lines: u32,
    since: Option<Since>,
}

/// `--since`: a time, or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Since {
    At(u64),
    Ago(Duration),
}

/// Why the command line does not lead to a run.
#[derive(Debug, PartialEq)]
enum ParseExit {
    /// `--help`, after the command it asks about, if any.
    Help(Option<String>),
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
    verbose: bool,
    colour: ColourChoice,
    /// The command word, once read: what `--help` is about.
    command: Option<String>,
}

impl Args {
    fn next(&mut self) -> Result<Option<Token>, ParseExit> {
        use lexopt::Arg::{Long, Short, Value};
        while let Some(arg) = self.parser.next()? {
            match arg {
                Short('h') | Long("help") => return Err(ParseExit::Help(self.command.clone())),
                Short('V') | Long("version") => return Err(ParseExit::Version),
                Long("socket") => self.socket = Some(self.parser.value()?.into()),
                Long("json") => self.json = true,
                Short('v') | Long("verbose") => self.verbose = true,
                Long("color" | "colour") => {
                    self.colour = match self.parser.value()?.string()?.as_str() {
                        "auto" => ColourChoice::Auto,
                        "always" => ColourChoice::Always,
                        "never" => ColourChoice::Never,
                        other => {
                            return Err(usage(format!(
                                "--color takes auto, always or never, not `{other}`"
                            )));
                        }
                    }
                }
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
        verbose: false,
        colour: ColourChoice::Auto,
        command: None,
    };
    let name = match args.next()? {
        Some(Token::Word(name)) => name,
        Some(Token::Option(option)) => return Err(usage(format!("unknown option {option}"))),
        None => return Err(usage("missing command".to_owned())),
    };
    if help::CLIENT.commands.iter().all(|c| c.name != name) {
        return Err(usage(format!("unknown command `{name}`")));
    }
    args.command = Some(name.clone());
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
        "status" => Command::Node(NodeCommand::Status {
            targets: rest(&mut args, &name, no_options)?,
        }),
        "start" | "stop" | "restart" | "enable" | "disable" => {
            let action = match name.as_str() {
                "start" => Action::Start,
                "stop" => Action::Stop,
                "restart" => Action::Restart,
                "enable" => Action::Enable(true),
                _ => Action::Enable(false),
            };
            let targets = some_words(
                &name,
                rest(&mut args, &name, no_options)?,
                "a service id, a glob or `all`",
            )?;
            Command::Node(NodeCommand::Act { action, targets })
        }
        "signal" => {
            let mut instance = None;
            let mut words = rest(&mut args, &name, |option, args| {
                if option != "--instance" {
                    return Ok(false);
                }
                instance = Some(args.value()?.parse().map_err(|error| {
                    usage(format!("--instance needs an instance number: {error}"))
                })?);
                Ok(true)
            })?;
            let signal = match words.pop() {
                Some(signal) if !words.is_empty() => signal,
                _ => {
                    return Err(usage(
                        "`signal` needs service ids and a signal, e.g. `signal web HUP`".to_owned(),
                    ));
                }
            };
            Command::Node(NodeCommand::Act {
                action: Action::Signal { signal, instance },
                targets: words,
            })
        }
        "cat" => Command::Node(NodeCommand::Cat {
            service: one_word(&name, rest(&mut args, &name, no_options)?, "a service id")?,
        }),
        "is-active" => Command::Node(NodeCommand::IsActive {
            targets: some_words(
                &name,
                rest(&mut args, &name, no_options)?,
                "a service id or a glob",
            )?,
        }),
        "wait" => {
            let mut state = "running".to_owned();
            let mut timeout = DEFAULT_WAIT;
            let words = rest(&mut args, &name, |option, args| {
                match option {
                    "--state" => state = args.value()?.string()?,
                    "--timeout" => timeout = duration(option, args)?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            let service = one_word(&name, words, "a service id")?;
            Command::Node(NodeCommand::Wait {
                service,
                state,
                timeout,
            })
        }
        "reload" | "watch" | "shutdown" => {
            no_words(&name, rest(&mut args, &name, no_options)?)?;
            Command::Node(match name.as_str() {
                "reload" => NodeCommand::Reload,
                "watch" => NodeCommand::Watch,
                _ => NodeCommand::Shutdown,
            })
        }
        "metrics" => {
            no_words(&name, rest(&mut args, &name, no_options)?)?;
            Command::Node(NodeCommand::Metrics)
        }
        "top" => {
            let mut order = render::TopOrder::Cpu;
            let mut interval = Duration::from_secs(2);
            let mut count = None;
            let words = rest(&mut args, &name, |option, args| {
                match option {
                    "--sort" => {
                        order = match args.value()?.string()?.as_str() {
                            "cpu" => render::TopOrder::Cpu,
                            "memory" => render::TopOrder::Memory,
                            other => {
                                return Err(usage(format!(
                                    "--sort takes cpu or memory, not `{other}`"
                                )));
                            }
                        }
                    }
                    "--interval" => interval = duration(option, args)?,
                    "-n" => count = Some(positive(option, args)?),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            no_words(&name, words)?;
            Command::Node(NodeCommand::Top {
                order,
                interval,
                count,
            })
        }
        "trace" => {
            let words = rest(&mut args, &name, no_options)?;
            let correlation_id = one_word(&name, words, "a correlation id")?;
            Command::Node(NodeCommand::Trace { correlation_id })
        }
        "completions" => {
            let shell = one_word(
                &name,
                rest(&mut args, &name, no_options)?,
                "a shell: bash, zsh or fish",
            )?;
            if help::CLIENT.completions(&shell).is_none() {
                return Err(usage(format!(
                    "completions are for bash, zsh or fish, not `{shell}`"
                )));
            }
            Command::Generate(Generated::Completions(shell))
        }
        "man" => {
            let words = rest(&mut args, &name, no_options)?;
            Command::Generate(match at_most_one_word(&name, words)?.as_deref() {
                None | Some("snow-fox-client") => Generated::ManClient,
                Some("snow-fox") => Generated::ManNode,
                Some(other) => {
                    return Err(usage(format!(
                        "man pages are of snow-fox and snow-fox-client, not `{other}`"
                    )));
                }
            })
        }
        "logs" => Command::Node(NodeCommand::Logs(parse_logs(&mut args)?)),
        "bench" => Command::Bench(parse_bench(&mut args)?),
        "cluster" => Command::Cluster(parse_cluster(&mut args)?),
        _ => Command::Bench(parse_bench(&mut args)?),
    };
    Ok(Invocation {
        socket: args.socket,
        json: args.json,
        verbose: args.verbose,
        colour: args.colour,
        command,
    })
}

/// At least one word.
fn some_words(command: &str, words: Vec<String>, what: &str) -> Result<Vec<String>, ParseExit> {
    if words.is_empty() {
        return Err(usage(format!("`{command}` needs {what}")));
    }
    Ok(words)
}

fn parse_logs(args: &mut Args) -> Result<LogsOptions, ParseExit> {
    let mut options = LogsOptions {
        services: Vec::new(),
        instance: None,
        stream: LogStream::Both,
        follow: false,
        lines: 0,
        since: None,
    };
    let words = rest(args, "logs", |option, args| {
        match option {
            "--instance" => {
                options.instance = Some(args.value()?.parse().map_err(|error| {
                    usage(format!("--instance needs an instance number: {error}"))
                })?);
            }
            "-n" | "--lines" => {
                options.lines = args
                    .value()?
                    .parse()
                    .map_err(|error| usage(format!("-n needs a number of lines: {error}")))?;
            }
            "--since" => {
                let text = args.value()?.string()?;
                options.since = Some(
                    parse_utc_time(&text)
                        .map(Since::At)
                        .or_else(|| parse_duration(&text).map(Since::Ago))
                        .ok_or_else(|| {
                            usage(format!(
                                "--since needs a UTC time like 2026-12-01T11:00:00Z or a \
                                 duration like 10m, not `{text}`"
                            ))
                        })?,
                );
            }
            "--stdout" => options.stream = LogStream::Stdout,
            "--stderr" => options.stream = LogStream::Stderr,
            "-f" | "--follow" => options.follow = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if words.is_empty() {
        return Err(usage("`logs` needs service ids or `all`".to_owned()));
    }
    options.services = words;
    Ok(options)
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
    /// `bench` could not run to its end.
    Bench(BenchError),
    /// Standard output cannot be written.
    Output(io::Error),
    /// A glob named no service.
    NoMatch { pattern: String },
    /// `status` or `is-active`: these are not green or not running.
    NotGreen {
        what: &'static str,
        services: Vec<String>,
    },
    /// The reload was refused: the configuration's problems, one each.
    ReloadRefused {
        problems: Vec<String>,
        correlation_id: Option<String>,
    },
    /// `trace` of a correlation id the node does not know.
    UnknownTrace { correlation_id: String },
    /// `wait` ran out of time or the service failed instead.
    WaitFailed { reason: String },
    /// A cluster file cannot be read or is not valid: nothing was sent.
    ClusterFile(String),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Client(error) => error.exit_code(),
            CliError::SomeFailed { .. }
            | CliError::NoMatch { .. }
            | CliError::ReloadRefused { .. }
            | CliError::UnknownTrace { .. }
            | CliError::WaitFailed { .. }
            | CliError::ClusterFile(_) => 1,
            CliError::NotGreen { .. } => i32::from(EXIT_NOT_GREEN),
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
            CliError::Bench(error) => write!(f, "bench failed: {error}"),
            CliError::Output(source) => write!(f, "cannot write to standard output: {source}"),
            CliError::NoMatch { pattern } => write!(f, "no service matches `{pattern}`"),
            CliError::NotGreen { what, services } => {
                write!(f, "{} {what}: {}", services.len(), services.join(", "))
            }
            CliError::ReloadRefused {
                problems,
                correlation_id,
            } => {
                write!(
                    f,
                    "reload refused, the running configuration is kept ({} problems{}):",
                    problems.len(),
                    correlation_id
                        .as_ref()
                        .map_or_else(String::new, |id| format!(", request {id}"))
                )?;
                for problem in problems {
                    write!(f, "\n{problem}")?;
                }
                Ok(())
            }
            CliError::UnknownTrace { correlation_id } => write!(
                f,
                "the node has no trace of `{correlation_id}` (never seen, or evicted)"
            ),
            CliError::WaitFailed { reason } => f.write_str(reason),
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
        Command::Generate(generated) => {
            let text = match generated {
                Generated::Completions(shell) => {
                    help::CLIENT.completions(&shell).unwrap_or_default()
                }
                Generated::ManClient => help::CLIENT.man_page(env!("CARGO_PKG_VERSION")),
                Generated::ManNode => help::NODE.man_page(env!("CARGO_PKG_VERSION")),
            };
            write!(out, "{text}").map_err(CliError::Output)
        }
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
                colour: invocation.colour.wanted(),
            };
            ask_cluster(command, &socket, &mut printer)
        }
        Command::Node(command) => {
            let socket = match invocation.socket {
                Some(socket) => socket,
                None => paths::default_socket_path(),
            };
            let mut client = Client::connect(&socket)?;
            client.set_verbose(invocation.verbose);
            let mut printer = Printer {
                out: &mut out,
                json: invocation.json,
                colour: invocation.colour.wanted(),
            };
            ask_node(command, &mut client, &mut printer, &socket)
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
    colour: bool,
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
        let colour = self.colour;
        self.reply(status, json::service_status, |status| {
            render::status_with_metrics(status, now_unix_ms(), colour)
        })
    }

    fn line(&mut self, text: &str) -> Result<(), CliError> {
        writeln!(self.out, "{text}").map_err(CliError::Output)
    }
}

fn ask_node(
    command: NodeCommand,
    client: &mut Client,
    printer: &mut Printer,
    socket: &Path,
) -> Result<(), CliError> {
    match command {
        NodeCommand::Info { details } => {
            let colour = printer.colour;
            printer.reply(&client.node_info(details)?, json::node_info, |info| {
                render::node_info(info, colour)
            })
        }
        NodeCommand::Status { targets } => status(client, printer, &targets),
        NodeCommand::Act { action, targets } => act(&action, client, printer, &targets),
        NodeCommand::Cat { service } => {
            let definition = client.definition(&service)?;
            printer.reply(&definition, json::definition, |definition| {
                format!("# {}\n{}", definition.file, definition.text.trim_end())
            })
        }
        NodeCommand::IsActive { targets } => is_active(client, printer, &targets),
        NodeCommand::Wait {
            service,
            state,
            timeout,
        } => wait(client, printer, socket, &service, &state, timeout),
        NodeCommand::Reload => {
            let status = match client.reload() {
                Ok(status) => status,
                Err(ClientError::Node {
                    kind,
                    reason,
                    correlation_id,
                }) if kind == error::Kind::ConfigInvalid as i32 => {
                    return Err(CliError::ReloadRefused {
                        problems: reason.lines().map(str::to_owned).collect(),
                        correlation_id,
                    });
                }
                Err(error) => return Err(error.into()),
            };
            printer.reply(&status, json::service_status, render::reload)
        }
        NodeCommand::Watch => watch(client, printer),
        NodeCommand::Trace { correlation_id } => {
            let trace = client.trace(&correlation_id)?;
            printer.reply(&trace, json::trace, render::trace)?;
            if trace.state == "unknown" {
                return Err(CliError::UnknownTrace { correlation_id });
            }
            Ok(())
        }
        NodeCommand::Logs(options) => show_logs(&options, client, printer),
        NodeCommand::Metrics => {
            let text = client.metrics()?;
            printer.reply(
                &text,
                |text| JsonObject::new().string("metrics", text).finish(),
                |text| text.trim_end().to_owned(),
            )
        }
        NodeCommand::Top {
            order,
            interval,
            count,
        } => top(client, printer, order, interval, count),
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

/// `top`: the instances' usage, refreshed every `interval`, `count`
/// times (on a terminal, until interrupted; else once); a terminal's
/// screen is cleared before each.
fn top(
    client: &mut Client,
    printer: &mut Printer,
    order: render::TopOrder,
    interval: Duration,
    count: Option<u64>,
) -> Result<(), CliError> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout()) && !printer.json;
    let count = count.unwrap_or(if terminal { u64::MAX } else { 1 });
    for screen in 0..count {
        if screen > 0 {
            std::thread::sleep(interval);
        }
        let status = client.status_with_metrics(None)?;
        if terminal {
            write!(printer.out, "\x1b[H\x1b[2J").map_err(CliError::Output)?;
        }
        printer.reply(&status, json::service_status, |status| {
            render::top_table(status, order)
        })?;
        printer.out.flush().map_err(CliError::Output)?;
    }
    Ok(())
}

/// Whether `word` is a glob: it holds `*`, `?` or `[`.
fn is_glob(word: &str) -> bool {
    word.contains(['*', '?', '['])
}

/// Whether `text` matches glob `pattern`: `*` any run of characters,
/// `?` any one, `[abc]` and `[a-z]` one of a set; anything else itself.
fn glob_match(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some(('?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some(('[', rest)) => match (rest.iter().position(|c| *c == ']'), text.split_first()) {
            (Some(end), Some((first, tail))) => {
                let set = &rest[..end];
                let mut hit = false;
                let mut at = 0;
                while at < set.len() {
                    if at + 2 < set.len() && set[at + 1] == '-' {
                        hit |= (set[at]..=set[at + 2]).contains(first);
                        at += 3;
                    } else {
                        hit |= set[at] == *first;
                        at += 1;
                    }
                }
                hit && glob_match(&rest[end + 1..], tail)
            }
            (Some(_), None) => false,
            (None, _) => text.first() == Some(&'[') && glob_match(rest, &text[1..]),
        },
        Some((literal, rest)) => text.first() == Some(literal) && glob_match(rest, &text[1..]),
    }
}

/// The service ids `targets` name: plain ids as they are (the node
/// answers for an unknown one), `all` and globs matched against the
/// node's services, in the node's order; each id once.
fn resolve(client: &mut Client, targets: &[String]) -> Result<Vec<String>, CliError> {
    let known: Vec<String> = if targets.iter().any(|t| t == "all" || is_glob(t)) {
        client
            .status(None)?
            .services
            .into_iter()
            .map(|s| s.id)
            .collect()
    } else {
        Vec::new()
    };
    let mut ids: Vec<String> = Vec::new();
    for target in targets {
        let matched: Vec<String> = if target == "all" {
            known.clone()
        } else if is_glob(target) {
            let pattern: Vec<char> = target.chars().collect();
            let matched: Vec<String> = known
                .iter()
                .filter(|id| glob_match(&pattern, &id.chars().collect::<Vec<_>>()))
                .cloned()
                .collect();
            if matched.is_empty() {
                return Err(CliError::NoMatch {
                    pattern: target.clone(),
                });
            }
            matched
        } else {
            vec![target.clone()]
        };
        for id in matched {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// `status`: all services, the ones named, or one in detail; exit 3 when
/// one shown is not green.
fn status(client: &mut Client, printer: &mut Printer, targets: &[String]) -> Result<(), CliError> {
    let shown = match targets {
        [] => client.status(None)?,
        [one] if one != "all" && !is_glob(one) => {
            let status = client.status(Some(one))?;
            let definition = client.definition(one)?;
            if printer.json {
                printer.status(&status)?;
            } else if let Some(service) = status.services.first() {
                let text = render::service_detail(
                    &definition,
                    service,
                    now_unix_ms(),
                    &output_tail(&definition),
                    printer.colour,
                );
                printer.line(&text)?;
            }
            return not_green(&status);
        }
        _ => {
            let mut all = ServiceStatusResponse::default();
            for id in resolve(client, targets)? {
                all.services.extend(client.status(Some(&id))?.services);
            }
            all
        }
    };
    printer.status(&shown)?;
    not_green(&shown)
}

/// The last lines of a service's instance 0 output files, where this
/// client can read them: `(path, lines)` for each. (The node keeps no
/// output of its own to ask for; this reads the files, as `logs` does.)
fn output_tail(definition: &ServiceDefinitionResponse) -> Vec<(String, Vec<String>)> {
    let mut tails = Vec::new();
    for path in [&definition.stdout, &definition.stderr]
        .into_iter()
        .flatten()
    {
        if path.starts_with('/')
            && let Some(lines) = paths::tail_lines(Path::new(path), OUTPUT_LINES)
        {
            tails.push((path.clone(), lines));
        }
    }
    tails
}

/// Exit 3 when a service of `status` is not green.
fn not_green(status: &ServiceStatusResponse) -> Result<(), CliError> {
    let services: Vec<String> = status
        .services
        .iter()
        .filter(|s| s.status.colour != StatusColour::Green as i32)
        .map(|s| format!("{} ({})", s.id, render::colour_word(s.status.colour)))
        .collect();
    if services.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotGreen {
            what: "not green",
            services,
        })
    }
}

/// Does `action` to every service `targets` name, one after the other. A
/// service the node refuses does not stop the others; losing the node
/// does. One service named and refused is that refusal.
fn act(
    action: &Action,
    client: &mut Client,
    printer: &mut Printer,
    targets: &[String],
) -> Result<(), CliError> {
    let ids = resolve(client, targets)?;
    let total = ids.len();
    let mut results = ServiceStatusResponse::default();
    let mut failures = Vec::new();
    for id in ids {
        match action.apply(client, &id) {
            Ok(reply) if printer.json => printer.status(&reply)?,
            Ok(reply) => results.services.extend(reply.services),
            Err(error @ ClientError::Node { .. }) => failures.push((id, error)),
            Err(error) => return Err(error.into()),
        }
    }
    if !printer.json && !results.services.is_empty() {
        match action {
            Action::Signal { signal, .. } => {
                for service in &results.services {
                    let running = service.instances.iter().filter(|i| i.pid.is_some());
                    printer.line(&format!(
                        "{}: sent {signal} to {} process groups",
                        service.id,
                        running.count()
                    ))?;
                }
            }
            Action::Enable(on) => {
                let what = if *on {
                    "enabled: it starts with the node"
                } else {
                    "disabled: it does not start with the node"
                };
                for service in &results.services {
                    printer.line(&format!("{}: {what}", service.id))?;
                }
            }
            _ => printer.status(&results)?,
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 if total == 1 => Err(CliError::Client(failures.remove(0).1)),
        _ => Err(CliError::SomeFailed {
            action: action.clone(),
            total,
            failures,
        }),
    }
}

/// `is-active`: each service's state word; exit 3 unless all run.
fn is_active(
    client: &mut Client,
    printer: &mut Printer,
    targets: &[String],
) -> Result<(), CliError> {
    let mut inactive = Vec::new();
    for id in resolve(client, targets)? {
        let status = client.status(Some(&id))?;
        let Some(service) = status.services.first() else {
            continue;
        };
        let mut states: Vec<&str> = service.instances.iter().map(|i| i.state.as_str()).collect();
        states.dedup();
        let active = !states.is_empty() && states.iter().all(|state| *state == "running");
        let word = if active {
            "active".to_owned()
        } else {
            states.join(",")
        };
        printer.reply(
            &(),
            |()| {
                JsonObject::new()
                    .string("id", &id)
                    .bool("active", active)
                    .string("state", &word)
                    .finish()
            },
            |()| format!("{id}: {word}"),
        )?;
        if !active {
            inactive.push(id);
        }
    }
    if inactive.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotGreen {
            what: "not active",
            services: inactive,
        })
    }
}

/// `wait`: until every instance of `service` is in `state`, woken by its
/// events on a second connection; fails at the timeout, or when the
/// service failed instead.
fn wait(
    client: &mut Client,
    printer: &mut Printer,
    socket: &Path,
    service: &str,
    state: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    let mut events = Client::connect(socket)?;
    events.subscribe()?;
    loop {
        let status = client.status(Some(service))?;
        let Some(shown) = status.services.first() else {
            return Err(CliError::WaitFailed {
                reason: format!("the node shows no service `{service}`"),
            });
        };
        if shown.instances.iter().all(|i| i.state == state) {
            return printer.status(&status);
        }
        if state != "failed"
            && let Some(failed) = shown.instances.iter().find(|i| i.state == "failed")
        {
            return Err(CliError::WaitFailed {
                reason: format!(
                    "{service}.{} failed instead of getting {state}: {}",
                    failed.index,
                    failed.reason.as_deref().unwrap_or("no reason given")
                ),
            });
        }
        let timed_out = || {
            let now: Vec<String> = shown
                .instances
                .iter()
                .map(|i| {
                    format!(
                        "{service}.{} is {} ({})",
                        i.index,
                        i.state,
                        i.reason.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            CliError::WaitFailed {
                reason: format!(
                    "{service} did not get {state} within {timeout:?}: {}",
                    now.join("; ")
                ),
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        events.set_timeout(Some(left))?;
        loop {
            match events.next_event() {
                Ok(event) if event.service_id == service => break,
                Ok(_) => {}
                Err(ClientError::Timeout { .. }) => return Err(timed_out()),
                Err(error) => return Err(error.into()),
            }
        }
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

/// Prints the lines the node sends; with `-f`, until the node goes away.
fn show_logs(
    options: &LogsOptions,
    client: &mut Client,
    printer: &mut Printer,
) -> Result<(), CliError> {
    let since_unix_us = options.since.map(|since| match since {
        Since::At(at) => at,
        Since::Ago(ago) => {
            now_unix_us().saturating_sub(u64::try_from(ago.as_micros()).unwrap_or(u64::MAX))
        }
    });
    client.logs(LogsRequest {
        service_ids: options.services.clone(),
        instance: options.instance,
        lines: Some(options.lines),
        follow: Some(options.follow),
        since_unix_us,
        stream: Some(options.stream as i32),
    })?;
    loop {
        match client.next_logs()? {
            Logs::Lines(lines) => {
                for line in &lines {
                    printer.reply(line, json::log_line, render::log_line)?;
                }
                printer.out.flush().map_err(CliError::Output)?;
            }
            Logs::CaughtUp if options.follow => client.set_timeout(None)?,
            Logs::CaughtUp => return Ok(()),
        }
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
            verbose: false,
            colour: ColourChoice::Auto,
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
            NodeCommand::Status {
                targets: Vec::new()
            }
        );
        assert_eq!(
            node_command(&["status", "web"]),
            NodeCommand::Status {
                targets: vec!["web".into()]
            }
        );
        assert_eq!(
            node_command(&["stop", "all"]),
            NodeCommand::Act {
                action: Action::Stop,
                targets: vec!["all".into()]
            }
        );
        assert_eq!(
            node_command(&["restart", "web", "db-*"]),
            NodeCommand::Act {
                action: Action::Restart,
                targets: vec!["web".into(), "db-*".into()]
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
    fn the_new_verbs_and_their_options() {
        assert_eq!(
            node_command(&["signal", "web-*", "db", "USR1", "--instance", "1"]),
            NodeCommand::Act {
                action: Action::Signal {
                    signal: "USR1".into(),
                    instance: Some(1)
                },
                targets: vec!["web-*".into(), "db".into()]
            }
        );
        assert_eq!(
            node_command(&["wait", "web", "--state", "stopped", "--timeout", "2s"]),
            NodeCommand::Wait {
                service: "web".into(),
                state: "stopped".into(),
                timeout: Duration::from_secs(2)
            }
        );
        assert_eq!(
            node_command(&["disable", "a", "b"]),
            NodeCommand::Act {
                action: Action::Enable(false),
                targets: vec!["a".into(), "b".into()]
            }
        );
        let parsed = parse(&["--verbose", "--color=never", "cat", "web"]).unwrap();
        assert!(parsed.verbose);
        assert_eq!(parsed.colour, ColourChoice::Never);
    }

    #[test]
    fn globs_match_like_the_shell() {
        let matches = |pattern: &str, text: &str| {
            glob_match(
                &pattern.chars().collect::<Vec<_>>(),
                &text.chars().collect::<Vec<_>>(),
            )
        };
        assert!(matches("web-*", "web-1"));
        assert!(matches("web-*", "web-"));
        assert!(!matches("web-*", "db"));
        assert!(matches("w?b", "web"));
        assert!(matches("db[0-9]", "db7"));
        assert!(!matches("db[0-9]", "dbx"));
        assert!(matches("*", ""));
        assert!(!matches("a", "ab"));
    }

    #[test]
    fn logs_options() {
        let parsed = parse(&[
            "logs",
            "web",
            "db",
            "--instance",
            "2",
            "-f",
            "-n",
            "20",
            "--since",
            "2026-12-01T11:00:00Z",
            "--stderr",
        ])
        .unwrap();
        assert_eq!(
            parsed.command,
            Command::Node(NodeCommand::Logs(LogsOptions {
                services: vec!["web".into(), "db".into()],
                instance: Some(2),
                stream: LogStream::Stderr,
                follow: true,
                lines: 20,
                since: Some(Since::At(1_796_122_800_000_000)),
            }))
        );
        let plain = parse(&["logs", "all", "--since", "10m"]).unwrap();
        assert_eq!(
            plain.command,
            Command::Node(NodeCommand::Logs(LogsOptions {
                services: vec!["all".into()],
                instance: None,
                stream: LogStream::Both,
                follow: false,
                lines: 0,
                since: Some(Since::Ago(Duration::from_secs(600))),
            }))
        );
        assert!(usage_error(&["logs", "web", "--since", "yesterday"]).contains("--since needs"));
        assert_eq!(usage_error(&["logs"]), "`logs` needs service ids or `all`");
    }

    #[test]
    fn help_and_version_win_anywhere() {
        assert_eq!(parse(&["--help"]), Err(ParseExit::Help(None)));
        assert_eq!(
            parse(&["status", "-h"]),
            Err(ParseExit::Help(Some("status".into())))
        );
        assert_eq!(parse(&["-V"]), Err(ParseExit::Version));
    }

    #[test]
    fn bad_usage_is_one_clear_message() {
        assert_eq!(usage_error(&[]), "missing command");
        assert_eq!(usage_error(&["frobnicate"]), "unknown command `frobnicate`");
        assert_eq!(
            usage_error(&["start"]),
            "`start` needs a service id, a glob or `all`"
        );
        assert_eq!(
            usage_error(&["signal", "HUP"]),
            "`signal` needs service ids and a signal, e.g. `signal web HUP`"
        );
        assert_eq!(
            usage_error(&["--color", "pink", "status"]),
            "--color takes auto, always or never, not `pink`"
        );
        assert_eq!(
            usage_error(&["completions", "tcsh"]),
            "completions are for bash, zsh or fish, not `tcsh`"
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
}
