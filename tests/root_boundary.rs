//! The root boundary holds (issue 11), end to end with the real binaries:
//! each finding of the issue repeated as an attacker would, in thread mode
//! (one root process) and in process mode (`user = "nobody"` beside a root
//! spawner process). Every test needs root.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;

use snow_fox::client::Client;
use snow_fox::sys;

use common::{Node, Setup, TempDir, Victim, node_command, pid_alive, wait_for};

#[derive(Clone, Copy, Debug)]
enum Mode {
    Thread,
    Process,
}

/// A setup in `mode`: process mode runs the node as nobody, with its temp
/// dir open for nobody to traverse (not to write).
fn setup(label: &str, mode: Mode) -> Setup {
    let setup = Setup::new(label);
    match mode {
        Mode::Thread => setup,
        Mode::Process => {
            fs::set_permissions(&setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
            setup.node("user = \"nobody\"")
        }
    }
}

fn running_pid(client: &mut Client, id: &str) -> u32 {
    wait_for(&format!("{id} to run"), || {
        let status = client.status(Some(id)).ok()?;
        let instance = &status.services[0].instances[0];
        (instance.state == "running").then_some(instance.pid?)
    })
}

/// Finding 1: the node's record names a root process it never started
/// (its pid and its world-readable start time), with a forged service
/// version so that the node would restart, hence kill, it at start. The
/// next node adopts only what the spawner's record holds: its own service
/// comes back under its own pid, the victim is never adopted or signalled,
/// not at start, not by `stop`, not by `stop all`.
fn forged_node_record(mode: Mode) {
    let mut node = setup(&format!("boundary-record-{mode:?}"), mode)
        .service("solo", "command = [\"/bin/sleep\", \"300\"]\n")
        .start();
    let mut client = node.client();
    let own = running_pid(&mut client, "solo");
    let mut victim = Victim::start();
    let victim_start = sys::process_start_time(victim.pid()).unwrap();
    let record_path = node.setup.dir.0.join("state/node.record");
    let record = wait_for("the node's record", || {
        fs::read_to_string(&record_path)
            .ok()
            .filter(|text| text.contains(&format!(" {own} ")))
    });
    node.crash();
    let forged: String = record
        .lines()
        .map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
            ["instance", service, index, _, _, _, restarts] => format!(
                "instance {service} {index} {} {victim_start} forged-version {restarts}\n",
                victim.pid()
            ),
            _ => format!("{line}\n"),
        })
        .collect();
    assert_ne!(forged, record);
    fs::write(&record_path, forged).unwrap();

    node.restart();
    let mut client = node.client();
    assert_eq!(
        running_pid(&mut client, "solo"),
        own,
        "its own process adopted"
    );
    assert!(victim.alive(), "the victim was killed at start");
    client.stop("solo").unwrap();
    assert!(victim.alive(), "`stop` killed the victim");
    client.start("solo").unwrap();
    client.restart("solo").unwrap();
    client.stop("solo").unwrap();
    assert!(victim.alive(), "`restart` or `stop` killed the victim");
    assert!(!pid_alive(own), "its own process was stopped");
    client.shutdown().unwrap();
    assert_eq!(node.wait_exit().code(), Some(0), "{}", node.log_text());
    assert!(victim.alive());
}

#[test]
#[ignore = "needs root"]
fn a_forged_node_record_makes_root_adopt_and_signal_nothing_in_thread_mode() {
    forged_node_record(Mode::Thread);
}

#[test]
#[ignore = "needs root"]
fn a_forged_node_record_makes_root_adopt_and_signal_nothing_in_process_mode() {
    forged_node_record(Mode::Process);
}

