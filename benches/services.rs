//! Service work through a real release node, each against a baseline of
//! the same run:
//! - start 100, 1,000 and 10,000 `/bin/sleep 3600` services until a
//!   subscriber saw each running, against spawning the same processes with
//!   `std::process::Command` (then killed), and the cost per service of
//!   each (the curve);
//! - status of all 100 services and of one, from one client, ping-pong;
//!   the one-service figure against the hop baseline's ping-pong;
//! - restart after `kill -9` of a service that ran stably, timed by the
//!   `Event` that reports it running with a new pid;
//! - stop of all 100 until all are reported stopped.
//!
//! `cargo build --release && cargo bench --bench services` (10,000 services
//! need more open files than the usual 1,024: `ulimit -n 20000` or more
//! first).

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use snow_fox::client::Client;
use snow_fox::client::bench::{RequestKind, format_ns};
use snow_fox::sys;
use snow_fox::wire::proto::public_api::message::{Code, Payload};
use snow_fox::wire::proto::public_api::{ServiceStart, ServiceStatusResponse, ServiceStop};

use common::{
    BenchNode, DEADLINE, HopServer, Table, load, median, ms, pipelined, pipelined_at_most, ratio,
    sleep_services, wait_for,
};

/// Restarts timed after `kill -9`.
const KILLS: usize = 5;

fn main() {
    let mut table = Table::new(&["what", "snow-fox", "baseline", "ratio", "target"]);
    let mut curve = Vec::new();
    // SERVICES_CURVE=2000,4000: only the start rows, for those counts (to
    // profile the start path).
    let counts: Option<Vec<usize>> = std::env::var("SERVICES_CURVE").ok().map(|counts| {
        counts
            .split(',')
            .map(|count| count.parse().unwrap())
            .collect()
    });

    if counts.is_none() {
        let node = BenchNode::start("services-100", &sleep_services(100, false));
        curve.push(start_row(&mut table, &node, 100, "<= 2x"));
        status_rows(&mut table, &node);
        restart_row(&mut table, &node);
        stop_row(&mut table, &node, 100);
        drop(node);
    }

    for count in counts.unwrap_or(vec![1000, 10_000]) {
        // Starts pipelined by the thousand outlast the default 30 s
        // request timeout.
        let node = BenchNode::start_with(
            &format!("services-{count}"),
            "request_timeout = \"10m\"",
            &sleep_services(count, false),
            "warn",
        );
        let target = if count == 1000 {
            "<= 2x"
        } else {
            "per service flat"
        };
        curve.push(start_row(&mut table, &node, count, target));
        stop_row(&mut table, &node, count);
        drop(node);
    }

    println!("services: /bin/sleep 3600 services (stdout/stderr null), one client");
    table.print();
    let per_service = |(count, took): &(usize, Duration)| took.as_secs_f64() * 1e6 / *count as f64;
    let points: Vec<String> = curve
        .iter()
        .map(|point| format!("{} services {:.0} us", point.0, per_service(point)))
        .collect();
    println!(
        "start cost per service until all running: {} ({:.2}x from the first to the last)",
        points.join(", "),
        per_service(&curve[curve.len() - 1]) / per_service(&curve[0])
    );
}

/// Every service id of a node's `sleep_services`.
fn ids(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("s{index:04}")).collect()
}

fn all_in_state(status: &ServiceStatusResponse, state: &str) -> bool {
    status
        .services
        .iter()
        .flat_map(|service| &service.instances)
        .all(|instance| instance.state == state)
}

/// Starts every service with one `ServiceStart` each, pipelined on one
/// connection, timed until a subscriber has seen each of them `running`
/// (then status confirms it); the baseline spawns as many sleeps directly.
/// Returns the count and the time until all ran.
fn start_row(table: &mut Table, node: &BenchNode, count: usize, target: &str) -> (usize, Duration) {
    let direct = spawn_directly(count);
    let mut watcher = node.client();
    watcher.set_timeout(Some(DEADLINE)).unwrap();
    watcher.subscribe().unwrap();
    let mut client = node.client();
    client.set_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    let sender = thread::spawn(move || {
        let starts = ids(count).into_iter().map(|service_id| {
            (
                Code::ServiceStart,
                Payload::ServiceStart(ServiceStart {
                    service_id,
                    version: String::new(),
                }),
            )
        });
        // Each start is answered once its service ran its start_grace.
        let acked = pipelined(&mut client, starts);
        (client, acked)
    });
    let mut running = HashSet::new();
    while running.len() < count {
        let event = watcher.next_event().unwrap();
        if event.state == "running" {
            running.insert(event.service_id);
        }
    }
    let up = started.elapsed();
    let (mut client, acked) = sender.join().unwrap();
    assert!(all_in_state(&client.status(None).unwrap(), "running"));
    // Said at once too: a later row may take long.
    eprintln!(
        "start {count}: all running after {} ({:.0} us a service), direct {}, last Ack {}",
        ms(up),
        up.as_secs_f64() * 1e6 / count as f64,
        ms(direct),
        ms(acked)
    );
    table.row(vec![
        format!(
            "start {count} services until all running (last Ack at {})",
            ms(acked)
        ),
        ms(up),
        format!("{} (Command::spawn)", ms(direct)),
        ratio(up.as_secs_f64(), direct.as_secs_f64()),
        target.to_owned(),
    ]);
    (count, up)
}

