//! snow-fox: a service manager for one Linux node.
//!
//! The node is four roles, each a thread: `io` (sockets and framing),
//! `manager` (requests and service state), `spawner` (processes) and
//! `daemon` (signals, role health, ordered shutdown). They talk only in the
//! protocol messages of [`wire`], and every hop is recorded by [`trace`].
#![deny(missing_docs)]

pub mod client;
pub mod trace;
pub mod wire;
