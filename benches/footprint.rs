//! The node's footprint: resident memory idle, with 100 services and with
//! 256 idle connections; CPU used over 10 s of idleness; the size of the
//! release binary, stripped.
//!
//! `cargo build --release && cargo bench --bench footprint`

mod common;

use std::fs;
use std::process::Command;
use std::thread;
use std::time::Duration;

use snow_fox::client::Client;

use common::{BenchNode, Table, TempDir, node_binary, sleep_services, wait_for};

/// How long idle CPU is measured.
const IDLE: Duration = Duration::from_secs(10);

/// Linux reports utime and stime in units of USER_HZ, 100 a second.
const TICKS_PER_SECOND: f64 = 100.0;

fn main() {
    let mut table = Table::new(&["what", "snow-fox", "target"]);
    binary_rows(&mut table);

    let node = BenchNode::start("footprint-idle", &[]);
    node.client().node_info(false).unwrap();
    table.row(vec![
        "RSS idle, no services".to_owned(),
        kib(node.rss_kib()),
        "<= 4 MB".to_owned(),
    ]);
    let before = node.cpu_ticks();
    thread::sleep(IDLE);
    let ticks = node.cpu_ticks() - before;
    table.row(vec![
        format!("CPU idle over {} s (utime+stime)", IDLE.as_secs()),
        format!(
            "{ticks} ticks = {:.2} %",
            ticks as f64 / TICKS_PER_SECOND / IDLE.as_secs_f64() * 100.0
        ),
        "< 0.1 % (1 tick = 0.1 %)".to_owned(),
    ]);
    let clients: Vec<Client> = (0..256)
        .map(|_| {
            let mut client = node.client();
            client.introduce().unwrap();
            client
        })
        .collect();
    table.row(vec![
        "RSS with 256 idle connections".to_owned(),
        kib(node.rss_kib()),
        "-".to_owned(),
    ]);
    drop(clients);
    drop(node);

    let node = BenchNode::start("footprint-100", &sleep_services(100, true));
    let mut client = node.client();
    wait_for("100 services running", || {
        let status = client.status(None).unwrap();
        status
            .services
            .iter()
            .flat_map(|service| &service.instances)
            .all(|instance| instance.state == "running")
            .then_some(())
    });
    table.row(vec![
        "RSS with 100 services running".to_owned(),
        kib(node.rss_kib()),
        "<= 6 MB".to_owned(),
    ]);
    table.row(vec![
        "peak RSS (VmHWM) after starting 100".to_owned(),
        kib(common::proc_status_kib(node.pid(), "VmHWM:")),
        "-".to_owned(),
    ]);
    drop(client);
    drop(node);

    println!("footprint: release node, RUST_LOG=warn; RSS = VmRSS of /proc/<pid>/status");
    table.print();
}

fn kib(kib: u64) -> String {
    format!("{:.2} MB ({kib} KiB)", kib as f64 / 1024.0)
}

fn binary_rows(table: &mut Table) {
    let binary = node_binary();
    let size = fs::metadata(&binary).unwrap().len();
    table.row(vec![
        "release binary, unstripped".to_owned(),
        bytes(size),
        "-".to_owned(),
    ]);
    let dir = TempDir::new("footprint-strip");
    let copy = dir.0.join("snow-fox");
    fs::copy(&binary, &copy).unwrap();
    let stripped = Command::new("strip")
        .arg(&copy)
        .status()
        .is_ok_and(|status| status.success());
    table.row(vec![
        if stripped {
            "release binary, stripped (strip on a copy)".to_owned()
        } else {
            "release binary: strip unavailable, unstripped size".to_owned()
        },
        bytes(fs::metadata(&copy).unwrap().len()),
        "<= 3 MB".to_owned(),
    ]);
}

fn bytes(count: u64) -> String {
    format!("{:.2} MB ({count} B)", count as f64 / (1024.0 * 1024.0))
}
