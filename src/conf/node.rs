//! The node's own configuration: `node.toml`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigProblem;
use super::cluster::ClusterConfig;
use super::document::{Document, expected};
use super::paths;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const FALLBACK_NAME: &str = "snow-fox";

/// The node: its names, where it keeps things, its limits and who may connect.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// `name`: the node's name (default: the host name, else "snow-fox").
    pub name: String,
    /// `label`: the configuration's symbolic version (default "unlabelled").
    pub label: String,
    /// `socket`: the listening socket; relative to the conf dir if relative
    /// (default: [`paths::default_socket_path`], decided by the caller).
    pub socket: Option<PathBuf>,
    /// `state_dir`: where the node keeps state; relative to the conf dir if
    /// relative (default [`paths::default_state_dir`]).
    pub state_dir: PathBuf,
    /// `spawner_state_dir`: where the spawner keeps its own record of the
    /// processes it started, writable by the spawner's user only (default:
    /// `state_dir` with `-spawner` appended, a sibling: in process mode the
    /// node's user owns `state_dir` and must not be able to replace it).
    pub spawner_state_dir: PathBuf,
    /// `log_dir`: where service output goes; relative to the conf dir if
    /// relative (default [`paths::default_log_dir`]).
    pub log_dir: PathBuf,
    /// `max_frame`: the largest frame accepted, in bytes (default 1 MiB; 64
    /// to 64 MiB).
    pub max_frame: u32,
    /// `request_timeout`: how long a request may go unanswered (default 30s).
    pub request_timeout: Duration,
    /// `trace_capacity`: how many requests the correlation table keeps
    /// (default 10000; at least 1).
    pub trace_capacity: usize,
    /// `trace_memory`: the bytes the correlation table may take; answered
    /// requests are evicted to stay under it (default 1 MiB; at least 64
    /// KiB).
    pub trace_memory: usize,
    /// `max_subscriptions_per_connection`: `Subscribe`s one connection may
    /// hold (default 4).
    pub max_subscriptions_per_connection: usize,
    /// `max_subscriber_backlog`: unread event bytes past which a
    /// subscriber is told so and closed (default 64 KiB; at least 4 KiB).
    pub max_subscriber_backlog: usize,
    /// `max_connections`: client connections at once (default 1024).
    pub max_connections: usize,
    /// `max_inflight_per_connection`: unanswered requests per connection
    /// (default 1024).
    pub max_inflight_per_connection: usize,
    /// `max_outbound_bytes`: replies queued per connection before it is
    /// dropped, in bytes (default 4 MiB).
    pub max_outbound_bytes: usize,
    /// `shutdown_timeout`: the bound on each wait of the ordered shutdown
    /// beyond the services' own stop timeouts (default 10s).
    pub shutdown_timeout: Duration,
    /// `idle_timeout`: a connection silent this long is closed (default: never).
    pub idle_timeout: Option<Duration>,
    /// `allow_users`: users besides the node's own who may connect.
    pub allow_users: Vec<String>,
    /// `allow_groups`: groups whose members may connect.
    pub allow_groups: Vec<String>,
    /// `user`: the unprivileged user (name or uid) the node process runs
    /// as when started as root; the spawner then runs as a separate root
    /// process (default: none, the spawner is a thread).
    pub user: Option<String>,
    /// `group`: the node process's group (name or gid) with `user`
    /// (default: the user's primary group).
    pub group: Option<String>,
    /// `[cluster]`: the cluster this node joins (default: none, a node on
    /// its own).
    pub cluster: Option<ClusterConfig>,
    /// `cgroup_fs`: where the cgroup filesystems are mounted, under which
    /// the node finds its own cgroups (default `/sys/fs/cgroup`).
    pub cgroup_fs: PathBuf,
    /// `metrics_listen`: a TCP address answering `GET /metrics` (default:
    /// none); a loopback one unless `metrics_allow_remote`.
    pub metrics_listen: Option<SocketAddr>,
    /// `metrics_allow_remote`: whether `metrics_listen` may be an address
    /// other hosts reach (default false).
    pub metrics_allow_remote: bool,
}

