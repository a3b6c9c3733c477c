//! Round trips of `NodeInfoRequest` through a real release node against
//! the hop baseline (see `common::HopServer`) in the same run, both loaded
//! by the library's bench engine from one mio loop.
//!
//! Each scenario alternates node and baseline for [`ROUNDS`] rounds, so
//! that a change in the machine's load hits both alike; the table shows
//! the median round's rate, latency quantiles of all rounds together, and
//! the CPU time each server spent per request (utime + stime of the
//! node's process and of the baseline's two threads), which other load on
//! the machine disturbs less than the rate.
//!
//! `cargo build --release && cargo bench --bench round_trip`

mod common;

use snow_fox::client::bench::{Histogram, RequestKind, format_ns};

use common::{BenchNode, HopServer, Table, load, ratio};

/// (what, connections, requests in flight on each, the target).
const SCENARIOS: [(&str, usize, usize, &str); 5] = [
    ("1 client ping-pong", 1, 1, ">= 1.00x"),
    ("1 client, 64 in flight", 1, 64, ">= 1.30x"),
    ("8 clients ping-pong", 8, 1, "-"),
    ("64 clients ping-pong", 64, 1, ">= 1.00x, p99 <= 1.5x"),
    ("256 clients ping-pong", 256, 1, "-"),
];

/// Alternating runs per scenario and server.
const ROUNDS: usize = 3;

/// Microseconds of CPU per clock tick.
const MICROS_PER_TICK: f64 = 10_000.0;

/// What one server did over the rounds of a scenario.
#[derive(Default)]
struct Tally {
    rates: Vec<f64>,
    latency: Histogram,
    requests: u64,
    ticks: u64,
}

impl Tally {
    fn add(
        &mut self,
        socket: &std::path::Path,
        clients: usize,
        inflight: usize,
        cpu: impl Fn() -> u64,
    ) {
        let before = cpu();
        let report = load(socket, clients, inflight, RequestKind::NodeInfo);
        self.ticks += cpu() - before;
        self.requests += report.sent;
        self.rates.push(report.requests_per_second());
        self.latency.merge(&report.latency);
    }

    fn median_rate(&mut self) -> f64 {
        self.rates.sort_by(f64::total_cmp);
        self.rates[self.rates.len() / 2]
    }

    fn cpu_micros_per_request(&self) -> f64 {
        self.ticks as f64 * MICROS_PER_TICK / self.requests.max(1) as f64
    }
}

fn main() {
    let node = BenchNode::start("round-trip", &[]);
    let hop = HopServer::start();
    let mut table = Table::new(&[
        "scenario",
        "node req/s",
        "hop req/s",
        "node/hop",
        "target",
        "node p50",
        "hop p50",
        "node p99",
        "hop p99",
        "p99 node/hop",
        "CPU µs/req node",
        "CPU µs/req hop",
    ]);
    for (what, clients, inflight, target) in SCENARIOS {
        let mut on_node = Tally::default();
        let mut on_hop = Tally::default();
        for _ in 0..ROUNDS {
            on_node.add(&node.socket(), clients, inflight, || node.cpu_ticks());
            on_hop.add(&hop.socket(), clients, inflight, || hop.cpu_ticks());
        }
        let (node_rate, hop_rate) = (on_node.median_rate(), on_hop.median_rate());
        let (node_p99, hop_p99) = (
            on_node.latency.quantile(0.99),
            on_hop.latency.quantile(0.99),
        );
        table.row(vec![
            what.to_owned(),
            format!("{node_rate:.0}"),
            format!("{hop_rate:.0}"),
            ratio(node_rate, hop_rate),
            target.to_owned(),
            format_ns(on_node.latency.quantile(0.5)),
            format_ns(on_hop.latency.quantile(0.5)),
            format_ns(node_p99),
            format_ns(hop_p99),
            ratio(node_p99 as f64, hop_p99 as f64),
            format!("{:.1}", on_node.cpu_micros_per_request()),
            format!("{:.1}", on_hop.cpu_micros_per_request()),
        ]);
    }
    println!(
        "round_trip: NodeInfoRequest; per cell {ROUNDS} alternating rounds of {} ms warm-up + {} s measured; req/s = median round",
        common::WARMUP.as_millis(),
        common::RUN.as_secs(),
    );
    table.print();
}
