//! The correlation table: for each request, the ordered messages it caused.
//!
//! Every hop between roles (and between a client and the io thread) passes
//! [`Tracer::record`] or one of the table's batch methods, the only places
//! that write the table. The table is the only mutable state the role
//! threads share: hops happen on every thread, and a mutex held for a few
//! field writes is cheaper and simpler than shipping each hop to an owner
//! thread. The request path takes it twice per io pass, not per request:
//! io begins a pass's requests under one lock ([`CorrelationTable::begin`])
//! and records the replies of a batch under one lock
//! ([`CorrelationTable::finish`], which also records the manager's hop,
//! stamped when the manager sent it). Nothing blocks while holding it, and
//! a poisoned lock is recovered (the table holds no invariant that a panic
//! half-way through a write could break beyond one entry).
//!
//! Bounds: `capacity` bounds the *answered* entries kept for `TraceRequest`,
//! and `memory` the bytes all entries take (counted from their ids, hop
//! lists and fixed parts: an estimate of the heap they hold, allocator
//! rounding aside); answered entries are evicted oldest first until both
//! hold. Hops are stored as compact 16-byte records (the code as its
//! number, its name looked up when a trace is read), and each id once,
//! shared by the map and the eviction queue; ids are at most
//! `wire::MAX_CORRELATION_ID` bytes (io refuses longer ones). Requests in flight are never evicted and never
//! refused for room: io bounds them already (`max_connections` ×
//! `max_inflight_per_connection`). Entries for internal sequences (an
//! autostart, a signal's shutdown) or for late hops of an evicted request
//! are created on their first hop and are evictable at once, so nothing
//! grows the table without bound.
//!
//! Keys are the clients' correlation ids, so the table's hasher is keyed
//! with a random seed drawn at start ([`IdHashState`]: a folded-multiply
//! hash, far cheaper than SipHash on these short strings). It is not a
//! cryptographic PRF; a client that could still craft colliding ids would
//! only slow lookups among the entries the bounds above allow.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque, hash_map};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::wire::{Envelope, Protocol};

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
    /// The cluster role.
    Cluster,
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
            Role::Cluster => "cluster",
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

/// A hop as the table keeps it: 16 bytes, the code as its number.
#[derive(Debug, Clone, Copy)]
struct HopRecord {
    at_unix_us: u64,
    code: i32,
    from: Role,
    to: Role,
    protocol: Protocol,
}

impl HopRecord {
    fn of<M: Envelope>(from: Role, to: Role, message: &M, at_unix_us: u64) -> HopRecord {
        HopRecord {
            at_unix_us,
            code: message.code_number(),
            from,
            to,
            protocol: M::PROTOCOL,
        }
    }

    fn hop(self) -> Hop {
        Hop {
            at_unix_us: self.at_unix_us,
            from: self.from,
            to: self.to,
            protocol: self.protocol,
            code: self.protocol.code_name(self.code),
        }
    }
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

/// A request could not be entered in the table: one with the same
/// correlation id is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateId;

#[derive(Debug)]
struct Entry {
    /// The map's key, shared with eviction notices.
    key: Arc<str>,
    state: RequestState,
    /// Tells a reused id's entry from the one an eviction notice was for.
    generation: u64,
    /// Whether an eviction notice for this generation is queued.
    evictable: bool,
    hops: Vec<HopRecord>,
}

impl Entry {
    /// The heap this entry's own allocations take: its id's (shared by the
    /// map and the eviction queue) and its hop list's, each as the
    /// allocator rounds it. Its map slot and eviction notice are counted
    /// with the map's and the queue's capacity ([`CorrelationTable::bytes`]).
    fn bytes(&self) -> usize {
        let id = 2 * size_of::<usize>() + self.key.len();
        let hops = self.hops.capacity() * size_of::<HopRecord>();
        allocation(id) + if hops == 0 { 0 } else { allocation(hops) }
    }
}

/// What an allocation of `size` bytes takes from a malloc like glibc's: a
/// word of header, rounded up to 16 bytes, at least 32.
fn allocation(size: usize) -> usize {
    (size + size_of::<usize>()).next_multiple_of(16).max(32)
}

/// The bounded table. Answered entries beyond the capacity are evicted
/// oldest first; in-flight entries are never evicted.
#[derive(Debug)]
pub struct CorrelationTable {
    entries: HashMap<Arc<str>, Entry, IdHashState>,
    /// Eviction notices, oldest first; a notice whose generation no longer
    /// matches its entry's is stale and skipped.
    evictions: VecDeque<(Arc<str>, u64)>,
    /// Entries with a current notice in `evictions`.
    evictable: usize,
    capacity: usize,
    /// The bytes the table may take ([`CorrelationTable::bytes`]).
    memory: usize,
    /// The bytes the entries' own allocations take ([`Entry::bytes`]).
    entry_bytes: usize,
    next_generation: u64,
    /// Hop lists of evicted entries, reused by new ones.
    spare_hops: Vec<Vec<HopRecord>>,
    /// How long answered requests took, first hop to last.
    latency: Latency,
}

/// The upper bounds of the request latency histogram's buckets, in
/// microseconds (the last bucket, beyond them, is +Inf).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A histogram of request latencies: counts per bucket (not cumulative),
/// and their sum.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Requests per bucket of [`LATENCY_BOUNDS_US`], then beyond them.
    pub buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    /// The sum of all latencies, in microseconds.
    pub sum_us: u64,
}

