//! The help text of both binaries, kept once as data: `--help`, each
//! `snow-fox-client <command> --help`, the man pages and the bash, zsh and
//! fish completions are all generated from it, so they cannot disagree.
//! Pure functions from the tables below to `String`s; no I/O.

/// One command of a program (or, for the node, none).
#[derive(Debug)]
pub struct CommandHelp {
    /// The command word.
    pub name: &'static str,
    /// What follows the word, e.g. `ID|GLOB... [--instance N]`.
    pub args: &'static str,
    /// One line about it.
    pub summary: &'static str,
    /// More lines, shown by `<command> --help` and in the man page.
    pub details: &'static str,
    /// Its own options: spelling with value, and what it does.
    pub options: &'static [(&'static str, &'static str)],
}

/// A program's whole help.
#[derive(Debug)]
pub struct ProgramHelp {
    /// Its binary name.
    pub name: &'static str,
    /// One line about it.
    pub about: &'static str,
    /// Its synopsis lines, without the name.
    pub synopsis: &'static [&'static str],
    /// What it does, in a paragraph.
    pub description: &'static str,
    /// Its commands (empty for the node).
    pub commands: &'static [CommandHelp],
    /// Options that go with any command.
    pub options: &'static [(&'static str, &'static str)],
    /// Its exit statuses.
    pub exit_status: &'static [(&'static str, &'static str)],
}

/// Where a service id or glob goes, in the commands' synopses.
const IDS: &str = "ID|GLOB|all...";

