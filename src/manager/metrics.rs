//! The node's metrics in the Prometheus text exposition format (0.0.4):
//! per instance (up, state, restarts, OOM kills, CPU, memory, tasks) and
//! for the node (requests by code, errors by kind, request latency,
//! open connections, trace entries, its own resident memory).
//!
//! Built only when asked (`MetricsRequest`, or `GET /metrics` through
//! io): the counters it reads are plain increments the manager makes as it
//! goes, so a node nobody scrapes pays nothing else.

use std::fmt::Write;
use std::time::Instant;

use crate::trace::LATENCY_BOUNDS_US;
use crate::wire::proto::public_api::error::Kind;
use crate::wire::proto::public_api::message::Code;
use crate::wire::proto::public_api::service_status_response::InstanceMetrics;

use super::Manager;
use super::instance::{Instance, State};
use super::usage::Usage;

/// How a family's value is read from an instance's metrics.
type Reading = fn(&InstanceMetrics) -> Option<String>;

/// How a family's value is read from an instance and its usage.
type Counted = fn(&Instance, &Usage) -> u64;

/// Codes and kinds are small numbers: one slot each.
const SLOTS: usize = 64;

/// What the manager counts as it answers.
#[derive(Debug)]
pub struct Counters {
    requests: [u64; SLOTS],
    errors: [u64; SLOTS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: [0; SLOTS],
            errors: [0; SLOTS],
        }
    }
}

impl Counters {
    /// Counts a request of `code`.
    pub fn request(&mut self, code: Code) {
        if let Some(slot) = self.requests.get_mut(code as usize) {
            *slot += 1;
        }
    }

    /// Counts an error reply of `kind`.
    pub fn error(&mut self, kind: Kind) {
        if let Some(slot) = self.errors.get_mut(kind as usize) {
            *slot += 1;
        }
    }
}

/// One metric family being written: its help and type lines first.
struct Family<'t> {
    text: &'t mut String,
}

impl<'t> Family<'t> {
    fn new(text: &'t mut String, name: &str, kind: &str, help: &str) -> Family<'t> {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { text }
    }

    /// One sample: `name{labels} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const STATES: [State; 7] = [
    State::Stopped,
    State::Starting,
    State::Running,
    State::Stopping,
    State::Backoff,
    State::Exited,
    State::Failed,
];

impl Manager {
    /// The node's metrics as Prometheus text.
    pub(super) fn prometheus(&self, now: Instant) -> String {
        let mut text = String::new();
        self.instance_families(&mut text, now);
        self.node_families(&mut text);
        text
    }

