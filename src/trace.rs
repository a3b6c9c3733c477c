//! The correlation table: for each request, the ordered messages it caused.
//!
//! Every hop between roles (and between a client and the io thread) passes
//! [`Tracer::record`], the one place that writes the table. The table is
//! the only mutable state the role threads share: hops happen on every
//! thread, and a mutex held for a few field writes is cheaper and simpler
//! than shipping each hop to an owner thread. Nothing blocks while holding
//! it, and a poisoned lock is recovered (the table holds no invariant that a
//! panic half-way through a write could break beyond one entry).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::wire::Envelope;
use crate::wire::Protocol;

/// A participant in a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A client connection.
    Client,
    /// The io thread.
    Io,
    /// The daemon.
    Daemon,
    /// The manager.
    Manager,
    /// The spawner.
    Spawner,
    /// A service's process.
    Process,
}

impl Role {
    /// The name used in traces and node info.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Io => "io",
            Role::Daemon => "daemon",
            Role::Manager => "manager",
            Role::Spawner => "spawner",
            Role::Process => "process",
        }
    }
}

/// One message of a request's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// When it was sent, microseconds since the Unix epoch.
    pub at_unix_us: u64,
    /// Who sent it.
    pub from: Role,
    /// Who it went to.
    pub to: Role,
    /// On which protocol.
    pub protocol: Protocol,
    /// The code's name.
    pub code: &'static str,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Decoded, final reply not yet handed to the connection.
    InFlight,
    /// Answered with its reply.
    Done,
    /// Answered with an `Error`.
    Failed,
    /// Answered with `Error{TIMEOUT}`.
    TimedOut,
}

impl RequestState {
    /// The name used in `TraceResponse.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::InFlight => "in_flight",
            RequestState::Done => "done",
            RequestState::Failed => "failed",
            RequestState::TimedOut => "timed_out",
        }
    }
}

/// Why a request could not be entered in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginError {
    /// A request with this correlation id is in flight.
    Duplicate,
    /// Every entry is in flight and the table is at its capacity.
    Full,
}

#[derive(Debug)]
struct Entry {
    state: RequestState,
    /// Tells a reused id's entry from the one an eviction notice was for.
    generation: u64,
    hops: Vec<Hop>,
}

/// The bounded table. Entries beyond the capacity are evicted oldest
/// completed first; in-flight entries are never evicted.
#[derive(Debug)]
pub struct CorrelationTable {
    entries: HashMap<String, Entry>,
    completed: VecDeque<(String, u64)>,
    capacity: usize,
    next_generation: u64,
}

/// Most hops one entry keeps: a long-lived subscription must not grow it.
const MAX_HOPS_PER_ENTRY: usize = 256;

