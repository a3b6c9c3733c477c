//! The node under abuse (issue 12): each attack against a fresh release
//! node at default limits (log level `info`, the default), while one
//! well-behaved client asks `NodeInfo` in ping-pong. Prints one table:
//! what the attacker did, the node's RSS after the attack and at its peak
//! (`VmHWM`), the log bytes the attack added, and the well-behaved
//! client's p50/p99.
//!
//! ```sh
//! cargo build --release && cargo bench --bench hostile
//! SF_ATTACK_SECS=10 SF_CHURN_SECS=60 cargo bench --bench hostile   # the defaults
//! ```
//!
//! The refused-uid flood needs root (its flood runs as `nobody`, in a
//! child process of this bench); without root that row says so.

mod common;

use std::env;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{BenchNode, Table, ms, proc_status_kib, wait_for};
use snow_fox::wire::proto::public_api::{
    Message, NodeInfoRequest, ServiceStart, TraceRequest, message::Code, message::Payload,
};
use snow_fox::wire::{decode_envelope, encode_frame};

const NOBODY: u32 = 65534;

/// A service that exits at once and is restarted at once, forever.
const FLAPPING: &str = "command = [\"/bin/true\"]\ninstances = 20\nrestart = \"always\"\n\
     backoff_initial = \"10ms\"\nbackoff_max = \"20ms\"\ngive_up_after = 0\n\
     stdout = \"null\"\nstderr = \"null\"\n";

fn seconds(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        env::var(var)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default),
    )
}

fn frame(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(message, &mut out);
    out
}

fn node_info(id: String) -> Message {
    Message {
        code: Code::NodeInfoRequest as i32,
        correlation_id: Some(id),
        payload: Some(Payload::NodeInfoRequest(NodeInfoRequest {
            details: Some(false),
        })),
    }
}

fn start(id: String, service: String) -> Message {
    Message {
        code: Code::ServiceStart as i32,
        correlation_id: Some(id),
        payload: Some(Payload::ServiceStart(ServiceStart {
            service_id: service,
            version: String::new(),
        })),
    }
}

fn read_message(stream: &mut UnixStream) -> Option<Message> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).ok()?;
    decode_envelope(&body).ok()
}

fn connect(socket: &Path) -> Option<UnixStream> {
    let stream = UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    Some(stream)
}

