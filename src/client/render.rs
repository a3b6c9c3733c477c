//! The human-readable text of the node's replies, as `snow-fox-client`
//! prints them: aligned tables, colours spelled out as words (and, with
//! `colour`, painted with ANSI escapes), uptimes, exits and UTC times.
//! Pure functions from a reply to a `String` (without a final newline);
//! nothing here does I/O.

use crate::conf::format_size;
use crate::wire::proto::public_api::ServiceStatusResponse;
use crate::wire::proto::public_api::service_status_response::{Instance, InstanceMetrics, Service};
use crate::wire::proto::public_api::{
    Event, NodeInfoResponse, ServiceDefinitionResponse, StatusColour, TraceResponse, log_lines,
    node_info_response::SystemStatus,
};

/// ANSI paints.
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The paint of a status colour.
fn colour_paint(colour: i32) -> &'static str {
    match StatusColour::try_from(colour) {
        Ok(StatusColour::Green) => GREEN,
        Ok(StatusColour::Yellow) => YELLOW,
        _ => RED,
    }
}

/// The paint of an instance state; `None` for one that needs none.
fn state_paint(
    state: &str,
    last_exit_code: Option<i32>,
    last_exit_signal: Option<i32>,
) -> Option<&'static str> {
    match state {
        "running" => Some(GREEN),
        "starting" | "stopping" | "backoff" => Some(YELLOW),
        "failed" => Some(RED),
        "exited" if last_exit_code != Some(0) || last_exit_signal.is_some() => Some(RED),
        _ => None,
    }
}

/// `text` painted when `colour` is on.
fn paint(text: &str, with: Option<&str>, colour: bool) -> String {
    match with {
        Some(with) if colour => format!("{with}{text}{RESET}"),
        _ => text.to_owned(),
    }
}

/// A status colour as the word both the tables and the JSON use; a colour
/// this client does not know is `UNKNOWN`.
pub fn colour_word(colour: i32) -> &'static str {
    match StatusColour::try_from(colour) {
        Ok(StatusColour::Green) => "GREEN",
        Ok(StatusColour::Yellow) => "YELLOW",
        Ok(StatusColour::Red) => "RED",
        Ok(StatusColour::Unknown) | Err(_) => "UNKNOWN",
    }
}

/// The status table, one row per instance, like `supervisorctl status`,
/// with the reason for each state. `now_unix_ms` is the clock the
/// uptimes are measured against; `colour` paints the states.
pub fn status_table(services: &[Service], now_unix_ms: u64, colour: bool) -> String {
    status_rows(services, &[], now_unix_ms, colour)
}

/// The status table with CPU, memory and task columns from the reply's
/// metrics, when it has any.
pub fn status_with_metrics(
    status: &ServiceStatusResponse,
    now_unix_ms: u64,
    colour: bool,
) -> String {
    status_rows(&status.services, &status.metrics, now_unix_ms, colour)
}

fn status_rows(
    services: &[Service],
    metrics: &[InstanceMetrics],
    now_unix_ms: u64,
    colour: bool,
) -> String {
    const BASE: [&str; 8] = [
        "SERVICE",
        "INSTANCE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "REASON",
    ];
    let mut header = BASE.to_vec();
    if !metrics.is_empty() {
        header.extend(["CPU", "MEMORY", "TASKS"]);
    }
    let mut table = Table::with_header(&header);
    for service in services {
        if service.instances.is_empty() {
            // A service without instances still gets its line, so that it
            // does not vanish from the listing.
            let mut row = vec![service.id.clone()];
            row.resize(header.len(), "-".to_owned());
            table.row(row);
        }
        for instance in &service.instances {
            let uptime = match instance.since_unix_ms {
                Some(since) if instance.state == "running" => {
                    uptime(now_unix_ms.saturating_sub(since))
                }
                _ => "-".to_owned(),
            };
            let state = if instance.adopted == Some(true) {
                format!("{} (adopted)", instance.state)
            } else {
                instance.state.clone()
            };
            let name = match service.origin.as_deref() {
                Some(origin) if origin != "local" => format!("{} ({origin})", service.id),
                _ => service.id.clone(),
            };
            let state_colour = state_paint(
                &instance.state,
                instance.last_exit_code,
                instance.last_exit_signal,
            );
            let mut row = vec![
                name,
                instance.index.to_string(),
                state,
                or_dash(instance.pid),
                uptime,
                or_dash(instance.restarts),
                last_run(instance),
                instance.reason.clone().unwrap_or_else(|| "-".to_owned()),
            ];
            if !metrics.is_empty() {
                let used = metrics
                    .iter()
                    .find(|m| m.service_id == service.id && m.index == instance.index);
                row.extend(usage_columns(used));
            }
            table.painted_row(row, 2, state_colour.filter(|_| colour));
        }
    }
    table.render()
}

