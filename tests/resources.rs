//! Resources end to end (issue 16): rlimits, a cgroup per instance, the
//! whole instance killed at its end and on stop, limits, OOM reports and
//! per-instance metrics, on the real kernel of the machine.
//!
//! Creating cgroups needs root, so most tests are `#[ignore = "needs
//! root"]`; each node has its own name, hence its own cgroup subtree.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use snow_fox::client::{Client, ClientError};
use snow_fox::wire::proto::public_api::{
    StatusColour, error::Kind, service_status_response::Instance,
    service_status_response::InstanceMetrics,
};

use common::{Setup, TempDir, node_cgroup_bases, wait_for};

const NOBODY: u32 = 65534;

fn instance(client: &mut Client, id: &str) -> Instance {
    let status = client.status(Some(id)).unwrap();
    status.services[0].instances[0].clone()
}

fn wait_state(client: &mut Client, id: &str, state: &str) -> Instance {
    wait_for(&format!("{id} to be {state}"), || {
        let now = instance(client, id);
        (now.state == state).then_some(now)
    })
}

fn metrics(client: &mut Client, id: &str) -> InstanceMetrics {
    let status = client.status_with_metrics(Some(id)).unwrap();
    status
        .metrics
        .into_iter()
        .next()
        .expect("metrics of a running instance")
}

/// `sleep` processes whose argument is `marker`.
fn count(marker: &str) -> usize {
    let wanted = format!("sleep\0{marker}\0");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline == wanted || cmdline.ends_with(&format!("/{wanted}"))
            })
        })
        .count()
}

/// A `sleep` argument no other test uses, to count its processes by.
fn marker(seconds: u32) -> String {
    format!("{seconds}.{}{:04}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The directory of `pid`'s cgroup in the hierarchy of `controller`
/// (`""` for the unified tree), from `/proc/<pid>/cgroup`.
fn cgroup_of(pid: u32, controller: &str) -> std::path::PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let wanted = if controller.is_empty() {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == controller)
            };
            wanted.then(|| path.trim_start_matches('/').to_owned())
        })
        .unwrap();
    let root = std::path::Path::new("/sys/fs/cgroup");
    let v1 = root.join(controller).join(&path);
    if !controller.is_empty() && v1.is_dir() {
        v1
    } else if root.join("unified/cgroup.procs").exists() {
        root.join("unified").join(path)
    } else {
        root.join(path)
    }
}

fn node_error(result: Result<impl std::fmt::Debug, ClientError>) -> (Kind, String) {
    match result {
        Err(ClientError::Node { kind, reason, .. }) => (Kind::try_from(kind).unwrap(), reason),
        other => panic!("expected an error from the node, got {other:?}"),
    }
}

#[test]
#[ignore = "needs root"]
fn each_instance_runs_in_its_own_cgroup_under_the_nodes_which_goes_with_it() {
    let mut node = Setup::new("res-cgroup")
        .service(
            "web",
            "command = [\"/bin/sleep\", \"300\"]\ninstances = 2\n",
        )
        .start();
    let name = node.setup.name.clone();
    let mut client = node.client();
    let status = wait_for("both instances running", || {
        let status = client.status(Some("web")).unwrap();
        status.services[0]
            .instances
            .iter()
            .all(|i| i.state == "running")
            .then_some(status)
    });
    for instance in &status.services[0].instances {
        let pid = instance.pid.unwrap();
        let unified = cgroup_of(pid, "");
        assert!(
            unified.ends_with(format!("snow-fox.{name}/web.{}", instance.index)),
            "{}",
            unified.display()
        );
        let members = fs::read_to_string(unified.join("cgroup.procs")).unwrap();
        assert_eq!(
            members.trim(),
            pid.to_string(),
            "the process is its only member"
        );
        assert!(
            cgroup_of(pid, "memory").ends_with(format!("snow-fox.{name}/web.{}", instance.index))
        );
    }
    // The node itself stays where it was started.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let node_cgroups = fs::read_to_string(format!("/proc/{}/cgroup", node.pid())).unwrap();
    assert_eq!(own, node_cgroups);
    let info = client.node_info(true).unwrap();
    let cgroups = info.details.iter().find(|d| d.name == "cgroups").unwrap();
    assert_eq!(
        cgroups.status.colour,
        StatusColour::Green as i32,
        "{}",
        cgroups.status.reason
    );

    client.stop("web").unwrap();
    for base in node_cgroup_bases(&name) {
        assert!(
            !base.join("web.0").exists(),
            "{} is removed",
            base.display()
        );
    }
    client.shutdown().unwrap();
    node.wait_exit();
    assert!(
        node_cgroup_bases(&name).is_empty(),
        "the node's own cgroups are removed"
    );
}

