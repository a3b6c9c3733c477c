//! Issue 13: the client tells the truth at a glance. Failed starts fail
//! with their reason, every state has a reason, desired state is what the
//! user last said (across `kill -9` of the node), the configuration is
//! checked before it runs, instances can be told apart, and the verbs a
//! supervisorctl or systemctl user reaches for are there. Each test runs
//! the real node and the real client binary.

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use snow_fox::wire::proto::public_api::error::Kind;

use common::{Node, Setup, wait_for};

/// What one run of the client printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `snow-fox-client --socket <node's> args...`.
fn cli(node: &Node, args: &[&str]) -> Run {
    run(Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .arg("--socket")
        .arg(node.socket())
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .unwrap())
}

/// Runs `snow-fox-client args...` without a node.
fn cli_alone(args: &[&str]) -> Run {
    run(Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .args(args)
        .output()
        .unwrap())
}

/// Runs `snow-fox --check --conf <dir>`.
fn check(conf: &Path) -> Run {
    run(Command::new(env!("CARGO_BIN_EXE_snow-fox"))
        .arg("--check")
        .arg("--conf")
        .arg(conf)
        .output()
        .unwrap())
}

fn is_root() -> bool {
    snow_fox::sys::effective_uid() == 0
}

/// The state and reason of instance `index` of `id`.
fn state_of(node: &Node, id: &str, index: usize) -> (String, String) {
    let status = node.client().status(Some(id)).unwrap();
    let instance = &status.services[0].instances[index];
    (
        instance.state.clone(),
        instance.reason.clone().unwrap_or_default(),
    )
}

const SLEEPER: &str = "command = [\"/bin/sleep\", \"300\"]\n";

