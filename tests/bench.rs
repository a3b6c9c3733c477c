//! `snow-fox-client bench` against a real node (issue 5): every request
//! answered once, no errors, figures that agree with each other. No speed
//! is asserted: the machine running the tests is not the one measured.

mod common;

use std::process::Command;

use common::Setup;

/// The number after `"key":` in a flat JSON text.
fn number(json: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\":");
    let start = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pattern.len();
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

#[test]
fn bench_answers_every_request_once_with_consistent_figures() {
    let node = Setup::new("bench").start();
    let output = Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .arg("--socket")
        .arg(node.socket())
        .args([
            "bench",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--clients",
            "4",
            "--inflight",
            "8",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "bench failed: {stderr}");
    assert!(stderr.contains("req/s"), "a progress line: {stderr:?}");

    let sent = number(&stdout, "sent");
    assert!(sent > 0, "{stdout}");
    assert_eq!(number(&stdout, "answered"), sent, "{stdout}");
    assert_eq!(number(&stdout, "errors"), 0, "{stdout}");
    assert!(stdout.contains("\"first_error\":null"), "{stdout}");
    let measured = number(&stdout, "measured");
    assert!(measured > 0 && measured <= sent, "{stdout}");
    assert!(number(&stdout, "requests_per_second") > 0, "{stdout}");
    assert!(number(&stdout, "elapsed_ns") >= 1_000_000_000, "{stdout}");
    let [min, p50, p90, p99, p99_9, max] =
        ["min", "p50", "p90", "p99", "p99_9", "max"].map(|key| number(&stdout, key));
    assert!(
        0 < min && min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= p99_9 && p99_9 <= max,
        "{stdout}"
    );
}

#[test]
fn bench_counts_error_replies_as_errors() {
    let node = Setup::new("bench-errors").start();
    let output = Command::new(env!("CARGO_BIN_EXE_snow-fox-client"))
        .arg("--socket")
        .arg(node.socket())
        .args([
            "bench",
            "--requests",
            "50",
            "--warmup",
            "0s",
            "--request",
            "status",
            "--service",
            "ghost",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(number(&stdout, "sent"), 50, "{stdout}");
    assert_eq!(number(&stdout, "answered"), 50, "{stdout}");
    assert_eq!(number(&stdout, "errors"), 50, "{stdout}");
    assert!(stdout.contains("UNKNOWN_SERVICE"), "{stdout}");
}
