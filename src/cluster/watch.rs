//! The watch threads: each reads one etcd watch stream (one long chunked
//! response, a JSON object a line) and only forwards: it tells the cluster
//! role that keys under its prefix changed, and ends (saying so) when the
//! stream does. The role reads what changed itself, so a forwarded notice
//! carries no keys and a burst of changes costs one re-read.
//!
//! A thread blocks in a read it cannot be woken from, so a watch the role
//! no longer wants is abandoned, not stopped: its later notices carry an
//! old id and are ignored, and it ends at its stream's next line or end.

use std::io::{self, BufRead, BufReader};
use std::thread;

use crossbeam_channel::Sender;

use super::etcd;

/// A notice from a watch thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchNotice {
    /// Keys under watch `id`'s prefix changed at `revision`.
    Changed {
        /// Which watch.
        id: u64,
        /// The store's revision of the change.
        revision: i64,
    },
    /// Watch `id`'s stream ended or failed.
    Ended {
        /// Which watch.
        id: u64,
        /// Why.
        reason: String,
    },
}

/// Starts watch `id` of every key under `prefix` after `revision` on
/// `endpoint`, forwarding to `notices` (waiting when it is full).
pub fn spawn(
    id: u64,
    endpoint: String,
    token: Option<String>,
    prefix: String,
    revision: i64,
    notices: Sender<WatchNotice>,
) -> io::Result<()> {
    thread::Builder::new()
        .name("sf-cluster-watch".to_owned())
        .spawn(move || {
            let reason = match follow(id, &endpoint, token.as_deref(), &prefix, revision, &notices)
            {
                Ok(()) => "the stream ended".to_owned(),
                Err(reason) => reason,
            };
            // The role is gone when this fails: nobody is left to tell.
            let _ = notices.send(WatchNotice::Ended { id, reason });
        })
        .map(drop)
}

fn follow(
    id: u64,
    endpoint: &str,
    token: Option<&str>,
    prefix: &str,
    revision: i64,
    notices: &Sender<WatchNotice>,
) -> Result<(), String> {
    let stream = etcd::open_watch(endpoint, token, prefix, revision).map_err(|e| e.to_string())?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|error| format!("reading the watch stream: {error}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let (revision, cancelled) = etcd::parse_watch_line(&line)?;
        if cancelled {
            return Err("etcd cancelled the watch (compacted?)".to_owned());
        }
        if revision > 0 && notices.send(WatchNotice::Changed { id, revision }).is_err() {
            return Ok(());
        }
    }
    Ok(())
}