/// `snow-fox-client`'s help.
pub const CLIENT: ProgramHelp = ProgramHelp {
    name: "snow-fox-client",
    about: "ask a snow-fox node about its services and tell it what to do",
    synopsis: &["[--socket PATH] [--json] [--verbose] [--color WHEN] <command> [args]"],
    description: "Talks to a snow-fox node over its UNIX socket. Service ids may be \
globs (`web-*`, `db?`) or `all`; a command on several services does each in turn and \
reports every failure. Replies print as aligned tables, or with --json as one JSON \
object per line.",
    commands: &[
        CommandHelp {
            name: "info",
            args: "[--details]",
            summary: "the node's name, version, configuration and health",
            details: "--details adds one row per role, the configuration and each service.",
            options: &[("--details", "one row per subsystem")],
        },
        CommandHelp {
            name: "status",
            args: "[ID|GLOB...]",
            summary: "the state of every instance, with the reason for it",
            details: "One id alone shows that service in detail: its command, user, work dir, \
each instance's state, reason, since when, pid, uptime, restarts and last exit, its \
readiness and health checks, its dependencies and the last lines of its output. \
Exits 3 when anything shown is not green (systemctl's convention).",
            options: &[],
        },
        CommandHelp {
            name: "start",
            args: IDS,
            summary: "start services (and what they require); fails if one does not get running and ready",
            details: "Answered once each service runs and is ready. A service that exits, backs \
off or is not ready in time fails with the reason (exit code or signal, the end of its \
stderr, what readiness waited for) and a non-zero exit.",
            options: &[],
        },
        CommandHelp {
            name: "stop",
            args: IDS,
            summary: "stop services (and what requires them)",
            details: "A stopped service stays stopped across node restarts until it is started.",
            options: &[],
        },
        CommandHelp {
            name: "restart",
            args: IDS,
            summary: "stop, then start services; fails like start",
            details: "",
            options: &[],
        },
        CommandHelp {
            name: "signal",
            args: "ID|GLOB... SIGNAL [--instance N]",
            summary: "send a signal (HUP, USR1, 10, ...) to the process groups of running instances",
            details: "",
            options: &[("--instance N", "only instance N")],
        },
        CommandHelp {
            name: "enable",
            args: IDS,
            summary: "make services start with the node (kept until their definition changes)",
            details: "Starts nothing now.",
            options: &[],
        },
        CommandHelp {
            name: "disable",
            args: IDS,
            summary: "make services not start with the node (kept until their definition changes)",
            details: "Stops nothing now.",
            options: &[],
        },
        CommandHelp {
            name: "cat",
            args: "ID",
            summary: "the service's definition file as the node loaded it",
            details: "",
            options: &[],
        },
        CommandHelp {
            name: "is-active",
            args: "ID|GLOB...",
            summary: "print each service's state; exit 0 if all run, 3 otherwise",
            details: "",
            options: &[],
        },
        CommandHelp {
            name: "wait",
            args: "ID [--state STATE] [--timeout D]",
            summary: "wait until every instance of a service is in STATE (default running)",
            details: "Exits 0 once it is, 1 when the timeout (default 30s) runs out or the service \
failed instead.",
            options: &[
                ("--state STATE", "running, stopped, exited, failed, ..."),
                ("--timeout D", "how long to wait, e.g. 500ms, 10s, 2m"),
            ],
        },
        CommandHelp {
            name: "reload",
            args: "",
            summary: "reload the configuration; print what was added, changed, removed and left alone",
            details: "A configuration with problems is refused whole; each problem is printed \
on a line of its own.",
            options: &[],
        },
        CommandHelp {
            name: "watch",
            args: "",
            summary: "print each state change, with its reason, as it happens",
            details: "",
            options: &[],
        },
        CommandHelp {
            name: "logs",
            args: "ID|all... [-n N] [-f] [--since TIME] [--instance N] [--stdout|--stderr]",
            summary: "the services' captured output, from the node, interleaved in arrival order",
            details: "Each line is `id.instance | time text`. TIME is like 2026-12-01T11:00:00Z \
(UTC) or 10m, 2h (that long ago). The client needs no file access: the node sends the lines.",
            options: &[
                ("-n N", "only the last N lines"),
                ("-f", "then follow, across rotations"),
                ("--since TIME", "only lines that arrived at or after TIME"),
                ("--instance N", "only instance N"),
                ("--stdout", "only stdout"),
                ("--stderr", "only stderr"),
            ],
        },
        CommandHelp {
            name: "top",
            args: "[--sort cpu|memory] [--interval D] [-n COUNT]",
            summary: "one line per instance (state, CPU, memory, tasks, restarts), busiest first",
            details: "Refreshed every D (default 2s); COUNT screens (default: until interrupted on \
a terminal, else 1).",
            options: &[
                ("--sort cpu|memory", "what comes first"),
                ("--interval D", "between screens"),
                ("-n COUNT", "how many screens"),
            ],
        },
        CommandHelp {
            name: "metrics",
            args: "",
            summary: "the node's metrics in the Prometheus text format",
            details: "",
            options: &[],
        },
        CommandHelp {
            name: "trace",
            args: "CORRELATION_ID",
            summary: "the messages a request caused, in order, and its state; exit 1 if unknown",
            details: "",
            options: &[],
        },
        CommandHelp {
            name: "shutdown",
            args: "",
            summary: "ask the node to shut down",
            details: "",
            options: &[],
        },
        CommandHelp {
            name: "cluster",
            args: "status | apply FILE... | remove|start|stop ID",
            summary: "the node's cluster: what runs where, and its cluster services",
            details: "status: every node of the cluster (name, labels, alive, instances) and every \
cluster instance (node, state, pid). apply: validate cluster service files (a service file \
plus [placement]; the id is the file's stem), then store them. remove, start, stop: a \
cluster service.",
            options: &[],
        },
        CommandHelp {
            name: "bench",
            args: "[--clients N] [--inflight K] [--duration D | --requests N] [--warmup D] [--request KIND] [--service ID]",
            summary: "load the node from N connections, each keeping K requests out",
            details: "Prints requests/s and latency quantiles, with a progress line on stderr \
each second. KIND is nodeinfo, status or introduce; --service asks the status of one.",
            options: &[
                ("--clients N", "connections (default 1)"),
                ("--inflight K", "requests out per connection (default 1)"),
                ("--duration D", "how long (default 10s)"),
                ("--requests N", "how many requests instead"),
                ("--warmup D", "warm-up (default 1s)"),
                ("--request KIND", "nodeinfo, status or introduce"),
                ("--service ID", "with --request status: one service"),
            ],
        },
        CommandHelp {
            name: "completions",
            args: "bash|zsh|fish",
            summary: "print a completion script for the shell",
            details: "",
            options: &[],
        },
        CommandHelp {
            name: "man",
            args: "[snow-fox|snow-fox-client]",
            summary: "print the man page (roff) of the client or the node",
            details: "",
            options: &[],
        },
    ],
    options: &[
        (
            "--socket PATH",
            "the node's socket; default /run/snow-fox/snow-fox.sock for root, else $XDG_RUNTIME_DIR/snow-fox.sock, else /tmp/snow-fox-$UID/snow-fox.sock",
        ),
        ("--json", "print each reply as one JSON object per line"),
        (
            "--verbose",
            "print each request's correlation id on stderr (for trace)",
        ),
        (
            "--color WHEN",
            "auto (on a terminal, unless NO_COLOR is set), always or never",
        ),
        ("-h, --help", "print this help, or a command's"),
        ("-V, --version", "print the version"),
    ],
    exit_status: &[
        ("0", "success"),
        (
            "1",
            "the node answered with an error (a failed start, an unknown service, ...)",
        ),
        ("2", "the node could not be asked: no connection, bad usage"),
        (
            "3",
            "status or is-active: something shown is not green or not running",
        ),
    ],
};

