//! Dependencies, readiness and health checks end to end (issue 8).

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use snow_fox::client::Client;
use snow_fox::wire::proto::public_api::{StatusColour, error::Kind};

use common::{Setup, pid_alive, wait_for};

/// A shell service that appends `start <id>` to `order` and says it is
/// ready on fd 3, then appends `stop <id>` when asked to stop.
fn recorder(id: &str, order: &Path, extra: &str) -> String {
    let order = order.display();
    format!(
        "command = [\"/bin/sh\", \"-c\", \"echo start {id} >> {order}; echo >&3; \
         trap 'echo stop {id} >> {order}; exit 0' TERM; while :; do sleep 0.05; done\"]\n\
         ready = {{ fd = 3 }}\nstop_timeout = \"5s\"\n{extra}"
    )
}

fn state_and_pid(client: &mut Client, id: &str) -> (String, Option<u32>) {
    let status = client.status(Some(id)).unwrap();
    let instance = &status.services[0].instances[0];
    (instance.state.clone(), instance.pid)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_chain_starts_in_order_and_stops_in_reverse() {
    let setup = Setup::new("chain");
    let order = setup.dir.0.join("order");
    let node = setup
        .service(
            "a",
            &recorder("a", &order, "requires = [\"b\"]\nautostart = false\n"),
        )
        .service(
            "b",
            &recorder("b", &order, "requires = [\"c\"]\nautostart = false\n"),
        )
        .service("c", &recorder("c", &order, "autostart = false\n"))
        .start();
    let mut client = node.client();

    let started = client.start("a").unwrap();
    let correlation = client.last_correlation_id();
    assert_eq!(started.services[0].instances[0].state, "running");
    assert_eq!(lines(&order), ["start c", "start b", "start a"]);
    for id in ["b", "c"] {
        assert_eq!(state_and_pid(&mut client, id).0, "running", "{id}");
    }
    let trace = client.trace(&correlation).unwrap();
    let starts = trace
        .hops
        .iter()
        .filter(|hop| hop.to_role == "spawner" && hop.code == "StartProcess")
        .count();
    assert_eq!(
        starts, 3,
        "the dependencies' starts are in the start's trace"
    );

    let stopped = client.stop("c").unwrap();
    let ids: Vec<&str> = stopped.services.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["c", "a", "b"],
        "the reply names what it stopped too, in stop order"
    );
    assert!(
        stopped
            .services
            .iter()
            .all(|s| s.instances[0].state == "stopped")
    );
    assert_eq!(
        lines(&order)[3..],
        ["stop a", "stop b", "stop c"],
        "dependents stop first"
    );
}

#[test]
fn after_orders_autostarts_without_coupling_failures() {
    let setup = Setup::new("after");
    let order = setup.dir.0.join("order");
    let node = setup
        .service("early", &recorder("early", &order, "restart = \"never\"\n"))
        .service("late", &recorder("late", &order, "after = [\"early\"]\n"))
        .start();
    let mut client = node.client();
    let early = wait_for("both to run", || {
        let (early_state, early) = state_and_pid(&mut client, "early");
        let (late_state, _) = state_and_pid(&mut client, "late");
        (early_state == "running" && late_state == "running").then_some(early)
    });
    assert_eq!(lines(&order), ["start early", "start late"]);
    common::kill_9(early.unwrap());
    wait_for("early to exit", || {
        (state_and_pid(&mut client, "early").0 == "exited").then_some(())
    });
    assert_eq!(state_and_pid(&mut client, "late").0, "running");
}

#[test]
fn a_cycle_is_refused_with_the_cycle_named() {
    let setup = Setup::new("cycle")
        .service("a", "command = [\"/bin/true\"]\nrequires = [\"b\"]\n")
        .service("b", "command = [\"/bin/true\"]\nafter = [\"a\"]\n");
    let log = setup.dir.0.join("node.log");
    let status = common::node_command(&setup.conf(), &log, &[])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("dependency cycle: a → b → a"), "{text}");
    assert!(text.contains("services/a.toml:2: key `requires`"), "{text}");
}