/// Node info: name, version, configuration and overall health, then with
/// details one row per subsystem; `colour` paints the colour words.
pub fn node_info(info: &NodeInfoResponse, colour: bool) -> String {
    let mut summary = Table::default();
    match &info.node {
        Some(node) => {
            let version = &node.version;
            summary.row(vec!["name".to_owned(), node.name.clone()]);
            summary.row(vec![
                "version".to_owned(),
                format!(
                    "{} (commit {}, {})",
                    version.version.as_deref().unwrap_or("unknown"),
                    version.commit,
                    version.taint.as_deref().unwrap_or("taint unknown")
                ),
            ]);
            let config = match &node.config {
                Some(config) => format!("{} (effective {})", config.symbolic, config.effective),
                None => "-".to_owned(),
            };
            summary.row(vec!["config".to_owned(), config]);
        }
        None => summary.row(vec!["name".to_owned(), "-".to_owned()]),
    }
    summary.row(vec![
        "status".to_owned(),
        info.overall.as_ref().map_or("-".to_owned(), |status| {
            paint(
                &system_status(status),
                Some(colour_paint(status.colour)),
                colour,
            )
        }),
    ]);
    let mut text = summary.render();
    if !info.details.is_empty() {
        let mut details = Table::with_header(&["SUBSYSTEM", "COLOUR", "REASON"]);
        for subsystem in &info.details {
            details.painted_row(
                vec![
                    subsystem.name.clone(),
                    colour_word(subsystem.status.colour).to_owned(),
                    subsystem.status.reason.clone(),
                ],
                1,
                Some(colour_paint(subsystem.status.colour)).filter(|_| colour),
            );
        }
        text.push_str("\n\n");
        text.push_str(&details.render());
    }
    text
}

/// A trace: one row per hop with its offset from the first hop, then the
/// request's state.
pub fn trace(trace: &TraceResponse) -> String {
    let mut text = String::new();
    if let Some(first) = trace.hops.first() {
        let mut table = Table::with_header(&["OFFSET", "HOP", "PROTOCOL", "CODE"]);
        for hop in &trace.hops {
            table.row(vec![
                format!("+{} µs", hop.at_unix_us.saturating_sub(first.at_unix_us)),
                format!("{} → {}", hop.from_role, hop.to_role),
                hop.protocol.clone(),
                hop.code.clone(),
            ]);
        }
        text.push_str(&table.render());
        text.push('\n');
    }
    text.push_str("state: ");
    text.push_str(&trace.state);
    text
}

/// Ids joined by commas, or "-" for none.
fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "-".to_owned()
    } else {
        ids.join(", ")
    }
}

/// What a reload did: one line each for the services it added, changed,
/// removed and left alone.
pub fn reload(status: &ServiceStatusResponse) -> String {
    format!(
        "added: {}\nchanged: {}\nremoved: {}\nunchanged: {}",
        list(&status.added),
        list(&status.changed),
        list(&status.removed),
        list(&status.unchanged)
    )
}

