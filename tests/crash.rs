//! Services outlive the node (issue 4): real nodes killed with SIGKILL or
//! shut down, then started again on the same directories.

mod common;

use std::fs;
use std::path::PathBuf;

use snow_fox::client::Client;
use snow_fox::sys;
use snow_fox::wire::proto::public_api::{StatusColour, service_status_response::Instance};

use common::{Node, Setup, pid_alive, wait_for, zombies_of};

const SLEEPER: &str = "command = [\"/bin/sleep\", \"300\"]\nstop_timeout = \"5s\"\n";

/// Kills, on drop, the process groups of services a test leaves running on
/// purpose (the node no longer stops them), so no test leaks processes.
struct Leftovers(Vec<u32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in &self.0 {
            if pid_alive(*pid) {
                let _ = sys::kill(-(*pid as i32), libc::SIGKILL);
            }
        }
    }
}

fn instances(client: &mut Client, id: &str) -> Vec<Instance> {
    let status = client.status(Some(id)).unwrap();
    assert_eq!(status.services.len(), 1);
    status.services[0].instances.clone()
}

fn wait_states(client: &mut Client, id: &str, want: &[&str]) -> Vec<Instance> {
    wait_for(&format!("{id} to be {want:?}"), || {
        let now = instances(client, id);
        let states: Vec<&str> = now.iter().map(|i| i.state.as_str()).collect();
        (states == want).then_some(now)
    })
}

fn pids(instances: &[Instance]) -> Vec<u32> {
    instances.iter().map(|i| i.pid.unwrap()).collect()
}

fn record_path(node: &Node) -> PathBuf {
    node.setup.dir.0.join("state/node.record")
}

/// The `state` subsystem's colour and reason from node info.
fn state_subsystem(client: &mut Client) -> (i32, String) {
    let info = client.node_info(true).unwrap();
    let state = info
        .details
        .into_iter()
        .find(|sub| sub.name == "state")
        .expect("a state subsystem");
    (state.status.colour, state.status.reason)
}

fn kill9(pid: u32) {
    sys::kill(pid as i32, libc::SIGKILL).unwrap();
}

#[test]
fn services_outlive_a_crash_and_the_next_node_adopts_them() {
    let mut node = Setup::new("crash-adopt")
        .service("solo", SLEEPER)
        .service("pair", &format!("{SLEEPER}instances = 2\n"))
        .start();
    let mut client = node.client();
    let solo = pids(&wait_states(&mut client, "solo", &["running"]));
    let pair = pids(&wait_states(&mut client, "pair", &["running", "running"]));
    let _leftovers = Leftovers([solo.clone(), pair.clone()].concat());
    wait_for("the record to hold all three", || {
        let recorded = common::recorded_pids(&record_path(&node), "instance");
        (recorded.len() == 3).then_some(())
    });

    node.crash();
    for pid in solo.iter().chain(&pair) {
        assert!(pid_alive(*pid), "pid {pid} outlived the node");
    }

    node.restart();
    let mut client = node.client();
    for (id, before) in [("solo", &solo), ("pair", &pair)] {
        let now = instances(&mut client, id);
        assert_eq!(&pids(&now), before, "{id} keeps its pids");
        for instance in &now {
            assert_eq!(instance.state, "running");
            assert_eq!(instance.adopted, Some(true));
        }
    }
    let (colour, reason) = state_subsystem(&mut client);
    assert_eq!(colour, StatusColour::Green as i32);
    assert!(reason.contains("3 instances adopted at start"), "{reason}");

    let stopped = client.stop("pair").unwrap();
    assert_eq!(stopped.services[0].instances[0].state, "stopped");
    for pid in &pair {
        wait_for("the adopted pair to end", || {
            (!pid_alive(*pid)).then_some(())
        });
    }

    kill9(solo[0]);
    let restarted = wait_for("solo to be restarted by its policy", || {
        let now = instances(&mut client, "solo");
        (now[0].state == "running" && now[0].pid != Some(solo[0])).then_some(now)
    });
    assert_eq!(restarted[0].adopted, None, "a new child, not adopted");
    assert_eq!(restarted[0].restarts, Some(1));
    let _new_solo = Leftovers(pids(&restarted));

    node.crash();
    node.restart();
    let mut client = node.client();
    let solo_now = instances(&mut client, "solo");
    assert_eq!(pids(&solo_now), pids(&restarted), "adopted again");
    assert_eq!(solo_now[0].restarts, Some(1), "the count survives");
    assert_eq!(
        wait_states(&mut client, "pair", &["stopped", "stopped"]).len(),
        2,
        "a service stopped by a user stays stopped after a crash"
    );
    client.stop("solo").unwrap();
    assert!(zombies_of(node.pid()).is_empty());
}