impl Latency {
    fn observe(&mut self, micros: u64) {
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(micros);
    }
}

/// The default of `trace_memory`: 1 MiB.
pub const DEFAULT_TRACE_MEMORY: usize = 1024 * 1024;

/// Most hops one entry keeps: a long-lived subscription must not grow it.
const MAX_HOPS_PER_ENTRY: usize = 256;

/// Hops a request usually has (client → io → manager → io → client): room
/// for them is allocated once.
const USUAL_HOPS: usize = 4;

/// Evicted hop lists kept for reuse.
const SPARE_HOP_LISTS: usize = 64;

/// The longest hop list kept for reuse: a long one (a subscription's)
/// would make every entry that reuses it count, and hold, its size.
const SPARE_HOPS_MAX: usize = 4 * USUAL_HOPS;

impl CorrelationTable {
    /// An empty table keeping at most `capacity` answered requests, and
    /// evicting answered ones while all entries hold more than `memory`
    /// bytes.
    pub fn new(capacity: usize, memory: usize) -> Self {
        CorrelationTable {
            entries: HashMap::with_hasher(IdHashState::random()),
            evictions: VecDeque::new(),
            evictable: 0,
            capacity: capacity.max(1),
            memory,
            entry_bytes: 0,
            next_generation: 0,
            spare_hops: Vec::new(),
            latency: Latency::default(),
        }
    }

    /// How long answered requests took, from the client's hop in to the
    /// last reply's hop out.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// Enters `message` (a request whose correlation id is set) as in
    /// flight, with one hop at `at_unix_us` for each `(from, to)` of
    /// `path` (a batch's requests take one reading of the clock). An
    /// answered request with the same id is replaced (a trace shows the
    /// latest request with that id). A message without an id is only
    /// logged.
    pub fn begin<M: Envelope>(
        &mut self,
        message: &M,
        path: &[(Role, Role)],
        at_unix_us: u64,
    ) -> Result<(), DuplicateId> {
        let hops = path.iter().map(|&(from, to)| {
            log_hop(from, to, message);
            HopRecord::of(from, to, message, at_unix_us)
        });
        self.enter(message.correlation(), hops, None)
    }

    /// Enters a request io answered itself at `at_unix_us` (node info, from
    /// the manager's published answer) with a final reply of code
    /// `reply_code` under the same id: the hops client → io and io →
    /// client, done, in one lookup. Refused like
    /// [`CorrelationTable::begin`] while a request with that id is in
    /// flight.
    pub fn begin_answered<M: Envelope>(
        &mut self,
        request: &M,
        reply_code: i32,
        at_unix_us: u64,
    ) -> Result<(), DuplicateId> {
        log_hop(Role::Client, Role::Io, request);
        log::trace!(
            "[{}] io -> client: {}",
            request.correlation().unwrap_or("-"),
            M::PROTOCOL.code_name(reply_code)
        );
        let reply = HopRecord {
            code: reply_code,
            from: Role::Io,
            to: Role::Client,
            ..HopRecord::of(Role::Client, Role::Io, request, at_unix_us)
        };
        let hops = [
            HopRecord::of(Role::Client, Role::Io, request, at_unix_us),
            reply,
        ];
        self.enter(
            request.correlation(),
            hops.into_iter(),
            Some(RequestState::Done),
        )
    }

