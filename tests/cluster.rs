//! Cluster mode end to end: a real etcd on loopback (free ports, temporary
//! data dir), three real nodes in temporary dirs, real child processes
//! counted in /proc. Leases are 2 s so that the suite stays quick; every
//! wait polls with the common deadline, nothing asserts how fast.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::etcd::{Etcd, Proxy};
use common::{Node, Setup, node_command, wait_for};
use snow_fox::client::{Client, ClientError};
use snow_fox::wire::proto::public_api::{ClusterStatus, error::Kind, message::Code};

/// A number no other test's service uses, so /proc can be searched for
/// exactly this test's processes: `/bin/sleep <marker>`.
fn marker() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id() % 10_000 * 100 + 7_000_000;
    base + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The pids of running `/bin/sleep <marker>` processes (not zombies).
fn running(marker: u32) -> Vec<u32> {
    let marker = marker.to_string();
    common::scratch::processes_running(&["/bin/sleep", &marker])
        .into_iter()
        .filter(|pid| common::pid_alive(*pid))
        .collect()
}

/// A node `name` of the cluster at `etcd` (an endpoint URL).
fn member(name: &str, etcd: &str, labels: &str) -> Setup {
    Setup::new(&format!("cluster-{name}"))
        .name(name)
        .node(&format!(
            "[cluster]\netcd = [\"{etcd}\"]\nlease_ttl = \"2s\"\nlabels = {{ {labels} }}"
        ))
}

/// The reason of a refusal of `kind`; panics on anything else.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>, kind: Kind) -> String {
    match result {
        Err(ClientError::Node {
            kind: got, reason, ..
        }) if got == kind as i32 => reason,
        other => panic!("expected {kind:?}, got {other:?}"),
    }
}

fn status(node: &Node) -> ClusterStatus {
    node.client().cluster_status().unwrap()
}

/// Waits until `node`'s cluster subsystem has `colour`; its reason.
fn cluster_colour(node: &Node, colour: &str) -> String {
    wait_for(&format!("{} cluster subsystem", colour), || {
        let info = node.client().node_info(true).ok()?;
        let cluster = info.details.iter().find(|s| s.name == "cluster")?;
        (snow_fox::client::render::colour_word(cluster.status.colour) == colour)
            .then(|| cluster.status.reason.clone())
    })
}

/// Where each instance of `id` is placed and in what state.
fn placed(status: &ClusterStatus, id: &str) -> BTreeMap<u32, (Option<String>, Option<String>)> {
    status
        .services
        .iter()
        .filter(|service| service.id == id)
        .flat_map(|service| &service.placed)
        .map(|i| (i.index, (i.node.clone(), i.state.clone())))
        .collect()
}

/// Waits until every instance of `id` runs, per `node`'s view; where.
fn all_running(node: &Node, id: &str, count: usize) -> BTreeMap<u32, String> {
    wait_for(&format!("{count} instances of {id} running"), || {
        let shown = placed(&status(node), id);
        let nodes: BTreeMap<u32, String> = shown
            .iter()
            .filter(|(_, (_, state))| state.as_deref() == Some("running"))
            .filter_map(|(index, (node, _))| Some((*index, node.clone()?)))
            .collect();
        (nodes.len() == count).then_some(nodes)
    })
}

fn apply(node: &Node, id: &str, text: &str) {
    let path = node.setup.dir.0.join(format!("{id}.toml"));
    fs::write(&path, text).unwrap();
    node.client()
        .cluster_apply(&[(id.to_owned(), path.display().to_string(), text.to_owned())])
        .unwrap();
}

/// Three nodes a, b, c with zone labels; a starts first and schedules.
fn three(etcd: &str) -> Vec<Node> {
    let a = member("a", etcd, "zone = \"a\"").start();
    wait_for("a to schedule", || {
        (status(&a).scheduler.as_deref() == Some("a")).then_some(())
    });
    let b = member("b", etcd, "zone = \"b\", role = \"edge\"").start();
    let c = member("c", etcd, "zone = \"c\", role = \"edge\"").start();
    wait_for("three nodes alive", || {
        (status(&a).nodes.iter().filter(|n| n.alive).count() == 3).then_some(())
    });
    vec![a, b, c]
}