#[test]
fn a_crashing_and_a_never_ready_service_make_start_fail_with_the_reason() {
    let node = Setup::new("truth-start")
        .service(
            "crash",
            "command = [\"/bin/sh\", \"-c\", \"echo boom: no config >&2; exit 3\"]\n\
             autostart = false\nrestart = \"never\"\n",
        )
        .service(
            "flap",
            "command = [\"/bin/sh\", \"-c\", \"exit 1\"]\nautostart = false\n\
             restart = \"always\"\nbackoff_initial = \"5s\"\n",
        )
        .service(
            "never",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n\
             ready = { tcp = \"127.0.0.1:1\", interval = \"50ms\", timeout = \"1s\" }\n",
        )
        .service("fine", &format!("{SLEEPER}autostart = false\n"))
        .service(
            "nograce",
            "command = [\"/bin/sh\", \"-c\", \"sleep 0.5; exit 1\"]\nautostart = false\n\
             restart = \"never\"\nstart_grace = \"0s\"\n",
        )
        .start();

    // Without a grace, started is running: the later exit is not the
    // start's (start_grace is what catches a program that exits at once).
    let quick = cli(&node, &["start", "nograce"]);
    assert_eq!(quick.code, 0, "{}", quick.stderr);

    let crash = cli(&node, &["start", "crash"]);
    assert_eq!(crash.code, 1, "{}", crash.stderr);
    assert!(crash.stderr.contains("START_FAILED"), "{}", crash.stderr);
    assert!(crash.stderr.contains("exit 3"), "{}", crash.stderr);
    // The end of stderr is quoted where the log keeper (another process)
    // has written it by the time the exit is reported; it is never a
    // stale or foreign line.
    if crash.stderr.contains("its stderr ends:") {
        assert!(
            crash.stderr.contains("its stderr ends: boom: no config"),
            "{}",
            crash.stderr
        );
    }

    // status ID shows the last lines of its output, from the node.
    wait_for("the crash's stderr in status crash", || {
        let detail = cli(&node, &["status", "crash"]).stdout;
        detail
            .contains("crash.0 stderr | boom: no config")
            .then_some(())
    });

    let flap = cli(&node, &["restart", "flap"]);
    assert_eq!(flap.code, 1, "{}", flap.stderr);
    assert!(
        flap.stderr.contains("backoff 5s (exit 1, 1st failure)"),
        "{}",
        flap.stderr
    );

    let error = node.client().start("never").unwrap_err();
    assert_eq!(error.node_kind(), Some(Kind::StartFailed));
    assert!(
        error
            .to_string()
            .contains("not ready within 1s: tcp 127.0.0.1:1"),
        "{error}"
    );
    assert!(error.to_string().contains("refused"), "{error}");

    let fine = cli(&node, &["start", "fine"]);
    assert_eq!(fine.code, 0, "{}", fine.stderr);
    assert!(fine.stdout.contains("running"), "{}", fine.stdout);

    // The node log says why at INFO, and watch would too (Event.reason).
    let log = node.log_text();
    assert!(
        log.contains("crash.0: exited: exit 3; not restarted"),
        "{log}"
    );
}

#[test]
fn a_later_success_clears_an_earlier_error_and_its_last_exit() {
    let setup = Setup::new("truth-clear");
    let program = setup.dir.0.join("prog");
    fs::write(&program, "#!/bin/sh\nexec sleep 300\n").unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    let node = setup
        .service(
            "svc",
            &format!(
                "command = [\"{}\"]\nautostart = false\nbackoff_initial = \"10s\"\n",
                program.display()
            ),
        )
        .start();
    fs::rename(&program, program.with_extension("away")).unwrap();
    let error = node.client().start("svc").unwrap_err().to_string();
    assert!(error.contains("cannot start: exec "), "{error}");
    fs::rename(program.with_extension("away"), &program).unwrap();
    let started = node.client().start("svc").unwrap();
    let instance = &started.services[0].instances[0];
    assert_eq!(instance.state, "running");
    assert!(
        instance
            .reason
            .as_deref()
            .unwrap()
            .starts_with("started as pid"),
        "{instance:?}"
    );
    node.client().restart("svc").unwrap();
    let (state, reason) = state_of(&node, "svc", 0);
    assert_eq!(state, "running");
    let status = node.client().status(Some("svc")).unwrap();
    assert_eq!(
        status.services[0].instances[0].last_exit_signal, None,
        "a restart by hand leaves no LAST EXIT of the stop it caused: {reason}"
    );
}

#[test]
fn a_work_dir_the_user_cannot_enter_is_named_as_such_not_as_an_exec_failure() {
    let setup = Setup::new("truth-chdir");
    let locked = setup.dir.0.join("locked");
    fs::create_dir(&locked).unwrap();
    let user = if is_root() { "user = \"nobody\"\n" } else { "" };
    if is_root() {
        // nobody must reach the dir above it to be refused by this one.
        fs::set_permissions(&setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let node = setup
        .service(
            "svc",
            &format!(
                "command = [\"/bin/sleep\", \"300\"]\nautostart = false\nwork_dir = \"{}\"\n{user}",
                locked.display()
            ),
        )
        .start();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let error = node.client().start("svc").unwrap_err().to_string();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        assert!(error.contains("chdir to work dir"), "{error}");
        assert!(error.contains("may not enter"), "{error}");
        assert!(!error.contains("exec "), "{error}");
    } else {
        // The owner of a dir with mode 000 may still not enter it.
        assert!(error.contains("chdir to work dir"), "{error}");
    }
}

#[test]
fn status_exits_3_when_anything_shown_is_not_green() {
    let node = Setup::new("truth-status")
        .service("up", SLEEPER)
        .service(
            "bad",
            "command = [\"/bin/sh\", \"-c\", \"exit 2\"]\nautostart = false\nrestart = \"never\"\n",
        )
        .start();
    wait_for("up to run", || {
        (state_of(&node, "up", 0).0 == "running").then_some(())
    });
    let green = cli(&node, &["status"]);
    assert_eq!(green.code, 0, "{}{}", green.stdout, green.stderr);
    assert!(green.stdout.contains("REASON"), "{}", green.stdout);
    assert_eq!(cli(&node, &["start", "bad"]).code, 1);
    let red = cli(&node, &["status"]);
    assert_eq!(red.code, 3, "{}", red.stdout);
    assert!(red.stderr.contains("bad (RED)"), "{}", red.stderr);
    assert_eq!(cli(&node, &["status", "up"]).code, 0);
    assert_eq!(cli(&node, &["status", "bad"]).code, 3);
    let active = cli(&node, &["is-active", "up", "bad"]);
    assert_eq!(active.code, 3);
    assert!(active.stdout.contains("up: active"), "{}", active.stdout);
    assert!(active.stdout.contains("bad: exited"), "{}", active.stdout);
    assert_eq!(cli(&node, &["is-active", "up"]).code, 0);
}

#[test]
fn the_reason_column_says_waiting_backoff_and_failed() {
    let setup = Setup::new("truth-reasons");
    let gate = setup.dir.0.join("gate");
    let node = setup
        .service(
            "db",
            &format!(
                "{SLEEPER}autostart = false\n\
                 ready = {{ command = [\"/bin/test\", \"-e\", \"{}\"], interval = \"50ms\", timeout = \"30s\" }}\n",
                gate.display()
            ),
        )
        .service(
            "app",
            &format!("{SLEEPER}autostart = false\nrequires = [\"db\"]\n"),
        )
        .service(
            "flaky",
            "command = [\"/bin/sh\", \"-c\", \"exit 1\"]\nautostart = false\nrestart = \"always\"\n\
             backoff_initial = \"30s\"\nbackoff_max = \"30s\"\n",
        )
        .service(
            "quitter",
            "command = [\"/bin/sh\", \"-c\", \"exit 4\"]\nautostart = false\nrestart = \"always\"\n\
             give_up_after = 1\n",
        )
        .start();
    let socket = node.socket();
    let starter = std::thread::spawn(move || {
        snow_fox::client::Client::connect(&socket)
            .unwrap()
            .start("app")
    });
    wait_for("app to wait for db", || {
        let table = cli(&node, &["status", "app"]).stdout;
        table.contains("waiting for db").then_some(())
    });
    let table = cli(&node, &["status"]).stdout;
    let app_line = table.lines().find(|l| l.starts_with("app ")).unwrap();
    assert!(app_line.contains("waiting for db"), "{table}");
    fs::write(&gate, "").unwrap();
    starter.join().unwrap().unwrap();

    assert_eq!(cli(&node, &["start", "flaky"]).code, 1);
    assert_eq!(cli(&node, &["start", "quitter"]).code, 1);
    let table = cli(&node, &["status"]).stdout;
    let line = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap()
            .to_owned()
    };
    assert!(
        line("flaky").contains("backoff 30s (exit 1, 1st failure)"),
        "{table}"
    );
    assert!(
        line("quitter").contains("failed: gave up after 1 failures in 1m (last: exit 4)"),
        "{table}"
    );
    let json = cli(&node, &["--json", "status", "quitter"]).stdout;
    assert!(json.contains("\"reason\":\"failed: gave up"), "{json}");
}

#[test]
fn a_start_undoes_an_earlier_stop_even_as_a_dependency_across_kill_9() {
    let mut node = Setup::new("truth-desired")
        .service("db", SLEEPER)
        .service("app", &format!("{SLEEPER}requires = [\"db\"]\n"))
        .start();
    wait_for("both to run", || {
        (state_of(&node, "app", 0).0 == "running").then_some(())
    });
    assert_eq!(cli(&node, &["stop", "db"]).code, 0);
    assert_eq!(state_of(&node, "app", 0).0, "stopped", "app requires db");
    assert_eq!(cli(&node, &["start", "app"]).code, 0);
    assert_eq!(state_of(&node, "db", 0).0, "running");
    node.crash();
    node.restart();
    for id in ["db", "app"] {
        let (state, reason) = state_of(&node, id, 0);
        assert_eq!(state, "running", "{id}: the later start counts ({reason})");
    }
    let json = cli(&node, &["--json", "status", "db"]).stdout;
    assert!(json.contains("\"desired\":\"up\""), "{json}");
}

#[test]
fn a_service_that_gave_up_stays_failed_across_kill_9_until_started_by_hand() {
    let setup = Setup::new("truth-failed");
    let broken = setup.dir.0.join("broken");
    fs::write(&broken, "").unwrap();
    let mut node = setup
        .service(
            "flaky",
            &format!(
                "command = [\"/bin/sh\", \"-c\", \"test ! -e {} && exec sleep 300\"]\n\
                 restart = \"always\"\ngive_up_after = 2\nbackoff_initial = \"10ms\"\n",
                broken.display()
            ),
        )
        .start();
    wait_for("flaky to give up", || {
        (state_of(&node, "flaky", 0).0 == "failed").then_some(())
    });
    node.crash();
    node.restart();
    let (state, reason) = state_of(&node, "flaky", 0);
    assert_eq!(state, "failed");
    assert!(
        reason.contains("gave up before the node restarted"),
        "{reason}"
    );
    let log = node.log_text();
    assert!(
        !log.contains("flaky.0: starting"),
        "not started again: {log}"
    );
    assert_eq!(cli(&node, &["status"]).code, 3, "failed is not green");
    fs::remove_file(&broken).unwrap();
    assert_eq!(cli(&node, &["start", "flaky"]).code, 0);
    node.crash();
    node.restart();
    wait_for("flaky to run after the node restarted", || {
        (state_of(&node, "flaky", 0).0 == "running").then_some(())
    });
}

#[test]
fn check_reports_every_host_problem_with_file_line_and_key() {
    let setup = Setup::new("truth-check");
    let conf = setup.conf();
    fs::write(conf.join("node.toml"), "").unwrap();
    let locked = setup.dir.0.join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    setup.write_service(
        "who",
        "command = [\"/bin/true\"]\nuser = \"sf-no-such-user\"\n",
    );
    setup.write_service(
        "what",
        "description = \"x\"\ncommand = [\"sf-no-such-program\", \"-v\"]\n",
    );
    setup.write_service(
        "out",
        &format!(
            "command = [\"/bin/true\"]\nstdout = \"{}/missing/dir/out.log\"\n",
            setup.dir.0.display()
        ),
    );
    if is_root() {
        setup.write_service(
            "where",
            &format!(
                "command = [\"/bin/true\"]\nuser = \"nobody\"\nwork_dir = \"{}\"\n",
                locked.display()
            ),
        );
    } else {
        setup.write_service(
            "where",
            &format!(
                "command = [\"/bin/true\"]\nwork_dir = \"{}/absent\"\n",
                locked.display()
            ),
        );
    }
    let found = check(&conf);
    assert_eq!(found.code, 1, "{}{}", found.stdout, found.stderr);
    let lines: Vec<&str> = found.stdout.lines().collect();
    let has = |file: &str, needle: &str| {
        lines
            .iter()
            .any(|line| line.contains(&format!("services/{file}")) && line.contains(needle))
    };
    assert!(
        has(
            "who.toml",
            ":2: key `user`: user `sf-no-such-user` does not exist"
        ),
        "{lines:#?}"
    );
    assert!(
        has(
            "what.toml",
            ":2: key `command`: program `sf-no-such-program` is not in"
        ),
        "{lines:#?}"
    );
    assert!(
        has("out.toml", ":2: key `stdout`: the directory of"),
        "{lines:#?}"
    );
    assert!(
        has("where.toml", ":3: key `work_dir`: cannot enter work dir"),
        "{lines:#?}"
    );
    assert!(!setup.dir.0.join("missing").exists(), "never created");

    // The node refuses the same configuration at start.
    let started = run(
        common::node_command(&conf, &setup.dir.0.join("refused.log"), &[])
            .output()
            .unwrap(),
    );
    assert_eq!(started.code, 1);
    let log = fs::read_to_string(setup.dir.0.join("refused.log")).unwrap();
    assert!(log.contains("sf-no-such-user"), "{log}");

    for id in ["who", "what", "out", "where"] {
        fs::remove_file(conf.join(format!("services/{id}.toml"))).unwrap();
    }
    setup.write_service("a", "command = [\"/bin/true\"]\nrequires = [\"b\"]\n");
    setup.write_service(
        "b",
        "command = [\"/bin/true\"]\nrequires = [\"a\"]\ngroup = \"sf-no-such-group\"\n",
    );
    let cycle = check(&conf);
    assert_eq!(cycle.code, 1);
    assert!(
        cycle
            .stdout
            .contains("b.toml:3: key `group`: group `sf-no-such-group` does not exist"),
        "both kinds of problem together: {}",
        cycle.stdout
    );
    assert!(
        cycle.stdout.contains("dependency cycle"),
        "{}",
        cycle.stdout
    );
    fs::remove_file(conf.join("services/b.toml")).unwrap();
    setup.write_service("a", "command = [\"/bin/true\"]\n");
    let fine = check(&conf);
    assert_eq!(fine.code, 0, "{}", fine.stdout);
    assert!(
        fine.stdout.starts_with("configuration OK"),
        "{}",
        fine.stdout
    );
}

#[test]
fn a_reload_with_problems_is_refused_whole_one_problem_a_line() {
    let node = Setup::new("truth-reload")
        .service("keep", SLEEPER)
        .service("change", SLEEPER)
        .service("drop", SLEEPER)
        .start();
    node.setup.write_service(
        "bad1",
        "command = [\"/bin/true\"]\nuser = \"sf-no-such-user\"\n",
    );
    node.setup
        .write_service("bad2", "command = [\"sf-no-such-program\"]\n");
    let refused = cli(&node, &["reload"]);
    assert_eq!(refused.code, 1);
    let problems: Vec<&str> = refused
        .stderr
        .lines()
        .filter(|line| line.contains("services/bad"))
        .collect();
    assert_eq!(problems.len(), 2, "{}", refused.stderr);
    fs::remove_file(node.setup.conf().join("services/bad1.toml")).unwrap();
    fs::remove_file(node.setup.conf().join("services/bad2.toml")).unwrap();
    fs::remove_file(node.setup.conf().join("services/drop.toml")).unwrap();
    node.setup
        .write_service("change", "command = [\"/bin/sleep\", \"301\"]\n");
    node.setup.write_service("new", SLEEPER);
    let done = cli(&node, &["reload"]);
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(
        done.stdout,
        "added: new\nchanged: change\nremoved: drop\nunchanged: keep\n"
    );
}

/// A port `3<instance>XYZ` free for both instances, as a template.
fn two_free_ports() -> (String, [u16; 2]) {
    for xyz in 100..1000u16 {
        let ports = [30_000 + xyz, 31_000 + xyz];
        if ports
            .iter()
            .all(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        {
            return (format!("3{{instance}}{xyz}"), ports);
        }
    }
    panic!("no free ports");
}

#[test]
fn instance_settings_give_two_copies_two_ports_files_and_environments() {
    let setup = Setup::new("truth-instance");
    let work = setup.dir.0.join("work");
    fs::create_dir_all(work.join("i0")).unwrap();
    fs::create_dir_all(work.join("i1")).unwrap();
    let env_file = setup.dir.0.join("web.env");
    fs::write(
        &env_file,
        "# a comment\n\nGREETING=hello world\nSHARED=from the file\nEMPTY=\n",
    )
    .unwrap();
    let (port, ports) = two_free_ports();
    let listen = "import socket,sys,time,os\n\
                  s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n\
                  open('env.txt','w').write(' | '.join(os.environ.get(k,'-') for k in \
                  ['SNOW_FOX_SERVICE','SNOW_FOX_INSTANCE','GREETING','SHARED','EMPTY','HOME','USER','LOGNAME','SHELL']))\n\
                  time.sleep(300)";
    let node = setup
        .service(
            "web",
            &format!(
                "description = \"two copies\"\ninstances = 2\n\
                 command = [\"/usr/bin/python3\", \"-c\", {listen:?}, \"{port}\"]\n\
                 work_dir = \"{}/i{{instance}}\"\nenv_file = \"{}\"\n\
                 env = {{ SHARED = \"from {{id}} {{instance}}\" }}\n\
                 stdout = \"{{id}}-{{instance}}.out\"\n\
                 ready = {{ tcp = \"127.0.0.1:{port}\", interval = \"50ms\", timeout = \"10s\" }}\n",
                work.display(),
                env_file.display()
            ),
        )
        .start();
    let reply = node.client().start("web").unwrap();
    assert!(
        reply.services[0]
            .instances
            .iter()
            .all(|i| i.state == "running"),
        "{reply:?}"
    );
    for (index, port) in ports.iter().enumerate() {
        assert!(
            TcpListener::bind(("127.0.0.1", *port)).is_err(),
            "instance {index} listens on {port}"
        );
        // The file exists (empty) from Python's open() until its write.
        let env = wait_for("the instance's environment", || {
            fs::read_to_string(work.join(format!("i{index}/env.txt")))
                .ok()
                .filter(|text| !text.is_empty())
        });
        let account = snow_fox::sys::lookup_account(snow_fox::sys::effective_uid())
            .unwrap()
            .unwrap();
        assert_eq!(
            env,
            format!(
                "web | {index} | hello world | from web {index} | - | {} | {} | {} | {}",
                account.home, account.name, account.name, account.shell
            )
            .replace("| - |", "|  |"),
        );
        assert!(
            node.setup
                .log_dir()
                .join(format!("web-{index}.out"))
                .exists()
        );
    }
    let detail = cli(&node, &["status", "web"]);
    assert_eq!(detail.code, 0, "{}", detail.stderr);
    for needle in [
        "● web - two copies",
        "command:",
        "/usr/bin/python3",
        "work dir:",
        "instance 0:",
        "instance 1:",
        "ready:",
        &format!("tcp 127.0.0.1:{port}"),
    ] {
        assert!(
            detail.stdout.contains(needle),
            "{needle}: {}",
            detail.stdout
        );
    }
    let cat = cli(&node, &["cat", "web"]);
    assert!(
        cat.stdout.contains("description = \"two copies\""),
        "{}",
        cat.stdout
    );
}

#[test]
fn an_env_file_that_cannot_be_read_or_parsed_is_a_configuration_problem() {
    let setup = Setup::new("truth-envfile");
    let conf = setup.conf();
    fs::write(conf.join("node.toml"), "").unwrap();
    let env_file = setup.dir.0.join("bad.env");
    fs::write(&env_file, "GOOD=1\nthis is not an assignment\n").unwrap();
    setup.write_service(
        "a",
        &format!(
            "command = [\"/bin/true\"]\nenv_file = \"{}\"\n",
            env_file.display()
        ),
    );
    setup.write_service(
        "b",
        "command = [\"/bin/true\"]\nenv_file = \"/nonexistent/sf.env\"\n",
    );
    let found = check(&conf);
    assert_eq!(found.code, 1);
    assert!(
        found
            .stdout
            .contains("bad.env:2: expected KEY=VALUE, found `this is not an assignment`"),
        "{}",
        found.stdout
    );
    assert!(
        found
            .stdout
            .contains("b.toml:2: key `env_file`: cannot read /nonexistent/sf.env"),
        "{}",
        found.stdout
    );
}

#[test]
fn signal_reaches_the_services_and_globs_pick_them() {
    let setup = Setup::new("truth-signal");
    let got = setup.dir.0.join("got");
    let trap = format!(
        "command = [\"/bin/sh\", \"-c\", \"trap 'echo $SNOW_FOX_SERVICE >> {}' USR1; while :; do sleep 0.05; done\"]\n",
        got.display()
    );
    let node = setup
        .service("web-a", &trap)
        .service("web-b", &trap)
        .service("db", SLEEPER)
        .start();
    for id in ["web-a", "web-b", "db"] {
        wait_for("it to run", || {
            (state_of(&node, id, 0).0 == "running").then_some(())
        });
    }
    let sent = cli(&node, &["signal", "web-*", "USR1"]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        sent.stdout.contains("web-a: sent USR1 to 1 process groups"),
        "{}",
        sent.stdout
    );
    wait_for("both traps to fire", || {
        let text = fs::read_to_string(&got).unwrap_or_default();
        (text.contains("web-a") && text.contains("web-b")).then_some(())
    });
    let bad = cli(&node, &["signal", "db", "SIGNOPE"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("`SIGNOPE` is not a signal"),
        "{}",
        bad.stderr
    );
    assert_eq!(cli(&node, &["signal", "nothing-*", "HUP"]).code, 1);

    let stopped = cli(&node, &["stop", "web-?", "db"]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    for id in ["web-a", "web-b", "db"] {
        assert_eq!(state_of(&node, id, 0).0, "stopped", "{id}");
    }
    let none = cli(&node, &["signal", "db", "HUP"]);
    assert_eq!(none.code, 1);
    assert!(
        none.stderr.contains("no process to signal"),
        "{}",
        none.stderr
    );
}

#[test]
fn enable_and_disable_survive_a_node_restart() {
    let mut node = Setup::new("truth-enable")
        .service("on", SLEEPER)
        .service("off", &format!("{SLEEPER}autostart = false\n"))
        .start();
    wait_for("on to run", || {
        (state_of(&node, "on", 0).0 == "running").then_some(())
    });
    assert_eq!(cli(&node, &["disable", "on"]).code, 0);
    let enabled = cli(&node, &["enable", "off"]);
    assert_eq!(enabled.stdout, "off: enabled: it starts with the node\n");
    assert_eq!(
        state_of(&node, "off", 0).0,
        "stopped",
        "enable starts nothing"
    );
    assert_eq!(cli(&node, &["stop", "on"]).code, 0);
    node.client().shutdown().unwrap();
    node.wait_exit();
    node.restart();
    wait_for("off to start with the node", || {
        (state_of(&node, "off", 0).0 == "running").then_some(())
    });
    let json = cli(&node, &["--json", "status", "on"]).stdout;
    assert!(json.contains("\"enabled\":false"), "{json}");
    assert_eq!(state_of(&node, "on", 0).0, "stopped");
}

#[test]
fn trace_verbose_wait_and_colour_behave_for_scripts() {
    let node = Setup::new("truth-script")
        .service("svc", &format!("{SLEEPER}autostart = false\n"))
        .start();
    let unknown = cli(&node, &["trace", "no-such-request"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stdout.contains("state: unknown"),
        "{}",
        unknown.stdout
    );

    let verbose = cli(&node, &["--verbose", "start", "svc"]);
    assert_eq!(verbose.code, 0, "{}", verbose.stderr);
    let id = verbose
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("request ServiceStart "))
        .unwrap()
        .to_owned();
    let trace = cli(&node, &["trace", &id]);
    assert_eq!(trace.code, 0, "{}", trace.stdout);
    assert!(trace.stdout.contains("StartProcess"), "{}", trace.stdout);

    let waited = cli(&node, &["wait", "svc", "--timeout", "5s"]);
    assert_eq!(waited.code, 0, "{}", waited.stderr);
    let late = cli(
        &node,
        &["wait", "svc", "--state", "stopped", "--timeout", "200ms"],
    );
    assert_eq!(late.code, 1);
    assert!(
        late.stderr.contains("did not get stopped within"),
        "{}",
        late.stderr
    );

    let painted = cli(&node, &["--color", "always", "status"]);
    assert!(
        painted.stdout.contains("\x1b[32mrunning\x1b[0m"),
        "{}",
        painted.stdout
    );
    let plain = cli(&node, &["status"]);
    assert!(
        !plain.stdout.contains('\x1b'),
        "not a terminal: {}",
        plain.stdout
    );
    let no_colour = run(Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .arg("--socket")
        .arg(node.socket())
        .arg("status")
        .env("NO_COLOR", "1")
        .output()
        .unwrap());
    assert!(!no_colour.stdout.contains('\x1b'));
}

#[test]
fn help_completions_and_man_pages_are_generated_from_one_help_text() {
    let top = cli_alone(&["--help"]);
    assert_eq!(top.code, 0);
    for command in snow_fox::client::help::CLIENT.commands {
        assert!(top.stdout.contains(command.summary), "{}", command.name);
        let own = cli_alone(&[command.name, "--help"]);
        assert_eq!(own.code, 0, "{}", command.name);
        assert!(
            own.stdout
                .starts_with(&format!("usage: snow-fox-client {}", command.name)),
            "{}",
            own.stdout
        );
    }
    let dir = common::TempDir::new("truth-completions");
    for shell in ["bash", "zsh", "fish"] {
        let script = cli_alone(&["completions", shell]);
        assert_eq!(script.code, 0);
        assert!(script.stdout.contains("signal"), "{shell}");
        let path = dir.0.join(shell);
        fs::write(&path, &script.stdout).unwrap();
        if shell == "bash" {
            let completed = run(Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "source {}; COMP_WORDS=(snow-fox-client sta); COMP_CWORD=1; \
                     _snow_fox_client; echo \"${{COMPREPLY[@]}}\"; \
                     COMP_WORDS=(snow-fox-client wait web --st); COMP_CWORD=3; \
                     _snow_fox_client; echo \"${{COMPREPLY[@]}}\"",
                    path.display()
                ))
                .output()
                .unwrap());
            assert_eq!(completed.code, 0, "{}", completed.stderr);
            assert_eq!(completed.stdout, "status start\n--state\n");
        }
    }
    let client_page = cli_alone(&["man"]);
    let node_page = cli_alone(&["man", "snow-fox"]);
    let node_own = run(Command::new(env!("CARGO_BIN_EXE_snow-fox"))
        .arg("--man")
        .output()
        .unwrap());
    assert!(client_page.stdout.starts_with(".TH SNOW-FOX-CLIENT 1"));
    assert!(node_page.stdout.starts_with(".TH SNOW-FOX 1"));
    assert_eq!(node_page.stdout, node_own.stdout);
    if Path::new("/usr/bin/groff").exists() {
        let path = dir.0.join("snow-fox-client.1");
        fs::write(&path, &client_page.stdout).unwrap();
        let rendered = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(&path)
            .output()
            .unwrap());
        assert_eq!(rendered.code, 0, "{}", rendered.stderr);
        assert!(
            rendered.stderr.is_empty(),
            "groff warns: {}",
            rendered.stderr
        );
        assert!(rendered.stdout.contains("is-active"), "{}", rendered.stdout);
    }
}

#[test]
fn a_service_a_reload_removed_can_be_shown_while_it_still_stops() {
    let node = Setup::new("truth-removed")
        .service(
            "stubborn",
            "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; while :; do sleep 0.05; done\"]\n\
             stop_timeout = \"2s\"\n",
        )
        .start();
    wait_for("stubborn to run", || {
        (state_of(&node, "stubborn", 0).0 == "running").then_some(())
    });
    fs::remove_file(node.setup.conf().join("services/stubborn.toml")).unwrap();
    let reload = cli(&node, &["reload"]);
    assert_eq!(reload.code, 0, "{}", reload.stderr);
    assert!(
        reload.stdout.contains("removed: stubborn"),
        "{}",
        reload.stdout
    );
    let shown = cli(&node, &["cat", "stubborn"]);
    assert!(
        shown.code == 0 || shown.stderr.contains("UNKNOWN_SERVICE"),
        "{}",
        shown.stderr
    );
    let detail = cli(&node, &["status", "stubborn"]);
    assert!(
        detail.code != 2,
        "the node still answers: {}",
        detail.stderr
    );
    assert_eq!(cli(&node, &["info"]).code, 0, "the node is alive");
}

/// A node that is not root cannot start a service as another user: the
/// check says so, instead of a start failing as an `exec` error.
#[test]
#[ignore = "needs root"]
fn a_node_that_is_not_root_is_told_it_cannot_switch_users() {
    use std::os::unix::process::CommandExt;
    let setup = Setup::new("truth-switch");
    let conf = setup.conf();
    fs::write(conf.join("node.toml"), "").unwrap();
    setup.write_service("as_root", "command = [\"/bin/true\"]\nuser = \"root\"\n");
    setup.write_service("as_self", "command = [\"/bin/true\"]\n");
    let node = setup.dir.0.join("snow-fox");
    fs::copy(env!("CARGO_BIN_EXE_snow-fox"), &node).unwrap();
    for path in [&setup.dir.0, &conf, &conf.join("services")] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let found = run(Command::new(&node)
        .arg("--check")
        .arg("--conf")
        .arg(&conf)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap());
    assert_eq!(found.code, 1, "{}{}", found.stdout, found.stderr);
    assert!(
        found.stdout.contains(
            "as_root.toml:2: key `user`: the node runs as uid 65534 (gid 65534), not root, so it cannot start a service as uid 0 (gid 0)"
        ),
        "{}",
        found.stdout
    );
    assert!(!found.stdout.contains("as_self"), "{}", found.stdout);
}