/// One service in detail, like `systemctl status`: its definition, each
/// instance's state with reason, since when, pid, uptime, restarts and
/// last exit, and the last lines of the output files in `output`
/// (`(path, lines)` each).
pub fn service_detail(
    definition: &ServiceDefinitionResponse,
    service: &Service,
    now_unix_ms: u64,
    output: &[(String, Vec<String>)],
    colour: bool,
) -> String {
    let dash = |value: Option<&String>| value.map_or("-".to_owned(), Clone::clone);
    let title = match &service.description {
        Some(description) => format!("{} - {description}", service.id),
        None => service.id.clone(),
    };
    let mut text = paint(&format!("● {title}"), Some(BOLD), colour);
    let mut summary = Table::default();
    summary.row(vec![
        "loaded:".to_owned(),
        format!(
            "{} ({}, desired {})",
            definition.file,
            match service.enabled {
                Some(true) => "enabled",
                Some(false) => "disabled",
                None => "enabled unknown",
            },
            service.desired.as_deref().unwrap_or("unknown")
        ),
    ]);
    summary.painted_row(
        vec!["status:".to_owned(), system_status(&service.status)],
        1,
        Some(colour_paint(service.status.colour)).filter(|_| colour),
    );
    summary.row(vec!["command:".to_owned(), definition.command.join(" ")]);
    summary.row(vec![
        "user:".to_owned(),
        format!(
            "{} (group {})",
            dash(definition.user.as_ref()),
            dash(definition.group.as_ref())
        ),
    ]);
    summary.row(vec![
        "work dir:".to_owned(),
        dash(definition.work_dir.as_ref()),
    ]);
    summary.row(vec![
        "ready:".to_owned(),
        format!(
            "{}; health: {}",
            dash(definition.ready.as_ref()),
            dash(definition.health.as_ref())
        ),
    ]);
    summary.row(vec![
        "requires:".to_owned(),
        format!(
            "{}; after: {}",
            list(&definition.requires),
            list(&definition.after)
        ),
    ]);
    for instance in &service.instances {
        let since = instance.since_unix_ms.map_or("-".to_owned(), utc_time);
        let uptime = match instance.since_unix_ms {
            Some(since) if instance.state == "running" => {
                format!(", up {}", uptime(now_unix_ms.saturating_sub(since)))
            }
            _ => String::new(),
        };
        let state = paint(
            &instance.state,
            state_paint(
                &instance.state,
                instance.last_exit_code,
                instance.last_exit_signal,
            ),
            colour,
        );
        summary.row(vec![
            format!("instance {}:", instance.index),
            format!(
                "{state} ({}) since {since}{uptime}; pid {}; restarts {}; last exit {}",
                instance.reason.as_deref().unwrap_or("no reason given"),
                or_dash(instance.pid),
                or_dash(instance.restarts),
                last_exit(instance.last_exit_code, instance.last_exit_signal)
            ),
        ]);
    }
    text.push('\n');
    text.push_str(&summary.render());
    for (path, lines) in output {
        text.push_str(&format!("\n\nlast lines of {path}:"));
        for line in lines {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    text
}

/// One line for a state change: time, service, instance, state, pid, exit,
/// and why, when the node says.
pub fn event_line(event: &Event) -> String {
    let line = format!(
        "{}  {}  {}  {:<8}  pid {}  exit {}",
        utc_time(event.at_unix_ms),
        event.service_id,
        event.index,
        event.state,
        or_dash(event.pid),
        last_exit(event.exit_code, event.exit_signal)
    );
    match &event.reason {
        Some(reason) => format!("{line}  ({reason})"),
        None => line,
    }
}

/// One captured line: `id.instance | 2026-12-01T11:07:00.123456Z text`.
pub fn log_line(line: &log_lines::Line) -> String {
    format!(
        "{}.{} | {} {}",
        line.service_id,
        line.instance,
        crate::trace::utc_time(line.at_unix_us, 6),
        line.text
    )
}

fn system_status(status: &SystemStatus) -> String {
    format!("{}: {}", colour_word(status.colour), status.reason)
}

fn or_dash(value: Option<u32>) -> String {
    value.map_or("-".to_owned(), |value| value.to_string())
}

/// "0:01:23", or "2d 3:04:05" past a day.
fn uptime(millis: u64) -> String {
    let seconds = millis / 1000;
    let (days, hours) = (seconds / 86_400, seconds / 3600 % 24);
    let (minutes, seconds) = (seconds / 60 % 60, seconds % 60);
    if days > 0 {
        format!("{days}d {hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{hours}:{minutes:02}:{seconds:02}")
    }
}

/// "code 1", "signal 9", or "-" before the first exit.
/// What `top` sorts its lines by, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopOrder {
    /// CPU percent.
    Cpu,
    /// Memory now.
    Memory,
}

/// `snow-fox-client top`: one line per instance, with state, CPU %,
/// memory, tasks and restarts, the busiest first.
pub fn top_table(status: &ServiceStatusResponse, order: TopOrder) -> String {
    let mut rows: Vec<(u64, Vec<String>)> = Vec::new();
    for service in &status.services {
        for instance in &service.instances {
            let used = status
                .metrics
                .iter()
                .find(|m| m.service_id == service.id && m.index == instance.index);
            let key = match order {
                TopOrder::Cpu => used.and_then(|m| m.cpu_permille).map(u64::from),
                TopOrder::Memory => used.and_then(|m| m.memory_bytes),
            };
            let [cpu, memory, tasks] = usage_columns(used);
            rows.push((
                key.unwrap_or(0),
                vec![
                    service.id.clone(),
                    instance.index.to_string(),
                    instance.state.clone(),
                    cpu,
                    memory,
                    tasks,
                    or_dash(instance.restarts),
                ],
            ));
        }
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut table = Table::with_header(&[
        "SERVICE", "INSTANCE", "STATE", "CPU", "MEMORY", "TASKS", "RESTARTS",
    ]);
    for (_, row) in rows {
        table.row(row);
    }
    table.render()
}

/// CPU %, memory (current and peak) and tasks of one instance, dashes
/// where unknown.
pub fn usage_columns(metrics: Option<&InstanceMetrics>) -> [String; 3] {
    let Some(metrics) = metrics else {
        return ["-".to_owned(), "-".to_owned(), "-".to_owned()];
    };
    let cpu = metrics.cpu_permille.map_or_else(
        || "-".to_owned(),
        |permille| format!("{}.{}%", permille / 10, permille % 10),
    );
    let memory = match (metrics.memory_bytes, metrics.memory_peak_bytes) {
        (Some(now), Some(peak)) => format!("{} (peak {})", format_size(now), format_size(peak)),
        (Some(now), None) => format_size(now),
        _ => "-".to_owned(),
    };
    let tasks = metrics
        .tasks
        .map_or_else(|| "-".to_owned(), |tasks| tasks.to_string());
    [cpu, memory, tasks]
}

/// The last exit, its reason when the node knows one (out of memory),
/// and what the run used.
fn last_run(instance: &Instance) -> String {
    let mut text = match &instance.last_exit_reason {
        Some(reason) => reason.clone(),
        None => last_exit(instance.last_exit_code, instance.last_exit_signal),
    };
    if let Some(ran) = instance.last_run_ms {
        text.push_str(&format!(" after {:.1} s", ran as f64 / 1e3));
    }
    if let Some(cpu) = instance.last_cpu_usec {
        text.push_str(&format!(", cpu {:.1} s", cpu as f64 / 1e6));
    }
    if let Some(peak) = instance.last_peak_rss_bytes {
        text.push_str(&format!(", peak {}", format_size(peak)));
    }
    text
}

fn last_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(signal)) => format!("signal {signal}"),
        (Some(code), None) => format!("code {code}"),
        (None, None) => "-".to_owned(),
    }
}

