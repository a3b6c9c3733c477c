//! Log throughput: how many lines and bytes one service pushes through
//! capture (pipe, log keeper, timestamps, rotation) to disk, and the CPU
//! the keeper and the node spend per MB, against `cat` writing the same
//! data to a file directly in the same run; once with no rate limit
//! (`log_max_rate = 0`) and once at the default `log_max_rate`.
//!
//! `cargo build --release && cargo bench --bench capture`

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::scratch::stat_cpu_ticks;
use common::scratch::stream_bytes;
use common::{BenchNode, Table, TempDir, ratio, wait_for};

/// Lines of the data file, each [`LINE`] bytes with its newline.
const LINES: u64 = 500_000;
const LINE: u64 = 100;

/// Clock ticks per second in /proc (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

fn main() {
    let scratch = TempDir::new("bench-capture");
    let data = scratch.0.join("data");
    write_data(&data);
    let megabytes = (LINES * LINE) as f64 / 1e6;

    // The baseline: cat to a file, the same bytes.
    let began = Instant::now();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "cat {} > {}",
            data.display(),
            scratch.0.join("copy").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let cat = began.elapsed().as_secs_f64();

    let service = |rate: &str| {
        format!(
            "command = [\"/bin/cat\", \"{}\"]\nautostart = false\nrestart = \"never\"\n\
             log_max_bytes = 16777216\nlog_keep = 10\nstderr = \"null\"\n{rate}",
            data.display()
        )
    };
    let node = BenchNode::start(
        "capture",
        &[
            ("unlimited".to_owned(), service("log_max_rate = 0\n")),
            ("limited".to_owned(), service("")),
        ],
    );
    let unlimited = capture(&node, "unlimited");
    let limited = capture(&node, "limited");

    let mut table = Table::new(&[
        "what",
        "capture, log_max_rate = 0",
        "capture, default log_max_rate",
        "cat > file",
        "ratio (no limit / cat)",
    ]);
    table.row(vec![
        format!("{LINES} lines of {LINE} B ({megabytes:.0} MB), wall time"),
        format!("{:.2} s", unlimited.seconds),
        format!("{:.2} s", limited.seconds),
        format!("{cat:.2} s"),
        ratio(unlimited.seconds, cat),
    ]);
    table.row(vec![
        "lines per second".to_owned(),
        format!("{:.0}", LINES as f64 / unlimited.seconds),
        format!("{:.0}", LINES as f64 / limited.seconds),
        format!("{:.0}", LINES as f64 / cat),
        ratio(cat, unlimited.seconds),
    ]);
    table.row(vec![
        "MB per second (the service's bytes)".to_owned(),
        format!("{:.1}", megabytes / unlimited.seconds),
        format!("{:.1}", megabytes / limited.seconds),
        format!("{:.1}", megabytes / cat),
        ratio(cat, unlimited.seconds),
    ]);
    let per_mb = |ticks: u64| {
        format!(
            "{:.2} ms",
            ticks as f64 / TICKS_PER_SECOND * 1e3 / megabytes
        )
    };
    table.row(vec![
        "log keeper CPU per MB".to_owned(),
        per_mb(unlimited.keeper_ticks),
        per_mb(limited.keeper_ticks),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    table.row(vec![
        "node CPU per MB (all its threads)".to_owned(),
        per_mb(unlimited.node_ticks),
        per_mb(limited.node_ticks),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    table.print();
}

/// What capturing the data file through one service cost.
struct Captured {
    seconds: f64,
    keeper_ticks: u64,
    node_ticks: u64,
}

/// Starts `service` (which writes the data file once) and waits until
/// every line is on disk.
fn capture(node: &BenchNode, service: &str) -> Captured {
    let log = node_log_dir(node).join(format!("{service}.0.stdout.log"));
    let node_before = node.cpu_ticks();
    let began = Instant::now();
    node.client().start(service).unwrap();
    let keeper = wait_for("the log keeper", || keeper_of(node.pid()));
    let keeper_stat = format!("/proc/{keeper}/stat");
    let keeper_before = stat_cpu_ticks(Path::new(&keeper_stat));
    // Each line gains a 28-byte timestamp on disk.
    let expected = LINES * (LINE + 28);
    wait_for("every line on disk", || {
        (stream_bytes(&log) >= expected).then_some(())
    });
    Captured {
        seconds: began.elapsed().as_secs_f64(),
        keeper_ticks: stat_cpu_ticks(Path::new(&keeper_stat)) - keeper_before,
        node_ticks: node.cpu_ticks() - node_before,
    }
}

fn write_data(path: &Path) {
    let mut file = std::io::BufWriter::new(fs::File::create(path).unwrap());
    for index in 0..LINES {
        let head = format!("line {index:>10} ");
        let pad = "x".repeat((LINE as usize) - head.len() - 1);
        writeln!(file, "{head}{pad}").unwrap();
    }
}

/// The log dir of the bench node (its temp dir's `log`).
fn node_log_dir(node: &BenchNode) -> std::path::PathBuf {
    node.socket().parent().unwrap().join("log")
}

/// The pid of the log keeper the node started.
fn keeper_of(node: u32) -> Option<u32> {
    fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
            let parent: u32 = stat[stat.rfind(')')? + 2..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (comm == "sf-log-keeper" && parent == node).then_some(pid)
        })
}