/// Finding 3: `log_keep = 4000000000` is refused by the configuration,
/// at start and at a reload (which keeps the running configuration and a
/// node that answers and stops on SIGTERM). The spawner's own bound on a
/// forged count is in `tests/compromised_node.rs`.
#[test]
#[ignore = "needs root"]
fn an_absurd_rotation_count_is_refused_at_start_and_at_reload() {
    let setup = setup("boundary-keep", Mode::Process).service(
        "noisy",
        "command = [\"/bin/sleep\", \"300\"]\nlog_keep = 4000000000\n",
    );
    let conf = setup.conf();
    let log = setup.dir.0.join("refused.log");
    fs::write(
        conf.join("node.toml"),
        format!("socket = \"{}\"\n", setup.socket().display()),
    )
    .unwrap();
    let status = node_command(&conf, &log, &[]).status().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("key `log_keep`: expected a whole number from 0 to 1000, found 4000000000"),
        "{text}"
    );

    setup.write_service(
        "noisy",
        "command = [\"/bin/sleep\", \"300\"]\nlog_keep = 1000\n",
    );
    let node = setup.start();
    let mut client = node.client();
    running_pid(&mut client, "noisy");
    node.setup.write_service(
        "noisy",
        "command = [\"/bin/sleep\", \"300\"]\nlog_keep = 4000000000\n",
    );
    assert!(client.reload().is_err(), "the reload is refused");
    running_pid(&mut client, "noisy");
    let mut node = node;
    node.signal(libc::SIGTERM);
    assert_eq!(node.wait_exit().code(), Some(0), "{}", node.log_text());
}

/// Every process on the machine whose environment carries `tag`, by the
/// service it was started as (`SF_SERVICE`).
fn processes_tagged(tag: &str) -> BTreeMap<String, Vec<u32>> {
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|byte| *byte == 0).collect();
        if !vars.contains(&format!("SF_TAG={tag}").as_bytes()) || !pid_alive(pid) {
            continue;
        }
        let service = vars
            .iter()
            .find_map(|var| var.strip_prefix(b"SF_SERVICE="))
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .unwrap_or_default();
        found.entry(service).or_default().push(pid);
    }
    found
}