/// `snow-fox`'s help.
pub const NODE: ProgramHelp = ProgramHelp {
    name: "snow-fox",
    about: "run a snow-fox node",
    synopsis: &[
        "[--conf DIR] [--socket PATH] [--name NAME]",
        "--check [--conf DIR]",
    ],
    description: "Runs a snow-fox node: supervises the services of DIR/services/*.toml and \
serves the protobuf API on a UNIX socket. Logging goes to stderr; set RUST_LOG (error, \
warn, info, debug, trace) to choose how much (default: info).",
    commands: &[],
    options: &[
        ("--conf DIR", "configuration directory (default: ./conf)"),
        (
            "--socket PATH",
            "socket path (default: node.toml's `socket`, else $XDG_RUNTIME_DIR/snow-fox.sock, /tmp/snow-fox-$UID/snow-fox.sock, or /run/snow-fox/snow-fox.sock as root)",
        ),
        (
            "--name NAME",
            "node name (default: node.toml's `name`, else the host name)",
        ),
        (
            "--check",
            "check the configuration and exit: syntax and values, the dependency graph, and on this host that each user and group exists, each program is executable by its service's user, each work dir can be entered by it and each output file's directory exists; prints every problem (file:line: key `k`: what) and exits 1, or \"configuration OK\" and exits 0",
        ),
        ("--man", "print this man page (roff) and exit"),
        ("-V, --version", "print the version and exit"),
        ("-h, --help", "print this help and exit"),
    ],
    exit_status: &[
        ("0", "shut down as asked, or --check found no problem"),
        (
            "1",
            "could not start (configuration, socket), or --check found problems",
        ),
        ("2", "bad usage"),
        ("3", "a role died and the node shut down"),
    ],
};

impl ProgramHelp {
    /// `--help`: synopsis, description, commands, options, exit status.
    pub fn usage(&self) -> String {
        let mut text = String::new();
        for (at, line) in self.synopsis.iter().enumerate() {
            let lead = if at == 0 { "usage:" } else { "      " };
            text.push_str(&format!("{lead} {} {line}\n", self.name));
        }
        text.push('\n');
        text.push_str(&wrap(self.description, 78, ""));
        if !self.commands.is_empty() {
            text.push_str("\ncommands:\n");
            let width = self
                .commands
                .iter()
                .map(|c| c.name.len())
                .max()
                .unwrap_or(0);
            for command in self.commands {
                text.push_str(&format!(
                    "  {:<width$}  {}\n",
                    command.name, command.summary
                ));
            }
            text.push_str(&format!(
                "\n`{} <command> --help` tells more of each.\n",
                self.name
            ));
        }
        text.push_str("\noptions:\n");
        text.push_str(&option_lines(self.options));
        text.push_str("\nexit status:\n");
        text.push_str(&option_lines(self.exit_status));
        text.trim_end().to_owned()
    }

    /// `<command> --help`; `None` for a command it does not have.
    pub fn command_usage(&self, name: &str) -> Option<String> {
        let command = self.commands.iter().find(|c| c.name == name)?;
        let mut text = format!(
            "usage: {} {} {}\n\n{}\n",
            self.name, command.name, command.args, command.summary
        );
        if !command.details.is_empty() {
            text.push('\n');
            text.push_str(&wrap(command.details, 78, ""));
        }
        if !command.options.is_empty() {
            text.push_str("\noptions:\n");
            text.push_str(&option_lines(command.options));
        }
        Some(text.trim_end().to_owned())
    }