#[test]
fn a_failing_requirement_stops_its_dependent_and_restarts_it_when_back() {
    let node = Setup::new("requires")
        .service(
            "db",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\nrestart = \"always\"\n\
             backoff_initial = \"300ms\"\n",
        )
        .service(
            "app",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\nrequires = [\"db\"]\n",
        )
        .start();
    let mut client = node.client();
    client.start("app").unwrap();
    let (_, db_pid) = state_and_pid(&mut client, "db");
    let (_, app_pid) = state_and_pid(&mut client, "app");
    let (db_pid, app_pid) = (db_pid.unwrap(), app_pid.unwrap());

    common::kill_9(db_pid);
    wait_for("app to be stopped with db", || {
        (!pid_alive(app_pid)).then_some(())
    });
    let (new_db, new_app) = wait_for("db and app to be back", || {
        let (db_state, db) = state_and_pid(&mut client, "db");
        let (app_state, app) = state_and_pid(&mut client, "app");
        (db_state == "running" && app_state == "running").then(|| (db.unwrap(), app.unwrap()))
    });
    assert_ne!(new_db, db_pid);
    assert_ne!(new_app, app_pid);
    assert!(
        node.log_text()
            .contains("stopping app: db, which it requires, went down")
    );
}

#[test]
fn fd_readiness_delays_the_reply_and_the_dependent_waits_yellow() {
    let node = Setup::new("fd")
        .service(
            "db",
            "command = [\"/bin/sh\", \"-c\", \"sleep 1; echo >&3; exec sleep 300\"]\n\
             ready = { fd = 3 }\nautostart = false\n",
        )
        .service(
            "app",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\nrequires = [\"db\"]\n",
        )
        .start();
    let socket = node.socket();
    let starter = thread::spawn(move || {
        let mut client = Client::connect(&socket).unwrap();
        let began = Instant::now();
        let reply = client.start("app").unwrap();
        let took = began.elapsed();
        let trace = client.trace(&client.last_correlation_id()).unwrap();
        (took, reply, trace)
    });
    let mut client = node.client();
    let waiting = wait_for("app to wait for db", || {
        let status = client.status(Some("app")).unwrap();
        let colour = &status.services[0].status;
        (colour.reason == "waiting for db").then_some(colour.colour)
    });
    assert_eq!(waiting, StatusColour::Yellow as i32);
    assert_eq!(state_and_pid(&mut client, "db").0, "starting");

    let (took, reply, trace) = starter.join().unwrap();
    assert!(took >= Duration::from_secs(1), "replied after {took:?}");
    assert!(
        trace.hops.iter().any(|hop| hop.code == "ProcessReady"),
        "the start's trace shows db getting ready: {:?}",
        trace.hops
    );
    assert_eq!(reply.services[0].instances[0].state, "running");
    assert_eq!(state_and_pid(&mut client, "db").0, "running");
}

#[test]
fn tcp_readiness_waits_for_the_listener() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = Setup::new("tcp")
        .service(
            "web",
            &format!(
                "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n\
                 ready = {{ tcp = \"127.0.0.1:{port}\", interval = \"50ms\" }}\n"
            ),
        )
        .start();
    let socket = node.socket();
    let starter = thread::spawn(move || Client::connect(&socket).unwrap().start("web"));
    let mut client = node.client();
    wait_for("web to be starting", || {
        (state_and_pid(&mut client, "web").0 == "starting").then_some(())
    });
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let reply = starter.join().unwrap().unwrap();
    assert_eq!(reply.services[0].instances[0].state, "running");
}

#[test]
fn a_readiness_timeout_backs_off_then_gives_up() {
    let node = Setup::new("timeout")
        .service(
            "slow",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n\
             ready = { command = [\"/bin/false\"], interval = \"50ms\", timeout = \"300ms\" }\n\
             backoff_initial = \"100ms\"\ngive_up_after = 2\nstop_timeout = \"1s\"\n",
        )
        .start();
    let mut client = node.client();
    // Issue 13: a start that never gets ready fails, saying why.
    let error = client.start("slow").unwrap_err();
    assert_eq!(error.node_kind(), Some(Kind::StartFailed), "{error}");
    let reason = error.to_string();
    assert!(
        reason.contains("not ready within 300ms: command /bin/false: exited with code 1"),
        "{reason}"
    );
    wait_for("slow to give up", || {
        (state_and_pid(&mut client, "slow").0 == "failed").then_some(())
    });
    let status = client.status(Some("slow")).unwrap();
    assert_eq!(status.services[0].instances[0].restarts, Some(1));
}

#[test]
fn a_failing_health_check_restarts_the_service_and_says_why() {
    let setup = Setup::new("health");
    let flag = setup.dir.0.join("sick");
    let node = setup
        .service(
            "web",
            &format!(
                "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n\
                 health = {{ command = [\"/bin/sh\", \"-c\", \"test ! -e {}\"], interval = \"50ms\", failures = 3 }}\n",
                flag.display()
            ),
        )
        .start();
    let mut client = node.client();
    client.start("web").unwrap();
    let (_, pid) = state_and_pid(&mut client, "web");
    let pid = pid.unwrap();
    let mut events = node.client();
    events.subscribe().unwrap();

    fs::write(&flag, "").unwrap();
    let reason = wait_for("an event saying why", || {
        let event = events.next_event().unwrap();
        event
            .reason
            .filter(|reason| reason.contains("health check"))
    });
    assert!(reason.contains("failed 3 times in a row"), "{reason}");
    fs::remove_file(&flag).unwrap();
    wait_for("web to run again", || {
        let (state, new_pid) = state_and_pid(&mut client, "web");
        (state == "running" && new_pid != Some(pid)).then_some(())
    });
    assert!(!pid_alive(pid));
}

#[test]
fn status_answers_promptly_while_a_slow_readiness_check_runs() {
    let node = Setup::new("prompt")
        .service(
            "slow",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n\
             ready = { command = [\"/bin/sleep\", \"3\"], timeout = \"10s\" }\n",
        )
        .start();
    let socket = node.socket();
    let starter = thread::spawn(move || Client::connect(&socket).unwrap().start("slow"));
    let mut client = node.client();
    wait_for("slow to be starting", || {
        (state_and_pid(&mut client, "slow").0 == "starting").then_some(())
    });
    // Answered while the start is still waiting for its check: the order,
    // not a latency bound, shows nothing waits for the start.
    for _ in 0..5 {
        client.status(None).unwrap();
        client.node_info(true).unwrap();
    }
    assert!(!starter.is_finished(), "the start is still waiting");
    assert_eq!(state_and_pid(&mut client, "slow").0, "starting");
    let reply = starter.join().unwrap().unwrap();
    assert_eq!(reply.services[0].instances[0].state, "running");
}

#[test]
#[ignore = "needs root"]
fn readiness_and_checks_work_across_privilege_separation() {
    let setup = Setup::new("separated")
        .node("user = \"nobody\"")
        .service(
            "db",
            "command = [\"/bin/sh\", \"-c\", \"echo >&3; exec sleep 300\"]\n\
             ready = { fd = 3 }\nautostart = false\n",
        )
        .service(
            "web",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\nuser = \"nobody\"\n\
             requires = [\"db\"]\nready = { command = [\"/bin/true\"] }\n\
             health = { command = [\"/bin/true\"], interval = \"50ms\" }\n",
        );
    // nobody's node process reaches its state dir in the temp dir (the
    // socket is bound by root before the split).
    fs::set_permissions(&setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let node = setup.start();
    let mut client = node.client();
    let reply = client.start("web").unwrap();
    assert_eq!(reply.services[0].instances[0].state, "running");
    assert_eq!(state_and_pid(&mut client, "db").0, "running");
}