/// This process's cgroups: (hierarchy mount, path in it).
fn own_cgroups() -> Vec<(PathBuf, String)> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let mount = match controllers {
                "" if root.join("unified").is_dir() => root.join("unified"),
                "" => root.to_owned(),
                named if named.starts_with("name=") => return None,
                named => root.join(named.split(',').next()?),
            };
            Some((mount, path.trim_start_matches('/').to_owned()))
        })
        .collect()
}

/// A pid recycled while the node was down: the spawner's record names the
/// pid with its old start time, so the process now under it is a
/// stranger, neither adopted nor signalled.
#[test]
fn a_recycled_pid_is_neither_adopted_nor_signalled() {
    let mut node = Setup::new("crash-recycled")
        .service("solo", SLEEPER)
        .start();
    let mut client = node.client();
    let old = pids(&wait_states(&mut client, "solo", &["running"]))[0];
    let _leftovers = Leftovers(vec![old]);
    let spawner_record = node.setup.dir.0.join("state-spawner/processes");
    let record = wait_for("the spawner's record", || {
        fs::read_to_string(&spawner_record)
            .ok()
            .filter(|text| text.contains(&format!(" {old} ")))
    });
    node.crash();

    // The same pid with another start time: to the spawner, a stranger.
    let edited: String = record
        .lines()
        .map(|line| {
            let mut fields: Vec<String> = line.split(' ').map(str::to_owned).collect();
            if fields[0] == "process" {
                fields[4] = (fields[4].parse::<u64>().unwrap() + 1).to_string();
            }
            fields.join(" ") + "\n"
        })
        .collect();
    assert_ne!(edited, record);
    fs::write(&spawner_record, edited).unwrap();
    // A real stranger is not in the instance's cgroup: move it out, to
    // where this test runs (nothing to move where the node has none).
    for (hierarchy, path) in own_cgroups() {
        let _ = fs::write(hierarchy.join(path).join("cgroup.procs"), old.to_string());
    }

    node.restart();
    let mut client = node.client();
    let now = wait_states(&mut client, "solo", &["running"]);
    assert_ne!(now[0].pid, Some(old), "started anew");
    assert_eq!(now[0].adopted, None);
    let _new = Leftovers(pids(&now));
    client.stop("solo").unwrap();
    assert!(pid_alive(old), "the stranger was never signalled");
    assert!(
        node.log_text().contains("now names another process"),
        "{}",
        node.log_text()
    );
}

#[test]
fn a_half_written_temporary_record_next_to_a_good_one_is_ignored() {
    let mut node = Setup::new("crash-tmp").service("solo", SLEEPER).start();
    let mut client = node.client();
    let pid = pids(&wait_states(&mut client, "solo", &["running"]))[0];
    let _leftovers = Leftovers(vec![pid]);
    wait_for("the record", || fs::read_to_string(record_path(&node)).ok());
    node.crash();
    fs::write(
        record_path(&node).with_extension("record.tmp"),
        "snow-fox-record 1\ninstance solo 0 12",
    )
    .unwrap();

    node.restart();
    let mut client = node.client();
    let now = instances(&mut client, "solo");
    assert_eq!(now[0].pid, Some(pid));
    assert_eq!(now[0].adopted, Some(true));
    assert_eq!(state_subsystem(&mut client).0, StatusColour::Green as i32);
    client.stop("solo").unwrap();
}

/// A corrupt node record is reported and ignored; what runs is still
/// adopted, from the spawner's own record (issue 11), so nothing runs twice.
#[test]
fn a_corrupt_record_is_reported_and_ignored() {
    let mut node = Setup::new("crash-corrupt").service("solo", SLEEPER).start();
    let mut client = node.client();
    let old = pids(&wait_states(&mut client, "solo", &["running"]))[0];
    let _leftovers = Leftovers(vec![old]);
    wait_for("the record", || fs::read_to_string(record_path(&node)).ok());
    node.crash();
    fs::write(
        record_path(&node),
        "snow-fox-record 1\ninstance solo zero\n",
    )
    .unwrap();

    node.restart();
    let mut client = node.client();
    let now = wait_states(&mut client, "solo", &["running"]);
    // The spawner's record, not the node's, says what runs.
    assert_eq!(now[0].pid, Some(old), "adopted all the same");
    let (colour, reason) = state_subsystem(&mut client);
    assert_eq!(colour, StatusColour::Yellow as i32);
    assert!(reason.contains("corrupt at line 2"), "{reason}");
    assert!(node.log_text().contains("corrupt at line 2"));
    client.stop("solo").unwrap();
}

