//! The integration-test fixture: a real `snow-fox` node in a temporary
//! directory, with its own socket, state and log directories, and helpers
//! that poll with deadlines instead of sleeping.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use snow_fox::client::Client;

pub mod etcd;
pub mod scratch;
pub use scratch::{TempDir, poll_until};

/// How long anything in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_until(what, DEADLINE, Duration::from_millis(5), check)
}

/// A node's configuration directory under construction.
pub struct Setup {
    pub dir: TempDir,
    /// The node's name, distinct per node so that nodes of tests running
    /// at once never share a cgroup (`snow-fox.<name>`).
    pub name: String,
    node_toml: String,
}

impl Setup {
    pub fn new(label: &str) -> Setup {
        let dir = TempDir::new(label);
        let root = &dir.0;
        let name = format!("test-node-{}-{}", std::process::id(), unique());
        let node_toml = format!(
            "name = \"{name}\"\nlabel = \"test-1\"\nsocket = \"{}\"\nstate_dir = \"{}\"\nlog_dir = \"{}\"\n",
            root.join("sf.sock").display(),
            root.join("state").display(),
            root.join("log").display(),
        );
        fs::create_dir_all(root.join("conf/services")).unwrap();
        Setup {
            dir,
            name,
            node_toml,
        }
    }

    /// Names the node (node.toml's `name`).
    pub fn name(mut self, name: &str) -> Setup {
        let first_line = self.node_toml.lines().next().unwrap_or_default().to_owned();
        assert!(first_line.starts_with("name = "), "{first_line}");
        self.node_toml = self
            .node_toml
            .replacen(&first_line, &format!("name = \"{name}\""), 1);
        self
    }

    /// Adds lines to node.toml.
    pub fn node(mut self, lines: &str) -> Setup {
        self.node_toml.push_str(lines);
        self.node_toml.push('\n');
        self
    }

    /// Writes services/<id>.toml.
    pub fn service(self, id: &str, toml: &str) -> Setup {
        self.write_service(id, toml);
        self
    }

    pub fn write_service(&self, id: &str, toml: &str) {
        fs::write(self.conf().join(format!("services/{id}.toml")), toml).unwrap();
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.0.join("conf")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.0.join("sf.sock")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.0.join("log")
    }

    /// Starts the node and waits until its socket answers.
    pub fn start(self) -> Node {
        self.write_node_toml();
        Node::start(self, &[])
    }

    /// Writes node.toml, for a test that starts the node itself.
    pub fn write_node_toml(&self) {
        fs::write(self.conf().join("node.toml"), &self.node_toml).unwrap();
    }
}

/// Runs the node on `setup`'s configuration as it stands, expecting it
/// to refuse it; its stderr.
pub fn refused_configuration(setup: &Setup) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_snow-fox"))
        .arg("--conf")
        .arg(setup.conf())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "the node took it");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running node process; killed on drop if still running.
pub struct Node {
    pub setup: Setup,
    pub child: Child,
    pub log: PathBuf,
}

impl Node {
    pub fn start(setup: Setup, env: &[(&str, &str)]) -> Node {
        let log = setup.dir.0.join(format!("node-{}.log", unique()));
        let child = node_command(&setup.conf(), &log, env).spawn().unwrap();
        let mut node = Node { setup, child, log };
        node.await_socket();
        node
    }

    /// Waits until this node listens: its log says so (a socket file that
    /// answers may still be a killed node's, held open for a moment by a
    /// child it was forking) and its socket takes a connection.
    fn await_socket(&mut self) {
        let socket = self.setup.socket();
        wait_for("the node's socket", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("node exited early with {status}: {}", self.log_text());
            }
            if !self.log_text().contains("listening on") {
                return None;
            }
            UnixStream::connect(&socket).ok()
        });
    }

    /// Kills the node with SIGKILL, as a crash would, and waits for it.
    pub fn crash(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts a new node process on the same directories, once this one
    /// has exited (crashed or shut down); its log goes to a new file.
    pub fn restart(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "the node still runs"
        );
        self.log = self.setup.dir.0.join(format!("node-{}.log", unique()));
        self.child = node_command(&self.setup.conf(), &self.log, &[])
            .spawn()
            .unwrap();
        self.await_socket();
    }

    pub fn socket(&self) -> PathBuf {
        self.setup.socket()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket()).unwrap()
    }

    pub fn raw(&self) -> UnixStream {
        let stream = UnixStream::connect(self.socket()).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the node to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for("the node to exit", || self.child.try_wait().unwrap())
    }

    pub fn signal(&self, signal: i32) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Node {
    /// Runs `snow-fox-client --socket <this node's> args...`, asserts that
    /// it succeeded, and gives its stdout.
    pub fn cli_stdout(&self, args: &[&str]) -> String {
        let output = Command::new(client_binary())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "snow-fox-client {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The pids of the node's service processes that it reports, when it
    /// still answers.
    fn reported_pids(&self) -> Vec<u32> {
        let Ok(mut client) = Client::connect(&self.socket()) else {
            return Vec::new();
        };
        if client.set_timeout(Some(Duration::from_secs(2))).is_err() {
            return Vec::new();
        }
        client.status(None).map_or_else(
            |_| Vec::new(),
            |status| {
                status
                    .services
                    .iter()
                    .flat_map(|service| service.instances.iter().filter_map(|i| i.pid))
                    .collect()
            },
        )
    }
}

/// The pids a record lists: the fourth field of its lines starting with
/// `kind` (`instance` lines of the node's `node.record`, `process` lines
/// of the spawner's `processes`), the last for each service and instance
/// (fields two and three), none for those a later `-<kind>` line removes:
/// the node's record is a journal.
pub fn recorded_pids(file: &Path, kind: &str) -> Vec<u32> {
    let removed = format!("-{kind}");
    let mut pids = std::collections::BTreeMap::new();
    for line in fs::read_to_string(file).unwrap_or_default().lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(first), Some(key)) = (fields.first(), fields.get(1..3)) else {
            continue;
        };
        if *first == kind {
            pids.insert(
                key.join(" "),
                fields.get(3).and_then(|pid| pid.parse().ok()),
            );
        } else if *first == removed {
            pids.remove(&key.join(" "));
        }
    }
    pids.into_values().flatten().collect()
}