/// The pid of every running instance, by service, once all `count` run;
/// on a loaded machine a mass start may take longer than one deadline, so
/// three are allowed, and a timeout shows where the instances are.
fn all_running(node: &Node, count: usize) -> BTreeMap<String, Vec<u32>> {
    let mut client = node.client();
    let deadline = std::time::Instant::now() + 3 * common::DEADLINE;
    loop {
        let status = client.status(None).unwrap_or_else(|error| {
            let logs: Vec<String> = fs::read_dir(&node.setup.dir.0)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| {
                    format!(
                        "== {:?}\n{}",
                        e.path(),
                        fs::read_to_string(e.path()).unwrap_or_default()
                    )
                })
                .collect();
            panic!("{error}: {:?} {}", node.log, logs.join("\n"))
        });
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        let mut running: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for service in &status.services {
            for instance in &service.instances {
                *states.entry(instance.state.clone()).or_default() += 1;
                if let (Some(pid), "running") = (instance.pid, instance.state.as_str()) {
                    running.entry(service.id.clone()).or_default().push(pid);
                }
            }
        }
        if running.values().map(Vec::len).sum::<usize>() == count {
            return running;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all {count} services run: {states:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Stops every one of the `count` services.
fn stop_all(node: &Node, count: usize) {
    let mut client = node.client();
    for index in 0..count {
        client.stop(&format!("s{index:03}")).unwrap();
    }
}

fn write_services(setup: &Setup, tag: &str, count: usize, seconds: u32) {
    for index in 0..count {
        let id = format!("s{index:03}");
        setup.write_service(
            &id,
            &format!(
                "command = [\"/bin/sleep\", \"{seconds}\"]\nstdout = \"null\"\nstderr = \"null\"\n\
                 stop_timeout = \"2s\"\nenv = {{ SF_TAG = \"{tag}\", SF_SERVICE = \"{id}\" }}\n"
            ),
        );
    }
}

/// After a crash and a restart: each service runs exactly once, and every
/// process of the test's services is one `status` lists.
fn assert_each_runs_once(node: &Node, tag: &str, count: usize, moment: &str) {
    let listed = all_running(node, count);
    // Old processes of a reload may still be stopping: poll until as
    // many run as are configured, and show what runs if that never comes.
    let deadline = std::time::Instant::now() + common::DEADLINE;
    let found = loop {
        let found = processes_tagged(tag);
        let total = found.values().map(Vec::len).sum::<usize>();
        if total == count {
            break found;
        }
        let duplicates: Vec<_> = found.iter().filter(|(_, pids)| pids.len() > 1).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "{moment}: {total} processes run for {count} services; duplicates {duplicates:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let duplicates: Vec<_> = found.iter().filter(|(_, pids)| pids.len() > 1).collect();
    assert!(duplicates.is_empty(), "{moment}: duplicates {duplicates:?}");
    assert_eq!(found, listed, "{moment}: what runs is what status lists");
}

/// Finding 4: `kill -9` of the node at moments of a mass start of 200
/// services: right as its socket answers, once 50 run, once 150 run. The
/// next node learns every started process from the spawner's record.
fn crash_during_mass_start(mode: Mode) {
    const COUNT: usize = 200;
    let tag = format!("mass-{mode:?}-{}", std::process::id());
    let setup = setup(&format!("boundary-mass-{mode:?}"), mode);
    write_services(&setup, &tag, COUNT, 300);
    let mut node = setup.start();
    for (moment, running) in [("at once", 0), ("once 50 run", 50), ("once 150 run", 150)] {
        if running > 0 {
            let mut client = node.client();
            wait_for(&format!("{running} to run"), || {
                let status = client.status(None).ok()?;
                let up = status
                    .services
                    .iter()
                    .flat_map(|s| &s.instances)
                    .filter(|i| i.state == "running")
                    .count();
                (up >= running).then_some(())
            });
        }
        node.crash();
        node.restart();
        assert_each_runs_once(&node, &tag, COUNT, &format!("a crash {moment}"));
        // Everything stopped, and the users' wishes forgotten, so that
        // the next node starts all of them again.
        stop_all(&node, COUNT);
        assert!(processes_tagged(&tag).is_empty(), "stopped");
        node.crash();
        fs::remove_file(node.setup.dir.0.join("state/node.record")).unwrap();
        node.restart();
    }
    stop_all(&node, COUNT);
    assert!(processes_tagged(&tag).is_empty());
}

#[test]
#[ignore = "needs root"]
fn a_crash_during_a_mass_start_leaves_no_duplicates_in_thread_mode() {
    crash_during_mass_start(Mode::Thread);
}

#[test]
#[ignore = "needs root"]
fn a_crash_during_a_mass_start_leaves_no_duplicates_in_process_mode() {
    crash_during_mass_start(Mode::Process);
}

/// Issue 17, the node's record as a journal: a burst of changes (restarts,
/// stops, disable) on 60 services, one pass each, the node killed right
/// after the last answer. The next node comes back to each change the
/// journal replays: restarted services adopted under their new pids with
/// their restart counts (which only the node's record keeps), stopped
/// ones left stopped, the rest adopted as they ran; each runs once.
fn crash_after_a_burst_of_changes(mode: Mode) {
    const COUNT: usize = 60;
    let tag = format!("burst-{mode:?}-{}", std::process::id());
    let setup = setup(&format!("boundary-burst-{mode:?}"), mode);
    write_services(&setup, &tag, COUNT, 300);
    let mut node = setup.start();
    let before = all_running(&node, COUNT);
    let mut client = node.client();
    let id = |index: usize| format!("s{index:03}");
    for index in 0..20 {
        client.restart(&id(index)).unwrap();
    }
    for index in 20..40 {
        client.stop(&id(index)).unwrap();
    }
    client.enable(&id(59), false).unwrap();
    let told = client.status(None).unwrap();
    node.crash();
    node.restart();
    let mut client = node.client();
    let after = all_running(&node, COUNT - 20);
    let status = client.status(None).unwrap();
    for (index, (was, now)) in told.services.iter().zip(&status.services).enumerate() {
        assert_eq!(was.id, now.id);
        assert_eq!(
            (&now.desired, now.enabled),
            (&was.desired, was.enabled),
            "{}: what users said",
            now.id
        );
        let (was, now) = (&was.instances[0], &now.instances[0]);
        if (20..40).contains(&index) {
            assert_eq!(now.state, "stopped", "{}: {now:?}", id(index));
            continue;
        }
        assert_eq!(now.state, "running", "{}: {now:?}", id(index));
        assert_eq!(now.adopted, Some(true), "{}: {now:?}", id(index));
        assert_eq!(now.pid, was.pid, "{}: the pid it was told", id(index));
        let restarts = u32::from(index < 20);
        assert_eq!(now.restarts, Some(restarts), "{}: {now:?}", id(index));
        assert_eq!(
            now.pid == Some(before[&id(index)][0]),
            index >= 20,
            "{}: restarted or not",
            id(index)
        );
    }
    let found = processes_tagged(&tag);
    assert_eq!(found, after, "what runs is what status lists, once each");
    assert_eq!(told.services[59].enabled, Some(false), "the disable");
    assert_eq!(told.services[20].desired.as_deref(), Some("down"));
    stop_all(&node, COUNT);
    assert!(processes_tagged(&tag).is_empty());
}

#[test]
#[ignore = "needs root"]
fn a_crash_right_after_a_burst_of_changes_comes_back_to_each_in_thread_mode() {
    crash_after_a_burst_of_changes(Mode::Thread);
}

#[test]
#[ignore = "needs root"]
fn a_crash_right_after_a_burst_of_changes_comes_back_to_each_in_process_mode() {
    crash_after_a_burst_of_changes(Mode::Process);
}

/// Finding 4, the reload: 50 services all changed and reloaded, the node
/// killed right after the reload's answer, while old processes stop and
/// new ones start. Each instance then runs once, under its new definition.
fn crash_after_reload(mode: Mode) {
    const COUNT: usize = 50;
    let tag = format!("reload-{mode:?}-{}", std::process::id());
    let setup = setup(&format!("boundary-reload-{mode:?}"), mode);
    write_services(&setup, &tag, COUNT, 300);
    let mut node = setup.start();
    all_running(&node, COUNT);
    write_services(&node.setup, &tag, COUNT, 301);
    let mut client = node.client();
    client.reload().unwrap();
    node.crash();
    node.restart();
    assert_each_runs_once(&node, &tag, COUNT, "after a crash during a reload");
    let commands = wait_for("every instance on its new definition", || {
        let found = processes_tagged(&tag);
        let old = found
            .values()
            .flatten()
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.ends_with(b"300\0"))
            })
            .count();
        (old == 0 && found.values().flatten().count() == COUNT).then_some(found)
    });
    assert!(
        commands.values().all(|pids| pids.len() == 1),
        "{commands:?}"
    );
    stop_all(&node, COUNT);
    assert!(processes_tagged(&tag).is_empty());
}

#[test]
#[ignore = "needs root"]
fn a_crash_right_after_a_reload_leaves_no_duplicates_in_thread_mode() {
    crash_after_reload(Mode::Thread);
}

#[test]
#[ignore = "needs root"]
fn a_crash_right_after_a_reload_leaves_no_duplicates_in_process_mode() {
    crash_after_reload(Mode::Process);
}

/// What runs is what `status` lists, also when the configuration lost a
/// service while the node was down: its recorded process is stopped, not
/// left running unlisted.
#[test]
#[ignore = "needs root"]
fn a_process_of_a_service_removed_while_the_node_was_down_is_stopped() {
    let mut node = setup("boundary-removed", Mode::Process)
        .service("kept", "command = [\"/bin/sleep\", \"300\"]\n")
        .service("dropped", "command = [\"/bin/sleep\", \"300\"]\n")
        .start();
    let mut client = node.client();
    let kept = running_pid(&mut client, "kept");
    let dropped = running_pid(&mut client, "dropped");
    node.crash();
    fs::remove_file(node.setup.conf().join("services/dropped.toml")).unwrap();
    node.restart();
    let mut client = node.client();
    assert_eq!(running_pid(&mut client, "kept"), kept);
    wait_for("the dropped service's process to end", || {
        (!pid_alive(dropped)).then_some(())
    });
    client.shutdown().unwrap();
    assert_eq!(node.wait_exit().code(), Some(0), "{}", node.log_text());
}

/// Finding 5: in process mode the socket is bound as root before the
/// split, so a socket in an existing directory only root can write works,
/// and the socket is the node user's, mode 0600.
#[test]
#[ignore = "needs root"]
fn process_mode_binds_a_socket_in_a_root_owned_directory() {
    let setup = setup("boundary-rootdir", Mode::Process);
    let run = setup.dir.0.join("run");
    fs::create_dir(&run).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    let socket = run.join("snow-fox.sock");
    let conf = setup.conf();
    let node_toml = format!(
        "socket = \"{}\"\nstate_dir = \"{}\"\nuser = \"nobody\"\n",
        socket.display(),
        setup.dir.0.join("state").display()
    );
    fs::write(conf.join("node.toml"), node_toml).unwrap();
    serve_once(&setup.dir, &conf, &socket, &[]);
    let metadata = fs::metadata(&run).unwrap();
    assert_eq!((metadata.uid(), metadata.mode() & 0o777), (0, 0o755));
}

/// Finding 5 with the default socket, `/run/snow-fox/snow-fox.sock`, its
/// directory existing and root's (as a run as root leaves it).
#[test]
#[ignore = "needs root"]
fn process_mode_serves_on_the_default_socket() {
    let dir = TempDir::new("boundary-default-socket");
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let run = std::path::Path::new("/run/snow-fox");
    let created = !run.exists();
    if created {
        fs::create_dir(run).unwrap();
        fs::set_permissions(run, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let conf = dir.0.join("conf");
    fs::create_dir_all(conf.join("services")).unwrap();
    fs::write(
        conf.join("node.toml"),
        format!(
            "state_dir = \"{}\"\nuser = \"nobody\"\n",
            dir.0.join("state").display()
        ),
    )
    .unwrap();
    serve_once(&dir, &conf, &run.join("snow-fox.sock"), &[]);
    if created {
        let _ = fs::remove_dir_all(run);
    }
}

/// Runs a node on `conf`, checks it answers on `socket` (owned by nobody,
/// mode 0600) and says it runs as nobody, then shuts it down.
fn serve_once(
    dir: &TempDir,
    conf: &std::path::Path,
    socket: &std::path::Path,
    env: &[(&str, &str)],
) {
    let log = dir.0.join("node.log");
    let mut child = node_command(conf, &log, env).spawn().unwrap();
    let connected = wait_for("the node's socket", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "node exited with {status}: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        UnixStream::connect(socket).ok()
    });
    drop(connected);
    let metadata = fs::metadata(socket).unwrap();
    assert_eq!((metadata.uid(), metadata.mode() & 0o777), (65534, 0o600));
    let mut client = Client::connect(socket).unwrap();
    let info = client.node_info(true).unwrap();
    let daemon = info.details.iter().find(|s| s.name == "daemon").unwrap();
    assert_eq!(daemon.status.reason, "running as nobody (uid 65534)");
    client.shutdown().unwrap();
    let status = wait_for("the node to exit", || child.try_wait().unwrap());
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
