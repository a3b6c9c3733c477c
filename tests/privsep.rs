//! Privilege separation (issue 7): a node started as root with
//! `user = "nobody"` runs as two processes, an unprivileged node and a
//! root spawner. Every test is skipped when not run as root.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Node, Setup, finished_trace, node_command, wait_for};

/// nobody's uid on the Linux distributions CI runs.
const NOBODY: &str = "65534";

/// A node running as nobody, with a root service and a nobody service.
/// Its temp dir is opened for everyone to traverse, so that nobody reaches
/// its state dir there (the socket is bound by root, before the split).
fn start_separated(label: &str) -> Node {
    let setup = Setup::new(label)
        .node("user = \"nobody\"")
        .service("as_root", "command = [\"/bin/sleep\", \"300\"]\n")
        .service(
            "as_nobody",
            "command = [\"/bin/sleep\", \"301\"]\nuser = \"nobody\"\n",
        )
        .service(
            "manual",
            "command = [\"/bin/sleep\", \"302\"]\nautostart = false\n",
        );
    fs::set_permissions(&setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    setup.start()
}

/// The whitespace-separated values of `field` in /proc/<pid>/status.
fn status_field(pid: u32, field: &str) -> Option<Vec<String>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)
            .map(|values| values.split_whitespace().map(str::to_owned).collect())
    })
}

/// Whether `pid` exists and is not a zombie.
fn is_alive(pid: u32) -> bool {
    status_field(pid, "State:").is_some_and(|state| state[0] != "Z")
}