#[test]
#[ignore = "needs root"]
fn a_service_that_forks_2000_sleeps_and_exits_leaves_none_running() {
    let sleep = marker(40);
    let script = format!("for i in $(seq 2000); do sleep {sleep} & done; exit 0");
    let node = Setup::new("res-fork-exit")
        .service(
            "forker",
            &format!(
                "command = [\"/bin/sh\", \"-c\", {script:?}]\nuser = \"nobody\"\nrestart = \"never\"\n"
            ),
        )
        .start();
    let mut client = node.client();
    let exited = wait_state(&mut client, "forker", "exited");
    assert_eq!(exited.last_exit_code, Some(0));
    // Counted once the node says it exited: nothing is left to count.
    assert_eq!(count(&sleep), 0, "leftovers of the exited service");
}

#[test]
#[ignore = "needs root"]
fn stop_kills_2000_forked_sleeps_with_their_parent() {
    let sleep = marker(41);
    let script = format!("for i in $(seq 2000); do sleep {sleep} & done; exec sleep 300");
    let node = Setup::new("res-fork-stop")
        .service(
            "forker",
            &format!("command = [\"/bin/sh\", \"-c\", {script:?}]\nuser = \"nobody\"\n"),
        )
        .start();
    let mut client = node.client();
    wait_for("2000 sleeps", || (count(&sleep) == 2000).then_some(()));
    client.stop("forker").unwrap();
    assert_eq!(count(&sleep), 0, "leftovers after stop");
}

