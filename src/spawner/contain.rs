//! Containment of the spawner's children: the instance's cgroup (see
//! [`crate::cgroup`]) and rlimits, from the service table, never from the
//! request; and the drain of a cgroup whose main process ended.
//!
//! The node's cgroups are opened with the first service table (which
//! names the node and the cgroup filesystem); a node without cgroup
//! access logs once what is off and why, starts services without limits
//! as before (only their process group is then killed at the end, so a
//! child that left it with `setsid` escapes), and refuses those with
//! limits, naming the limit and why.

use std::path::Path;

use crate::cgroup::{CgroupError, CpuMax, Hierarchy, InstanceCgroup, Limits};
use crate::sys;
use crate::wire::proto::daemon_spawner as ds;

/// What the node can do with cgroups.
#[derive(Debug)]
pub(super) enum Containment {
    /// Not set up yet: no service table has come.
    Unopened,
    /// Instances get cgroups in this hierarchy.
    Cgroups(Hierarchy),
    /// No cgroups, and why.
    Off(String),
}

impl Containment {
    /// Opens the node's cgroups as `table` says; logs what is off.
    pub(super) fn open(table: &ds::ServiceTable) -> Containment {
        let name = table.node_name.clone().unwrap_or_default();
        let fs = table
            .cgroup_fs
            .clone()
            .unwrap_or_else(|| crate::cgroup::DEFAULT_FS.to_owned());
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        match Hierarchy::open(Path::new(&fs), &self_cgroup, &name) {
            Ok(hierarchy) => {
                log::info!("spawner: cgroups: {}", hierarchy.describe());
                for missing in hierarchy.missing() {
                    log::warn!(
                        "spawner: cgroup controller {missing}; services limited by it will not start"
                    );
                }
                Containment::Cgroups(hierarchy)
            }
            Err(error) => {
                log::warn!(
                    "spawner: {error}; services run without cgroups (a stop kills their \
                     process group only) and services with limits will not start"
                );
                Containment::Off(match error {
                    CgroupError::Unavailable { reason } => reason,
                    other => other.to_string(),
                })
            }
        }
    }

    /// Whether it is set up.
    pub(super) fn is_open(&self) -> bool {
        !matches!(self, Containment::Unopened)
    }

    /// (available, description) for the manager's `CgroupStatus`.
    pub(super) fn status(&self) -> (bool, String) {
        match self {
            Containment::Cgroups(hierarchy) => {
                let missing = hierarchy.missing();
                (missing.is_empty(), hierarchy.describe())
            }
            Containment::Off(reason) => (false, reason.clone()),
            Containment::Unopened => (false, "not set up yet".to_owned()),
        }
    }

    /// The cgroup (if any) and the rlimits a start of instance `instance`
    /// of `service` gets; the reason it cannot start otherwise.
    pub(super) fn prepare(
        &self,
        service: &ds::service_table::Service,
        instance: u32,
    ) -> Result<(Option<InstanceCgroup>, Vec<sys::Rlimit>), String> {
        let limits = limits_of(service);
        let rlimits = service
            .rlimits
            .iter()
            .map(|limit| sys::Rlimit {
                resource: limit.resource,
                soft: limit.soft,
                hard: limit.hard,
            })
            .collect();
        let cgroup = match self {
            Containment::Cgroups(hierarchy) => Some(
                hierarchy
                    .create(&cgroup_name(&service.id, instance), &limits)
                    .map_err(|error| error.to_string())?,
            ),
            Containment::Off(_) | Containment::Unopened if limits.any() => {
                let error = CgroupError::Unenforceable {
                    limit: limits.first_set().unwrap_or("limits"),
                    reason: format!("the node has no cgroups ({})", self.status().1),
                };
                return Err(error.to_string());
            }
            Containment::Off(_) | Containment::Unopened => None,
        };
        Ok((cgroup, rlimits))
    }

    /// The cgroup a previous node gave instance `instance` of `service_id`.
    pub(super) fn existing(&self, service_id: &str, instance: u32) -> Option<InstanceCgroup> {
        match self {
            Containment::Cgroups(hierarchy) => {
                hierarchy.existing(&cgroup_name(service_id, instance))
            }
            _ => None,
        }
    }

    /// Removes the node's own cgroup directories where they are empty.
    pub(super) fn close(&self) {
        if let Containment::Cgroups(hierarchy) = self {
            hierarchy.remove_bases();
        }
    }
}

/// `<id>.<index>`.
fn cgroup_name(service_id: &str, instance: u32) -> String {
    format!("{service_id}.{instance}")
}

/// The cgroup limits the table gives `service`.
fn limits_of(service: &ds::service_table::Service) -> Limits {
    Limits {
        memory_max: service.memory_max,
        memory_high: service.memory_high,
        cpu_max: service.cpu_quota_usec.map(|quota_usec| CpuMax {
            quota_usec,
            period_usec: service
                .cpu_period_usec
                .unwrap_or(crate::cgroup::CPU_PERIOD_USEC),
        }),
        pids_max: service.pids_max,
    }
}