/// The spawner process's pid, as node info tells it.
fn spawner_pid(node: &Node) -> u32 {
    let info = node.client().node_info(true).unwrap();
    let reason = &info
        .details
        .iter()
        .find(|subsystem| subsystem.name == "spawner")
        .unwrap()
        .status
        .reason;
    reason
        .strip_prefix("running (process, pid ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("spawner reason: {reason}"))
        .parse()
        .unwrap()
}

/// The pid of the running instance 0 of `service`.
fn service_pid(node: &Node, service: &str) -> u32 {
    wait_for(&format!("{service} to run"), || {
        let status = node.client().status(Some(service)).unwrap();
        let instance = &status.services[0].instances[0];
        (instance.state == "running").then_some(instance.pid?)
    })
}

/// Kills what a test leaves behind (services outlive a dead spawner).
fn kill(pids: &[u32]) {
    for &pid in pids {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
}

#[test]
#[ignore = "needs root"]
fn an_unprivileged_node_and_a_root_spawner_start_services_as_configured() {
    let mut node = start_separated("privsep-ids");
    let node_pid = node.pid() as u32;
    let spawner = spawner_pid(&node);
    assert_eq!(status_field(node_pid, "Uid:").unwrap(), [NOBODY; 4]);
    assert_eq!(
        status_field(node_pid, "CapEff:").unwrap(),
        ["0000000000000000"]
    );
    assert!(status_field(node_pid, "Groups:").unwrap().is_empty());
    assert_eq!(status_field(spawner, "Uid:").unwrap(), ["0"; 4]);
    assert_eq!(
        status_field(spawner, "PPid:").unwrap(),
        [node_pid.to_string()]
    );
    assert_eq!(status_field(spawner, "Name:").unwrap(), ["sf-spawner"]);
    let log = node.log_text();
    assert!(log.contains("cannot regain root"), "{log}");
    let state = fs::metadata(node.setup.dir.0.join("state")).unwrap();
    assert_eq!((state.uid(), state.mode() & 0o777), (65534, 0o700));

    let as_root = service_pid(&node, "as_root");
    let as_nobody = service_pid(&node, "as_nobody");
    assert_eq!(status_field(as_root, "Uid:").unwrap(), ["0"; 4]);
    assert_eq!(status_field(as_nobody, "Uid:").unwrap(), [NOBODY; 4]);
    for pid in [as_root, as_nobody] {
        assert_eq!(status_field(pid, "PPid:").unwrap(), [spawner.to_string()]);
    }

    let info = node.client().node_info(true).unwrap();
    let daemon = info.details.iter().find(|s| s.name == "daemon").unwrap();
    assert_eq!(daemon.status.reason, "running as nobody (uid 65534)");

    node.client().shutdown().unwrap();
    let status = node.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    let manager = log.find("manager acknowledged shutdown").expect(&log);
    let spawner_ack = log.find("spawner acknowledged shutdown").expect(&log);
    assert!(manager < spawner_ack, "{log}");
    wait_for("the spawner process to exit", || {
        (!is_alive(spawner)).then_some(())
    });
    assert!(!is_alive(as_root) && !is_alive(as_nobody));
}

#[test]
#[ignore = "needs root"]
fn a_trace_of_a_service_start_shows_the_hops_across_the_process_boundary() {
    let mut node = start_separated("privsep-trace");
    let mut client = node.client();
    client.start("manual").unwrap();
    let id = client.last_correlation_id();
    let trace = finished_trace(&mut client, &id);
    let hops: Vec<(&str, &str, &str, &str)> = trace
        .hops
        .iter()
        .map(|h| {
            (
                h.from_role.as_str(),
                h.to_role.as_str(),
                h.protocol.as_str(),
                h.code.as_str(),
            )
        })
        .collect();
    let start = ("manager", "spawner", "manager_spawner", "StartProcess");
    let started = ("spawner", "manager", "manager_spawner", "ProcessStarted");
    let at = |hop| hops.iter().position(|h| *h == hop);
    assert!(at(start).is_some() && at(start) < at(started), "{hops:?}");
    // Killing the node would leave its services running, by design.
    client.shutdown().unwrap();
    assert_eq!(node.wait_exit().code(), Some(0), "{}", node.log_text());
}

#[test]
#[ignore = "needs root"]
fn killing_the_spawner_process_shuts_the_node_down_with_a_failure_code() {
    let mut node = start_separated("privsep-kill-spawner");
    let services = [
        service_pid(&node, "as_root"),
        service_pid(&node, "as_nobody"),
    ];
    let spawner = spawner_pid(&node);
    kill(&[spawner]);
    let status = node.wait_exit();
    kill(&services);
    let log = node.log_text();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(
        log.contains(&format!(
            "the spawner process (pid {spawner}) closed its link"
        )),
        "{log}"
    );
    assert!(log.contains("a role ended: shutting down"), "{log}");
}

#[test]
#[ignore = "needs root"]
fn killing_the_node_process_leaves_services_running_and_the_spawner_exits() {
    let mut node = start_separated("privsep-kill-node");
    let services = [
        service_pid(&node, "as_root"),
        service_pid(&node, "as_nobody"),
    ];
    let spawner = spawner_pid(&node);
    kill(&[node.pid() as u32]);
    node.wait_exit();
    wait_for("the spawner process to exit", || {
        (!is_alive(spawner)).then_some(())
    });
    let alive = services.iter().all(|&pid| is_alive(pid));
    kill(&services);
    let log = node.log_text();
    assert!(alive, "services died with the node: {log}");
    assert!(log.contains("the node process is gone"), "{log}");
}

#[test]
#[ignore = "needs root"]
fn a_service_added_by_a_reload_is_allowed_by_the_spawner_process() {
    let mut node = start_separated("privsep-reload");
    node.setup
        .write_service("added", "command = [\"/bin/sleep\", \"303\"]\n");
    node.client().reload().unwrap();
    let added = service_pid(&node, "added");
    assert_eq!(
        status_field(added, "PPid:").unwrap(),
        [spawner_pid(&node).to_string()]
    );
    node.client().shutdown().unwrap();
    assert_eq!(node.wait_exit().code(), Some(0), "{}", node.log_text());
}

#[test]
#[ignore = "needs root"]
fn an_unknown_node_user_stops_the_start_clearly() {
    let setup = Setup::new("privsep-no-user");
    let conf = setup.conf();
    let node_toml = format!(
        "socket = \"{}\"\nuser = \"sf-no-such-user\"\n",
        setup.socket().display()
    );
    fs::write(conf.join("node.toml"), node_toml).unwrap();
    let log = setup.dir.0.join("node.log");
    let status = node_command(&conf, &log, &[]).status().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "cannot run the node as `sf-no-such-user`: user `sf-no-such-user` does not exist"
        ),
        "{text}"
    );
}

