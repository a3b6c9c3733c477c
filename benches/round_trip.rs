//! Round trips of `NodeInfoRequest` through a real release node against
//! the hop baseline (see `common::HopServer`) in the same run, both loaded
//! by the library's bench engine from one mio loop.
//!
//! `cargo build --release && cargo bench --bench round_trip`

mod common;

use snow_fox::client::bench::{RequestKind, format_ns};

use common::{BenchNode, HopServer, Table, load, ratio};

/// (what, connections, requests in flight on each, the target).
const SCENARIOS: [(&str, usize, usize, &str); 5] = [
    ("1 client ping-pong", 1, 1, ">= 1.00x"),
    ("1 client, 64 in flight", 1, 64, ">= 1.30x"),
    ("8 clients ping-pong", 8, 1, "-"),
    ("64 clients ping-pong", 64, 1, ">= 1.00x, p99 <= 1.5x"),
    ("256 clients ping-pong", 256, 1, "-"),
];

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
    ]);
    for (what, clients, inflight, target) in SCENARIOS {
        let on_node = load(&node.socket(), clients, inflight, RequestKind::NodeInfo);
        let on_hop = load(&hop.socket(), clients, inflight, RequestKind::NodeInfo);
        let (node_p99, hop_p99) = (
            on_node.latency.quantile(0.99),
            on_hop.latency.quantile(0.99),
        );
        table.row(vec![
            what.to_owned(),
            format!("{:.0}", on_node.requests_per_second()),
            format!("{:.0}", on_hop.requests_per_second()),
            ratio(on_node.requests_per_second(), on_hop.requests_per_second()),
            target.to_owned(),
            format_ns(on_node.latency.quantile(0.5)),
            format_ns(on_hop.latency.quantile(0.5)),
            format_ns(node_p99),
            format_ns(hop_p99),
            ratio(node_p99 as f64, hop_p99 as f64),
        ]);
    }
    println!(
        "round_trip: NodeInfoRequest, {} s measured after {} ms warm-up per cell",
        common::RUN.as_secs(),
        common::WARMUP.as_millis()
    );
    table.print();
}