#[test]
fn instances_spread_one_per_node_a_killed_nodes_instance_moves_and_never_runs_twice() {
    let etcd = Etcd::start();
    let mut nodes = three(&etcd.url());
    let mark = marker();
    apply(
        &nodes[0],
        "web",
        &format!(
            "command = [\"/bin/sleep\", \"{mark}\"]\n[placement]\ninstances = 3\nmax_per_node = 2\n"
        ),
    );
    let first = all_running(&nodes[1], "web", 3);
    let mut hosts: Vec<&String> = first.values().collect();
    hosts.sort();
    assert_eq!(hosts, ["a", "b", "c"], "one instance per node");
    assert_eq!(running(mark).len(), 3);
    // Each node runs its instance as an ordinary service of origin cluster.
    let local = nodes[2].client().status(None).unwrap();
    let service = &local.services[0];
    assert_eq!(service.origin.as_deref(), Some("cluster"));
    assert_eq!(service.instances[0].state, "running");

    let (on_c, _) = first.iter().find(|(_, node)| *node == "c").unwrap();
    let on_c = *on_c;
    nodes[2].crash();
    let after = wait_for("c's instance to run elsewhere", || {
        let status = status(&nodes[0]);
        let shown = placed(&status, "web");
        let (node, state) = shown.get(&on_c)?.clone();
        let moved = node.as_deref() != Some("c") && state.as_deref() == Some("running");
        let c_gone = !status.nodes.iter().any(|n| n.name == "c" && n.alive);
        (moved && c_gone).then_some(shown)
    });
    assert_eq!(after.len(), 3);
    // The instances that did not have to move did not.
    for (index, node) in &first {
        if *index != on_c {
            assert_eq!(after[index].0.as_ref(), Some(node));
        }
    }

    // c comes back: it stops its old copy (it ran on while c was down)
    // before anything else, and gets nothing back.
    nodes[2].restart();
    cluster_colour(&nodes[2], "GREEN");
    let pids = wait_for("exactly three instances in /proc", || {
        let pids = running(mark);
        (pids.len() == 3).then_some(pids)
    });
    let reported: Vec<u32> = status(&nodes[2])
        .services
        .iter()
        .flat_map(|s| &s.placed)
        .filter_map(|i| i.pid)
        .collect();
    for pid in &reported {
        assert!(pids.contains(pid), "pid {pid} reported but not running");
    }
    let c = status(&nodes[2]);
    let c_node = c.nodes.iter().find(|n| n.name == "c").unwrap();
    assert!(c_node.alive && c_node.instances.is_empty(), "{c_node:?}");
}

#[test]
fn another_node_schedules_when_the_schedulers_node_dies() {
    let etcd = Etcd::start();
    let mut nodes = three(&etcd.url());
    let mark = marker();
    apply(
        &nodes[1],
        "api",
        &format!(
            "command = [\"/bin/sleep\", \"{mark}\"]\n[placement]\ninstances = 3\nmax_per_node = 2\n"
        ),
    );
    all_running(&nodes[1], "api", 3);
    nodes[0].crash();
    let status = wait_for("a new scheduler that moved a's instance", || {
        let status = status(&nodes[1]);
        let scheduler = status.scheduler.clone()?;
        let shown = placed(&status, "api");
        let all_elsewhere = shown.values().all(|(node, state)| {
            node.as_deref() != Some("a") && state.as_deref() == Some("running")
        });
        (scheduler != "a" && all_elsewhere && shown.len() == 3).then_some(status)
    });
    assert!(["b", "c"].contains(&status.scheduler.as_deref().unwrap()));
}

