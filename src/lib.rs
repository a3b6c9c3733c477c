//! snow-fox: a service manager for one Linux node.
//!
//! The node is four roles, each a thread: [`io`] (sockets and framing),
//! [`manager`] (requests and service state), [`spawner`] (processes) and
//! [`daemon`] (signals, role health, ordered shutdown). They talk only in
//! the protocol messages of [`wire`], and every hop is recorded by
//! [`trace`]. The roles know [`wire`], [`conf`], [`trace`], [`cgroup`] and [`sys`];
//! only the daemon knows the roles, because it joins them.
#![deny(missing_docs)]
// `unsafe` lives in `sys` alone, behind safe helpers; the compiler holds
// every other module to that.
#![deny(unsafe_code)]

pub mod cgroup;
pub mod client;
pub mod cluster;
pub mod conf;
pub mod daemon;
pub mod io;
pub mod logging;
pub mod manager;
pub mod spawner;
#[allow(unsafe_code)]
pub mod sys;
pub mod trace;
pub mod wire;
