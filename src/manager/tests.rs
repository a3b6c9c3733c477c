//! The manager's decisions on a fake clock, its spawner faked ([`Sim`]):
//! no process is forked and no test waits.

use std::time::Duration;

use super::sim::Sim;
use crate::wire::proto::manager_spawner as ms;
use crate::wire::proto::public_api::{
    ServiceRestart, ServiceStart, ServiceStop, error::Kind, message::Code, message::Payload,
};

const SLEEP: &str = "command = [\"/bin/sleep\", \"3600\"]\nstdout = \"null\"\nstderr = \"null\"\n";

fn service(extra: &str) -> String {
    format!("{SLEEP}{extra}\n")
}

fn start(sim: &mut Sim, id: &str) -> String {
    sim.request(
        Code::ServiceStart,
        Payload::ServiceStart(ServiceStart {
            service_id: id.to_owned(),
            version: String::new(),
        }),
    )
}

fn stop(sim: &mut Sim, id: &str) -> String {
    sim.request(
        Code::ServiceStop,
        Payload::ServiceStop(ServiceStop {
            service_id: id.to_owned(),
        }),
    )
}

/// The code of the reply to `correlation`, if it came.
fn replied(sim: &Sim, correlation: &str) -> Option<Code> {
    sim.reply(correlation)
        .and_then(|message| Code::try_from(message.code).ok())
}

/// The kind of the `Error` that answered `correlation`.
fn error_kind(sim: &Sim, correlation: &str) -> Option<Kind> {
    match sim.reply(correlation)?.payload.as_ref()? {
        Payload::Error(error) => Kind::try_from(error.kind).ok(),
        _ => None,
    }
}