#[test]
fn constraints_are_respected_and_what_fits_nowhere_stays_unplaced() {
    let etcd = Etcd::start();
    let nodes = three(&etcd.url());
    let (edge, zoned) = (marker(), marker());
    apply(
        &nodes[0],
        "edge",
        &format!(
            "command = [\"/bin/sleep\", \"{edge}\"]\n[placement]\ninstances = 2\nconstraints = {{ role = \"edge\" }}\n"
        ),
    );
    apply(
        &nodes[0],
        "zoned",
        &format!(
            "command = [\"/bin/sleep\", \"{zoned}\"]\n[placement]\ninstances = 2\nconstraints = {{ zone = \"a\" }}\n"
        ),
    );
    let on = all_running(&nodes[0], "edge", 2);
    let mut hosts: Vec<&String> = on.values().collect();
    hosts.sort();
    assert_eq!(hosts, ["b", "c"]);
    // Only a has zone a and max_per_node is 1: one runs, one is unplaced.
    let shown = wait_for("zoned placed", || {
        let shown = placed(&status(&nodes[0]), "zoned");
        (shown.get(&0)?.1.as_deref() == Some("running")).then_some(shown)
    });
    assert_eq!(shown[&0].0.as_deref(), Some("a"));
    assert_eq!(shown[&1].0, None);
    assert_eq!(running(zoned).len(), 1);
    assert_eq!(running(edge).len(), 2);
}

#[test]
fn a_fenced_singleton_stops_on_the_node_that_lost_the_store_and_never_runs_twice() {
    let etcd = Etcd::start();
    // a reaches etcd through a proxy the test cuts: a partition of a alone.
    let proxy = Proxy::start(etcd.client_port);
    let a = member("a", &proxy.url(), "zone = \"a\"").start();
    wait_for("a to schedule", || {
        (status(&a).scheduler.as_deref() == Some("a")).then_some(())
    });
    let b = member("b", &etcd.url(), "zone = \"b\"").start();
    let _c = member("c", &etcd.url(), "zone = \"c\"").start();
    wait_for("three nodes", || {
        (status(&b).nodes.iter().filter(|n| n.alive).count() == 3).then_some(())
    });
    let mark = marker();
    apply(
        &a,
        "lock",
        &format!("command = [\"/bin/sleep\", \"{mark}\"]\n[placement]\nfence = true\n"),
    );
    let on = all_running(&b, "lock", 1);
    assert_eq!(
        on[&0], "a",
        "the singleton goes to the least loaded node by name"
    );
    let first = running(mark);
    assert_eq!(first.len(), 1);

    proxy.cut();
    let mut seen_elsewhere = None;
    wait_for("the singleton to run on another node", || {
        let pids = running(mark);
        assert!(pids.len() <= 1, "the singleton runs twice: {pids:?}");
        if pids.len() == 1 && pids[0] != first[0] {
            seen_elsewhere = Some(pids[0]);
        }
        let shown = placed(&status(&b), "lock");
        let (node, state) = shown.get(&0)?.clone();
        (seen_elsewhere.is_some()
            && node.as_deref() != Some("a")
            && state.as_deref() == Some("running"))
        .then_some(())
    });
    assert!(!common::pid_alive(first[0]), "a's copy was stopped");
    // a shows the store as lost, and keeps serving its socket.
    let reason = cluster_colour(&a, "RED");
    assert!(reason.contains("127.0.0.1"), "{reason}");
    let lock = a.client().status(Some("lock@0")).unwrap();
    assert_eq!(lock.services[0].instances[0].state, "stopped");
    assert_eq!(running(mark).len(), 1);
}

#[test]
fn the_store_away_keeps_local_services_running_and_the_cluster_converges_when_it_returns() {
    let mut etcd = Etcd::start();
    let url = etcd.url();
    let local_mark = marker();
    let a = member("a", &url, "zone = \"a\"")
        .service(
            "local",
            &format!("command = [\"/bin/sleep\", \"{local_mark}\"]\n"),
        )
        .start();
    wait_for("a to schedule", || {
        (status(&a).scheduler.as_deref() == Some("a")).then_some(())
    });
    let b = member("b", &url, "zone = \"b\"").start();
    let mark = marker();
    apply(
        &a,
        "web",
        &format!("command = [\"/bin/sleep\", \"{mark}\"]\n[placement]\ninstances = 2\n"),
    );
    all_running(&a, "web", 2);
    let local_pid = wait_for("the local service", || running(local_mark).first().copied());
    let cluster_pids = running(mark);

    etcd.stop();
    let reason = cluster_colour(&a, "RED");
    assert!(reason.contains(&url), "{reason}");
    cluster_colour(&b, "RED");
    // The socket answers, the local service and the cluster instances run on.
    let local = a.client().status(Some("local")).unwrap();
    assert_eq!(local.services[0].instances[0].pid, Some(local_pid));
    assert_eq!(running(local_mark), [local_pid]);
    let mut now = running(mark);
    now.sort();
    let mut before = cluster_pids.clone();
    before.sort();
    assert_eq!(now, before);
    // A cluster request says the store is away.
    refused(a.client().cluster_status(), Kind::ClusterUnavailable);

    etcd.restart();
    cluster_colour(&a, "GREEN");
    cluster_colour(&b, "GREEN");
    let on = all_running(&b, "web", 2);
    assert_eq!(on.len(), 2);
    assert_eq!(running(mark).len(), 2, "converged without a second copy");
    // And new work is placed again.
    let more = marker();
    apply(
        &b,
        "more",
        &format!("command = [\"/bin/sleep\", \"{more}\"]\n"),
    );
    all_running(&a, "more", 1);
}