/// Reads `text`, the content of `file` (empty when the file is missing),
/// adding every problem to `problems`. `None` only when the file is not
/// valid TOML.
pub(super) fn parse(
    file: &Path,
    text: &str,
    conf_dir: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<NodeConfig> {
    let mut doc = match Document::parse(file, text) {
        Ok(doc) => doc,
        Err(syntax) => {
            problems.push(syntax);
            return None;
        }
    };
    let names = "an array of names, e.g. [\"alice\", \"1001\"]";
    // In this order, the order of the keys an unknown key's error lists.
    let name = doc.text("name").unwrap_or_else(host_name);
    let label = doc.text("label").unwrap_or_else(|| "unlabelled".to_owned());
    let socket = doc.path("socket", conf_dir);
    let state_dir = doc
        .path("state_dir", conf_dir)
        .unwrap_or_else(paths::default_state_dir);
    let node = NodeConfig {
        name,
        label,
        socket,
        spawner_state_dir: doc
            .path("spawner_state_dir", conf_dir)
            .unwrap_or_else(|| paths::spawner_state_dir(&state_dir)),
        state_dir,
        log_dir: doc
            .path("log_dir", conf_dir)
            .unwrap_or_else(paths::default_log_dir),
        max_frame: doc
            .number("max_frame", 64..=64 * MIB)
            .unwrap_or(1024 * 1024),
        request_timeout: doc
            .positive_duration("request_timeout")
            .unwrap_or(Duration::from_secs(30)),
        trace_capacity: doc.number("trace_capacity", 1..=u64::MAX).unwrap_or(10_000),
        trace_memory: doc
            .number("trace_memory", 64 * KIB..=u64::MAX)
            .unwrap_or(1024 * 1024),
        max_subscriptions_per_connection: doc
            .number("max_subscriptions_per_connection", 1..=u64::MAX)
            .unwrap_or(4),
        max_subscriber_backlog: doc
            .number("max_subscriber_backlog", 4 * KIB..=u64::MAX)
            .unwrap_or(64 * 1024),
        max_connections: doc.number("max_connections", 1..=u64::MAX).unwrap_or(1024),
        max_inflight_per_connection: doc
            .number("max_inflight_per_connection", 1..=u64::MAX)
            .unwrap_or(1024),
        max_outbound_bytes: doc
            .number("max_outbound_bytes", 1..=u64::MAX)
            .unwrap_or(4 * 1024 * 1024),
        shutdown_timeout: doc
            .positive_duration("shutdown_timeout")
            .unwrap_or(Duration::from_secs(10)),
        idle_timeout: doc.positive_duration("idle_timeout"),
        allow_users: doc.text_list("allow_users", names).unwrap_or_default(),
        allow_groups: doc.text_list("allow_groups", names).unwrap_or_default(),
        user: doc.text("user"),
        group: doc.text("group"),
        cluster: super::cluster::parse_section(&mut doc, conf_dir),
        cgroup_fs: doc
            .path("cgroup_fs", conf_dir)
            .unwrap_or_else(|| PathBuf::from(crate::cgroup::DEFAULT_FS)),
        metrics_listen: doc.scalar("metrics_listen", |value| {
            value
                .as_str()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| expected("an IP address and port, e.g. \"127.0.0.1:9464\"", value))
        }),
        metrics_allow_remote: doc.flag("metrics_allow_remote").unwrap_or(false),
    };
    if let Some(address) = node.metrics_listen
        && !address.ip().is_loopback()
        && !node.metrics_allow_remote
        && !doc.has_problem("metrics_allow_remote")
    {
        let line = doc.line_of("metrics_listen");
        let message = format!(
            "{address} is reachable from other hosts; use a loopback address such as \
             127.0.0.1:{}, or set metrics_allow_remote = true",
            address.port()
        );
        doc.report(line, "metrics_listen", message);
    }
    problems.extend(doc.finish());
    Some(node)
}