    /// Enters a request of id `id` with `hops`: in flight, or ended in
    /// `answered` (evictable at once). No id: nothing is kept.
    fn enter(
        &mut self,
        id: Option<&str>,
        hops: impl Iterator<Item = HopRecord>,
        answered: Option<RequestState>,
    ) -> Result<(), DuplicateId> {
        let Some(id) = id else {
            hops.for_each(drop);
            return Ok(());
        };
        let generation = self.take_generation();
        // The key is made before the lookup, so that a new id (the usual
        // case) is hashed once; a reused id only drops it.
        let key: Arc<str> = Arc::from(id);
        let entry = match self.entries.entry(key) {
            hash_map::Entry::Vacant(slot) => {
                let mut list = self.spare_hops.pop().unwrap_or_default();
                list.reserve(USUAL_HOPS);
                list.extend(hops);
                let entry = Entry {
                    key: slot.key().clone(),
                    state: RequestState::InFlight,
                    generation,
                    evictable: false,
                    hops: list,
                };
                self.entry_bytes += entry.bytes();
                slot.insert(entry)
            }
            hash_map::Entry::Occupied(slot) => {
                let entry = slot.into_mut();
                if entry.state == RequestState::InFlight {
                    return Err(DuplicateId);
                }
                if entry.evictable {
                    self.evictable -= 1;
                }
                let before = entry.bytes();
                entry.state = RequestState::InFlight;
                entry.generation = generation;
                entry.evictable = false;
                entry.hops.clear();
                entry.hops.extend(hops);
                self.entry_bytes = self.entry_bytes - before + entry.bytes();
                entry
            }
        };
        if let Some(state) = answered {
            entry.state = state;
            entry.evictable = true;
            self.evictions.push_back((entry.key.clone(), generation));
            self.evictable += 1;
            // All its hops take one reading of the clock.
            self.latency.observe(0);
        }
        self.evict();
        Ok(())
    }

    /// Records that `message` went from `from` to `to`. Every hop of every
    /// protocol passes here (directly, or through [`Tracer::record`]),
    /// except the request path's own, which [`CorrelationTable::begin`]
    /// and [`CorrelationTable::finish`] record in bulk; messages without a
    /// correlation id belong to no request and are only logged.
    pub fn record_message<M: Envelope>(&mut self, from: Role, to: Role, message: &M) {
        log_hop(from, to, message);
        if let Some(id) = message.correlation() {
            let hop = HopRecord::of(from, to, message, now_unix_us());
            self.push_hops(id, [hop], None);
        }
    }

    /// Records the hops of a reply: from the manager to io, sent at
    /// `sent_unix_us`, then from io to the client at `written_unix_us`. A
    /// final reply ends its request in `last`, which makes it evictable.
    pub fn finish<M: Envelope>(
        &mut self,
        message: &M,
        sent_unix_us: u64,
        written_unix_us: u64,
        last: Option<RequestState>,
    ) {
        log_hop(Role::Manager, Role::Io, message);
        log_hop(Role::Io, Role::Client, message);
        if let Some(id) = message.correlation() {
            let hops = [
                HopRecord::of(Role::Manager, Role::Io, message, sent_unix_us),
                HopRecord::of(Role::Io, Role::Client, message, written_unix_us),
            ];
            self.push_hops(id, hops, last);
        }
    }

    /// Appends `hops` to the entry of `id` (hops beyond the entry's limit
    /// are not kept) and ends it in `last`, if given. An id no client began
    /// (an internal sequence, or a late hop of an evicted request) gets a
    /// new entry, evictable at once.
    fn push_hops<const N: usize>(
        &mut self,
        id: &str,
        hops: [HopRecord; N],
        last: Option<RequestState>,
    ) {
        match self.entries.get_mut(id) {
            Some(entry) => {
                let before = entry.bytes();
                let room = MAX_HOPS_PER_ENTRY.saturating_sub(entry.hops.len());
                entry.hops.extend(hops.into_iter().take(room));
                self.entry_bytes = self.entry_bytes - before + entry.bytes();
                let Some(state) = last else {
                    if self.bytes() > self.memory {
                        self.evict();
                    }
                    return;
                };
                if entry.state == RequestState::InFlight
                    && let (Some(first), Some(last_hop)) = (entry.hops.first(), entry.hops.last())
                {
                    self.latency
                        .observe(last_hop.at_unix_us.saturating_sub(first.at_unix_us));
                }
                entry.state = state;
                if !entry.evictable {
                    entry.evictable = true;
                    self.evictions
                        .push_back((entry.key.clone(), entry.generation));
                    self.evictable += 1;
                    self.evict();
                }
            }
            None => {
                let key: Arc<str> = Arc::from(id);
                let generation = self.take_generation();
                let mut list = self.spare_hops.pop().unwrap_or_default();
                list.extend(hops);
                let entry = Entry {
                    key: key.clone(),
                    state: last.unwrap_or(RequestState::InFlight),
                    generation,
                    evictable: true,
                    hops: list,
                };
                self.entry_bytes += entry.bytes();
                self.entries.insert(key.clone(), entry);
                self.evictions.push_back((key, generation));
                self.evictable += 1;
                self.evict();
            }
        }
    }