/// Spawns `count` sleeps with `std::process::Command`, timing the spawns,
/// then kills and reaps them.
fn spawn_directly(count: usize) -> Duration {
    let started = Instant::now();
    let mut children: Vec<Child> = (0..count)
        .map(|_| {
            Command::new("/bin/sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let took = started.elapsed();
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    took
}

fn status_rows(table: &mut Table, node: &BenchNode) {
    let all = load(&node.socket(), 1, 1, RequestKind::Status { service: None });
    table.row(vec![
        "status of all 100, median latency".to_owned(),
        format_ns(all.latency.quantile(0.5)),
        "-".to_owned(),
        "-".to_owned(),
        "< 0.1 ms".to_owned(),
    ]);
    table.row(vec![
        "status of all 100, queries/s (1 client)".to_owned(),
        format!("{:.0}", all.requests_per_second()),
        "-".to_owned(),
        "-".to_owned(),
        "> 10,000/s".to_owned(),
    ]);
    let one = load(
        &node.socket(),
        1,
        1,
        RequestKind::Status {
            service: Some("s0000".to_owned()),
        },
    );
    let hop = HopServer::start();
    let floor = load(&hop.socket(), 1, 1, RequestKind::NodeInfo);
    table.row(vec![
        "status of one service, queries/s (median)".to_owned(),
        format!(
            "{:.0} ({})",
            one.requests_per_second(),
            format_ns(one.latency.quantile(0.5))
        ),
        format!(
            "{:.0} ({}) (hop ping-pong)",
            floor.requests_per_second(),
            format_ns(floor.latency.quantile(0.5))
        ),
        ratio(one.requests_per_second(), floor.requests_per_second()),
        ">= 0.50x".to_owned(),
    ]);
}

fn pid_of(client: &mut Client, service: &str) -> Option<u32> {
    let status = client.status(Some(service)).unwrap();
    let instance = &status.services[0].instances[0];
    (instance.state == "running")
        .then_some(instance.pid)
        .flatten()
}

fn restart_row(table: &mut Table, node: &BenchNode) {
    let mut client = node.client();
    let mut watcher = node.client();
    watcher.subscribe().unwrap();
    let mut times = Vec::new();
    for _ in 0..KILLS {
        let old = wait_for("s0000 running", || pid_of(&mut client, "s0000"));
        // The service must count as stable (stable_after = 1s), or the
        // restart waits out a back-off: that is the case measured.
        thread::sleep(Duration::from_millis(1100));
        let killed = Instant::now();
        sys::kill(old as i32, libc::SIGKILL).unwrap();
        loop {
            let event = watcher.next_event().unwrap();
            if event.service_id == "s0000"
                && event.state == "running"
                && event.pid.is_some_and(|pid| pid != old)
            {
                times.push(killed.elapsed());
                break;
            }
        }
    }
    let worst = times.iter().max().copied().unwrap_or_default();
    table.row(vec![
        format!(
            "restart after kill -9 of a stable service, median of {KILLS} (max {})",
            ms(worst)
        ),
        ms(median(times)),
        "-".to_owned(),
        "-".to_owned(),
        "<= 10 ms".to_owned(),
    ]);
}

fn stop_row(table: &mut Table, node: &BenchNode, count: usize) {
    let mut client = node.client();
    // Thousands of pipelined stops fill the socket while the node works.
    client.set_timeout(None).unwrap();
    let stops: Vec<_> = ids(count)
        .into_iter()
        .map(|service_id| {
            (
                Code::ServiceStop,
                Payload::ServiceStop(ServiceStop { service_id }),
            )
        })
        .collect();
    // Stopped services are answered within milliseconds: at most 1,000
    // unanswered (all of them at 100 and 1,000) keeps 10,000 from filling
    // the connection (see `pipelined_at_most`).
    let took = pipelined_at_most(&mut client, stops, 1000);
    assert!(all_in_state(&client.status(None).unwrap(), "stopped"));
    table.row(vec![
        format!("stop all {count} until all stopped (last Ack)"),
        ms(took),
        "-".to_owned(),
        "-".to_owned(),
        if count == 100 { "<= 30 ms" } else { "-" }.to_owned(),
    ]);
}
