//! The idle node: CPU time, wake-ups (voluntary context switches) and
//! threads over 10 s of idleness, with no services, with 100 and 1,000
//! `sleep` services, with 100 waiting on their readiness fd and with 100
//! adopted after a crash of the node; in thread mode and, as root, in
//! process mode (node and spawner process counted together). Each figure
//! is the median of three 10 s windows on one node.
//!
//! `cargo build --release && cargo bench --bench idle`; another build
//! (an older commit's) with `SF_NODE_BIN=path/to/snow-fox`.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::thread;
use std::time::Duration;

use common::{BenchNode, Table, sleep_service, wait_for};

/// One measuring window.
const WINDOW: Duration = Duration::from_secs(10);
/// Windows per case; the median is reported.
const WINDOWS: usize = 3;
/// Time for a node to settle after its services are up.
const SETTLE: Duration = Duration::from_secs(2);

/// What the processes of a node used so far.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    /// CPU time of every thread, nanoseconds (`/proc/<pid>/task/*/schedstat`).
    cpu_ns: u64,
    /// Voluntary context switches of every thread: its wake-ups.
    wakeups: u64,
    threads: usize,
}

/// A case: its name, its services, node.toml lines, and whether the node
/// is crashed and restarted before measuring (so that it adopts them).
struct Case {
    name: String,
    services: Vec<(String, String)>,
    node_lines: &'static str,
    adopt: bool,
}

fn main() {
    // /proc/self belongs to the process's effective user.
    let root = fs::metadata("/proc/self").is_ok_and(|proc| proc.uid() == 0);
    let mut table = Table::new(&[
        "mode",
        "case",
        "threads",
        "CPU per 10 s (median)",
        "wake-ups per 10 s (median)",
        "target",
    ]);
    let modes: &[(&str, &str)] = if root {
        &[("thread", ""), ("process", "user = \"nobody\"")]
    } else {
        &[("thread", "")]
    };
    for &(mode, node_lines) in modes {
        for case in cases(node_lines) {
            let (usage, cpu, wakeups) = measure(&case);
            table.row(vec![
                mode.to_owned(),
                case.name.clone(),
                usage.threads.to_string(),
                format!("{:.3} ms", cpu as f64 / 1e6),
                wakeups.to_string(),
                if case.services.is_empty() {
                    "0 ms".to_owned()
                } else {
                    "≤ 1 ms".to_owned()
                },
            ]);
        }
    }
    println!(
        "idle: release node {}, RUST_LOG=warn; {WINDOWS} windows of {} s after {} s to settle",
        common::node_binary().display(),
        WINDOW.as_secs(),
        SETTLE.as_secs()
    );
    if !root {
        println!("(not root: process mode skipped)");
    }
    table.print();
}

fn cases(node_lines: &'static str) -> Vec<Case> {
    let sleepers = |count: usize, extra: &str| -> Vec<(String, String)> {
        (0..count)
            .map(|index| {
                (
                    format!("s{index:04}"),
                    format!("{}{extra}", sleep_service(true)),
                )
            })
            .collect()
    };
    vec![
        Case {
            name: "no services".to_owned(),
            services: Vec::new(),
            node_lines,
            adopt: false,
        },
        Case {
            name: "100 running".to_owned(),
            services: sleepers(100, ""),
            node_lines,
            adopt: false,
        },
        Case {
            name: "1,000 running".to_owned(),
            services: sleepers(1000, ""),
            node_lines,
            adopt: false,
        },
        Case {
            name: "100 waiting on their readiness fd".to_owned(),
            services: sleepers(100, "ready = { fd = 3, timeout = \"1h\" }\n"),
            node_lines,
            adopt: false,
        },
        Case {
            name: "100 adopted after a crash of the node".to_owned(),
            services: sleepers(100, "on_node_exit = \"keep\"\n"),
            node_lines,
            adopt: true,
        },
    ]
}

/// Starts a node for `case`, waits until its services are where they
/// settle, and returns its usage at the end with the median CPU and
/// wake-ups of the windows.
fn measure(case: &Case) -> (Usage, u64, u64) {
    let mut node = BenchNode::start_with("idle", case.node_lines, &case.services, "warn");
    let settled = if case.name.contains("readiness") {
        "starting"
    } else {
        "running"
    };
    await_all(&node, settled, case.services.len());
    if case.adopt {
        node.crash_and_restart("warn");
        await_all(&node, settled, case.services.len());
    }
    thread::sleep(SETTLE);
    let mut cpu = Vec::new();
    let mut wakeups = Vec::new();
    let mut last = Usage::default();
    for _ in 0..WINDOWS {
        let before = usage(node.pid());
        thread::sleep(WINDOW);
        last = usage(node.pid());
        cpu.push(last.cpu_ns - before.cpu_ns);
        wakeups.push(last.wakeups - before.wakeups);
    }
    (last, median(cpu), median(wakeups))
}

/// Waits until `count` instances are in `state`, each with a pid.
fn await_all(node: &BenchNode, state: &str, count: usize) {
    wait_for(&format!("{count} instances {state}"), || {
        let mut client = node.client();
        let status = client.status(None).ok()?;
        let instances: Vec<_> = status
            .services
            .iter()
            .flat_map(|service| &service.instances)
            .collect();
        (instances.len() == count
            && instances
                .iter()
                .all(|instance| instance.state == state && instance.pid.is_some()))
        .then_some(())
    });
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// The usage of node `pid` and of its spawner process, if it has one.
fn usage(pid: u32) -> Usage {
    let mut total = Usage::default();
    for process in std::iter::once(pid).chain(spawner_process(pid)) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{process}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let cpu = fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            let status = fs::read_to_string(path.join("status")).unwrap_or_default();
            total.cpu_ns += cpu
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or_default();
            total.wakeups += status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|count| count.trim().parse::<u64>().ok())
                .unwrap_or_default();
            total.threads += 1;
        }
    }
    total
}

/// The node's child named `sf-spawner`: its spawner process.
fn spawner_process(pid: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|child| child.parse::<u32>().ok())
        .find(|child| {
            fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|comm| comm.trim() == "sf-spawner")
        })
}
