//! Node metrics in the Prometheus text format (issue 16): the client's
//! `metrics`, `GET /metrics` over TCP, and `top`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use common::{Setup, wait_for};

/// A loopback port free right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| rest.split(' ').next().unwrap().to_owned())
        .collect()
}

fn http(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn metrics_and_get_metrics_show_the_same_families() {
    let port = free_port();
    let node = Setup::new("metrics-http")
        .node(&format!("metrics_listen = \"127.0.0.1:{port}\""))
        .service(
            "web",
            "command = [\"/bin/sleep\", \"300\"]\ninstances = 2\n",
        )
        .start();
    let mut api = node.client();
    wait_for("web running", || {
        let status = api.status(Some("web")).unwrap();
        status.services[0]
            .instances
            .iter()
            .all(|i| i.state == "running")
            .then_some(())
    });
    let text = node.cli_stdout(&["metrics"]);
    for family in [
        "snow_fox_instance_up",
        "snow_fox_instance_state",
        "snow_fox_instance_restarts_total",
        "snow_fox_instance_oom_kills_total",
        "snow_fox_instance_cpu_seconds_total",
        "snow_fox_instance_memory_bytes",
        "snow_fox_instance_tasks",
        "snow_fox_requests_total",
        "snow_fox_errors_total",
        "snow_fox_request_duration_seconds",
        "snow_fox_open_connections",
        "snow_fox_trace_entries",
        "snow_fox_resident_memory_bytes",
    ] {
        assert!(
            families(&text).contains(family),
            "{family} missing:\n{text}"
        );
    }
    assert!(
        text.contains("snow_fox_instance_up{service=\"web\",instance=\"1\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("snow_fox_requests_total{code=\"ServiceStatusRequest\"}"),
        "{text}"
    );

    let reply = http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());
    assert_eq!(families(body), families(&text));

    let not_found = http(port, "GET /other HTTP/1.1\r\n\r\n");
    assert!(
        not_found.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{not_found}"
    );
    let not_allowed = http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        not_allowed.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{not_allowed}"
    );
    let garbage = http(port, "\u{1}\u{2}\r\n\r\n");
    assert!(
        garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{garbage}"
    );
    // The HTTP clients came and went; the node still answers.
    api.node_info(false).unwrap();
}

#[test]
#[ignore = "needs promtool (Debian's prometheus package; .ci/run installs it)"]
fn metrics_pass_promtool_check_metrics() {
    let port = free_port();
    let node = Setup::new("metrics-promtool")
        .node(&format!("metrics_listen = \"127.0.0.1:{port}\""))
        .service("web", "command = [\"/bin/sleep\", \"300\"]\n")
        .service("gone", "command = [\"/bin/false\"]\nrestart = \"never\"\n")
        .start();
    let mut api = node.client();
    wait_for("gone to exit", || {
        let status = api.status(Some("gone")).unwrap();
        (status.services[0].instances[0].state == "exited").then_some(())
    });
    let _ = api.start("nope");
    let check = |text: &str| {
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (apt-get install prometheus)");
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = promtool.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let text = node.cli_stdout(&["metrics"]);
    assert!(
        text.contains("snow_fox_errors_total{kind=\"UNKNOWN_SERVICE\"} 1"),
        "{text}"
    );
    check(&text);
    let reply = http(port, "GET /metrics HTTP/1.1\r\n\r\n");
    check(reply.split_once("\r\n\r\n").unwrap().1);
}

#[test]
fn a_remote_metrics_address_needs_metrics_allow_remote() {
    let setup = Setup::new("metrics-remote");
    std::fs::write(
        setup.conf().join("node.toml"),
        "metrics_listen = \"0.0.0.0:9464\"\n",
    )
    .unwrap();
    let stderr = common::refused_configuration(&setup);
    assert!(
        stderr.contains(
            "node.toml:1: key `metrics_listen`: 0.0.0.0:9464 is reachable from other hosts"
        ),
        "{stderr}"
    );
}

#[test]
fn top_lists_instances_busiest_first_as_plain_text_off_a_terminal() {
    let node = Setup::new("metrics-top")
        .service("idle", "command = [\"/bin/sleep\", \"300\"]\n")
        .service(
            "busy",
            "command = [\"/bin/sh\", \"-c\", \"while :; do :; done\"]\n",
        )
        .start();
    let mut api = node.client();
    wait_for("busy to use CPU", || {
        let status = api.status_with_metrics(Some("busy")).unwrap();
        (status.metrics.first()?.cpu_usec? > 200_000).then_some(())
    });
    let text = node.cli_stdout(&["top"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one screen, no escape codes: {text:?}");
    assert!(
        lines[0].starts_with("SERVICE  INSTANCE  STATE    CPU"),
        "{text}"
    );
    assert!(lines[1].starts_with("busy "), "busiest first: {text}");
    assert!(lines[2].starts_with("idle "), "{text}");
    assert!(!text.contains('\u{1b}'));
    let two = node.cli_stdout(&["top", "-n", "2", "--interval", "10ms", "--sort", "memory"]);
    assert_eq!(two.lines().filter(|l| l.starts_with("SERVICE")).count(), 2);
}