#[test]
fn a_double_forking_service_leaves_no_zombie() {
    let setup = Setup::new("crash-double-fork");
    let marker = setup.dir.0.join("grandchild.pid");
    // The inner shell backgrounds a short sleep and exits at once: that
    // sleep is orphaned and re-parented to the node, a subreaper.
    let script = format!(
        "sh -c 'sleep 1 & echo $! > {}' ; exec sleep 300",
        marker.display()
    );
    let node = setup
        .service(
            "forker",
            &format!("command = [\"/bin/sh\", \"-c\", {script:?}]\nstop_timeout = \"5s\"\n"),
        )
        .start();
    let mut client = node.client();
    wait_states(&mut client, "forker", &["running"]);
    let grandchild: u32 = wait_for("the grandchild's pid", || {
        fs::read_to_string(&marker).ok()?.trim().parse().ok()
    });
    wait_for("the grandchild to be re-parented to the node", || {
        let parent = common::scratch::pid_stat(grandchild)?.get(1)?.clone();
        (parent == node.pid().to_string()).then_some(())
    });
    wait_for("the grandchild to be reaped", || {
        fs::metadata(format!("/proc/{grandchild}"))
            .is_err()
            .then_some(())
    });
    assert!(zombies_of(node.pid()).is_empty());
    client.stop("forker").unwrap();
}

#[test]
fn keep_services_survive_an_orderly_shutdown_and_are_adopted_again() {
    let mut node = Setup::new("crash-keep")
        .service("kept", &format!("{SLEEPER}on_node_exit = \"keep\"\n"))
        .service("stopper", SLEEPER)
        .start();
    let mut client = node.client();
    let kept = pids(&wait_states(&mut client, "kept", &["running"]))[0];
    let stopper = pids(&wait_states(&mut client, "stopper", &["running"]))[0];
    let _leftovers = Leftovers(vec![kept, stopper]);

    client.shutdown().unwrap();
    assert!(node.wait_exit().success());
    assert!(pid_alive(kept), "keep: left running");
    assert!(!pid_alive(stopper), "stop: stopped with the node");
    let record = fs::read_to_string(record_path(&node)).unwrap();
    assert_eq!(
        common::recorded_pids(&record_path(&node), "instance"),
        vec![kept],
        "{record}"
    );

    node.restart();
    let mut client = node.client();
    let now = instances(&mut client, "kept");
    assert_eq!(now[0].pid, Some(kept));
    assert_eq!(now[0].adopted, Some(true));
    let fresh = wait_states(&mut client, "stopper", &["running"]);
    assert_ne!(fresh[0].pid, Some(stopper), "autostarted anew");
    client.stop("kept").unwrap();
    client.stop("stopper").unwrap();
}

#[test]
fn what_users_asked_outlives_an_orderly_restart_until_a_reload_changes_it() {
    let mut node = Setup::new("crash-desired")
        .service("manual", &format!("{SLEEPER}autostart = false\n"))
        .service("auto", SLEEPER)
        .start();
    let mut client = node.client();
    wait_states(&mut client, "auto", &["running"]);
    client.start("manual").unwrap();
    client.stop("auto").unwrap();
    client.shutdown().unwrap();
    assert!(node.wait_exit().success());

    node.restart();
    let mut client = node.client();
    let manual = wait_states(&mut client, "manual", &["running"]);
    assert_eq!(manual[0].adopted, None, "started anew, by the user's wish");
    assert_eq!(
        instances(&mut client, "auto")[0].state,
        "stopped",
        "stopped by the user: not autostarted"
    );

    // A new definition forgets the wish: `auto` autostarts again.
    node.setup
        .write_service("auto", &format!("{SLEEPER}stop_signal = \"SIGINT\"\n"));
    client.reload().unwrap();
    client.shutdown().unwrap();
    assert!(node.wait_exit().success());
    node.restart();
    let mut client = node.client();
    wait_states(&mut client, "auto", &["running"]);
    wait_states(&mut client, "manual", &["running"]);
    client.stop("auto").unwrap();
    client.stop("manual").unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_recorded_process_outside_its_instances_cgroup_is_not_adopted() {
    let mut node = Setup::new("crash-outside")
        .service("kept", &format!("{SLEEPER}on_node_exit = \"keep\"\n"))
        .start();
    let mut client = node.client();
    let kept = pids(&wait_states(&mut client, "kept", &["running"]))[0];
    let _leftovers = Leftovers(vec![kept]);
    client.shutdown().unwrap();
    assert!(node.wait_exit().success());
    // Same pid, same start time: only its cgroup tells it is no longer
    // the instance's.
    for (hierarchy, path) in own_cgroups() {
        let _ = fs::write(hierarchy.join(path).join("cgroup.procs"), kept.to_string());
    }
    node.restart();
    let mut client = node.client();
    // The manager takes it as adopted until the spawner refuses it; then
    // it is lost and started anew.
    wait_for("kept started anew", || {
        let now = instances(&mut client, "kept");
        (now[0].state == "running" && now[0].pid.is_some_and(|pid| pid != kept)).then_some(())
    });
    assert!(
        node.log_text()
            .contains(&format!("pid {kept} is not in the cgroup of kept.0")),
        "{}",
        node.log_text()
    );
    client.stop("kept").unwrap();
    assert!(
        pid_alive(kept),
        "a process outside the cgroup is not the node's to kill"
    );
}