#[test]
#[ignore = "needs root"]
fn a_setsid_grandchild_dies_with_its_service_on_stop() {
    for (label, ignore_term) in [
        ("res-setsid-exits", ""),
        ("res-setsid-ignores", "trap '' TERM; "),
    ] {
        let sleep = marker(300);
        let script = format!("{ignore_term}setsid sleep {sleep} & while :; do sleep 1; done");
        let node = Setup::new(label)
            .service(
                "svc",
                &format!("command = [\"/bin/sh\", \"-c\", {script:?}]\nstop_timeout = \"1s\"\n"),
            )
            .start();
        let mut client = node.client();
        wait_state(&mut client, "svc", "running");
        wait_for("the setsid grandchild", || {
            (count(&sleep) == 1).then_some(())
        });
        client.stop("svc").unwrap();
        assert_eq!(
            count(&sleep),
            0,
            "{label}: the grandchild outlived the stop"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn kill_mode_process_leaves_what_the_main_process_started() {
    let sleep = marker(30);
    // The shell exits only once its background child has become sleep
    // (its exec done), or the child could still be a copy of the shell
    // when the node reports the service exited.
    let script =
        format!("sleep {sleep} & while [ \"$(cat /proc/$!/comm)\" != sleep ]; do :; done; exit 0");
    let node = Setup::new("res-kill-mode")
        .service(
            "svc",
            &format!(
                "command = [\"/bin/sh\", \"-c\", {script:?}]\nrestart = \"never\"\nkill_mode = \"process\"\n"
            ),
        )
        .start();
    let mut client = node.client();
    wait_state(&mut client, "svc", "exited");
    assert_eq!(
        count(&sleep),
        1,
        "kill_mode = \"process\" kills only the main process"
    );
    drop(client);
    drop(node);
    assert_eq!(count(&sleep), 0, "the test fixture cleans up");
}

#[test]
fn rlimits_are_set_before_exec() {
    let node = Setup::new("res-rlimits")
        .service(
            "svc",
            "command = [\"/bin/sleep\", \"300\"]\nlimits = { nofile = 64, core = { soft = 0, hard = \"infinity\" }, fsize = \"1M\" }\n",
        )
        .start();
    let mut client = node.client();
    let pid = wait_state(&mut client, "svc", "running").pid.unwrap();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = |name: &str| {
        limits
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap()
            .split_whitespace()
            .rev()
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("Max open files"), ["64", "64"], "{limits}");
    assert_eq!(row("Max core file size"), ["unlimited", "0"], "{limits}");
    assert_eq!(row("Max file size"), ["1048576", "1048576"], "{limits}");
}

#[test]
#[ignore = "needs root"]
fn a_hard_limit_is_raised_before_the_user_is_dropped_or_refused_plainly() {
    let node = Setup::new("res-rlimit-raise")
        .service(
            "svc",
            "command = [\"/bin/sleep\", \"300\"]\nuser = \"nobody\"\nlimits = { nofile = { soft = 1000, hard = 1048576 } }\nautostart = false\n",
        )
        .start();
    let mut client = node.client();
    let own_hard = fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .nth(4)
        .unwrap()
        .to_owned();
    let capable = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    if !capable && own_hard != "1048576" {
        let (kind, reason) = node_error(client.start("svc"));
        assert_eq!(
            kind,
            Kind::StartFailed,
            "issue 13: a start that fails is START_FAILED"
        );
        assert!(
            reason.contains(&format!(
                "limits.nofile: hard limit 1048576 is above the node's own ({own_hard}), and raising it needs CAP_SYS_RESOURCE"
            )),
            "{reason}"
        );
        return;
    }
    client.start("svc").unwrap();
    let pid = instance(&mut client, "svc").pid.unwrap();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(row.contains("1000") && row.contains("1048576"), "{row}");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains(&format!("Uid:\t{NOBODY}\t{NOBODY}")),
        "{status}"
    );
}

#[test]
fn bad_limits_are_configuration_errors_naming_file_line_and_key() {
    let setup = Setup::new("res-bad-limits").service(
        "svc",
        "command = [\"/bin/true\"]\nlimits = { nofiles = 64, nproc = \"lots\", core = { soft = 2, hard = 1 } }\nmemory_max = \"64Q\"\ncpu_max = \"lots\"\npids_max = 0\nkill_mode = \"all\"\n",
    );
    fs::write(setup.conf().join("node.toml"), "").unwrap();
    let stderr = common::refused_configuration(&setup);
    for expected in [
        "svc.toml:2: key `limits.nofiles`: unknown rlimit",
        "svc.toml:2: key `limits.nproc`: expected a number",
        "svc.toml:2: key `limits.core`: the soft limit (2) is above the hard limit (1)",
        "svc.toml:3: key `memory_max`: expected a size",
        "svc.toml:4: key `cpu_max`: expected a share of one CPU",
        "svc.toml:5: key `pids_max`: expected a whole number from 1",
        "svc.toml:6: key `kill_mode`: expected one of \"control-group\", \"process\"",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn a_memory_hog_is_killed_and_reported_out_of_memory() {
    let node = Setup::new("res-oom")
        .service(
            "hog",
            "command = [\"/bin/sh\", \"-c\", \"x=$(head -c 200000000 /dev/zero | tr '\\\\0' a); echo $x\"]\nmemory_max = \"32M\"\nrestart = \"on-failure\"\nbackoff_initial = \"10s\"\nautostart = false\n",
        )
        .start();
    let mut watcher = node.client();
    watcher.subscribe().unwrap();
    let mut client = node.client();
    // Issue 13: killed within its start_grace, the start fails with the
    // reason; killed later, the start had answered running.
    if let Err(error) = client.start("hog") {
        assert!(error.to_string().contains("out of memory"), "{error}");
    }
    let event = loop {
        let event = watcher.next_event().unwrap();
        if event.oom == Some(true) {
            break event;
        }
    };
    assert_eq!(event.exit_signal, Some(9));
    assert_eq!(
        event.reason.as_deref(),
        Some("killed: out of memory (memory_max 32 MiB)")
    );
    // The restart policy applies: a failure, so a back-off.
    assert_eq!(event.state, "backoff");
    let instance = instance(&mut client, "hog");
    assert_eq!(instance.last_exit_oom, Some(true));
    assert_eq!(
        instance.last_exit_reason.as_deref(),
        Some("killed: out of memory (memory_max 32 MiB)")
    );
    assert!(instance.last_run_ms.is_some() && instance.last_cpu_usec.is_some());
    let peak = instance.last_peak_rss_bytes.unwrap();
    assert!(peak <= 40 << 20, "peak {peak} is bounded by the limit");
    let output = Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .arg("--socket")
        .arg(node.socket())
        .args(["status", "hog"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("killed: out of memory (memory_max 32 MiB)"),
        "{text}"
    );
    let json = Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .arg("--socket")
        .arg(node.socket())
        .args(["--json", "status", "hog"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(json.contains("\"last_exit_oom\":true"), "{json}");
}

#[test]
#[ignore = "needs root"]
fn a_fork_loop_under_pids_max_cannot_pass_it() {
    let sleep = marker(30);
    // The inner shell dies at its first refused fork; the outer one
    // stays, so the cgroup does too.
    let script =
        format!("sh -c 'for i in $(seq 60); do sleep {sleep} & done; wait'; exec sleep 300");
    let node = Setup::new("res-pids")
        .service(
            "forker",
            &format!(
                "command = [\"/bin/sh\", \"-c\", {script:?}]\npids_max = 20\nrestart = \"never\"\n"
            ),
        )
        .start();
    let mut client = node.client();
    let pid = wait_state(&mut client, "forker", "running").pid.unwrap();
    let pids = cgroup_of(pid, "pids");
    assert_eq!(
        fs::read_to_string(pids.join("pids.max")).unwrap().trim(),
        "20"
    );
    let mut most = 0;
    wait_for("a fork refused by pids_max", || {
        most = most.max(count(&sleep));
        let events = fs::read_to_string(pids.join("pids.events")).ok()?;
        let refused: u64 = events
            .lines()
            .find_map(|l| l.strip_prefix("max "))?
            .trim()
            .parse()
            .ok()?;
        (refused > 0).then_some(())
    });
    most = most.max(count(&sleep));
    assert!(
        most < 20,
        "{most} sleeps beside their shell under pids_max = 20"
    );
    let current: u64 = fs::read_to_string(pids.join("pids.current"))
        .map(|text| text.trim().parse().unwrap())
        .unwrap_or(0);
    assert!(current <= 20, "{current} tasks");
}

#[test]
#[ignore = "needs root"]
fn memory_high_is_refused_where_memory_is_cgroup_v1() {
    let memory_v1 = fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|line| line.split(':').nth(1) == Some("memory"));
    let node = Setup::new("res-high")
        .service(
            "svc",
            "command = [\"/bin/sleep\", \"300\"]\nmemory_high = \"32M\"\nautostart = false\n",
        )
        .service(
            "plain",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n",
        )
        .start();
    let mut client = node.client();
    if memory_v1 {
        let (kind, reason) = node_error(client.start("svc"));
        assert_eq!(
            kind,
            Kind::StartFailed,
            "issue 13: a start that fails is START_FAILED"
        );
        assert!(
            reason.contains("memory_high cannot be enforced"),
            "{reason}"
        );
        assert!(reason.contains("cgroup v2"), "{reason}");
    } else {
        client.start("svc").unwrap();
    }
    client.start("plain").unwrap();
}

/// utime + stime of `pid` in microseconds (ticks of 10 ms).
fn proc_cpu(pid: u32) -> u64 {
    common::scratch::stat_cpu_ticks(std::path::Path::new(&format!("/proc/{pid}/stat"))) * 10_000
}

fn vm_rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
#[ignore = "needs root"]
fn cpu_and_memory_figures_agree_with_proc() {
    let node = Setup::new("res-metrics")
        .service(
            "busy",
            "command = [\"/bin/sh\", \"-c\", \"while :; do :; done\"]\ncpu_max = \"50%\"\n",
        )
        .service(
            "fat",
            "command = [\"/bin/sh\", \"-c\", \"x=$(head -c 30000000 /dev/zero | tr '\\\\0' a); while :; do read -t 1 y < /dev/zero 2>/dev/null; sleep 1; done\"]\n",
        )
        .service("idle", "command = [\"/bin/sleep\", \"300\"]\n")
        .start();
    let mut client = node.client();
    let busy = wait_state(&mut client, "busy", "running").pid.unwrap();
    wait_for("busy to burn 0.5 s of CPU", || {
        let cpu = metrics(&mut client, "busy").cpu_usec?;
        (cpu > 500_000).then_some(())
    });
    let before = proc_cpu(busy);
    let measured = metrics(&mut client, "busy");
    let after = proc_cpu(busy);
    let cpu = measured.cpu_usec.unwrap();
    // /proc truncates to ticks of 10 ms: two ticks and 2 % either way.
    assert!(
        cpu + 20_000 >= before && cpu <= after + 20_000 + after / 50,
        "cgroup {cpu} µs vs /proc {before}..{after} µs"
    );
    let permille = measured.cpu_permille.unwrap();
    assert!(permille <= 600, "cpu_max = 50% but {permille}‰");
    assert_eq!(measured.tasks, Some(1));

    let fat = wait_state(&mut client, "fat", "running").pid.unwrap();
    let memory = wait_for("fat to hold its 30 MB", || {
        let memory = metrics(&mut client, "fat").memory_bytes?;
        (memory > 30_000_000).then_some(memory)
    });
    let rss = vm_rss(fat);
    assert!(
        rss > 30_000_000 && memory <= rss + (16 << 20),
        "cgroup {memory} B vs VmRSS {rss} B"
    );
    let measured = metrics(&mut client, "fat");
    assert!(measured.memory_peak_bytes.unwrap() >= measured.memory_bytes.unwrap());

    let idle = metrics(&mut client, "idle");
    assert!(idle.cpu_permille.unwrap() < 100, "{idle:?}");
    assert_eq!(idle.tasks, Some(1));
    // Without asking, no metrics are read.
    assert!(client.status(None).unwrap().metrics.is_empty());
}

#[test]
#[ignore = "needs root"]
fn a_node_that_cannot_write_its_cgroup_root_runs_plain_services_and_refuses_limited_ones() {
    let dir = TempDir::new("res-no-cgroups");
    let conf = dir.0.join("conf");
    fs::create_dir_all(conf.join("services")).unwrap();
    let name = format!("res-no-cgroups-{}", std::process::id());
    fs::write(
        conf.join("node.toml"),
        format!(
            "name = \"{name}\"\nsocket = \"{0}/sf.sock\"\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\n",
            dir.0.display()
        ),
    )
    .unwrap();
    fs::write(
        conf.join("services/plain.toml"),
        "command = [\"/bin/sleep\", \"300\"]\n",
    )
    .unwrap();
    fs::write(
        conf.join("services/limited.toml"),
        "command = [\"/bin/sleep\", \"300\"]\nmemory_max = \"64M\"\nautostart = false\n",
    )
    .unwrap();
    for path in [&dir.0, &conf, &conf.join("services")] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // Run as nobody, the node cannot create cgroups under root's.
    let log = dir.0.join("node.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_snow-fox"))
        .arg("--conf")
        .arg(&conf)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let socket = dir.0.join("sf.sock");
    let mut client = wait_for("the node's socket", || Client::connect(&socket).ok());
    let plain = wait_state(&mut client, "plain", "running");
    let (kind, reason) = node_error(client.start("limited"));
    assert_eq!(
        kind,
        Kind::StartFailed,
        "issue 13: a start that fails is START_FAILED"
    );
    assert!(
        reason.contains("memory_max cannot be enforced: the node has no cgroups (creating cgroup"),
        "{reason}"
    );
    let info = client.node_info(true).unwrap();
    let cgroups = info.details.iter().find(|d| d.name == "cgroups").unwrap();
    assert_eq!(cgroups.status.colour, StatusColour::Yellow as i32);
    assert!(
        cgroups.status.reason.contains("Permission denied"),
        "{}",
        cgroups.status.reason
    );
    client.stop("plain").unwrap();
    assert!(!common::pid_alive(plain.pid.unwrap()));
    client.shutdown().unwrap();
    child.wait().unwrap();
    let log = fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.matches("services run without cgroups").count(),
        1,
        "said once: {log}"
    );
    assert!(node_cgroup_bases(&name).is_empty());
}
