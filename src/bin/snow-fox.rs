//! `snow-fox`: runs a node on a configuration directory, or checks one
//! (`--check`). Its help and man page come from [`help::NODE`].
//!
//! Exit codes: 0 shut down as asked; 1 could not start (configuration,
//! socket); 2 bad usage; 3 a role died and the node shut down.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use snow_fox::client::help;
use snow_fox::conf::Config;
use snow_fox::daemon::{self, NodeOptions, SPAWNER_FLAG, SpawnerProcessOptions};

enum Command {
    Run(NodeOptions),
    Check(PathBuf),
    /// The spawner process of privilege separation, which the node starts
    /// itself (not in the usage text: nobody else has its link sockets).
    Spawner(SpawnerProcessOptions),
    /// The log keeper NAME, which the node starts itself.
    LogKeeper(String),
    Man,
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
    let mut check = false;
    let mut spawner: Option<SpawnerProcessOptions> = None;
    while let Some(arg) = parser.next()? {
        if let Some(spawner) = spawner.as_mut() {
            match arg {
                Long("conf") => spawner.conf_dir = parser.value()?.into(),
                Long("manager-fd") => spawner.manager_fd = parser.value()?.parse()?,
                Long("daemon-fd") => spawner.daemon_fd = parser.value()?.parse()?,
                Long("node-gid") => spawner.node_gid = Some(parser.value()?.parse()?),
                _ => return Err(arg.unexpected()),
            }
            continue;
        }
        match arg {
            Long("check") => check = true,
            Long("man") => return Ok(Command::Man),
            Long("conf") => options.conf_dir = parser.value()?.into(),
            Long("socket") => options.socket = Some(parser.value()?.into()),
            Long("name") => options.name = Some(parser.value()?.string()?),
            Long(flag) if format!("--{flag}") == SPAWNER_FLAG => {
                spawner = Some(SpawnerProcessOptions {
                    conf_dir: PathBuf::from("conf"),
                    manager_fd: -1,
                    daemon_fd: -1,
                    node_gid: None,
                });
            }
            Long("log-keeper") => return Ok(Command::LogKeeper(parser.value()?.string()?)),
            Long("help") | Short('h') => return Ok(Command::Help),
            Long("version") | Short('V') => return Ok(Command::Version),
            _ => return Err(arg.unexpected()),
        }
    }
    if let Some(spawner) = spawner {
        return Ok(Command::Spawner(spawner));
    }
    if check {
        return Ok(Command::Check(options.conf_dir));
    }
    Ok(Command::Run(options))
}

/// `--check`: every problem on stdout, one a line; exit 1 if any.
fn check(conf_dir: &Path) -> ExitCode {
    match Config::load_checked(conf_dir) {
        Ok(config) => {
            println!(
                "configuration OK: {} services in {} (version {})",
                config.services.len(),
                conf_dir.display(),
                config.effective_version
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            for problem in &error.problems {
                println!("{problem}");
            }
            eprintln!(
                "snow-fox: {} problems in the configuration in {}",
                error.problems.len(),
                conf_dir.display()
            );
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(Command::Run(options)) => options,
        Ok(Command::Check(conf_dir)) => return check(&conf_dir),
        Ok(Command::Spawner(options)) => {
            init_logging();
            return ExitCode::from(daemon::run_spawner_process(&options) as u8);
        }
        Ok(Command::LogKeeper(name)) => {
            init_logging();
            return match snow_fox::spawner::keeper::run_process(&name) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("snow-fox: {error}");
                    ExitCode::from(1)
                }
            };
        }
        Ok(Command::Help) => {
            println!("{}", help::NODE.usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Man) => {
            print!("{}", help::NODE.man_page(env!("CARGO_PKG_VERSION")));
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
            eprintln!("snow-fox: {error}\n\n{}", help::NODE.usage());
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
