//! `snow-fox`: runs a node on a configuration directory.
//!
//! Exit codes: 0 shut down as asked; 1 could not start (configuration,
//! socket); 2 bad usage; 3 a role died and the node shut down.

use std::path::PathBuf;
use std::process::ExitCode;

use snow_fox::daemon::{self, NodeOptions};

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
  --log-keeper NAME
                   be the log keeper NAME (the node starts it by itself)

Logging goes to stderr; set RUST_LOG (error, warn, info, debug, trace) to
choose how much (default: info).";

enum Command {
    Run(NodeOptions),
    LogKeeper(String),
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
    while let Some(arg) = parser.next()? {
        match arg {
            Long("conf") => options.conf_dir = parser.value()?.into(),
            Long("socket") => options.socket = Some(parser.value()?.into()),
            Long("name") => options.name = Some(parser.value()?.string()?),
            Long("log-keeper") => return Ok(Command::LogKeeper(parser.value()?.string()?)),
            Long("help") | Short('h') => return Ok(Command::Help),
            Long("version") | Short('V') => return Ok(Command::Version),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Command::Run(options))
}

fn main() -> ExitCode {
    let command = parse_args();
    if matches!(command, Ok(Command::Run(_) | Command::LogKeeper(_))) {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format_target(false)
            .init();
    }
    let options = match command {
        Ok(Command::Run(options)) => options,
        Ok(Command::LogKeeper(name)) => {
            return match snow_fox::spawner::keeper::run_process(&name) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("snow-fox: {error}");
                    ExitCode::from(1)
                }
            };
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
    match daemon::run(options) {
        Ok(outcome) => ExitCode::from(outcome.exit_code() as u8),
        Err(error) => {
            eprintln!("snow-fox: {error}");
            ExitCode::from(1)
        }
    }
}