impl CorrelationTable {
    /// An empty table holding at most `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        CorrelationTable {
            entries: HashMap::new(),
            completed: VecDeque::new(),
            capacity: capacity.max(1),
            next_generation: 0,
        }
    }

    /// Enters a new request as in flight. A done request with the same id
    /// is replaced (a trace shows the latest request with that id).
    pub fn begin(&mut self, id: &str) -> Result<(), BeginError> {
        if let Some(entry) = self.entries.get(id) {
            if entry.state == RequestState::InFlight {
                return Err(BeginError::Duplicate);
            }
            self.entries.remove(id);
        }
        self.insert(id, Vec::new())
    }

    /// Appends a hop to the entry of `id`, creating an in-flight entry for
    /// an internal sequence (a signal's shutdown, an autostart) that no
    /// client began. Hops beyond the entry's limit are not kept.
    fn record(&mut self, id: &str, hop: Hop) {
        if let Some(entry) = self.entries.get_mut(id) {
            if entry.hops.len() < MAX_HOPS_PER_ENTRY {
                entry.hops.push(hop);
            }
            return;
        }
        // A full table of in-flight requests keeps no internal sequence.
        let _ = self.insert(id, vec![hop]);
    }

    /// Enters `id` as in flight with `hops`, evicting if needed.
    fn insert(&mut self, id: &str, hops: Vec<Hop>) -> Result<(), BeginError> {
        self.make_room()?;
        let generation = self.take_generation();
        self.entries.insert(
            id.to_owned(),
            Entry {
                state: RequestState::InFlight,
                generation,
                hops,
            },
        );
        Ok(())
    }

    /// Records that `message` went from `from` to `to`. Every hop of every
    /// protocol passes here (directly, or through [`Tracer::record`]);
    /// messages without a correlation id belong to no request and are only
    /// logged.
    pub fn record_message<M: Envelope>(&mut self, from: Role, to: Role, message: &M) {
        log_hop(from, to, message);
        let Some(id) = message.correlation() else {
            return;
        };
        let hop = Hop {
            at_unix_us: now_unix_us(),
            from,
            to,
            protocol: M::PROTOCOL,
            code: message.code_name(),
        };
        self.record(id, hop);
    }

    /// Marks the request of `id` as answered; it becomes evictable.
    pub fn finish(&mut self, id: &str, state: RequestState) {
        if let Some(entry) = self.entries.get_mut(id) {
            if entry.state == RequestState::InFlight {
                self.completed.push_back((id.to_owned(), entry.generation));
            }
            entry.state = state;
        }
    }

    /// The state and hops of `id`, if the table still has it.
    pub fn get(&self, id: &str) -> Option<(RequestState, &[Hop])> {
        self.entries
            .get(id)
            .map(|entry| (entry.state, entry.hops.as_slice()))
    }

    fn take_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Evicts the oldest completed entries until one more fits.
    fn make_room(&mut self) -> Result<(), BeginError> {
        while self.entries.len() >= self.capacity {
            let (id, generation) = self.completed.pop_front().ok_or(BeginError::Full)?;
            let current = self
                .entries
                .get(&id)
                .is_some_and(|entry| entry.generation == generation);
            if current {
                self.entries.remove(&id);
            }
        }
        Ok(())
    }
}

/// A shared handle on the node's correlation table.
#[derive(Debug, Clone)]
pub struct Tracer {
    table: Arc<Mutex<CorrelationTable>>,
}

impl Tracer {
    /// A tracer over a new table of `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Tracer {
            table: Arc::new(Mutex::new(CorrelationTable::new(capacity))),
        }
    }

    /// The table, locked. Hold it only for a few reads or writes.
    pub fn lock(&self) -> MutexGuard<'_, CorrelationTable> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `message` went from `from` to `to`, taking the lock for
    /// this one hop.
    pub fn record<M: Envelope>(&self, from: Role, to: Role, message: &M) {
        if message.correlation().is_some() {
            self.lock().record_message(from, to, message);
        } else {
            log_hop(from, to, message);
        }
    }
}

fn log_hop<M: Envelope>(from: Role, to: Role, message: &M) {
    log::trace!(
        "[{}] {} -> {}: {}",
        message.correlation().unwrap_or("-"),
        from.as_str(),
        to.as_str(),
        message.code_name()
    );
}

/// Microseconds since the Unix epoch (0 before it: a clock set to 1969).
pub fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(code: &'static str) -> Hop {
        Hop {
            at_unix_us: 1,
            from: Role::Client,
            to: Role::Io,
            protocol: Protocol::Public,
            code,
        }
    }

    #[test]
    fn in_flight_duplicates_are_refused_and_done_ids_reused() {
        let mut table = CorrelationTable::new(8);
        table.begin("a").unwrap();
        assert_eq!(table.begin("a"), Err(BeginError::Duplicate));
        table.record("a", hop("NodeInfoRequest"));
        table.finish("a", RequestState::Done);
        table.begin("a").unwrap();
        assert_eq!(table.get("a").unwrap().1.len(), 0);
    }

    #[test]
    fn oldest_completed_entries_are_evicted_first() {
        let mut table = CorrelationTable::new(2);
        table.begin("old").unwrap();
        table.begin("live").unwrap();
        table.finish("old", RequestState::Done);
        table.begin("new").unwrap();
        assert!(table.get("old").is_none());
        assert!(table.get("live").is_some());
        assert_eq!(table.begin("more"), Err(BeginError::Full));
    }

    #[test]
    fn a_reused_id_is_not_evicted_by_its_predecessors_notice() {
        let mut table = CorrelationTable::new(2);
        table.begin("x").unwrap();
        table.finish("x", RequestState::Done);
        table.begin("x").unwrap();
        table.begin("y").unwrap();
        assert_eq!(table.begin("z"), Err(BeginError::Full));
        assert_eq!(table.get("x").unwrap().0, RequestState::InFlight);
    }
}
