//! The human-readable text of the node's replies, as `snow-fox-client`
//! prints them: aligned tables, colours spelled out as words, uptimes,
//! exits and UTC times. Pure functions from a reply to a `String` (without
//! a final newline); nothing here does I/O.

use crate::wire::proto::public_api::service_status_response::Service;
use crate::wire::proto::public_api::{
    Event, NodeInfoResponse, StatusColour, TraceResponse, node_info_response::SystemStatus,
};

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

/// The status table, one row per instance, like `supervisorctl status`.
/// `now_unix_ms` is the clock the uptimes are measured against.
pub fn status_table(services: &[Service], now_unix_ms: u64) -> String {
    const HEADER: [&str; 7] = [
        "SERVICE",
        "INSTANCE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
    ];
    let mut table = Table::with_header(&HEADER);
    for service in services {
        if service.instances.is_empty() {
            // A service without instances still gets its line, so that it
            // does not vanish from the listing.
            let mut row = vec![service.id.clone()];
            row.resize(HEADER.len(), "-".to_owned());
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
            table.row(vec![
                name,
                instance.index.to_string(),
                state,
                or_dash(instance.pid),
                uptime,
                or_dash(instance.restarts),
                last_exit(instance.last_exit_code, instance.last_exit_signal),
            ]);
        }
    }
    table.render()
}

/// Node info: name, version, configuration and overall health, then with
/// details one row per subsystem.
pub fn node_info(info: &NodeInfoResponse) -> String {
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
        info.overall.as_ref().map_or("-".to_owned(), system_status),
    ]);
    let mut text = summary.render();
    if !info.details.is_empty() {
        let mut details = Table::with_header(&["SUBSYSTEM", "COLOUR", "REASON"]);
        for subsystem in &info.details {
            details.row(vec![
                subsystem.name.clone(),
                colour_word(subsystem.status.colour).to_owned(),
                subsystem.status.reason.clone(),
            ]);
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
fn last_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(signal)) => format!("signal {signal}"),
        (Some(code), None) => format!("code {code}"),
        (None, None) => "-".to_owned(),
    }
}

/// `2024-05-01T12:03:04.056Z`: UTC, because the client knows no time zones.
fn utc_time(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        unix_ms % 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Rows of cells printed in columns as wide as their widest cell (counted
/// in characters, so "→" and "µ" are one), two spaces apart.
#[derive(Default)]
pub(super) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn with_header(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()],
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
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
        for row in &self.rows {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                if !line.is_empty() {
                    line.push_str("  ");
                }
                line.push_str(cell);
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
                    },
                ],
            },
            Service {
                id: "database".into(),
                origin: None,
                status: green("stopped"),
                instances: Vec::new(),
            },
        ];
        let expected = "\
SERVICE   INSTANCE  STATE    PID   UPTIME   RESTARTS  LAST EXIT
web       0         running  4242  0:01:23  0         -
web       1         backoff  -     -        3         signal 9
database  -         -        -     -        -         -";
        assert_eq!(status_table(&services, now), expected);
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
        assert_eq!(node_info(&info), expected);
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
