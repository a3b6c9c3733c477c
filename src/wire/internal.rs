//! The internal protocols' messages as types, one enum per protocol with
//! one variant per code (`daemon_manager` carries no payloads, so its
//! `message::Code` is its type). A message that is none of them is
//! refused where it is received, logged, and answered with `Error` where
//! the protocol has one.

use super::proto::{daemon_spawner as ds, log_keeper as lk, manager_cluster as mc};
use super::proto::{manager_spawner as ms, public_api};

typed_messages! {
    /// A `manager_spawner` message: the manager's requests and the
    /// spawner's answers and reports.
    pub enum ManagerSpawner of manager_spawner {
        required {
            StartProcess(StartProcess: ms::StartProcess),
            LogMessage(LogMessage: ms::LogMessage),
            ProcessStarted(ProcessStarted: ms::ProcessStarted),
            SignalProcess(SignalProcess: ms::SignalProcess),
            ProcessExited(ProcessExited: ms::ProcessExited),
            ServiceTable(ServiceTable: ds::ServiceTable),
            AdoptProcess(AdoptProcess: ms::AdoptProcess),
            ProcessReady(ProcessReady: ms::ProcessReady),
            KnownProcesses(KnownProcesses: ms::KnownProcesses),
            CgroupStatus(CgroupStatus: ms::CgroupStatus),
        }
        optional {
            Error(Error: ms::Error),
        }
        bare {
            Ack,
        }
        refused("{}") {}
    }
}

typed_messages! {
    /// A `daemon_spawner` message: the daemon's orders and the spawner's
    /// answer.
    pub enum DaemonSpawner of daemon_spawner {
        required {
            ServiceTable(ServiceTable: ds::ServiceTable),
        }
        optional {}
        bare {
            Ack,
            Shutdown,
        }
        refused("{}") {}
    }
}

typed_messages! {
    /// A `manager_cluster` message.
    pub enum ManagerCluster of manager_cluster {
        required {
            Assignments(Assignments: mc::Assignments),
            InstanceStates(InstanceStates: mc::InstanceStates),
            ClusterRequest(Public: public_api::Message),
            ClusterReply(Public: public_api::Message),
            Health(Health: public_api::node_info_response::SystemStatus),
        }
        optional {}
        bare {
            Ack,
            Fence,
        }
        refused("{}") {}
    }
}

typed_messages! {
    /// A `log_keeper` message.
    pub enum LogKeeper of log_keeper {
        required {
            AddStream(AddStream: lk::AddStream),
        }
        optional {
            Error(Error: lk::Error),
        }
        bare {
            Ack,
        }
        refused("{}") {}
    }
}
