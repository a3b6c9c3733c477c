//! The JSON text of the node's replies, one object per reply, for
//! `snow-fox-client --json`. A small hand-written writer ([`JsonObject`])
//! instead of a serialization crate: the reply types are few and fixed.
//! Pure: builds strings, does no I/O. Colours are the words of
//! [`render::colour_word`](super::render::colour_word); absent optional
//! fields are `null`, so every object of a type has the same keys.

use super::render::colour_word;
use crate::wire::proto::public_api::node_info_response::SystemStatus;
use crate::wire::proto::public_api::{
    Event, NodeInfoResponse, ServiceDefinitionResponse, ServiceStatusResponse, TraceResponse,
    log_lines,
};

/// Builds one JSON object, key by key, in the order given.
#[derive(Debug)]
pub struct JsonObject {
    text: String,
}

impl Default for JsonObject {
    fn default() -> Self {
        JsonObject {
            text: String::from("{"),
        }
    }
}

impl JsonObject {
    /// An empty object.
    pub fn new() -> JsonObject {
        JsonObject::default()
    }

    /// Adds a string.
    pub fn string(mut self, key: &str, value: &str) -> JsonObject {
        self.key(key);
        push_string(&mut self.text, value);
        self
    }

    /// Adds a string, or `null`.
    pub fn optional_string(self, key: &str, value: Option<&str>) -> JsonObject {
        match value {
            Some(value) => self.string(key, value),
            None => self.null(key),
        }
    }

    /// Adds an integer (any of the protocol's integer types).
    pub fn int(mut self, key: &str, value: impl Into<i128>) -> JsonObject {
        self.key(key);
        self.text.push_str(&value.into().to_string());
        self
    }

    /// Adds an integer, or `null`.
    pub fn optional_int(self, key: &str, value: Option<impl Into<i128>>) -> JsonObject {
        match value {
            Some(value) => self.int(key, value),
            None => self.null(key),
        }
    }

    /// Adds `true` or `false`.
    pub fn bool(mut self, key: &str, value: bool) -> JsonObject {
        self.key(key);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    /// Adds `true`, `false` or `null`.
    pub fn optional_bool(self, key: &str, value: Option<bool>) -> JsonObject {
        match value {
            Some(value) => self.bool(key, value),
            None => self.null(key),
        }
    }

    /// Adds an array of strings.
    pub fn strings(mut self, key: &str, values: &[String]) -> JsonObject {
        self.key(key);
        self.text.push('[');
        for (position, value) in values.iter().enumerate() {
            if position > 0 {
                self.text.push(',');
            }
            push_string(&mut self.text, value);
        }
        self.text.push(']');
        self
    }

    /// Adds a nested object.
    pub fn object(mut self, key: &str, value: JsonObject) -> JsonObject {
        self.key(key);
        self.text.push_str(&value.finish());
        self
    }

    /// Adds a nested object, or `null`.
    pub fn optional_object(self, key: &str, value: Option<JsonObject>) -> JsonObject {
        match value {
            Some(value) => self.object(key, value),
            None => self.null(key),
        }
    }

    /// Adds an array of objects.
    pub fn array(mut self, key: &str, items: impl IntoIterator<Item = JsonObject>) -> JsonObject {
        self.key(key);
        self.text.push('[');
        for (position, item) in items.into_iter().enumerate() {
            if position > 0 {
                self.text.push(',');
            }
            self.text.push_str(&item.finish());
        }
        self.text.push(']');
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }

    fn null(mut self, key: &str) -> JsonObject {
        self.key(key);
        self.text.push_str("null");
        self
    }

    fn key(&mut self, key: &str) {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        push_string(&mut self.text, key);
        self.text.push(':');
    }
}

/// Appends `value` as a quoted JSON string, escaping what JSON requires.
fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for character in value.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if u32::from(control) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(control)));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// A `NodeInfoResponse`.
pub fn node_info(info: &NodeInfoResponse) -> String {
    let node = info.node.as_ref().map(|node| {
        let version = JsonObject::new()
            .string("commit", &node.version.commit)
            .optional_string("taint", node.version.taint.as_deref())
            .optional_string("version", node.version.version.as_deref());
        let config = node.config.as_ref().map(|config| {
            JsonObject::new()
                .string("effective", &config.effective)
                .string("symbolic", &config.symbolic)
        });
        JsonObject::new()
            .string("name", &node.name)
            .object("version", version)
            .optional_object("config", config)
    });
    JsonObject::new()
        .optional_object("node", node)
        .optional_object("overall", info.overall.as_ref().map(system_status))
        .array(
            "details",
            info.details.iter().map(|subsystem| {
                JsonObject::new()
                    .string("name", &subsystem.name)
                    .object("status", system_status(&subsystem.status))
            }),
        )
        .finish()
}