#[test]
fn an_invalid_cluster_file_is_refused_naming_file_line_and_key() {
    let etcd = Etcd::start();
    let a = member("a", &etcd.url(), "zone = \"a\"").start();
    let file = a.setup.dir.0.join("bad.toml");
    fs::write(
        &file,
        "command = [\"/bin/sleep\", \"5\"]\ninstances = 2\n[placement]\nmax_per_node = 0\nfence = \"yes\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .arg("--socket")
        .arg(a.socket())
        .args(["cluster", "apply"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let path = file.display().to_string();
    assert!(
        stderr.contains(&format!("{path}:2: key `instances`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}:4: key `placement.max_per_node`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}:5: key `placement.fence`")),
        "{stderr}"
    );
    // The node validates too: a client that skips the check gets the same.
    let reason = refused(
        a.client().cluster_apply(&[(
            "bad".to_owned(),
            "bad.toml".to_owned(),
            "command = []\n[placement]\nconstraints = 3\n".to_owned(),
        )]),
        Kind::ConfigInvalid,
    );
    assert!(reason.contains("bad.toml:1: key `command`"), "{reason}");
    assert!(
        reason.contains("bad.toml:3: key `placement.constraints`"),
        "{reason}"
    );
    assert!(status(&a).services.is_empty(), "nothing was written");
    let json = Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .arg("--socket")
        .arg(a.socket())
        .args(["cluster", "status", "--json"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(
        json.starts_with(r#"{"answered_by":"a","scheduler":"a","nodes":[{"name":"a","alive":true,"labels":{"zone":"a"}"#),
        "{json}"
    );
    assert!(json.trim_end().ends_with(r#""services":[]}"#), "{json}");
    // Unknown ids are refused by name.
    let reason = refused(
        a.client().cluster_change(Code::ClusterStop, "nope"),
        Kind::UnknownService,
    );
    assert!(reason.contains("`nope`"), "{reason}");
}

#[test]
fn a_node_name_held_by_a_live_lease_is_refused_at_start() {
    let etcd = Etcd::start();
    let a = member("a", &etcd.url(), "zone = \"a\"").start();
    cluster_colour(&a, "GREEN");
    let twin = member("a", &etcd.url(), "zone = \"x\"");
    twin.write_node_toml();
    let log = twin.dir.0.join("twin.log");
    let mut child = Reaped(node_command(&twin.conf(), &log, &[]).spawn().unwrap());
    let exited = wait_for("the twin to exit", || child.0.try_wait().unwrap());
    assert!(!exited.success());
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("the node name `a` is taken"), "{text}");
}

/// A child process killed on drop, should a test fail while it runs.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stop_start_and_remove_move_the_clusters_instances() {
    let etcd = Etcd::start();
    let nodes = three(&etcd.url());
    let mark = marker();
    apply(
        &nodes[0],
        "job",
        &format!("command = [\"/bin/sleep\", \"{mark}\"]\n[placement]\ninstances = 2\n"),
    );
    all_running(&nodes[2], "job", 2);
    nodes[1]
        .client()
        .cluster_change(Code::ClusterStop, "job")
        .unwrap();
    wait_for("job stopped everywhere", || {
        running(mark).is_empty().then_some(())
    });
    let shown = status(&nodes[2]);
    assert_eq!(shown.services[0].stopped, Some(true));
    nodes[1]
        .client()
        .cluster_change(Code::ClusterStart, "job")
        .unwrap();
    all_running(&nodes[2], "job", 2);
    nodes[2]
        .client()
        .cluster_change(Code::ClusterRemove, "job")
        .unwrap();
    wait_for("job removed", || running(mark).is_empty().then_some(()));
    wait_for("no cluster services", || {
        status(&nodes[0]).services.is_empty().then_some(())
    });
    // A local stop of a cluster instance is refused with the way to do it.
    let mark = marker();
    apply(
        &nodes[0],
        "one",
        &format!("command = [\"/bin/sleep\", \"{mark}\"]\n"),
    );
    let on = all_running(&nodes[0], "one", 1);
    let host = nodes
        .iter()
        .find(|n| {
            n.setup
                .dir
                .0
                .to_string_lossy()
                .contains(&format!("cluster-{}", on[&0]))
        })
        .unwrap();
    let reason = refused(host.client().stop("one@0"), Kind::BadRequest);
    assert!(reason.contains("cluster start|stop one"), "{reason}");
}

#[test]
fn without_a_cluster_section_cluster_requests_are_refused_and_a_store_away_at_start_is_no_failure()
{
    let plain = Setup::new("plain").start();
    refused(plain.client().cluster_status(), Kind::NotClustered);
    let info = plain.client().node_info(true).unwrap();
    assert!(info.details.iter().all(|s| s.name != "cluster"));

    // Nothing listens on this port: the node starts and serves anyway.
    let port = common::etcd::free_port();
    let away = member(
        "lonely",
        &format!("http://127.0.0.1:{port}"),
        "zone = \"a\"",
    )
    .service("local", "command = [\"/bin/sleep\", \"30\"]\n")
    .start();
    let reason = cluster_colour(&away, "RED");
    assert!(reason.contains(&port.to_string()), "{reason}");
    wait_for("the local service", || {
        let status = away.client().status(Some("local")).ok()?;
        (status.services[0].instances[0].state == "running").then_some(())
    });
    let _ = Client::connect(&away.socket()).unwrap();
}

#[test]
fn a_cluster_request_is_traced_through_the_cluster_role() {
    let etcd = Etcd::start();
    let a = member("a", &etcd.url(), "zone = \"a\"").start();
    cluster_colour(&a, "GREEN");
    let mut client = a.client();
    client.cluster_status().unwrap();
    let id = client.last_correlation_id();
    let hops = common::finished_hops(&mut client, &id);
    assert_eq!(
        hops,
        [
            "client>io:ClusterStatusRequest",
            "io>manager:ClusterStatusRequest",
            "manager>cluster:ClusterRequest",
            "cluster>manager:ClusterReply",
            "manager>io:ClusterStatusResponse",
            "io>client:ClusterStatusResponse",
        ]
    );
}

/// Posts `body` to etcd's gateway at `url` + `path`, as `token` if given.
fn gateway(url: &str, path: &str, body: &str, token: Option<&str>) -> String {
    let mut request = ureq::post(&format!("{url}{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", token);
    }
    request
        .send(body)
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

#[test]
fn a_node_authenticates_with_username_and_password_file() {
    let etcd = Etcd::start();
    let url = etcd.url();
    gateway(&url, "/v3/auth/role/add", r#"{"name":"root"}"#, None);
    gateway(
        &url,
        "/v3/auth/user/add",
        r#"{"name":"root","password":"s3cret"}"#,
        None,
    );
    gateway(
        &url,
        "/v3/auth/user/grant",
        r#"{"user":"root","role":"root"}"#,
        None,
    );
    gateway(&url, "/v3/auth/enable", "{}", None);

    let with = |password: &str| {
        let setup = Setup::new("cluster-auth").name("a");
        let file = setup.dir.0.join("etcd.pw");
        fs::write(&file, format!("{password}\n")).unwrap();
        setup
            .node(&format!(
                "[cluster]\netcd = [\"{url}\"]\nlease_ttl = \"2s\"\nusername = \"root\"\npassword_file = \"{}\"",
                file.display()
            ))
            .start()
    };
    let wrong = with("guess");
    let reason = cluster_colour(&wrong, "RED");
    assert!(reason.contains("authenticate"), "{reason}");
    drop(wrong);
    let right = with("s3cret");
    cluster_colour(&right, "GREEN");
    let mark = marker();
    apply(
        &right,
        "authed",
        &format!("command = [\"/bin/sleep\", \"{mark}\"]\n"),
    );
    all_running(&right, "authed", 1);
    // Without the token, etcd refuses to show the keys.
    let anonymous =
        ureq::post(&format!("{url}/v3/kv/range")).send(r#"{"key":"Lw==","range_end":"MA=="}"#);
    assert!(
        matches!(anonymous, Err(ureq::Error::StatusCode(400..=499))),
        "{anonymous:?}"
    );
}

#[test]
fn a_node_restarted_before_its_lease_expired_takes_its_name_back() {
    let etcd = Etcd::start();
    let mut a = member("a", &etcd.url(), "zone = \"a\"").start();
    cluster_colour(&a, "GREEN");
    let mark = marker();
    apply(
        &a,
        "solo",
        &format!("command = [\"/bin/sleep\", \"{mark}\"]\n"),
    );
    all_running(&a, "solo", 1);
    a.crash();
    // At once, well within its 2 s lease: its name is still held.
    a.restart();
    cluster_colour(&a, "GREEN");
    let on = all_running(&a, "solo", 1);
    assert_eq!(on[&0], "a");
    assert_eq!(running(mark).len(), 1, "one copy, adopted or replaced");
}

#[test]
fn most_nodes_vanishing_at_once_holds_their_instances_then_moves_them() {
    let etcd = Etcd::start();
    let mut nodes = three(&etcd.url());
    let mark = marker();
    apply(
        &nodes[0],
        "wide",
        &format!(
            "command = [\"/bin/sleep\", \"{mark}\"]\n[placement]\ninstances = 3\nmax_per_node = 3\n"
        ),
    );
    all_running(&nodes[0], "wide", 3);
    nodes[1].crash();
    nodes[2].crash();
    // The survivor (the scheduler) sees two of three vanish at once: it
    // holds their instances first, says so, and moves them after.
    wait_for("the hold to be logged", || {
        nodes[0]
            .log_text()
            .contains("2 of 3 nodes vanished at once")
            .then_some(())
    });
    let on = all_running(&nodes[0], "wide", 3);
    assert!(on.values().all(|node| node == "a"), "{on:?}");
}

#[test]
fn junk_written_into_the_store_by_hand_is_skipped_not_run() {
    use base64::Engine as _;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let etcd = Etcd::start();
    let url = etcd.url();
    let a = member("a", &url, "zone = \"a\"").start();
    cluster_colour(&a, "GREEN");
    let put = |key: &str, value: &str| {
        let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value));
        gateway(&url, "/v3/kv/put", &body, None);
    };
    // An assignment that is no service file, one whose id could escape,
    // a service record that is no JSON, and a presence key with junk.
    put(
        "/snow-fox/assign/a/evil.0",
        "command = [\"/bin/sh\", \"-c\"",
    );
    put(
        "/snow-fox/assign/a/../../x.0",
        "command = [\"/bin/true\"]\n",
    );
    put("/snow-fox/services/broken", "{not json");
    put("/snow-fox/nodes/ghost", "\u{1}\u{2}");
    let mark = marker();
    apply(
        &a,
        "fine",
        &format!("command = [\"/bin/sleep\", \"{mark}\"]\n"),
    );
    all_running(&a, "fine", 1);
    let local = a.client().status(None).unwrap();
    let ids: Vec<&str> = local.services.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["fine@0"], "only the valid assignment runs");
    assert!(
        a.log_text().contains("cannot run evil@0"),
        "{}",
        a.log_text()
    );
    cluster_colour(&a, "GREEN");
    // The status still lists what it can.
    let shown = status(&a);
    assert!(shown.services.iter().any(|s| s.id == "fine"));
    assert!(shown.services.iter().all(|s| s.id != "broken"));
}