    /// The state and hops of `id`, if the table still has it.
    pub fn get(&self, id: &str) -> Option<(RequestState, Vec<Hop>)> {
        self.entries.get(id).map(|entry| {
            let hops = entry.hops.iter().map(|record| record.hop()).collect();
            (entry.state, hops)
        })
    }

    /// The bytes the table takes, as `memory` bounds them: its entries'
    /// allocations, and the map's and the eviction queue's whole capacity
    /// (slots and control bytes), which growing doubles and evicting does
    /// not give back.
    pub fn bytes(&self) -> usize {
        let slot = size_of::<(Arc<str>, Entry)>() + 1;
        let slots = self.entries.capacity() * 8 / 7 * slot;
        let notices = self.evictions.capacity() * size_of::<(Arc<str>, u64)>();
        self.entry_bytes + slots + notices
    }

    /// How many entries the table holds, in flight or answered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn take_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Evicts the oldest evictable entries beyond the capacity or the
    /// memory, and drops stale notices once they outnumber the live ones,
    /// so that ids reused forever do not grow the queue.
    fn evict(&mut self) {
        while self.evictable > self.capacity || (self.evictable > 0 && self.bytes() > self.memory) {
            let Some((id, generation)) = self.evictions.pop_front() else {
                break;
            };
            // One lookup: the notice owns a key to look up with.
            let hash_map::Entry::Occupied(slot) = self.entries.entry(id) else {
                continue;
            };
            if slot.get().evictable && slot.get().generation == generation {
                let entry = slot.remove();
                self.evictable -= 1;
                self.entry_bytes -= entry.bytes();
                if self.spare_hops.len() < SPARE_HOP_LISTS
                    && entry.hops.capacity() <= SPARE_HOPS_MAX
                {
                    let mut hops = entry.hops;
                    hops.clear();
                    self.spare_hops.push(hops);
                }
            }
        }
        if self.evictions.len() > 2 * self.capacity + 16 {
            let entries = &self.entries;
            self.evictions.retain(|(id, generation)| {
                entries
                    .get(id)
                    .is_some_and(|entry| entry.evictable && entry.generation == *generation)
            });
        }
    }
}

/// The table's hasher factory: a folded-multiply hash keyed with 128 random
/// bits drawn when the table is made (from std's `RandomState`, which the
/// OS seeds).
#[derive(Debug, Clone, Copy)]
pub struct IdHashState {
    seed: u64,
    key: u64,
}

impl IdHashState {
    /// A state with fresh random keys.
    pub fn random() -> Self {
        let random = RandomState::new();
        IdHashState {
            seed: random.hash_one(0x736e_6f77_u64),
            // An odd multiplier keeps every bit of the input in the product.
            key: random.hash_one(0x0066_6f78_u64) | 1,
        }
    }
}

impl BuildHasher for IdHashState {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            state: self.seed,
            key: self.key,
        }
    }
}

/// The hasher of [`IdHashState`]: eight bytes per multiply.
#[derive(Debug, Clone)]
pub struct IdHasher {
    state: u64,
    key: u64,
}

impl IdHasher {
    fn mix(&mut self, word: u64) {
        self.state = folded_multiply(self.state ^ word, self.key);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The length makes a short tail padded with zeros differ from the
        // same bytes followed by real zeros.
        self.state = self.state.wrapping_add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn finish(&self) -> u64 {
        folded_multiply(self.state, self.key.rotate_left(32))
    }
}

/// The 128-bit product of `a` and `b`, its halves xored: every input bit
/// reaches every output bit.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// A shared handle on the node's correlation table.
#[derive(Debug, Clone)]
pub struct Tracer {
    table: Arc<Mutex<CorrelationTable>>,
    /// Client connections open now (io counts them, metrics read them).
    connections: Arc<AtomicUsize>,
}

impl Tracer {
    /// A tracer over a new table of `capacity` answered requests in at
    /// most [`DEFAULT_TRACE_MEMORY`] bytes.
    pub fn new(capacity: usize) -> Self {
        Tracer::bounded(capacity, DEFAULT_TRACE_MEMORY)
    }