/// Issue 13: `{instance}` settings pass the root spawner's own table check
/// (it expands the table as the node does), and only as expanded for that
/// very instance.
#[test]
#[ignore = "needs root"]
fn per_instance_settings_pass_the_spawner_process_table() {
    let setup = Setup::new("privsep-instance").node("user = \"nobody\"");
    let out = setup.dir.0.join("out");
    fs::create_dir(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
    let setup = setup.service(
        "pair",
        &format!(
            "instances = 2\nuser = \"nobody\"\nwork_dir = \"{}\"\n\
             command = [\"/bin/sh\", \"-c\", \"echo $0 $SNOW_FOX_INSTANCE $USER > copy-{{instance}}; exec sleep 300\", \"arg-{{instance}}\"]\n\
             env = {{ WHICH = \"{{id}}-{{instance}}\" }}\n",
            out.display()
        ),
    );
    fs::set_permissions(&setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let node = setup.start();
    for index in 0..2 {
        let text = wait_for("the copy's file", || {
            fs::read_to_string(out.join(format!("copy-{index}")))
                .ok()
                .filter(|text| text.ends_with('\n'))
        });
        assert_eq!(text, format!("arg-{index} {index} nobody\n"));
    }
    assert!(!node.log_text().contains("refused"), "{}", node.log_text());
}

/// Issue 17: a signal the spawner refuses reaches the client that asked as
/// an `Error`. The spawner process is stopped while the service is killed
/// behind its back, so the node still has it running when the client's
/// `ServiceSignal` comes; continued, the spawner reaps it, reports its end
/// and refuses the signal, and the client's answer says so.
#[test]
#[ignore = "needs root"]
fn a_signal_the_spawner_refuses_reaches_the_client_as_an_error() {
    use snow_fox::wire::proto::public_api::{self, error::Kind, message::Code, message::Payload};

    let mut node = start_separated("privsep-refused-signal");
    let spawner = spawner_pid(&node);
    let service = service_pid(&node, "as_root");
    let signal = |pid: u32, name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    signal(spawner, "-STOP");
    signal(service, "-KILL");
    wait_for(
        "the killed service to be a zombie of the stopped spawner",
        || (status_field(service, "State:")?[0] == "Z").then_some(()),
    );

    let id = "i17-refused-signal";
    let mut asking = node.client();
    asking
        .send(&public_api::Message {
            code: Code::ServiceSignal as i32,
            correlation_id: Some(id.to_owned()),
            payload: Some(Payload::ServiceSignal(public_api::ServiceSignal {
                service_id: "as_root".to_owned(),
                signal: "HUP".to_owned(),
                instance: None,
            })),
        })
        .unwrap();
    // The manager has asked the stopped spawner, and has not answered.
    let mut watching = node.client();
    wait_for("the manager to ask the spawner for the signal", || {
        let trace = watching.trace(id).unwrap();
        let asked = trace.hops.iter().any(|hop| {
            (
                hop.from_role.as_str(),
                hop.to_role.as_str(),
                hop.code.as_str(),
            ) == ("manager", "spawner", "SignalProcess")
        });
        asked.then_some(trace)
    });
    signal(spawner, "-CONT");

    let reply = asking.receive().unwrap();
    assert_eq!(reply.correlation_id.as_deref(), Some(id));
    let Some(Payload::Error(error)) = reply.payload else {
        panic!("a refused signal was answered with {reply:?}");
    };
    assert_eq!(error.kind, Kind::SpawnFailed as i32, "{error:?}");
    assert!(
        error.reason.contains("refused to signal as_root")
            && error.reason.contains("not a live child"),
        "{error:?}"
    );
    let trace = wait_for("the refused request's trace to end", || {
        let trace = watching.trace(id).unwrap();
        (trace.state == "failed").then_some(trace)
    });
    let hops: Vec<String> = trace
        .hops
        .iter()
        .map(|hop| format!("{}>{}:{}", hop.from_role, hop.to_role, hop.code))
        .collect();
    let at = |hop: &str| hops.iter().position(|h| h == hop);
    let refused = at("spawner>manager:Error");
    assert!(
        at("manager>spawner:SignalProcess") < refused
            && refused.is_some()
            && refused < at("manager>io:Error"),
        "the spawner's refusal comes before the client's answer: {hops:?}"
    );
    watching.shutdown().unwrap();
    assert_eq!(node.wait_exit().code(), Some(0), "{}", node.log_text());
}