    /// Its man page, in roff (`man -l -`).
    pub fn man_page(&self, version: &str) -> String {
        let mut page = format!(
            ".TH {} 1 \"\" \"snow-fox {version}\" \"User Commands\"\n.SH NAME\n{} \\- {}\n.SH SYNOPSIS\n",
            self.name.to_uppercase(),
            roff(self.name),
            roff(self.about)
        );
        for line in self.synopsis {
            page.push_str(&format!(".B {}\n{}\n.br\n", roff(self.name), roff(line)));
        }
        page.push_str(&format!(".SH DESCRIPTION\n{}\n", roff(self.description)));
        if !self.commands.is_empty() {
            page.push_str(".SH COMMANDS\n");
            for command in self.commands {
                page.push_str(&format!(
                    ".TP\n.B {} {}\n{}\n",
                    roff(command.name),
                    roff(command.args),
                    roff(command.summary)
                ));
                if !command.details.is_empty() {
                    page.push_str(&format!("{}\n", roff(command.details)));
                }
                for (option, what) in command.options {
                    page.push_str(&format!(".br\n{} \\- {}\n", roff(option), roff(what)));
                }
            }
        }
        page.push_str(".SH OPTIONS\n");
        for (option, what) in self.options {
            page.push_str(&format!(".TP\n.B {}\n{}\n", roff(option), roff(what)));
        }
        page.push_str(".SH EXIT STATUS\n");
        for (status, what) in self.exit_status {
            page.push_str(&format!(".TP\n.B {status}\n{}\n", roff(what)));
        }
        page
    }

