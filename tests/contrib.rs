//! The init files in `contrib/` run a node that works: each file's command
//! line, as its init system would run it (the binary and `/etc/snow-fox`
//! replaced by this build's binary and a temporary configuration), serves
//! node info, reloads on the file's reload signal and stops its services
//! on the file's stop signal. The systemd unit also passes
//! `systemd-analyze verify` without a warning and keeps the settings
//! snow-fox depends on (README, "Install").
//!
//! The init systems themselves do not run here (the test machine's PID 1
//! is not systemd, OpenRC or procd): what is checked is what each file
//! tells its init system to run.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use snow_fox::client::Client;

use common::{Setup, pid_alive, wait_for};

/// `contrib/<path>` of this checkout.
fn contrib(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path);
    fs::read_to_string(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()))
}

/// The values of `key=` lines in a systemd unit.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// What sourcing the shell script `script` (with `prelude` defining the
/// init system's functions first) and then running `then` prints; the
/// `commands` given (name, shell script body) are found first on the PATH.
fn shell_output(script: &str, prelude: &str, then: &str, commands: &[(&str, &str)]) -> String {
    let dir = common::TempDir::new("contrib-shell");
    let path = dir.0.join("script");
    fs::write(&path, script).unwrap();
    for (name, body) in commands {
        let command = dir.0.join(name);
        fs::write(&command, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&command, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let search = format!(
        "{}:{}",
        dir.0.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{prelude}\n. \"$0\"\n{then}"))
        .arg(&path)
        .env("PATH", search)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A node run from an init file's command line.
struct InitNode {
    setup: Setup,
    child: Child,
}

impl InitNode {
    /// Runs `argv` (the init file's program and arguments) with `program`
    /// replaced by this build's node binary and `/etc/snow-fox` by a
    /// configuration with one service, `worker`.
    fn start(argv: &[String], program: &str) -> InitNode {
        assert_eq!(argv.first().map(String::as_str), Some(program), "{argv:?}");
        let setup = Setup::new("contrib").service(
            "worker",
            "command = [\"/bin/sleep\", \"300\"]\nstdout = \"null\"\nstderr = \"null\"\n",
        );
        setup.write_node_toml();
        let conf = setup.conf();
        let args: Vec<PathBuf> = argv[1..]
            .iter()
            .map(|arg| match arg.as_str() {
                "/etc/snow-fox" => conf.clone(),
                other => PathBuf::from(other),
            })
            .collect();
        assert!(args.contains(&conf), "{argv:?} names no /etc/snow-fox");
        let child = Command::new(common::node_binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let node = InitNode { setup, child };
        wait_for("the node's socket", || node.client());
        node
    }

    fn client(&self) -> Option<Client> {
        Client::connect(&self.setup.socket()).ok()
    }

    fn worker_pid(&self) -> Option<u32> {
        self.client()?.status(Some("worker")).ok()?.services[0].instances[0].pid
    }

    /// Adds a service to the configuration, runs `reload` (a shell command
    /// line, `$MAINPID` the node's pid) and waits for the node to know it.
    fn reload_with(&self, reload: &str) {
        self.setup.write_service(
            "added",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n",
        );
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(reload)
            .env("MAINPID", self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "{reload}");
        wait_for("the reload to add a service", || {
            let status = self.client()?.status(Some("added")).ok()?;
            (status.services.len() == 1).then_some(())
        });
    }

    /// Sends `signal` to the node alone, as the init file's stop does, and
    /// checks that the node stopped its service and exited cleanly.
    fn stop_with(mut self, signal: &str) {
        let worker = wait_for("the worker to run", || self.worker_pid());
        common::signal(self.child.id(), signal);
        let status = wait_for("the node to exit", || self.child.try_wait().unwrap());
        assert!(status.success(), "the node ended with {status}");
        assert!(!pid_alive(worker), "the node left its service running");
    }
}

impl Drop for InitNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_systemd_unit_verifies_and_runs_a_node_that_reloads_and_stops_its_services() {
    let unit = contrib("systemd/snow-fox.service");
    // Only the node is stopped with the unit (the services outlive it by
    // design), and its cgroups are its own to make.
    assert_eq!(unit_values(&unit, "KillMode"), ["process"]);
    assert_eq!(unit_values(&unit, "Delegate"), ["yes"]);
    assert_eq!(unit_values(&unit, "RuntimeDirectory"), ["snow-fox"]);
    let [exec_start] = unit_values(&unit, "ExecStart")[..] else {
        panic!("not one ExecStart in {unit}");
    };
    let program = "/usr/local/bin/snow-fox";
    let dir = common::TempDir::new("contrib-unit");
    let copy = dir.0.join("snow-fox.service");
    let built = common::node_binary();
    fs::write(&copy, unit.replace(program, &built.display().to_string())).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is needed by this test");
    let said = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");

    let argv: Vec<String> = exec_start.split_whitespace().map(str::to_owned).collect();
    let node = InitNode::start(&argv, program);
    assert!(node.client().unwrap().node_info(false).is_ok());
    let [reload] = unit_values(&unit, "ExecReload")[..] else {
        panic!("not one ExecReload in {unit}");
    };
    node.reload_with(reload);
    // systemd's default KillSignal, sent to the main process only.
    assert!(unit_values(&unit, "KillSignal").is_empty());
    node.stop_with("TERM");
}

#[test]
fn the_openrc_script_runs_a_node_that_reloads_and_stops_its_services() {
    let script = contrib("openrc/snow-fox");
    assert!(script.starts_with("#!/sbin/openrc-run\n"));
    let line = shell_output(
        &script,
        "",
        "printf '%s\\n' \"$command $command_args\" \"$retry\"",
        &[],
    );
    let mut lines = line.lines();
    let argv: Vec<String> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // start-stop-daemon's retry schedule: TERM first, KILL only after the
    // node's own ordered shutdown had two minutes.
    assert_eq!(lines.next(), Some("TERM/120/KILL/5"));
    let node = InitNode::start(&argv, "/usr/local/bin/snow-fox");
    // `rc-service snow-fox reload` runs the script's reload().
    let reload = shell_output(
        &script,
        "ebegin() { :; }; eend() { :; }",
        "reload",
        &[("start-stop-daemon", "echo \"$@\"")],
    );
    assert!(reload.contains("--signal HUP"), "{reload}");
    node.reload_with("kill -HUP $MAINPID");
    node.stop_with("TERM");
}

#[test]
fn the_openwrt_procd_script_runs_a_node_that_reloads_and_stops_its_services() {
    let script = contrib("openwrt/snow-fox");
    assert!(script.starts_with("#!/bin/sh /etc/rc.common\n"));
    // procd's functions, as /etc/rc.common defines them, print what the
    // script asks for; mkdir is kept off the host's /var.
    let prelude = "procd_open_instance() { :; }; procd_close_instance() { :; }; \
                   procd_set_param() { key=$1; shift; echo \"$key $*\"; }; mkdir() { :; }";
    let params = shell_output(&script, prelude, "start_service", &[]);
    let param = |key: &str| {
        params
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {key} in {params}"))
            .to_owned()
    };
    let argv: Vec<String> = param("command")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(param("reload_signal"), "HUP");
    let node = InitNode::start(&argv, "/usr/bin/snow-fox");
    node.reload_with("kill -HUP $MAINPID");
    // procd stops an instance with SIGTERM, SIGKILL after term_timeout.
    assert_eq!(param("term_timeout"), "120");
    node.stop_with("TERM");
}