/// The kernel's host name, which names the node when `name` is not set.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| FALLBACK_NAME.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "conf/node.toml";

    fn parse_node(text: &str) -> (Option<NodeConfig>, Vec<ConfigProblem>) {
        let mut problems = Vec::new();
        let node = parse(Path::new(FILE), text, Path::new("/srv/conf"), &mut problems);
        (node, problems)
    }

    #[test]
    fn defaults() {
        let (node, problems) = parse_node("");
        assert_eq!(problems, []);
        assert_eq!(
            node.unwrap(),
            NodeConfig {
                name: host_name(),
                label: "unlabelled".to_owned(),
                socket: None,
                state_dir: paths::default_state_dir(),
                spawner_state_dir: paths::spawner_state_dir(&paths::default_state_dir()),
                log_dir: paths::default_log_dir(),
                max_frame: 1024 * 1024,
                request_timeout: Duration::from_secs(30),
                trace_capacity: 10_000,
                trace_memory: 1024 * 1024,
                max_subscriptions_per_connection: 4,
                max_subscriber_backlog: 64 * 1024,
                max_connections: 1024,
                max_inflight_per_connection: 1024,
                max_outbound_bytes: 4 * 1024 * 1024,
                shutdown_timeout: Duration::from_secs(10),
                idle_timeout: None,
                allow_users: Vec::new(),
                allow_groups: Vec::new(),
                user: None,
                group: None,
                cluster: None,
                cgroup_fs: PathBuf::from("/sys/fs/cgroup"),
                metrics_listen: None,
                metrics_allow_remote: false,
            }
        );
        assert!(!host_name().is_empty());
    }

    #[test]
    fn every_key_is_read() {
        let (node, problems) = parse_node(
            r#"
name = "n1"
label = "v7"
socket = "run/sf.sock"
state_dir = "/var/tmp/sf"
log_dir = "logs"
max_frame = 64
request_timeout = "2m"
trace_capacity = 1
trace_memory = 65536
max_subscriptions_per_connection = 6
max_subscriber_backlog = 8192
max_connections = 2
max_inflight_per_connection = 3
max_outbound_bytes = 4
shutdown_timeout = 5
idle_timeout = "1h"
allow_users = ["alice", "1001"]
allow_groups = ["wheel"]
user = "snow-fox"
group = "65534"
"#,
        );
        assert_eq!(problems, []);
        let node = node.unwrap();
        assert_eq!(node.name, "n1");
        assert_eq!(node.label, "v7");
        assert_eq!(node.socket, Some(PathBuf::from("/srv/conf/run/sf.sock")));
        assert_eq!(node.state_dir, PathBuf::from("/var/tmp/sf"));
        assert_eq!(node.log_dir, PathBuf::from("/srv/conf/logs"));
        assert_eq!(node.max_frame, 64);
        assert_eq!(node.request_timeout, Duration::from_secs(120));
        assert_eq!(node.trace_capacity, 1);
        assert_eq!(node.trace_memory, 65536);
        assert_eq!(node.max_subscriptions_per_connection, 6);
        assert_eq!(node.max_subscriber_backlog, 8192);
        assert_eq!(node.max_connections, 2);
        assert_eq!(node.max_inflight_per_connection, 3);
        assert_eq!(node.max_outbound_bytes, 4);
        assert_eq!(node.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(node.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(node.allow_users, ["alice", "1001"]);
        assert_eq!(node.allow_groups, ["wheel"]);
        assert_eq!(node.user.as_deref(), Some("snow-fox"));
        assert_eq!(node.group.as_deref(), Some("65534"));
    }

    /// Each key with a bad value, on line 2 after a comment: the problem
    /// names the file, the line and the key, and says what was expected.
    #[test]
    fn each_bad_value_names_file_line_and_key() {
        let cases = [
            ("name", "7", "expected a non-empty string, found 7"),
            ("label", "\"\"", "expected a non-empty string, found \"\""),
            (
                "socket",
                "false",
                "expected a non-empty string, found false",
            ),
            (
                "state_dir",
                "[\"/x\"]",
                "expected a non-empty string, found an array",
            ),
            (
                "log_dir",
                "{ a = 1 }",
                "expected a non-empty string, found a table",
            ),
            (
                "max_frame",
                "63",
                "expected a whole number from 64 to 67108864, found 63",
            ),
            (
                "max_frame",
                "67108865",
                "expected a whole number from 64 to 67108864, found 67108865",
            ),
            (
                "request_timeout",
                "\"0ms\"",
                "expected a duration longer than zero, found \"0ms\"",
            ),
            (
                "trace_capacity",
                "0",
                "expected a whole number of at least 1, found 0",
            ),
            (
                "max_connections",
                "\"many\"",
                "expected a whole number of at least 1, found \"many\"",
            ),
            (
                "max_inflight_per_connection",
                "0",
                "expected a whole number of at least 1, found 0",
            ),
            (
                "max_outbound_bytes",
                "1e6",
                "expected a whole number of at least 1, found 1e6",
            ),
            (
                "shutdown_timeout",
                "\"10 s\"",
                "expected a duration such as",
            ),
            ("idle_timeout", "1979-05-27", "found 1979-05-27"),
            (
                "allow_users",
                "\"alice\"",
                "expected an array of names, e.g. [\"alice\", \"1001\"], found \"alice\"",
            ),
            (
                "allow_groups",
                "[1]",
                "expected a non-empty string, found 1",
            ),
        ];
        for (key, value, message) in cases {
            let (_, problems) = parse_node(&format!("# node\n{key} = {value}\n"));
            assert_eq!(problems.len(), 1, "{key} = {value}: {problems:?}");
            let problem = &problems[0];
            assert_eq!(problem.file, Path::new(FILE), "{key}");
            assert_eq!(problem.line, Some(2), "{key}");
            let expected_key = if key == "allow_groups" {
                "allow_groups[0]"
            } else {
                key
            };
            assert_eq!(problem.key.as_deref(), Some(expected_key));
            assert!(
                problem.message.contains(message),
                "{key} = {value}: {}",
                problem.message
            );
        }
    }

    #[test]
    fn a_section_is_an_unknown_key() {
        let (_, problems) = parse_node("name = \"a\"\n\n[node]\nlabel = \"x\"\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[0].key.as_deref(), Some("node"));
        assert!(
            problems[0]
                .message
                .starts_with("unknown key; expected one of: name, label, socket, ")
        );
    }
}
