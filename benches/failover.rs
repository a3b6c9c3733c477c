//! Failover: three release nodes and a real etcd on loopback. For each
//! `lease_ttl` (10s, then 2s): the time from `kill -9` of a node to its
//! instance reported running on another node (`cluster status` through a
//! surviving node, polled every 20 ms), median of 5; then the idle cost of
//! cluster mode: etcd requests per minute per node (from etcd's own gRPC
//! counters over 60 s) and each node's CPU over 10 s idle.
//!
//! `cargo build --release && cargo bench --bench failover`

#[path = "../tests/common/etcd.rs"]
#[allow(dead_code)]
mod etcd;
#[path = "../tests/common/scratch.rs"]
#[allow(
    dead_code,
    reason = "shared with the tests; this bench uses part of it"
)]
mod scratch;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use etcd::Etcd;
use scratch::{TempDir, poll_until};

use snow_fox::client::Client;
use snow_fox::wire::proto::public_api::ClusterStatus;

const RUNS: usize = 5;
const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);
const IDLE_REQUESTS: Duration = Duration::from_secs(60);
const IDLE_CPU: Duration = Duration::from_secs(10);

struct Member {
    name: String,
    dir: TempDir,
    child: Option<Child>,
}

impl Member {
    fn new(name: &str, etcd: &str, ttl: &str) -> Member {
        let dir = TempDir::new(&format!("failover-{name}"));
        fs::create_dir_all(dir.0.join("conf")).unwrap();
        let toml = format!(
            "name = \"{name}\"\nsocket = \"{root}/sf.sock\"\nstate_dir = \"{root}/state\"\n\
             log_dir = \"{root}/log\"\n[cluster]\netcd = [\"{etcd}\"]\nlease_ttl = \"{ttl}\"\n",
            root = dir.0.display()
        );
        fs::write(dir.0.join("conf/node.toml"), toml).unwrap();
        let mut member = Member {
            name: name.to_owned(),
            dir,
            child: None,
        };
        member.start();
        member
    }

    fn socket(&self) -> PathBuf {
        self.dir.0.join("sf.sock")
    }

    fn start(&mut self) {
        let log = fs::File::create(self.dir.0.join("node.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_snow-fox"))
            .arg("--conf")
            .arg(self.dir.0.join("conf"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        poll_until("the node's cluster to be green", DEADLINE, POLL, || {
            let mut client = Client::connect(&self.socket()).ok()?;
            let info = client.node_info(true).ok()?;
            let cluster = info.details.iter().find(|s| s.name == "cluster")?;
            (cluster.status.colour == 0).then_some(())
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn status(&self) -> Option<ClusterStatus> {
        Client::connect(&self.socket()).ok()?.cluster_status().ok()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut client) = Client::connect(&self.socket()).ok()
            && let Ok(status) = client.status(None)
        {
            for pid in status
                .services
                .iter()
                .flat_map(|s| &s.instances)
                .filter_map(|i| i.pid)
            {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
        self.kill();
    }
}

/// Instance index → node, of instances reported running.
fn running_on(status: &ClusterStatus) -> Vec<(u32, String)> {
    status
        .services
        .iter()
        .flat_map(|s| &s.placed)
        .filter(|i| i.state.as_deref() == Some("running"))
        .filter_map(|i| Some((i.index, i.node.clone()?)))
        .collect()
}

/// `/bin/sleep <marker>` processes, to kill what a crashed node left.
fn stale(marker: u32) -> Vec<u32> {
    scratch::processes_running(&["/bin/sleep", &marker.to_string()])
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    scratch::stat_cpu_ticks(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

fn measure(ttl: &str, marker: u32) {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| Member::new(n, &url, ttl))
        .collect();
    let text = format!(
        "command = [\"/bin/sleep\", \"{marker}\"]\n[placement]\ninstances = 3\nmax_per_node = 2\n"
    );
    Client::connect(&members[0].socket())
        .unwrap()
        .cluster_apply(&[("bench".to_owned(), "bench.toml".to_owned(), text)])
        .unwrap();
    poll_until("three instances running", DEADLINE, POLL, || {
        (running_on(&members[0].status()?).len() == 3).then_some(())
    });

    let mut times = Vec::new();
    for _ in 0..RUNS {
        let status = members[0].status().unwrap();
        let scheduler = status.scheduler.clone().unwrap_or_default();
        let (index, victim) = running_on(&status)
            .into_iter()
            .find(|(_, node)| *node != scheduler)
            .expect("an instance off the scheduler's node");
        let watcher = members.iter().position(|m| m.name != victim).unwrap();
        let victim_at = members.iter().position(|m| m.name == victim).unwrap();
        let started = Instant::now();
        members[victim_at].kill();
        poll_until("the instance to run elsewhere", DEADLINE, POLL, || {
            let status = members[watcher].status()?;
            running_on(&status)
                .iter()
                .any(|(i, node)| *i == index && *node != victim)
                .then_some(())
        });
        times.push(started.elapsed());
        members[victim_at].start();
        // The restarted node stops the copy that ran on without it.
        poll_until("no stale copy", DEADLINE, POLL, || {
            (stale(marker).len() == 3).then_some(())
        });
    }
    times.sort();
    println!(
        "lease_ttl {ttl:>3}: kill -9 to running elsewhere, median of {RUNS}: {:>6.2} s  (runs: {})",
        times[RUNS / 2].as_secs_f64(),
        times
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    thread::sleep(Duration::from_secs(2));
    let calls_before = etcd.calls();
    thread::sleep(IDLE_REQUESTS);
    let calls = etcd.calls() - calls_before;
    let per_node = calls as f64 / members.len() as f64 * 60.0 / IDLE_REQUESTS.as_secs_f64();
    let ticks_before: Vec<u64> = members.iter().map(|m| cpu_ticks(m.pid())).collect();
    thread::sleep(IDLE_CPU);
    let ticks: Vec<String> = members
        .iter()
        .zip(ticks_before)
        .map(|(m, before)| {
            let ms = (cpu_ticks(m.pid()) - before) * 10;
            format!("{} {ms} ms", m.name)
        })
        .collect();
    println!(
        "lease_ttl {ttl:>3}: idle: {per_node:.0} etcd requests/min per node ({calls} in {}s for 3 nodes); \
         node CPU over {}s idle: {}",
        IDLE_REQUESTS.as_secs(),
        IDLE_CPU.as_secs(),
        ticks.join(", ")
    );
    for pid in stale(marker) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

fn main() {
    if !std::path::Path::new(etcd::ETCD).exists() {
        eprintln!(
            "failover bench: {} is missing (apt-get install -y etcd-server)",
            etcd::ETCD
        );
        return;
    }
    println!("failover: 3 nodes + etcd on loopback; target: <= lease_ttl + 1 s");
    let marker = 7_900_000 + std::process::id() % 10_000;
    measure("10s", marker);
    measure("2s", marker + 1);
}