/// `2024-05-01T12:03:04.056Z`: UTC, because the client knows no time zones.
fn utc_time(unix_ms: u64) -> String {
    crate::trace::utc_time(unix_ms.saturating_mul(1000), 3)
}

/// Rows of cells printed in columns as wide as their widest cell (counted
/// in characters, so "→" and "µ" are one), two spaces apart.
#[derive(Default)]
pub(super) struct Table {
    rows: Vec<Vec<String>>,
    /// For each row, one cell painted: its column and paint.
    paints: Vec<Option<(usize, &'static str)>>,
}

impl Table {
    pub(super) fn with_header(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()],
            paints: vec![None],
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.painted_row(cells, 0, None);
    }

    /// A row whose cell `column` is painted with `with` (if given); the
    /// paint does not count in the column's width.
    fn painted_row(&mut self, cells: Vec<String>, column: usize, with: Option<&'static str>) {
        self.rows.push(cells);
        self.paints.push(with.map(|with| (column, with)));
    }

    pub(super) fn render(&self) -> String {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate() {
                let width = cell.chars().count();
                match widths.get_mut(column) {
                    Some(widest) => *widest = (*widest).max(width),
                    None => widths.push(width),
                }
            }
        }
        let mut lines = Vec::with_capacity(self.rows.len());
        for (row, paint) in self.rows.iter().zip(&self.paints) {
            let mut line = String::new();
            for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                match paint {
                    Some((painted, with)) if *painted == column => {
                        line.push_str(with);
                        line.push_str(cell);
                        line.push_str(RESET);
                    }
                    _ => line.push_str(cell),
                }
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            lines.push(line.trim_end().to_owned());
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::public_api::node_info_response::{
        ConfigVersion, NodeInfo, NodeVersion, SubSystem,
    };
    use crate::wire::proto::public_api::service_status_response::Instance;
    use crate::wire::proto::public_api::trace_response::Hop;

    fn green(reason: &str) -> SystemStatus {
        SystemStatus {
            colour: StatusColour::Green as i32,
            code: Some(0),
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn uptime_is_hours_minutes_seconds_and_days_past_one_day() {
        assert_eq!(uptime(0), "0:00:00");
        assert_eq!(uptime(83_999), "0:01:23");
        assert_eq!(
            uptime(((2 * 24 + 3) * 3600 + 4 * 60 + 5) * 1000),
            "2d 3:04:05"
        );
    }

    #[test]
    fn last_exit_names_the_code_or_the_signal() {
        assert_eq!(last_exit(Some(1), None), "code 1");
        assert_eq!(last_exit(None, Some(9)), "signal 9");
        assert_eq!(last_exit(None, None), "-");
    }

    #[test]
    fn colours_are_words_and_unknown_numbers_are_unknown() {
        assert_eq!(colour_word(0), "GREEN");
        assert_eq!(colour_word(1), "YELLOW");
        assert_eq!(colour_word(2), "RED");
        assert_eq!(colour_word(-1), "UNKNOWN");
        assert_eq!(colour_word(42), "UNKNOWN");
    }

    #[test]
    fn utc_time_handles_the_epoch_and_a_leap_day() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(utc_time(1_714_564_984_056), "2024-05-01T12:03:04.056Z");
    }

    #[test]
    fn status_table_aligns_columns_and_shows_uptime_only_when_running() {
        let now = 10_000_000;
        let services = vec![
            Service {
                id: "web".into(),
                origin: None,
                status: green("running"),
                instances: vec![
                    Instance {
                        index: 0,
                        state: "running".into(),
                        pid: Some(4242),
                        since_unix_ms: Some(now - 83_000),
                        restarts: Some(0),
                        last_exit_code: None,
                        last_exit_signal: None,
                        adopted: None,
                        reason: Some("started as pid 4242".into()),
                        ..Default::default()
                    },
                    Instance {
                        index: 1,
                        state: "backoff".into(),
                        pid: None,
                        since_unix_ms: Some(now - 1000),
                        restarts: Some(3),
                        last_exit_code: None,
                        last_exit_signal: Some(9),
                        adopted: None,
                        reason: Some("backoff 2s (signal 9 (KILL), 3rd failure)".into()),
                        ..Default::default()
                    },
                ],
                ..Service::default()
            },
            Service {
                id: "database".into(),
                origin: None,
                status: green("stopped"),
                instances: Vec::new(),
                ..Service::default()
            },
        ];
        let expected = "\
SERVICE   INSTANCE  STATE    PID   UPTIME   RESTARTS  LAST EXIT  REASON
web       0         running  4242  0:01:23  0         -          started as pid 4242
web       1         backoff  -     -        3         signal 9   backoff 2s (signal 9 (KILL), 3rd failure)
database  -         -        -     -        -         -          -";
        assert_eq!(status_table(&services, now, false), expected);
        let painted = status_table(&services, now, true);
        assert!(
            painted.contains("\x1b[32mrunning\x1b[0m  4242"),
            "{painted}"
        );
        assert!(painted.contains("\x1b[33mbackoff\x1b[0m  -"), "{painted}");
    }

    #[test]
    fn node_info_shows_version_config_colour_and_details() {
        let info = NodeInfoResponse {
            node: Some(NodeInfo {
                name: "alpha".into(),
                version: NodeVersion {
                    commit: "1a2b3c".into(),
                    taint: Some("clean".into()),
                    version: Some("0.1.0".into()),
                },
                config: Some(ConfigVersion {
                    effective: "9f86d0".into(),
                    symbolic: "prod".into(),
                }),
            }),
            overall: Some(SystemStatus {
                colour: StatusColour::Red as i32,
                code: Some(6),
                reason: "spawner died".into(),
            }),
            details: vec![SubSystem {
                name: "io".into(),
                status: green("serving"),
            }],
        };
        let expected = "\
name     alpha
version  0.1.0 (commit 1a2b3c, clean)
config   prod (effective 9f86d0)
status   RED: spawner died

SUBSYSTEM  COLOUR  REASON
io         GREEN   serving";
        assert_eq!(node_info(&info, false), expected);
    }

    #[test]
    fn trace_lists_hops_with_offsets_then_the_state() {
        let hop = |at, from: &str, to: &str, code: &str| Hop {
            at_unix_us: at,
            from_role: from.into(),
            to_role: to.into(),
            protocol: "public".into(),
            code: code.into(),
        };
        let response = TraceResponse {
            state: "done".into(),
            hops: vec![
                hop(1000, "client", "io", "ServiceStatusRequest"),
                hop(1042, "manager", "io", "ServiceStatusResponse"),
            ],
        };
        let expected = "\
OFFSET  HOP           PROTOCOL  CODE
+0 µs   client → io   public    ServiceStatusRequest
+42 µs  manager → io  public    ServiceStatusResponse
state: done";
        assert_eq!(trace(&response), expected);
        let unknown = TraceResponse {
            state: "unknown".into(),
            hops: Vec::new(),
        };
        assert_eq!(trace(&unknown), "state: unknown");
    }

    #[test]
    fn event_line_has_time_service_index_state_pid_and_exit() {
        let event = Event {
            service_id: "web".into(),
            index: 2,
            state: "exited".into(),
            pid: Some(77),
            at_unix_ms: 0,
            exit_code: Some(1),
            exit_signal: None,
            reason: None,
            ..Default::default()
        };
        assert_eq!(
            event_line(&event),
            "1970-01-01T00:00:00.000Z  web  2  exited    pid 77  exit code 1"
        );
        let event = Event {
            reason: Some("db went down; waiting for it".into()),
            ..event
        };
        assert!(event_line(&event).ends_with("exit code 1  (db went down; waiting for it)"));
    }
}
