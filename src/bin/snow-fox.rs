//! `snow-fox`: runs a node on a configuration directory.
//!
//! Exit codes: 0 shut down as asked; 1 could not start (configuration,
//! socket); 2 bad usage; 3 a role died and the node shut down.

use std::path::PathBuf;
use std::process::ExitCode;

use snow_fox::daemon::{self, NodeOptions, SPAWNER_FLAG, SpawnerProcessOptions};

const USAGE: &str = "\
usage: snow-fox [--conf DIR] [--socket PATH] [--name NAME]

Runs a snow-fox node: supervises the services of DIR/services/*.toml and
serves the protobuf API on a UNIX socket.

options:
  --conf DIR       configuration directory (default: ./conf)
  --socket PATH    socket path (default: node.toml's `socket`, else
                   $XDG_RUNTIME_DIR/snow-fox.sock, /tmp/snow-fox-$UID/snow-fox.sock,
                   or /run/snow-fox/snow-fox.sock as root)
  --name NAME      node name (default: node.toml's `name`, else the host name)
  --version        print the version and exit
  --help           print this help and exit

Logging goes to stderr; set RUST_LOG (error, warn, info, debug, trace) to
choose how much (default: info).";

enum Command {
    Run(NodeOptions),
    /// The spawner process of privilege separation, which the node starts
    /// itself (not in the usage text: nobody else has its link sockets).
    Spawner(SpawnerProcessOptions),
    Help,
    Version,
}

fn parse_args() -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut options = NodeOptions {
        conf_dir: PathBuf::from("conf"),
        socket: None,
        name: None,
    };
    let mut parser = lexopt::Parser::from_env();
    let mut spawner: Option<SpawnerProcessOptions> = None;
    while let Some(arg) = parser.next()? {
        if let Some(spawner) = spawner.as_mut() {
            match arg {
                Long("conf") => spawner.conf_dir = parser.value()?.into(),
                Long("manager-fd") => spawner.manager_fd = parser.value()?.parse()?,
                Long("daemon-fd") => spawner.daemon_fd = parser.value()?.parse()?,
                _ => return Err(arg.unexpected()),
            }
            continue;
        }
        match arg {
            Long("conf") => options.conf_dir = parser.value()?.into(),
            Long("socket") => options.socket = Some(parser.value()?.into()),
            Long("name") => options.name = Some(parser.value()?.string()?),
            Long(flag) if format!("--{flag}") == SPAWNER_FLAG => {
                spawner = Some(SpawnerProcessOptions {
                    conf_dir: PathBuf::from("conf"),
                    manager_fd: -1,
                    daemon_fd: -1,
                });
            }
            Long("help") | Short('h') => return Ok(Command::Help),
            Long("version") | Short('V') => return Ok(Command::Version),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(spawner.map_or(Command::Run(options), Command::Spawner))
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(Command::Run(options)) => options,
        Ok(Command::Spawner(options)) => {
            init_logging();
            return ExitCode::from(daemon::run_spawner_process(&options) as u8);
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!(
                "snow-fox {} ({} {})",
                env!("CARGO_PKG_VERSION"),
                env!("SNOW_FOX_GIT_COMMIT"),
                env!("SNOW_FOX_GIT_TAINT")
            );
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("snow-fox: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    match daemon::run(options) {
        Ok(outcome) => ExitCode::from(outcome.exit_code() as u8),
        Err(error) => {
            eprintln!("snow-fox: {error}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
}