/// A `ServiceStatusResponse`.
pub fn service_status(status: &ServiceStatusResponse) -> String {
    JsonObject::new()
        .array(
            "services",
            status.services.iter().map(|service| {
                JsonObject::new()
                    .string("id", &service.id)
                    .string("origin", service.origin.as_deref().unwrap_or("local"))
                    .optional_string("description", service.description.as_deref())
                    .optional_bool("enabled", service.enabled)
                    .optional_string("desired", service.desired.as_deref())
                    .object("status", system_status(&service.status))
                    .array(
                        "instances",
                        service.instances.iter().map(|instance| {
                            JsonObject::new()
                                .int("index", instance.index)
                                .string("state", &instance.state)
                                .optional_int("pid", instance.pid)
                                .optional_int("since_unix_ms", instance.since_unix_ms)
                                .optional_int("restarts", instance.restarts)
                                .optional_int("last_exit_code", instance.last_exit_code)
                                .optional_int("last_exit_signal", instance.last_exit_signal)
                                .bool("adopted", instance.adopted())
                                .bool("last_exit_oom", instance.last_exit_oom())
                                .optional_string(
                                    "last_exit_reason",
                                    instance.last_exit_reason.as_deref(),
                                )
                                .optional_int("last_run_ms", instance.last_run_ms)
                                .optional_int("last_cpu_usec", instance.last_cpu_usec)
                                .optional_int("last_peak_rss_bytes", instance.last_peak_rss_bytes)
                                .optional_string("reason", instance.reason.as_deref())
                        }),
                    )
            }),
        )
        .array(
            "metrics",
            status.metrics.iter().map(|metrics| {
                JsonObject::new()
                    .string("service_id", &metrics.service_id)
                    .int("index", metrics.index)
                    .optional_int("cpu_usec", metrics.cpu_usec)
                    .optional_int("cpu_permille", metrics.cpu_permille)
                    .optional_int("memory_bytes", metrics.memory_bytes)
                    .optional_int("memory_peak_bytes", metrics.memory_peak_bytes)
                    .optional_int("tasks", metrics.tasks)
            }),
        )
        .strings("added", &status.added)
        .strings("changed", &status.changed)
        .strings("removed", &status.removed)
        .strings("unchanged", &status.unchanged)
        .finish()
}

/// A `ServiceDefinitionResponse`.
pub fn definition(definition: &ServiceDefinitionResponse) -> String {
    JsonObject::new()
        .string("service_id", &definition.service_id)
        .string("file", &definition.file)
        .string("text", &definition.text)
        .strings("command", &definition.command)
        .optional_string("user", definition.user.as_deref())
        .optional_string("group", definition.group.as_deref())
        .optional_string("work_dir", definition.work_dir.as_deref())
        .optional_string("description", definition.description.as_deref())
        .strings("requires", &definition.requires)
        .strings("after", &definition.after)
        .optional_string("ready", definition.ready.as_deref())
        .optional_string("health", definition.health.as_deref())
        .int("instances", definition.instances)
        .optional_string("stdout", definition.stdout.as_deref())
        .optional_string("stderr", definition.stderr.as_deref())
        .finish()
}

/// A `TraceResponse`.
pub fn trace(trace: &TraceResponse) -> String {
    JsonObject::new()
        .string("state", &trace.state)
        .array(
            "hops",
            trace.hops.iter().map(|hop| {
                JsonObject::new()
                    .int("at_unix_us", hop.at_unix_us)
                    .string("from_role", &hop.from_role)
                    .string("to_role", &hop.to_role)
                    .string("protocol", &hop.protocol)
                    .string("code", &hop.code)
            }),
        )
        .finish()
}

/// An `Event`.
pub fn event(event: &Event) -> String {
    JsonObject::new()
        .string("service_id", &event.service_id)
        .int("index", event.index)
        .string("state", &event.state)
        .optional_int("pid", event.pid)
        .int("at_unix_ms", event.at_unix_ms)
        .optional_int("exit_code", event.exit_code)
        .optional_int("exit_signal", event.exit_signal)
        .optional_string("reason", event.reason.as_deref())
        .bool("oom", event.oom())
        .finish()
}

/// One captured line.
pub fn log_line(line: &log_lines::Line) -> String {
    JsonObject::new()
        .string("service_id", &line.service_id)
        .int("instance", line.instance)
        .string("stream", &line.stream)
        .int("at_unix_us", line.at_unix_us)
        .string("text", &line.text)
        .finish()
}