/// The signals asked for, in order.
fn signals(sim: &Sim) -> Vec<(u32, i32)> {
    sim.asked(ms::message::Code::SignalProcess)
        .into_iter()
        .filter_map(|message| match &message.payload {
            Some(ms::message::Payload::SignalProcess(signal)) => Some((signal.pid, signal.signal)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_start_is_answered_once_the_instance_ran_its_start_grace() {
    let mut sim = Sim::new(&[("app", &service("autostart = false\nstart_grace = \"2s\""))]);
    assert!(sim.started().is_empty(), "autostart = false starts nothing");
    let correlation = start(&mut sim, "app");
    assert_eq!(sim.started(), ["app"]);
    assert_eq!(sim.state("app", 0), "running");
    assert_eq!(
        replied(&sim, &correlation),
        None,
        "not before its start_grace"
    );
    sim.advance(Duration::from_millis(1999));
    assert_eq!(replied(&sim, &correlation), None, "1999 ms is not 2 s");
    sim.advance(Duration::from_millis(1));
    assert_eq!(replied(&sim, &correlation), Some(Code::Ack));
}

#[test]
fn a_stop_signals_the_process_and_is_answered_once_it_ended() {
    let mut sim = Sim::new(&[("app", &service(""))]);
    let pid = sim.pid("app", 0).unwrap();
    let correlation = stop(&mut sim, "app");
    assert_eq!(signals(&sim), [(pid, libc::SIGTERM)]);
    assert_eq!(sim.state("app", 0), "stopped");
    assert_eq!(replied(&sim, &correlation), Some(Code::Ack));
    assert!(sim.running.is_empty());
}

#[test]
fn a_process_ignoring_its_stop_signal_is_killed_at_its_stop_timeout() {
    let mut sim = Sim::new(&[("app", &service("stop_timeout = \"3s\""))]);
    let pid = sim.pid("app", 0).unwrap();
    sim.ignore_stop = true;
    let correlation = stop(&mut sim, "app");
    assert_eq!(sim.state("app", 0), "stopping");
    sim.advance(Duration::from_millis(2999));
    assert_eq!(signals(&sim), [(pid, libc::SIGTERM)], "no kill before 3 s");
    sim.advance(Duration::from_millis(1));
    assert_eq!(signals(&sim), [(pid, libc::SIGTERM), (pid, libc::SIGKILL)]);
    assert_eq!(sim.state("app", 0), "stopped");
    assert_eq!(replied(&sim, &correlation), Some(Code::Ack));
}

#[test]
fn a_restart_stops_then_starts_a_new_process() {
    let mut sim = Sim::new(&[("app", &service(""))]);
    let old = sim.pid("app", 0).unwrap();
    let correlation = sim.request(
        Code::ServiceRestart,
        Payload::ServiceRestart(ServiceRestart {
            service_id: "app".to_owned(),
        }),
    );
    let new = sim.pid("app", 0).unwrap();
    assert_ne!(old, new);
    assert_eq!(signals(&sim), [(old, libc::SIGTERM)]);
    assert_eq!(sim.started(), ["app", "app"]);
    sim.advance(Duration::from_millis(300));
    assert_eq!(replied(&sim, &correlation), Some(Code::Ack));
}

#[test]
fn back_off_doubles_to_its_maximum_then_gives_up_within_its_window() {
    let mut sim = Sim::new(&[(
        "flaky",
        &service(
            "restart = \"always\"\nbackoff_initial = \"1s\"\nbackoff_max = \"4s\"\n\
             give_up_after = 5\ngive_up_window = \"1m\"\nstable_after = \"10s\"",
        ),
    )]);
    let mut gaps = Vec::new();
    for failure in 1..=5 {
        let pid = sim.pid("flaky", 0).unwrap();
        sim.exit(pid, Some(1), None);
        sim.settle();
        if failure == 5 {
            break;
        }
        assert_eq!(sim.state("flaky", 0), "backoff", "failure {failure}");
        let starts = sim.started().len();
        let gap = sim.skip_to_next_deadline().unwrap();
        assert_eq!(sim.started().len(), starts + 1, "one start per back-off");
        gaps.push(gap);
    }
    let secs = Duration::from_secs;
    assert_eq!(gaps, [secs(1), secs(2), secs(4), secs(4)]);
    assert_eq!(sim.state("flaky", 0), "failed");
    assert_eq!(sim.started().len(), 5);
    assert_eq!(sim.manager.next_deadline(), None, "nothing more to do");
}

#[test]
fn a_run_of_stable_after_resets_the_back_off() {
    let mut sim = Sim::new(&[(
        "flaky",
        &service("restart = \"always\"\nbackoff_initial = \"1s\"\nstable_after = \"5s\""),
    )]);
    let quick_failure = |sim: &mut Sim| {
        let pid = sim.pid("flaky", 0).unwrap();
        sim.exit(pid, Some(1), None);
        sim.settle();
        sim.skip_to_next_deadline().unwrap()
    };
    assert_eq!(quick_failure(&mut sim), Duration::from_secs(1));
    assert_eq!(quick_failure(&mut sim), Duration::from_secs(2));
    sim.advance(Duration::from_secs(5));
    let pid = sim.pid("flaky", 0).unwrap();
    sim.exit(pid, Some(1), None);
    sim.settle();
    assert_eq!(sim.started().len(), 4, "a stable run restarts at once");
    assert_eq!(sim.state("flaky", 0), "running");
    assert_eq!(
        quick_failure(&mut sim),
        Duration::from_secs(1),
        "from the start again"
    );
}

#[test]
fn a_start_the_spawner_refuses_fails_the_request_with_its_reason() {
    let mut sim = Sim::new(&[(
        "app",
        &service("autostart = false\ngive_up_after = 1\nrestart = \"always\""),
    )]);
    sim.refuse.push("app".to_owned());
    let correlation = start(&mut sim, "app");
    assert_eq!(error_kind(&sim, &correlation), Some(Kind::StartFailed));
    assert_eq!(sim.state("app", 0), "failed");
}

#[test]
fn a_start_that_never_gets_ready_fails_at_its_ready_timeout() {
    let mut sim = Sim::new(&[(
        "slow",
        &service("autostart = false\nready = { fd = 3, timeout = \"10s\" }"),
    )]);
    let correlation = start(&mut sim, "slow");
    let pid = sim.pid("slow", 0).unwrap();
    sim.advance(Duration::from_millis(9999));
    assert_eq!(sim.state("slow", 0), "starting");
    assert_eq!(replied(&sim, &correlation), None);
    sim.advance(Duration::from_millis(1));
    assert_eq!(signals(&sim), [(pid, libc::SIGTERM)]);
    assert_eq!(error_kind(&sim, &correlation), Some(Kind::StartFailed));
    assert_eq!(sim.state("slow", 0), "backoff");
}

#[test]
fn a_start_the_spawner_does_not_answer_times_out_at_the_request_timeout() {
    let mut sim = Sim::new(&[("app", &service("autostart = false"))]);
    sim.stalled = true;
    let correlation = start(&mut sim, "app");
    sim.advance(Duration::from_millis(29_999));
    assert_eq!(replied(&sim, &correlation), None);
    sim.advance(Duration::from_millis(1));
    assert_eq!(error_kind(&sim, &correlation), Some(Kind::Timeout));
    assert_eq!(sim.state("app", 0), "starting", "the start goes on");
}

#[test]
fn a_service_starts_once_what_it_requires_is_ready_and_stops_before_it() {
    let mut sim = Sim::new(&[
        ("db", &service("autostart = false\nready = { fd = 3 }")),
        ("web", &service("autostart = false\nrequires = [\"db\"]")),
    ]);
    let correlation = start(&mut sim, "web");
    assert_eq!(sim.started(), ["db"], "web waits for db");
    assert_eq!(sim.state("web", 0), "stopped");
    sim.advance(Duration::from_secs(3));
    assert_eq!(sim.started(), ["db"], "web waits for db to be ready");
    let db = sim.pid("db", 0).unwrap();
    sim.ready(db);
    assert_eq!(sim.started(), ["db", "web"]);
    assert_eq!(
        replied(&sim, &correlation),
        None,
        "web has not run its start_grace"
    );
    sim.advance(Duration::from_millis(300));
    assert_eq!(replied(&sim, &correlation), Some(Code::Ack));
    let web = sim.pid("web", 0).unwrap();
    let correlation = stop(&mut sim, "db");
    assert_eq!(
        signals(&sim),
        [(web, libc::SIGTERM), (db, libc::SIGTERM)],
        "web stops first"
    );
    assert_eq!(replied(&sim, &correlation), Some(Code::Ack));
    assert_eq!(
        (sim.state("db", 0), sim.state("web", 0)),
        ("stopped", "stopped")
    );
}

#[test]
fn a_required_service_that_gives_up_fails_the_held_start() {
    let mut sim = Sim::new(&[
        ("db", &service("autostart = false\ngive_up_after = 1")),
        ("web", &service("autostart = false\nrequires = [\"db\"]")),
    ]);
    sim.refuse.push("db".to_owned());
    let correlation = start(&mut sim, "web");
    assert_eq!(error_kind(&sim, &correlation), Some(Kind::StartFailed));
    assert_eq!(sim.started(), ["db"], "web is never started");
}

#[test]
fn when_a_required_service_exits_its_dependents_stop_and_follow_it_back_up() {
    let mut sim = Sim::new(&[
        (
            "db",
            &service("restart = \"always\"\nbackoff_initial = \"1s\""),
        ),
        ("web", &service("requires = [\"db\"]")),
    ]);
    sim.advance(Duration::from_millis(300));
    let (db, web) = (sim.pid("db", 0).unwrap(), sim.pid("web", 0).unwrap());
    sim.exit(db, Some(1), None);
    sim.settle();
    assert_eq!(signals(&sim), [(web, libc::SIGTERM)]);
    assert_eq!(sim.state("db", 0), "backoff");
    assert_eq!(sim.state("web", 0), "stopped");
    sim.skip_to_next_deadline();
    assert_eq!(sim.state("db", 0), "running");
    sim.advance(Duration::from_millis(300));
    assert_eq!(sim.started(), ["db", "web", "db", "web"]);
}

#[test]
fn a_reload_restarts_a_changed_service_stops_a_removed_one_and_starts_a_new_one() {
    let mut sim = Sim::new(&[
        ("kept", &service("")),
        ("changed", &service("")),
        ("gone", &service("")),
    ]);
    let kept = sim.pid("kept", 0).unwrap();
    let changed = sim.pid("changed", 0).unwrap();
    let gone = sim.pid("gone", 0).unwrap();
    sim.write_service(
        "changed",
        "command = [\"/bin/sleep\", \"7\"]\nstdout = \"null\"\n",
    );
    sim.remove_service("gone");
    sim.write_service("new", &service(""));
    sim.reload();
    let mut signalled = signals(&sim);
    signalled.sort();
    assert_eq!(signalled, [(changed, libc::SIGTERM), (gone, libc::SIGTERM)]);
    assert_eq!(
        sim.pid("kept", 0),
        Some(kept),
        "an unchanged service runs on"
    );
    assert!(!sim.manager.registry.contains_key("gone"));
    let commands: Vec<Vec<String>> = sim
        .asked(ms::message::Code::StartProcess)
        .into_iter()
        .skip(3)
        .filter_map(|message| match &message.payload {
            Some(ms::message::Payload::StartProcess(start)) => Some(start.command.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands.contains(&vec!["/bin/sleep".to_owned(), "7".to_owned()]));
    assert_eq!(sim.state("new", 0), "running");
    assert_eq!(sim.state("changed", 0), "running");
}
