//! The cluster requests of [`Client`], and the text and JSON of a cluster
//! status.

use super::json::JsonObject;
use super::render::Table;
use super::{Client, ClientError, expect_ack, take_payload};
use crate::wire::proto::public_api::message::{Code, Payload};
use crate::wire::proto::public_api::{ClusterApply, ClusterService, ClusterStatus, cluster_apply};

impl Client {
    /// Every node and every cluster service, as the cluster's store has
    /// them, asked through this node.
    pub fn cluster_status(&mut self) -> Result<ClusterStatus, ClientError> {
        let reply = self.request(Code::ClusterStatusRequest, None)?;
        take_payload(
            reply,
            Code::ClusterStatusResponse,
            "a ClusterStatusResponse",
            |payload| match payload {
                Payload::ClusterStatus(status) => Some(status),
                _ => None,
            },
        )
    }

    /// Writes cluster service files, each `(id, path, text)`; the node
    /// validates them all before it writes any.
    pub fn cluster_apply(&mut self, files: &[(String, String, String)]) -> Result<(), ClientError> {
        let apply = ClusterApply {
            files: files
                .iter()
                .map(|(id, path, text)| cluster_apply::File {
                    id: id.clone(),
                    text: text.clone(),
                    path: Some(path.clone()),
                })
                .collect(),
        };
        let reply = self.request(Code::ClusterApply, Some(Payload::ClusterApply(apply)))?;
        expect_ack(&reply)
    }

    /// Removes (`ClusterRemove`), starts or stops a cluster service.
    pub fn cluster_change(&mut self, code: Code, id: &str) -> Result<(), ClientError> {
        let service = Payload::ClusterService(ClusterService { id: id.to_owned() });
        let reply = self.request(code, Some(service))?;
        expect_ack(&reply)
    }
}

/// A cluster status as two tables: the nodes, then the instances.
pub fn cluster_status_text(status: &ClusterStatus) -> String {
    let mut nodes = Table::with_header(&["NODE", "ALIVE", "LABELS", "INSTANCES"]);
    for node in &status.nodes {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|label| format!("{}={}", label.key, label.value))
            .collect();
        let mut name = node.name.clone();
        if status.scheduler.as_deref() == Some(node.name.as_str()) {
            name.push_str(" (scheduler)");
        }
        nodes.row(vec![
            name,
            if node.alive { "yes" } else { "no" }.to_owned(),
            dash_if_empty(labels.join(",")),
            dash_if_empty(node.instances.join(",")),
        ]);
    }
    let mut instances = Table::with_header(&["SERVICE", "INSTANCE", "NODE", "STATE", "PID"]);
    for service in &status.services {
        if service.placed.is_empty() {
            let state = if service.stopped() { "stopped" } else { "-" };
            let row = [&service.id, "-", "-", state, "-"];
            instances.row(row.iter().map(|cell| (*cell).to_owned()).collect());
        }
        for instance in &service.placed {
            instances.row(vec![
                service.id.clone(),
                instance.index.to_string(),
                instance
                    .node
                    .clone()
                    .unwrap_or_else(|| "(unplaced)".to_owned()),
                instance.state.clone().unwrap_or_else(|| "-".to_owned()),
                instance
                    .pid
                    .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            ]);
        }
    }
    format!("{}\n\n{}", nodes.render(), instances.render())
}

/// A cluster status as one JSON object.
pub fn cluster_status_json(status: &ClusterStatus) -> String {
    JsonObject::new()
        .optional_string("answered_by", status.answered_by.as_deref())
        .optional_string("scheduler", status.scheduler.as_deref())
        .array(
            "nodes",
            status.nodes.iter().map(|node| {
                let labels = node.labels.iter().fold(JsonObject::new(), |labels, label| {
                    labels.string(&label.key, &label.value)
                });
                JsonObject::new()
                    .string("name", &node.name)
                    .bool("alive", node.alive)
                    .object("labels", labels)
                    .array(
                        "instances",
                        node.instances
                            .iter()
                            .map(|instance| JsonObject::new().string("instance", instance)),
                    )
                    .optional_string("version", node.version.as_deref())
                    .optional_int("started_unix_ms", node.started_unix_ms)
            }),
        )
        .array(
            "services",
            status.services.iter().map(|service| {
                JsonObject::new()
                    .string("id", &service.id)
                    .int("instances", service.instances)
                    .bool("stopped", service.stopped())
                    .array(
                        "placed",
                        service.placed.iter().map(|instance| {
                            JsonObject::new()
                                .int("index", instance.index)
                                .optional_string("node", instance.node.as_deref())
                                .optional_string("state", instance.state.as_deref())
                                .optional_int("pid", instance.pid)
                        }),
                    )
            }),
        )
        .finish()
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}
