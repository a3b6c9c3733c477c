//! The scheduler's pass: read nodes, services and assignments, place
//! (`placement.rs`), and write the difference in transactions guarded by
//! holding the scheduler key, so a deposed scheduler writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::placement::{self, InstanceKey, Wanted};
use super::{Cluster, EtcdError, Guard, Op};
use crate::conf::parse_cluster_service;

/// etcd's default limit of operations in one transaction.
const MAX_TXN_OPS: usize = 128;

impl Cluster {
    /// One scheduling pass; `Ok` also when another node turned out to
    /// hold the scheduler key (this one then stops scheduling).
    pub(super) fn schedule(&mut self, now: Instant) -> Result<(), EtcdError> {
        let (nodes, _) = self.etcd.range_prefix(&self.keys.nodes())?;
        let alive: BTreeMap<String, BTreeMap<String, String>> = nodes
            .iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&self.keys.nodes())?;
                Some((name.to_owned(), presence_labels(&kv.value)))
            })
            .collect();
        let services = self.read_services()?;
        let wanted: BTreeMap<String, Wanted> = services
            .iter()
            .map(|(id, (wanted, _))| (id.clone(), wanted.clone()))
            .collect();
        let under = self.keys.assigns();
        let (assigns, _) = self.etcd.range_prefix(&under)?;
        let mut current: BTreeMap<InstanceKey, String> = BTreeMap::new();
        let mut values: BTreeMap<(String, InstanceKey), String> = BTreeMap::new();
        let mut stray = Vec::new();
        for kv in assigns {
            let Some((node, id, index)) = super::instance_key(&kv.key, &under) else {
                continue;
            };
            // Two keys for one instance cannot come from this scheduler;
            // the second is removed.
            if current.contains_key(&(id.clone(), index)) {
                stray.push(kv.key.clone());
                continue;
            }
            current.insert((id.clone(), index), node.to_owned());
            values.insert((node.to_owned(), (id, index)), kv.value);
        }

        let dead: Vec<String> = current
            .values()
            .filter(|node| !alive.contains_key(*node))
            .cloned()
            .collect();
        self.dead_since.retain(|node, _| dead.contains(node));
        for node in dead {
            self.dead_since.entry(node).or_insert(now);
        }
        let window = self.config.lease_ttl * 2;
        for name in alive.keys() {
            self.seen.insert(name.clone(), now);
        }
        self.seen.retain(|_, at| now.duration_since(*at) <= window);
        let gone: BTreeSet<String> = self
            .seen
            .keys()
            .filter(|node| !alive.contains_key(*node))
            .chain(self.dead_since.keys())
            .cloned()
            .collect();
        let held = placement::held(&gone, &self.dead_since, alive.len(), now, window);
        if !held.is_empty() {
            log::warn!(
                "cluster: {} of {} nodes vanished at once ({}): the instances of {} stay put for up to {window:?}, \
                 the store or the network is more likely at fault",
                gone.len(),
                gone.len() + alive.len(),
                gone.iter().cloned().collect::<Vec<_>>().join(", "),
                held.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let placed = placement::place(&alive, &wanted, &current, &held);

        let mut ops: Vec<Op> = stray.into_iter().map(|key| Op::Delete { key }).collect();
        for (key, node) in &current {
            if placed.get(key) != Some(node) {
                let (id, index) = key;
                match placed.get(key) {
                    Some(to) => log::info!("cluster: {id}.{index} moves from {node} to {to}"),
                    None => log::info!("cluster: {id}.{index} is no longer placed (was on {node})"),
                }
                ops.push(Op::Delete {
                    key: self.keys.assign(node, id, *index),
                });
            }
        }
        for (key, node) in &placed {
            let (id, index) = key;
            let Some((_, definition)) = services.get(id) else {
                continue;
            };
            if values.get(&(node.clone(), key.clone())) != Some(definition) {
                if !current.contains_key(key) {
                    log::info!("cluster: {id}.{index} placed on {node}");
                }
                ops.push(Op::Put {
                    key: self.keys.assign(node, id, *index),
                    value: definition.clone(),
                    lease: 0,
                });
            }
        }
        let guard = [Guard::Holds(self.keys.scheduler(), self.name.clone())];
        for chunk in ops.chunks(MAX_TXN_OPS) {
            if !self.etcd.txn(&guard, chunk)? {
                log::warn!("cluster: another node holds the scheduler key: no longer scheduling");
                self.scheduler = false;
                self.scheduler_watches.clear();
                return Ok(());
            }
        }
        Ok(())
    }

    /// Every cluster service the store holds, by id: its placement and
    /// whether it is stopped, and its definition. One that no longer
    /// parses (written by a newer node, or by hand) is skipped, loudly.
    pub(super) fn read_services(
        &mut self,
    ) -> Result<BTreeMap<String, (Wanted, String)>, EtcdError> {
        let (kvs, _) = self.etcd.range_prefix(&self.keys.services())?;
        let mut services = BTreeMap::new();
        for kv in kvs {
            let Some(id) = kv.key.strip_prefix(&self.keys.services()) else {
                continue;
            };
            let Some((definition, stopped)) = service_record(&kv.value) else {
                log::warn!("cluster: {} is not a service record; skipped", kv.key);
                continue;
            };
            match parse_cluster_service(id, Path::new(&kv.key), &definition) {
                Ok(service) => {
                    let wanted = Wanted {
                        placement: service.placement,
                        stopped,
                    };
                    services.insert(id.to_owned(), (wanted, definition));
                }
                Err(error) => log::warn!("cluster: {} does not parse; skipped: {error}", kv.key),
            }
        }
        Ok(services)
    }
}

/// A presence key's labels.
pub(super) fn presence_labels(value: &str) -> BTreeMap<String, String> {
    serde_json::from_str::<Value>(value)
        .ok()
        .and_then(|value| value.get("labels").and_then(Value::as_object).cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.as_str()?.to_owned())))
        .collect()
}

/// A service record's definition and stopped flag.
pub(super) fn service_record(value: &str) -> Option<(String, bool)> {
    let value: Value = serde_json::from_str(value).ok()?;
    let definition = value.get("definition")?.as_str()?.to_owned();
    let stopped = value
        .get("stopped")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some((definition, stopped))
}

/// A service record for the store.
pub(super) fn service_value(definition: &str, stopped: bool) -> String {
    serde_json::json!({"definition": definition, "stopped": stopped}).to_string()
}
