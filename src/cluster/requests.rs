//! The public cluster requests, carried out against the store: status,
//! apply, remove, start and stop. Each is answered once, with its reply
//! or an `Error` saying what failed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::scheduler::{presence_labels, service_record, service_value};
use super::{Cluster, EtcdError};
use crate::conf::parse_cluster_service;
use crate::wire::proto::public_api::{
    self, ClusterApply, ClusterStatus, cluster_status, error::Kind, message::Code, message::Payload,
};
use crate::wire::{Request, error_reply};

/// A refused request: its kind and reason.
type Refusal = (Kind, String);

impl From<EtcdError> for (Kind, String) {
    fn from(error: EtcdError) -> Self {
        (Kind::ClusterUnavailable, error.to_string())
    }
}

impl Cluster {
    /// The final reply to a public cluster request.
    pub(super) fn answer(
        &mut self,
        request: public_api::Message,
        correlation: Option<String>,
    ) -> public_api::Message {
        let result = match Request::from_message(request.code, request.payload) {
            Ok(Request::ClusterStatusRequest) => self.cluster_status().map(|status| {
                (
                    Code::ClusterStatusResponse,
                    Some(Payload::ClusterStatus(status)),
                )
            }),
            Ok(Request::ClusterApply(apply)) => self.apply(apply).map(|()| (Code::Ack, None)),
            Ok(Request::ClusterRemove(service)) => self
                .change(Code::ClusterRemove, &service.id)
                .map(|()| (Code::Ack, None)),
            Ok(Request::ClusterStart(service)) => self
                .change(Code::ClusterStart, &service.id)
                .map(|()| (Code::Ack, None)),
            Ok(Request::ClusterStop(service)) => self
                .change(Code::ClusterStop, &service.id)
                .map(|()| (Code::Ack, None)),
            // The manager forwards only the five above; what else a
            // compromised or buggy manager sends is refused as a whole, so
            // that a new public request does not touch the cluster role.
            Ok(other) => Err((
                Kind::BadRequest,
                format!("{} is not a cluster request", other.code().as_str_name()),
            )),
            Err(bad) => Err((Kind::BadRequest, bad.reason)),
        };
        match result {
            Ok((code, payload)) => public_api::Message {
                code: code as i32,
                correlation_id: correlation,
                payload,
            },
            Err((kind, reason)) => error_reply(correlation, kind, reason),
        }
    }

    fn cluster_status(&mut self) -> Result<ClusterStatus, Refusal> {
        let (nodes, _) = self.etcd.range_prefix(&self.keys.nodes())?;
        let services = self.read_services()?;
        let under = self.keys.assigns();
        let (assigns, _) = self.etcd.range_prefix(&under)?;
        let status_under = self.keys.statuses();
        let (statuses, _) = self.etcd.range_prefix(&status_under)?;
        let scheduler = self.etcd.get(&self.keys.scheduler())?.map(|kv| kv.value);

        let mut shown: BTreeMap<String, cluster_status::Node> = BTreeMap::new();
        for kv in &nodes {
            let Some(name) = kv.key.strip_prefix(&self.keys.nodes()) else {
                continue;
            };
            let presence: Value = serde_json::from_str(&kv.value).unwrap_or_default();
            shown.insert(
                name.to_owned(),
                cluster_status::Node {
                    name: name.to_owned(),
                    labels: presence_labels(&kv.value)
                        .into_iter()
                        .map(|(key, value)| cluster_status::Label { key, value })
                        .collect(),
                    alive: true,
                    instances: Vec::new(),
                    version: presence
                        .get("version")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    started_unix_ms: presence.get("started_unix_ms").and_then(Value::as_u64),
                },
            );
        }
        let mut placed: BTreeMap<(String, u32), String> = BTreeMap::new();
        for kv in &assigns {
            let Some((node, id, index)) = super::instance_key(&kv.key, &under) else {
                continue;
            };
            let entry = shown
                .entry(node.to_owned())
                .or_insert_with(|| cluster_status::Node {
                    name: node.to_owned(),
                    labels: Vec::new(),
                    alive: false,
                    instances: Vec::new(),
                    version: None,
                    started_unix_ms: None,
                });
            entry.instances.push(format!("{id}.{index}"));
            placed.insert((id, index), node.to_owned());
        }
        let mut states: BTreeMap<(String, String, u32), Value> = BTreeMap::new();
        for kv in &statuses {
            if let Some((node, id, index)) = super::instance_key(&kv.key, &status_under) {
                let value = serde_json::from_str(&kv.value).unwrap_or_default();
                states.insert((node.to_owned(), id, index), value);
            }
        }
        let services = services
            .into_iter()
            .map(|(id, (wanted, _))| {
                let count = wanted.placement.instances;
                let placed = (0..count)
                    .map(|index| {
                        let node = placed.get(&(id.clone(), index)).cloned();
                        let state = node
                            .as_ref()
                            .and_then(|node| states.get(&(node.clone(), id.clone(), index)));
                        cluster_status::Instance {
                            index,
                            state: state
                                .and_then(|s| s.get("state"))
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            pid: state
                                .and_then(|s| s.get("pid"))
                                .and_then(Value::as_u64)
                                .and_then(|pid| u32::try_from(pid).ok()),
                            node,
                        }
                    })
                    .collect();
                cluster_status::Service {
                    id,
                    instances: count,
                    stopped: Some(wanted.stopped),
                    placed,
                }
            })
            .collect();
        Ok(ClusterStatus {
            nodes: shown.into_values().collect(),
            services,
            scheduler,
            answered_by: Some(self.name.clone()),
        })
    }

    /// Validates every file, then writes them all; a stopped service stays
    /// stopped under its new definition.
    fn apply(&mut self, apply: ClusterApply) -> Result<(), Refusal> {
        if apply.files.is_empty() {
            return Err((Kind::BadRequest, "no cluster service file given".to_owned()));
        }
        let mut problems = Vec::new();
        for file in &apply.files {
            let path = file
                .path
                .clone()
                .unwrap_or_else(|| format!("{}.toml", file.id));
            if let Err(error) = parse_cluster_service(&file.id, Path::new(&path), &file.text) {
                problems.push(error.to_string());
            }
        }
        if !problems.is_empty() {
            return Err((Kind::ConfigInvalid, problems.join("\n")));
        }
        for file in &apply.files {
            let key = self.keys.service(&file.id);
            let stopped = self
                .etcd
                .get(&key)?
                .and_then(|kv| service_record(&kv.value))
                .is_some_and(|(_, stopped)| stopped);
            self.etcd
                .put(&key, &service_value(&file.text, stopped), 0)?;
            log::info!("cluster: service {} applied", file.id);
        }
        self.schedule_dirty = true;
        Ok(())
    }

    fn change(&mut self, code: Code, id: &str) -> Result<(), Refusal> {
        let key = self.keys.service(id);
        let Some((definition, _)) = self
            .etcd
            .get(&key)?
            .and_then(|kv| service_record(&kv.value))
        else {
            return Err((
                Kind::UnknownService,
                format!("no cluster service named `{id}` (see `snow-fox-client cluster status`)"),
            ));
        };
        match code {
            Code::ClusterRemove => self.etcd.delete(&key, false)?,
            _ => {
                let stopped = code == Code::ClusterStop;
                self.etcd
                    .put(&key, &service_value(&definition, stopped), 0)?;
            }
        }
        log::info!("cluster: service {id}: {}", code.as_str_name());
        self.schedule_dirty = true;
        Ok(())
    }
}