/// Whether `pid` leads its own session, as every service process does:
/// only such a process group is killed when a test ends.
fn leads_a_session(pid: u32) -> bool {
    scratch::pid_stat(pid).is_some_and(|fields| fields.get(3) == Some(&pid.to_string()))
}

/// The directories of node `name`'s cgroups (`snow-fox.<name>` beneath
/// this process's own cgroups, which a node it started shares), in every
/// hierarchy where one exists.
pub fn node_cgroup_bases(name: &str) -> Vec<PathBuf> {
    let fs = Path::new("/sys/fs/cgroup");
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut bases = Vec::new();
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let roots: Vec<PathBuf> = if controllers.is_empty() {
            vec![fs.join("unified"), fs.to_owned()]
        } else {
            controllers.split(',').map(|c| fs.join(c)).collect()
        };
        for root in roots {
            let base = root
                .join(path.trim_start_matches('/'))
                .join(format!("snow-fox.{name}"));
            if base.is_dir() && !bases.contains(&base) {
                bases.push(base);
            }
        }
    }
    bases
}

/// Kills what is left in node `name`'s cgroups and removes them: a node
/// killed by a test cannot.
pub fn remove_node_cgroups(name: &str) {
    for base in node_cgroup_bases(name) {
        let children = fs::read_dir(&base)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for child in children {
            let _ = kill_members(&child);
            let _ = fs::remove_dir(&child);
        }
        let _ = fs::remove_dir(&base);
    }
}

/// Kills every member of cgroup `dir` until none is left (bounded).
fn kill_members(dir: &Path) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let members = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if members.trim().is_empty() {
            return true;
        }
        if fs::write(dir.join("cgroup.kill"), "1").is_err() {
            for pid in members.lines() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Node {
    /// Services outlive their node by design (they run in their own
    /// sessions), so a test's services are killed with it: the process
    /// groups of every pid the node reports or recorded, and whatever is
    /// left in its cgroups, which are removed.
    fn drop(&mut self) {
        let mut pids = self.reported_pids();
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let dir = &self.setup.dir.0;
        pids.extend(recorded_pids(&dir.join("state/node.record"), "instance"));
        pids.extend(recorded_pids(
            &dir.join("state-spawner/processes"),
            "process",
        ));
        let groups: Vec<String> = pids
            .into_iter()
            .filter(|pid| leads_a_session(*pid))
            .map(|pid| format!("-{pid}"))
            .collect();
        if !groups.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .args(&groups)
                .stderr(Stdio::null())
                .status();
        }
        remove_node_cgroups(&self.setup.name);
    }
}

/// The node binary the tests run: this build's, or `$SF_NODE_BIN` (CI
/// points it at the static build).
pub fn node_binary() -> PathBuf {
    std::env::var_os("SF_NODE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_snow-fox")),
        PathBuf::from,
    )
}

/// The client binary the tests run: this build's, or `$SF_CLIENT_BIN`.
pub fn client_binary() -> PathBuf {
    std::env::var_os("SF_CLIENT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_snow-fox-client")),
        PathBuf::from,
    )
}

pub fn node_command(conf: &Path, log: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(node_binary());
    command
        .arg("--conf")
        .arg(conf)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

fn unique() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A root process in its own session that snow-fox never started: what a
/// forged request or record would have root signal. Killed on drop.
pub struct Victim(Child);

impl Victim {
    pub fn start() -> Victim {
        let mut command = Command::new("/bin/sleep");
        command.arg("600");
        snow_fox::sys::start_in_new_session(&mut command);
        Victim(command.spawn().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it still runs: nothing signalled it.
    pub fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none() && pid_alive(self.pid())
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a frame with `body`.
pub fn write_frame(stream: &mut UnixStream, body: &[u8]) {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).unwrap();
}

/// SIGKILLs `pid`, as a crash would end it.
pub fn kill_9(pid: u32) {
    signal(pid, "KILL");
}

/// Sends `pid` the signal `name` (`"STOP"`, ...) through kill(1), so tests
/// need no unsafe.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Whether process `pid` runs (a zombie does not).
pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; only a reaped process is gone.
    scratch::pid_stat(pid).is_some_and(|fields| fields.first().is_some_and(|state| state != "Z"))
}

/// Zombie children of `parent`, from /proc.
pub fn zombies_of(parent: i32) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let stat = entry.ok()?.path().join("stat");
            let fields = scratch::stat_fields(&stat)?;
            (fields.first()? == "Z" && fields.get(1)? == &parent.to_string())
                .then(|| fs::read_to_string(stat).unwrap_or_default())
        })
        .collect()
}

/// The trace of `id` once its request is done.
pub fn finished_trace(
    client: &mut Client,
    id: &str,
) -> snow_fox::wire::proto::public_api::TraceResponse {
    wait_for(&format!("request {id} to be done"), || {
        let trace = client.trace(id).unwrap();
        (trace.state == "done").then_some(trace)
    })
}

/// The hops of `id`'s finished request as `from>to:code`.
pub fn finished_hops(client: &mut Client, id: &str) -> Vec<String> {
    finished_trace(client, id)
        .hops
        .iter()
        .map(|h| format!("{}>{}:{}", h.from_role, h.to_role, h.code))
        .collect()
}