    fn instance_families(&self, text: &mut String, now: Instant) {
        let instances: Vec<_> = self
            .registry
            .values()
            .flat_map(|service| {
                service
                    .instances
                    .iter()
                    .zip(&service.usage)
                    .map(move |(instance, usage)| (service, instance, usage))
            })
            .collect();
        let measured: Vec<_> = instances
            .iter()
            .filter_map(|(service, instance, usage)| {
                let pid = instance.pid?;
                let metrics =
                    usage.metrics(&service.config.id, instance.index, pid, instance.since, now);
                Some(metrics)
            })
            .collect();
        let counted: [(&str, &str, &str, Counted); 3] = [
            (
                "snow_fox_instance_up",
                "gauge",
                "Whether the instance's process runs (1) or not (0).",
                |instance, _| u64::from(instance.pid.is_some()),
            ),
            (
                "snow_fox_instance_restarts_total",
                "counter",
                "Restarts of the instance since the node loaded it.",
                |instance, _| u64::from(instance.restarts),
            ),
            (
                "snow_fox_instance_oom_kills_total",
                "counter",
                "Runs of the instance that ended with a process killed for its memory limit.",
                |_, usage| usage.oom_kills,
            ),
        ];
        for (name, kind, help, value) in counted {
            let mut family = Family::new(text, name, kind, help);
            for (service, instance, usage) in &instances {
                let index = instance.index.to_string();
                let labels = [
                    ("service", service.config.id.as_str()),
                    ("instance", index.as_str()),
                ];
                family.sample(name, &labels, value(instance, usage));
            }
        }
        let mut family = Family::new(
            text,
            "snow_fox_instance_state",
            "gauge",
            "1 for the state the instance is in, 0 for the others.",
        );
        for (service, instance, _) in &instances {
            let index = instance.index.to_string();
            for state in STATES {
                let labels = [
                    ("service", service.config.id.as_str()),
                    ("instance", index.as_str()),
                    ("state", state.as_str()),
                ];
                family.sample(
                    "snow_fox_instance_state",
                    &labels,
                    u8::from(instance.state == state),
                );
            }
        }
        let gauges: [(&str, &str, &str, Reading); 4] = [
            (
                "snow_fox_instance_cpu_seconds_total",
                "counter",
                "CPU time used by the running instance's processes.",
                |m| m.cpu_usec.map(|usec| format!("{}", usec as f64 / 1e6)),
            ),
            (
                "snow_fox_instance_memory_bytes",
                "gauge",
                "Memory charged to the running instance now.",
                |m| m.memory_bytes.map(|b| b.to_string()),
            ),
            (
                "snow_fox_instance_memory_peak_bytes",
                "gauge",
                "The most memory charged to the running instance.",
                |m| m.memory_peak_bytes.map(|b| b.to_string()),
            ),
            (
                "snow_fox_instance_tasks",
                "gauge",
                "Tasks (threads) of the running instance.",
                |m| m.tasks.map(|t| t.to_string()),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let mut family = Family::new(text, name, kind, help);
            for metrics in &measured {
                if let Some(value) = value(metrics) {
                    let index = metrics.index.to_string();
                    let labels = [
                        ("service", metrics.service_id.as_str()),
                        ("instance", index.as_str()),
                    ];
                    family.sample(name, &labels, value);
                }
            }
        }
    }

    fn node_families(&self, text: &mut String) {
        let mut family = Family::new(
            text,
            "snow_fox_requests_total",
            "counter",
            "Client requests answered, by code (node info io answered too).",
        );
        let by_io = self.links.node_info.answered_by_io();
        for (number, count) in self.counters.requests.iter().enumerate() {
            let count = if number == Code::NodeInfoRequest as usize {
                count + by_io
            } else {
                *count
            };
            if let Ok(code) = Code::try_from(number as i32)
                && count > 0
            {
                family.sample(
                    "snow_fox_requests_total",
                    &[("code", code.as_str_name())],
                    count,
                );
            }
        }
        let mut family = Family::new(
            text,
            "snow_fox_errors_total",
            "counter",
            "Error replies the manager sent, by kind.",
        );
        for (number, count) in self.counters.errors.iter().enumerate() {
            if let Ok(kind) = Kind::try_from(number as i32)
                && *count > 0
            {
                family.sample(
                    "snow_fox_errors_total",
                    &[("kind", kind.as_str_name())],
                    count,
                );
            }
        }
        let (latency, entries) = {
            let table = self.tracer.lock();
            (table.latency().clone(), table.len())
        };
        let name = "snow_fox_request_duration_seconds";
        let mut family = Family::new(
            text,
            name,
            "histogram",
            "Time from a request's arrival to its last reply leaving.",
        );
        let mut cumulative = 0;
        for (index, count) in latency.buckets.iter().enumerate() {
            cumulative += count;
            let bound = LATENCY_BOUNDS_US
                .get(index)
                .map_or_else(|| "+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
            family.sample(
                &format!("{name}_bucket"),
                &[("le", bound.as_str())],
                cumulative,
            );
        }
        family.sample(&format!("{name}_sum"), &[], latency.sum_us as f64 / 1e6);
        family.sample(&format!("{name}_count"), &[], cumulative);
        Family::new(
            text,
            "snow_fox_open_connections",
            "gauge",
            "Client connections open now.",
        )
        .sample(
            "snow_fox_open_connections",
            &[],
            self.tracer.open_connections(),
        );
        Family::new(
            text,
            "snow_fox_trace_entries",
            "gauge",
            "Requests the correlation table holds for trace.",
        )
        .sample("snow_fox_trace_entries", &[], entries);
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let kib = status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))?;
                kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
            })
            .unwrap_or(0);
        Family::new(
            text,
            "snow_fox_resident_memory_bytes",
            "gauge",
            "The node process's resident memory.",
        )
        .sample("snow_fox_resident_memory_bytes", &[], rss * 1024);
    }
}