fn system_status(status: &SystemStatus) -> JsonObject {
    JsonObject::new()
        .string("colour", colour_word(status.colour))
        .optional_int("code", status.code)
        .string("reason", &status.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::public_api::node_info_response::{NodeInfo, NodeVersion};
    use crate::wire::proto::public_api::service_status_response::{Instance, Service};
    use crate::wire::proto::public_api::trace_response::Hop;

    #[test]
    fn strings_are_escaped() {
        let text = JsonObject::new()
            .string("quote\"key", "back\\slash\nnew\ttab\u{1}bell é")
            .finish();
        assert_eq!(
            text,
            r#"{"quote\"key":"back\\slash\nnew\ttab\u0001bell é"}"#
        );
    }

    #[test]
    fn every_value_kind_and_nesting() {
        let text = JsonObject::new()
            .int("negative", -5i32)
            .int("big", u64::MAX)
            .bool("yes", true)
            .optional_int("none", None::<u32>)
            .optional_string("absent", None)
            .object("inner", JsonObject::new().bool("no", false))
            .array("empty", Vec::new())
            .array("two", [JsonObject::new().int("n", 1u32), JsonObject::new()])
            .finish();
        assert_eq!(
            text,
            r#"{"negative":-5,"big":18446744073709551615,"yes":true,"none":null,"absent":null,"inner":{"no":false},"empty":[],"two":[{"n":1},{}]}"#
        );
    }

    #[test]
    fn node_info_without_config_has_null_config() {
        let info = NodeInfoResponse {
            node: Some(NodeInfo {
                name: "alpha".into(),
                version: NodeVersion {
                    commit: "abc".into(),
                    taint: None,
                    version: Some("0.1.0".into()),
                },
                config: None,
            }),
            overall: Some(SystemStatus {
                colour: 1,
                code: Some(1),
                reason: "web starting".into(),
            }),
            details: Vec::new(),
        };
        assert_eq!(
            node_info(&info),
            r#"{"node":{"name":"alpha","version":{"commit":"abc","taint":null,"version":"0.1.0"},"config":null},"overall":{"colour":"YELLOW","code":1,"reason":"web starting"},"details":[]}"#
        );
    }

    #[test]
    fn service_status_lists_instances() {
        let status = ServiceStatusResponse {
            services: vec![Service {
                id: "web".into(),
                origin: None,
                status: SystemStatus {
                    colour: 0,
                    code: Some(0),
                    reason: "running".into(),
                },
                instances: vec![Instance {
                    index: 0,
                    state: "running".into(),
                    pid: Some(12),
                    since_unix_ms: Some(5),
                    restarts: Some(0),
                    last_exit_code: None,
                    last_exit_signal: Some(15),
                    adopted: None,
                    reason: Some("started as pid 12".into()),
                    ..Default::default()
                }],
                description: None,
                enabled: Some(true),
                desired: Some("auto".into()),
            }],
            ..Default::default()
        };
        assert_eq!(
            service_status(&status),
            r#"{"services":[{"id":"web","origin":"local","description":null,"enabled":true,"desired":"auto","status":{"colour":"GREEN","code":0,"reason":"running"},"instances":[{"index":0,"state":"running","pid":12,"since_unix_ms":5,"restarts":0,"last_exit_code":null,"last_exit_signal":15,"adopted":false,"last_exit_oom":false,"last_exit_reason":null,"last_run_ms":null,"last_cpu_usec":null,"last_peak_rss_bytes":null,"reason":"started as pid 12"}]}],"metrics":[],"added":[],"changed":[],"removed":[],"unchanged":[]}"#
        );
    }

    #[test]
    fn trace_and_event() {
        let response = TraceResponse {
            state: "done".into(),
            hops: vec![Hop {
                at_unix_us: 7,
                from_role: "client".into(),
                to_role: "io".into(),
                protocol: "public".into(),
                code: "Shutdown".into(),
            }],
        };
        assert_eq!(
            trace(&response),
            r#"{"state":"done","hops":[{"at_unix_us":7,"from_role":"client","to_role":"io","protocol":"public","code":"Shutdown"}]}"#
        );
        let change = Event {
            service_id: "web".into(),
            index: 1,
            state: "exited".into(),
            pid: None,
            at_unix_ms: 9,
            exit_code: Some(3),
            exit_signal: None,
            reason: None,
            ..Default::default()
        };
        assert_eq!(
            event(&change),
            r#"{"service_id":"web","index":1,"state":"exited","pid":null,"at_unix_ms":9,"exit_code":3,"exit_signal":null,"reason":null,"oom":false}"#
        );
    }
}