    /// A tracer over a new table of `capacity` answered requests in at
    /// most `memory` bytes (`trace_capacity`, `trace_memory`).
    pub fn bounded(capacity: usize, memory: usize) -> Self {
        Tracer {
            table: Arc::new(Mutex::new(CorrelationTable::new(capacity, memory))),
            connections: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts a client connection opened (`true`) or closed.
    pub fn count_connection(&self, opened: bool) {
        if opened {
            self.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
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

/// Milliseconds since the Unix epoch (0 before it).
pub fn now_unix_ms() -> u64 {
    now_unix_us() / 1000
}

/// `2024-05-01T12:03:04.056789Z` for `unix_us` microseconds after the
/// epoch, with `fraction_digits` (0 to 6) digits of the second: UTC, which
/// needs no time zone database and sorts as text.
pub fn utc_time(unix_us: u64, fraction_digits: u32) -> String {
    let seconds = unix_us / 1_000_000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let digits = fraction_digits.min(6);
    let fraction = (unix_us % 1_000_000) / 10u64.pow(6 - digits);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    if digits > 0 {
        text.push_str(&format!(".{fraction:0width$}", width = digits as usize));
    }
    text.push('Z');
    text
}

/// The microseconds after the epoch of a time [`utc_time`] wrote (with any
/// number of fraction digits up to 6, or none); None for anything else.
pub fn parse_utc_time(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<u64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':').map(str::parse::<u64>);
    let (hour, minute, second) = (
        clock.next()?.ok()?,
        clock.next()?.ok()?,
        clock.next()?.ok()?,
    );
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || fraction.len() > 6
        || !fraction.bytes().all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    let micros = format!("{fraction:0<6}").parse::<u64>().ok()?;
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000) + micros)
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

/// The day count since 1970-01-01 of a date from 1970 on (the inverse of
/// [`civil_from_days`], Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::public_api::{Message, message::Code};

    #[test]
    fn utc_times_format_and_parse_back() {
        assert_eq!(utc_time(0, 6), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            utc_time(951_782_400_007_123, 6),
            "2000-02-29T00:00:00.007123Z"
        );
        assert_eq!(utc_time(1_714_564_984_056_000, 0), "2024-05-01T12:03:04Z");
        for micros in [
            0,
            951_782_400_007_123,
            1_714_564_984_056_789,
            4_102_444_800_000_001,
        ] {
            assert_eq!(parse_utc_time(&utc_time(micros, 6)), Some(micros));
        }
        assert_eq!(
            parse_utc_time("2024-05-01T12:03:04.5Z"),
            Some(1_714_564_984_500_000)
        );
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:03:04.1234567Z",
            "x",
        ] {
            assert_eq!(parse_utc_time(bad), None, "{bad}");
        }
    }

    const PATH: [(Role, Role); 2] = [(Role::Client, Role::Io), (Role::Io, Role::Manager)];

    fn request(id: &str) -> Message {
        Message {
            code: Code::NodeInfoRequest as i32,
            correlation_id: Some(id.to_owned()),
            payload: None,
        }
    }

    fn answer(table: &mut CorrelationTable, id: &str) {
        let reply = Message {
            code: Code::NodeInfoResponse as i32,
            ..request(id)
        };
        table.finish(&reply, 1, 1, Some(RequestState::Done));
    }

    #[test]
    fn in_flight_duplicates_are_refused_and_answered_ids_reused() {
        let mut table = CorrelationTable::new(8, DEFAULT_TRACE_MEMORY);
        table.begin(&request("a"), &PATH, 1).unwrap();
        assert_eq!(table.begin(&request("a"), &PATH, 1), Err(DuplicateId));
        answer(&mut table, "a");
        let (state, hops) = table.get("a").unwrap();
        assert_eq!(state, RequestState::Done);
        let path: Vec<_> = hops.iter().map(|hop| (hop.from, hop.to)).collect();
        assert_eq!(
            path,
            [
                (Role::Client, Role::Io),
                (Role::Io, Role::Manager),
                (Role::Manager, Role::Io),
                (Role::Io, Role::Client)
            ]
        );
        table.begin(&request("a"), &[], 1).unwrap();
        assert_eq!(table.get("a").unwrap().1.len(), 0);
    }

    #[test]
    fn oldest_answered_entries_are_evicted_first_and_in_flight_ones_never() {
        let mut table = CorrelationTable::new(2, DEFAULT_TRACE_MEMORY);
        for id in ["old", "live", "new", "newer"] {
            table.begin(&request(id), &PATH, 1).unwrap();
        }
        answer(&mut table, "old");
        answer(&mut table, "new");
        answer(&mut table, "newer");
        assert!(table.get("old").is_none());
        assert!(table.get("new").is_some());
        assert!(table.get("newer").is_some());
        assert_eq!(table.get("live").unwrap().0, RequestState::InFlight);
    }

    #[test]
    fn a_full_table_of_requests_in_flight_takes_more() {
        let mut table = CorrelationTable::new(2, DEFAULT_TRACE_MEMORY);
        for n in 0..10 {
            table.begin(&request(&format!("r{n}")), &PATH, 1).unwrap();
        }
        assert!((0..10).all(|n| table.get(&format!("r{n}")).is_some()));
    }

    #[test]
    fn a_reused_id_is_not_evicted_by_its_predecessors_notice() {
        let mut table = CorrelationTable::new(1, DEFAULT_TRACE_MEMORY);
        table.begin(&request("x"), &PATH, 1).unwrap();
        answer(&mut table, "x");
        table.begin(&request("x"), &PATH, 1).unwrap();
        table.begin(&request("y"), &PATH, 1).unwrap();
        answer(&mut table, "y");
        table.begin(&request("z"), &PATH, 1).unwrap();
        answer(&mut table, "z");
        assert_eq!(table.get("x").unwrap().0, RequestState::InFlight);
        assert!(table.get("y").is_none());
    }

    #[test]
    fn internal_sequences_are_bounded_by_the_capacity() {
        let mut table = CorrelationTable::new(3, DEFAULT_TRACE_MEMORY);
        for n in 0..100 {
            table.record_message(Role::Manager, Role::Spawner, &request(&format!("i{n}")));
        }
        assert_eq!(table.entries.len(), 3);
        assert!(table.get("i99").is_some());
    }

    #[test]
    fn ids_reused_forever_do_not_grow_the_eviction_queue() {
        let mut table = CorrelationTable::new(4, DEFAULT_TRACE_MEMORY);
        for _ in 0..1000 {
            table.begin(&request("same"), &PATH, 1).unwrap();
            answer(&mut table, "same");
        }
        assert!(table.evictions.len() <= 2 * 4 + 16 + 1);
        assert_eq!(table.get("same").unwrap().0, RequestState::Done);
    }

    #[test]
    fn hop_records_are_compact() {
        assert_eq!(size_of::<HopRecord>(), 16);
    }

    #[test]
    fn the_memory_bound_evicts_answered_entries_oldest_first() {
        let memory = 64 * 1024;
        let mut table = CorrelationTable::new(1_000_000, memory);
        table.begin(&request("live"), &PATH, 1).unwrap();
        let id = |n: usize| format!("{n:0>128}");
        for n in 0..10_000 {
            table.begin(&request(&id(n)), &PATH, 1).unwrap();
            answer(&mut table, &id(n));
            assert!(table.bytes() <= memory, "{} bytes after {n}", table.bytes());
        }
        assert!(table.get(&id(0)).is_none());
        assert!(table.get(&id(9_999)).is_some());
        assert_eq!(table.get("live").unwrap().0, RequestState::InFlight);
        let kept = table.len();
        assert!(kept > 32 && kept < 400, "{kept} entries in 64 KiB");
        let counted: usize = table.entries.values().map(Entry::bytes).sum();
        assert_eq!(counted, table.entry_bytes);
    }

    #[test]
    fn the_id_hash_depends_on_every_byte_and_the_length() {
        let state = IdHashState::random();
        let ids = [
            "",
            "a",
            "a\0",
            "ab",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefgi",
            "bbcdefgh",
        ];
        let hashes: std::collections::HashSet<u64> =
            ids.iter().map(|id| state.hash_one(id)).collect();
        assert_eq!(hashes.len(), ids.len());
    }
}
