//! What containment and metrics cost, each against the same node without
//! them in the same run:
//! - start 100 `/bin/sleep 3600` services until all run, with a cgroup
//!   each (the default) vs on a node without cgroups (`cgroup_fs` pointed
//!   at a directory that is none), 3 alternating rounds, median;
//! - status of all 100, ping-pong, with `metrics` (every running
//!   instance's cgroup read) vs without;
//! - the node's CPU over 10 s idle with the 100 running, both nodes.
//!
//! Needs root for the cgroups. `cargo build --release && cargo bench --bench resources`

mod common;

use std::thread;
use std::time::{Duration, Instant};

use snow_fox::client::Client;
use snow_fox::client::bench::format_ns;
use snow_fox::wire::proto::public_api::message::{Code, Payload};
use snow_fox::wire::proto::public_api::{ServiceStart, ServiceStop};

use common::{BenchNode, Table, median, ms, pipelined, ratio, sleep_services};

const SERVICES: usize = 100;
const ROUNDS: usize = 3;
const STATUS_QUERIES: usize = 2000;
const IDLE: Duration = Duration::from_secs(10);

fn main() {
    let services = sleep_services(SERVICES, false);
    let with = BenchNode::start_with("res-cgroups", "", &services, "warn");
    let without = BenchNode::start_with(
        "res-plain",
        "cgroup_fs = \"/nonexistent\"",
        &services,
        "warn",
    );
    let mut table = Table::new(&["what", "with", "without", "ratio", "per start"]);

    let (mut with_times, mut without_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        with_times.push(start_all(&with));
        stop_all(&with);
        without_times.push(start_all(&without));
        stop_all(&without);
    }
    let (a, b) = (median(with_times), median(without_times));
    table.row(vec![
        format!("start {SERVICES} until all running (median of {ROUNDS}), cgroup each vs none"),
        ms(a),
        ms(b),
        ratio(a.as_secs_f64(), b.as_secs_f64()),
        format!(
            "{} more",
            format_ns(a.saturating_sub(b).as_nanos() as u64 / SERVICES as u64)
        ),
    ]);

    start_all(&with);
    start_all(&without);
    let mut client = with.client();
    let plain = ping_pong(&mut client, false);
    let measured = ping_pong(&mut client, true);
    table.row(vec![
        format!("status of all {SERVICES}, median latency, with metrics vs without"),
        format_ns(measured.as_nanos() as u64),
        format_ns(plain.as_nanos() as u64),
        ratio(measured.as_secs_f64(), plain.as_secs_f64()),
        "-".to_owned(),
    ]);
    drop(client);

    let idle = |node: &BenchNode| {
        let before = node.cpu_ticks();
        thread::sleep(IDLE);
        node.cpu_ticks() - before
    };
    let (idle_with, idle_without) = (idle(&with), idle(&without));
    table.row(vec![
        format!("node CPU idle over {IDLE:?} with {SERVICES} running (ticks of 10 ms)"),
        idle_with.to_string(),
        idle_without.to_string(),
        "-".to_owned(),
        "target: unchanged".to_owned(),
    ]);
    println!("resources: /bin/sleep 3600 services (stdout/stderr null), one client");
    table.print();
}

fn ids() -> impl Iterator<Item = String> {
    (0..SERVICES).map(|index| format!("s{index:04}"))
}

/// Starts every service, pipelined, until the last is answered (each
/// start is answered once its service runs).
fn start_all(node: &BenchNode) -> Duration {
    let requests = ids().map(|service_id| {
        (
            Code::ServiceStart,
            Payload::ServiceStart(ServiceStart {
                service_id,
                version: String::new(),
            }),
        )
    });
    pipelined(&mut node.client(), requests)
}

fn stop_all(node: &BenchNode) {
    let requests = ids().map(|service_id| {
        (
            Code::ServiceStop,
            Payload::ServiceStop(ServiceStop { service_id }),
        )
    });
    pipelined(&mut node.client(), requests);
}

/// The median latency of `STATUS_QUERIES` ping-pong status queries of
/// every service.
fn ping_pong(client: &mut Client, metrics: bool) -> Duration {
    let mut times = Vec::with_capacity(STATUS_QUERIES);
    for _ in 0..STATUS_QUERIES {
        let started = Instant::now();
        let status = if metrics {
            client.status_with_metrics(None).unwrap()
        } else {
            client.status(None).unwrap()
        };
        times.push(started.elapsed());
        assert_eq!(status.metrics.len(), if metrics { SERVICES } else { 0 });
    }
    median(times)
}