    /// A completion script for `shell` (bash, zsh or fish); `None` for
    /// another shell.
    pub fn completions(&self, shell: &str) -> Option<String> {
        let names: Vec<&str> = self.commands.iter().map(|c| c.name).collect();
        let global: Vec<&str> = self.options.iter().flat_map(|(o, _)| flags(o)).collect();
        let function = format!("_{}", self.name.replace('-', "_"));
        match shell {
            "bash" => {
                let mut cases = String::new();
                for command in self.commands {
                    let own: Vec<&str> =
                        command.options.iter().flat_map(|(o, _)| flags(o)).collect();
                    // Commands on services complete the node's service
                    // ids, asked of the node at the default socket.
                    let ids = if command.args.trim_start_matches('[').starts_with("ID") {
                        " $(__sf_ids)"
                    } else {
                        ""
                    };
                    cases.push_str(&format!(
                        "        {}) words=\"{} {}{ids}\" ;;\n",
                        command.name,
                        own.join(" "),
                        global.join(" ")
                    ));
                }
                Some(format!(
                    "# bash completion for {name}, generated by `{name} completions bash`\n\
                     __sf_ids() {{\n    {name} --json status 2>/dev/null | grep -o '\"id\":\"[^\"]*\"' | cut -d'\"' -f4\n}}\n\
                     {function}() {{\n    local cur=${{COMP_WORDS[COMP_CWORD]}} command= words= i\n    \
                     for ((i = 1; i < COMP_CWORD; i++)); do\n        case ${{COMP_WORDS[i]}} in -*) ;; *) command=${{COMP_WORDS[i]}}; break ;; esac\n    done\n    \
                     case $command in\n        '') words=\"{commands} {global}\" ;;\n{cases}    esac\n    \
                     COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n}}\ncomplete -F {function} {name}\n",
                    name = self.name,
                    commands = names.join(" "),
                    global = global.join(" "),
                ))
            }
            "zsh" => {
                let mut lines = String::new();
                for command in self.commands {
                    lines.push_str(&format!(
                        "    '{}:{}'\n",
                        command.name,
                        command.summary.replace('\'', "'\\''").replace(':', "\\:")
                    ));
                }
                Some(format!(
                    "#compdef {name}\n# zsh completion for {name}, generated by `{name} completions zsh`\n\
                     {function}() {{\n  local -a commands\n  commands=(\n{lines}  )\n  \
                     if (( CURRENT == 2 )); then\n    _describe 'command' commands\n  else\n    _arguments '*:argument:_default' {options}\n  fi\n}}\n\
                     {function} \"$@\"\n",
                    name = self.name,
                    options = global
                        .iter()
                        .map(|flag| format!("'{flag}'"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ))
            }
            "fish" => {
                let mut text = format!(
                    "# fish completion for {name}, generated by `{name} completions fish`\n",
                    name = self.name
                );
                for command in self.commands {
                    text.push_str(&format!(
                        "complete -c {} -f -n __fish_use_subcommand -a {} -d '{}'\n",
                        self.name,
                        command.name,
                        command.summary.replace('\'', "\\'")
                    ));
                    for (option, what) in command.options {
                        for flag in flags(option) {
                            text.push_str(&format!(
                                "complete -c {} -n '__fish_seen_subcommand_from {}' {} -d '{}'\n",
                                self.name,
                                command.name,
                                fish_flag(flag),
                                what.replace('\'', "\\'")
                            ));
                        }
                    }
                }
                for (option, what) in self.options {
                    for flag in flags(option) {
                        text.push_str(&format!(
                            "complete -c {} {} -d '{}'\n",
                            self.name,
                            fish_flag(flag),
                            what.replace('\'', "\\'")
                        ));
                    }
                }
                Some(text)
            }
            _ => None,
        }
    }
}

/// The flags an option's spelling names: `-h, --help` gives `-h` and
/// `--help`; `--socket PATH` gives `--socket`.
fn flags(option: &str) -> impl Iterator<Item = &str> {
    option
        .split(", ")
        .filter_map(|part| part.split(' ').next())
        .filter(|flag| flag.starts_with('-'))
}

/// A flag as fish's `complete` takes it: `-l name` or `-s x`.
fn fish_flag(flag: &str) -> String {
    match flag.strip_prefix("--") {
        Some(long) => format!("-l {long}"),
        None => format!("-s {}", flag.trim_start_matches('-')),
    }
}

/// Two-column lines, the second column wrapped.
fn option_lines(rows: &[(&str, &str)]) -> String {
    let width = rows
        .iter()
        .map(|(left, _)| left.len())
        .max()
        .unwrap_or(0)
        .min(22);
    let mut text = String::new();
    for (left, right) in rows {
        let indent = " ".repeat(width + 4);
        let wrapped = wrap(right, 78 - width - 4, &indent);
        let wrapped = wrapped.trim_start();
        if left.len() > width {
            text.push_str(&format!("  {left}\n{indent}{wrapped}"));
        } else {
            text.push_str(&format!("  {left:<width$}  {wrapped}"));
        }
    }
    text
}

/// `text` wrapped at `width` columns, each line after the first starting
/// with `indent`, ending with a newline.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            out.push_str(indent);
            line.clear();
        } else if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `text` safe in a roff line: backslashes and hyphens escaped, no line
/// starting with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_its_help_and_shows_in_every_generated_text() {
        let usage = CLIENT.usage();
        let man = CLIENT.man_page("1.0");
        let scripts: Vec<String> = ["bash", "zsh", "fish"]
            .iter()
            .map(|shell| CLIENT.completions(shell).unwrap())
            .collect();
        for command in CLIENT.commands {
            assert!(usage.contains(command.summary), "{}", command.name);
            let own = CLIENT.command_usage(command.name).unwrap();
            assert!(own.starts_with(&format!("usage: snow-fox-client {}", command.name)));
            assert!(man.contains(&roff(command.name)), "{}", command.name);
            for script in &scripts {
                assert!(script.contains(command.name), "{}", command.name);
            }
        }
        assert_eq!(CLIENT.command_usage("frobnicate"), None);
        assert_eq!(CLIENT.completions("tcsh"), None);
    }

    #[test]
    fn the_node_has_a_usage_and_a_man_page() {
        let usage = NODE.usage();
        assert!(usage.starts_with("usage: snow-fox [--conf DIR]"), "{usage}");
        assert!(usage.contains("--check"), "{usage}");
        let man = NODE.man_page("1.0");
        assert!(man.starts_with(".TH SNOW-FOX 1"), "{man}");
        assert!(man.contains("\\-\\-check"), "{man}");
    }

    #[test]
    fn roff_escapes_what_roff_would_read_as_commands() {
        assert_eq!(roff(".hidden"), "\\&.hidden");
        assert_eq!(roff("a\\b-c"), "a\\eb\\-c");
    }

    #[test]
    fn flags_of_an_option_spelling() {
        assert_eq!(flags("-h, --help").collect::<Vec<_>>(), ["-h", "--help"]);
        assert_eq!(flags("--socket PATH").collect::<Vec<_>>(), ["--socket"]);
    }
}