/// Runs `threads` copies of `attack` until `stop`; each returns a count,
/// summed.
fn attackers(
    threads: usize,
    stop: &Arc<AtomicBool>,
    attack: impl Fn(&AtomicBool) -> u64 + Send + Sync + 'static,
) -> thread::JoinHandle<u64> {
    let attack = Arc::new(attack);
    let stop = stop.clone();
    thread::spawn(move || {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (attack, stop) = (attack.clone(), stop.clone());
                thread::spawn(move || attack(&stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .sum()
    })
}

/// One row: runs `attack` (which returns what it did, once `stop` is set)
/// for `duration` beside the well-behaved client.
/// Whether `SF_ATTACKS` (a comma-separated list of words) selects the
/// row `name`: unset, every row runs.
fn selected(name: &str) -> bool {
    env::var("SF_ATTACKS").map_or(true, |wanted| {
        wanted.split(',').any(|word| name.contains(word.trim()))
    })
}

fn scenario(
    table: &mut Table,
    name: &str,
    node: &BenchNode,
    duration: Duration,
    not_counted: Option<&str>,
    attack: impl FnOnce(PathBuf, Arc<AtomicBool>) -> Box<dyn FnOnce() -> String>,
) {
    if !selected(name) {
        return;
    }
    let log_before = node.log_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let finish = attack(node.socket(), stop.clone());
    let well_behaved = {
        let (stop, latencies, failed) = (stop.clone(), latencies.clone(), failed.clone());
        let mut client = node.client();
        client.set_timeout(Some(Duration::from_secs(10))).unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.node_info(false) {
                    Ok(_) => latencies.lock().unwrap().push(started.elapsed()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    while started.elapsed() < duration {
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let did = finish();
    well_behaved.join().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .map_or_else(|| "–".to_owned(), |latency| ms(*latency))
    };
    // Lines the services' own activity causes (starts and exits of a
    // flapping service) are not the attacker's.
    let added = node.log_text().as_bytes()[log_before as usize..].to_vec();
    let logged = String::from_utf8_lossy(&added)
        .lines()
        .filter(|line| not_counted.is_none_or(|filter| !line.contains(filter)))
        .map(|line| line.len() as u64 + 1)
        .sum::<u64>();
    let pid = node.pid();
    table.row(vec![
        name.to_owned(),
        did,
        format!(
            "{:.1} MiB ({:.1} MiB)",
            node.rss_kib() as f64 / 1024.0,
            proc_status_kib(pid, "VmHWM:") as f64 / 1024.0
        ),
        format!("{logged} ({:.0}/s)", logged as f64 / elapsed),
        at(0.5),
        at(0.99),
        format!("{} / {}", latencies.len(), failed.load(Ordering::Relaxed)),
    ]);
}

fn main() {
    if let Ok(socket) = env::var("SF_FLOOD_SOCKET") {
        flood_child(Path::new(&socket));
        return;
    }
    let attack = seconds("SF_ATTACK_SECS", 10);
    let churn = seconds("SF_CHURN_SECS", 60);
    let mut table = Table::new(&[
        "attack",
        "what the attacker did",
        "RSS after (peak)",
        "log bytes (per s)",
        "well-behaved p50",
        "p99",
        "answered / failed",
    ]);

    let node = BenchNode::start_with("bench-quiet", "", &[], "info");
    scenario(
        &mut table,
        "none (baseline)",
        &node,
        attack,
        None,
        |_, _| Box::new(|| "nothing".to_owned()),
    );
    drop(node);

    let node = BenchNode::start_with("bench-long-ids", "", &[], "info");
    scenario(
        &mut table,
        "1 MiB correlation ids",
        &node,
        attack,
        None,
        |socket, stop| {
            let attack = attackers(2, &stop, move |stop| {
                let Some(mut stream) = connect(&socket) else {
                    return 0;
                };
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let request = node_info(format!("{sent}:{}", "x".repeat(1_000_000)));
                    if stream.write_all(&frame(&request)).is_err()
                        || read_message(&mut stream).is_none()
                    {
                        break;
                    }
                    sent += 1;
                }
                sent
            });
            Box::new(move || {
                format!(
                    "{} requests refused (2 connections)",
                    attack.join().unwrap()
                )
            })
        },
    );
    drop(node);

    let node = BenchNode::start_with("bench-log-flood", "", &[], "info");
    scenario(
        &mut table,
        "refused requests and protocol errors",
        &node,
        attack,
        None,
        |socket, stop| {
            let requests = {
                let socket = socket.clone();
                attackers(2, &stop, move |stop| {
                    let Some(mut stream) = connect(&socket) else {
                        return 0;
                    };
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let service = if sent % 2 == 0 {
                            "s".repeat(1_000_000)
                        } else {
                            format!("no-such-{sent}\nWARN forged")
                        };
                        let request = start(format!("r:{sent}"), service);
                        if stream.write_all(&frame(&request)).is_err()
                            || read_message(&mut stream).is_none()
                        {
                            break;
                        }
                        sent += 1;
                    }
                    sent
                })
            };
            let garbage = attackers(1, &stop, move |stop| {
                let mut made = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(mut stream) = connect(&socket) {
                        let _ = stream.write_all(b"\x00\x00\x00\x05\xff\xff\xff\xff\xff");
                        let _ = read_message(&mut stream);
                        made += 1;
                    }
                }
                made
            });
            Box::new(move || {
                format!(
                    "{} refused requests (1 MiB service ids, unknown ids), {} malformed connections",
                    requests.join().unwrap(),
                    garbage.join().unwrap()
                )
            })
        },
    );
    drop(node);

    if snow_fox::sys::effective_uid() == 0 {
        let node = BenchNode::start_with("bench-refused", "allow_users = [\"4242\"]", &[], "info");
        fs::set_permissions(node.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        scenario(
            &mut table,
            "refused-uid connection flood",
            &node,
            attack,
            None,
            |socket, _| {
                let child = Command::new(env::current_exe().unwrap())
                    .env("SF_FLOOD_SOCKET", &socket)
                    .env("SF_FLOOD_SECS", attack.as_secs().to_string())
                    .uid(NOBODY)
                    .gid(NOBODY)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                Box::new(move || {
                    let output = child.wait_with_output().unwrap();
                    format!(
                        "{} connections by uid {NOBODY} (4 threads), all refused",
                        String::from_utf8_lossy(&output.stdout).trim()
                    )
                })
            },
        );
        drop(node);
    } else {
        table.row(vec![
            "refused-uid connection flood".to_owned(),
            "not run: needs root".to_owned(),
        ]);
    }

    let flapping = [("flap".to_owned(), FLAPPING.to_owned())];
    let node = BenchNode::start_with("bench-subscribers", "", &flapping, "info");
    scenario(
        &mut table,
        "500 subscribers that never read, 20 instances flapping",
        &node,
        attack,
        Some("] flap."),
        |socket, stop| {
            let attack = attackers(1, &stop, move |stop| {
                // 500 silent subscribers at all times: each second a new 500,
                // the old ones (dropped by the node, or not yet) let go.
                let mut made = 0;
                while !stop.load(Ordering::Relaxed) {
                    let round_started = Instant::now();
                    let held: Vec<UnixStream> = (0..500)
                        .filter_map(|n| {
                            let mut stream = connect(&socket)?;
                            let subscribe = Message {
                                code: Code::Subscribe as i32,
                                correlation_id: Some(format!("silent:{made}:{n}")),
                                payload: None,
                            };
                            stream.write_all(&frame(&subscribe)).ok()?;
                            Some(stream)
                        })
                        .collect();
                    made += held.len() as u64;
                    while round_started.elapsed() < Duration::from_secs(1)
                        && !stop.load(Ordering::Relaxed)
                    {
                        thread::sleep(Duration::from_millis(20));
                    }
                    drop(held);
                }
                made
            });
            Box::new(move || {
                format!(
                    "{} silent subscriptions, 500 at a time",
                    attack.join().unwrap()
                )
            })
        },
    );
    drop(node);

    let node = BenchNode::start_with("bench-churn", "", &[], "info");
    let mut warm = node.client();
    for _ in 0..12_000 {
        warm.node_info(false).unwrap();
    }
    drop(warm);
    scenario(
        &mut table,
        "churn (tests/hostile.rs's pattern), 200 clients",
        &node,
        churn,
        None,
        |socket, stop| {
            let rounds = Arc::new(AtomicU64::new(0));
            let attack = {
                let rounds = rounds.clone();
                attackers(200, &stop, move |stop| {
                    let mut made = 0;
                    while !stop.load(Ordering::Relaxed) {
                        churn_once(&socket, rounds.fetch_add(1, Ordering::Relaxed));
                        made += 1;
                    }
                    made
                })
            };
            Box::new(move || format!("{} connections", attack.join().unwrap()))
        },
    );
    let pid = node.pid();
    wait_for("the churn's connections to close", || {
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        (fds < 16).then_some(())
    });
    println!(
        "after the churn, its connections closed: RSS {:.2} MB",
        node.rss_kib() as f64 * 1024.0 / 1e6
    );
    drop(node);

    table.print();
}

/// One connection of the churn: the six kinds of `tests/hostile.rs`.
fn churn_once(socket: &Path, round: u64) {
    let Some(mut stream) = connect(socket) else {
        return;
    };
    let id = format!("churn-{round}");
    match round % 6 {
        0 => {
            let _ = stream.write_all(&frame(&node_info(id)));
            let _ = read_message(&mut stream);
        }
        1 => {
            let _ = stream.write_all(b"\x00\x00\x00\x0b\xff\xff\xff garbage");
            let _ = read_message(&mut stream);
        }
        2 => {
            let _ = stream.write_all(&u32::MAX.to_be_bytes());
            let _ = read_message(&mut stream);
        }
        3 => {
            let whole = frame(&node_info(id));
            let _ = stream.write_all(&whole[..whole.len() / 2]);
        }
        4 => {
            let burst: Vec<u8> = (0..10)
                .flat_map(|n| frame(&node_info(format!("{id}-{n}"))))
                .collect();
            let _ = stream.write_all(&burst);
        }
        _ => {
            let trace = Message {
                code: Code::TraceRequest as i32,
                correlation_id: Some(id),
                payload: Some(Payload::TraceRequest(TraceRequest {
                    correlation_id: "churn-0".into(),
                })),
            };
            let _ = stream.write_all(&frame(&trace));
        }
    }
}

/// The refused flood, run as `nobody` in a child process: connects and
/// hangs up from 4 threads for `SF_FLOOD_SECS`, then prints the count.
fn flood_child(socket: &Path) {
    let duration = seconds("SF_FLOOD_SECS", 10);
    let until = Instant::now() + duration;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let socket = socket.to_owned();
            thread::spawn(move || {
                let mut made = 0u64;
                while Instant::now() < until {
                    if UnixStream::connect(&socket).is_ok() {
                        made += 1;
                    }
                }
                made
            })
        })
        .collect();
    let made: u64 = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .sum();
    println!("{made}");
}
