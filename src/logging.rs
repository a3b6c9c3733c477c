//! What a client can put in the node's log, bounded: client-supplied text
//! is shown through [`Shown`] (escaped, cut to [`SHOWN_BYTES`] with its
//! original length), and complaints about a peer go through a
//! [`PeerLimiter`], which lets one line per peer through per interval and
//! counts the rest, so a flood of refused connections or broken frames
//! costs a few hundred bytes of log a second, not one line per attempt.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Bytes of client-supplied text a log line shows at most.
pub const SHOWN_BYTES: usize = 128;

/// Client-supplied text as a log line may show it: control characters,
/// quotes and backslashes escaped (a client cannot forge a line break or
/// a second field), cut after [`SHOWN_BYTES`] bytes, saying how long the
/// original was.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let mut cut = text.len().min(SHOWN_BYTES);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        for c in text[..cut].chars() {
            if c.is_control() || c == '"' || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if cut < text.len() {
            write!(f, "… ({} bytes)", text.len())?;
        }
        Ok(())
    }
}

/// How often a [`PeerLimiter`] lets a line through per peer.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Peers a [`PeerLimiter`] tracks one by one; any beyond share one slot,
/// so the limiter's own memory is bounded too.
const TRACKED_PEERS: usize = 64;

/// The key of the slot that peers beyond [`TRACKED_PEERS`] share.
const OTHER_PEERS: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When a line was last let through.
    logged_at: Instant,
    /// Lines held back since then.
    suppressed: u64,
}

/// One log line per peer (by uid) per [`LOG_INTERVAL`]; the lines held back
/// in between are counted and reported with the next one let through.
#[derive(Debug, Default)]
pub struct PeerLimiter {
    slots: HashMap<u32, Slot>,
}

impl PeerLimiter {
    /// A limiter that has let nothing through yet.
    pub fn new() -> Self {
        PeerLimiter::default()
    }

    /// Whether a line about peer `uid` may be logged at `now`: `Some(n)`
    /// with the `n` lines held back since the last one, or `None` to hold
    /// this one back too.
    pub fn admit(&mut self, uid: u32, now: Instant) -> Option<u64> {
        if self.slots.len() >= TRACKED_PEERS && !self.slots.contains_key(&uid) {
            self.slots
                .retain(|_, slot| now.saturating_duration_since(slot.logged_at) < LOG_INTERVAL);
        }
        let key = if self.slots.len() >= TRACKED_PEERS && !self.slots.contains_key(&uid) {
            OTHER_PEERS
        } else {
            uid
        };
        match self.slots.get_mut(&key) {
            Some(slot) if now.saturating_duration_since(slot.logged_at) < LOG_INTERVAL => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                let suppressed = slot.suppressed;
                *slot = Slot {
                    logged_at: now,
                    suppressed: 0,
                };
                Some(suppressed)
            }
            None => {
                self.slots.insert(
                    key,
                    Slot {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// The suffix of a rate-limited line: how many like it were held back.
#[derive(Debug, Clone, Copy)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more from this uid not logged)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_with_its_length_and_control_characters_escaped() {
        let long = "x".repeat(1 << 20);
        let shown = Shown(&long).to_string();
        assert!(shown.len() < SHOWN_BYTES + 32, "{}", shown.len());
        assert!(shown.ends_with("(1048576 bytes)"), "{shown}");
        assert_eq!(Shown("a\nb\"c\u{1b}").to_string(), "a\\nb\\\"c\\u{1b}");
        assert_eq!(Shown("short").to_string(), "short");
        let wide = "é".repeat(100);
        assert!(Shown(&wide).to_string().ends_with("(200 bytes)"));
    }

    #[test]
    fn one_line_per_peer_per_interval_with_the_rest_counted() {
        let mut limiter = PeerLimiter::new();
        let start = Instant::now();
        assert_eq!(limiter.admit(7, start), Some(0));
        for _ in 0..1000 {
            assert_eq!(limiter.admit(7, start), None);
        }
        assert_eq!(
            limiter.admit(8, start),
            Some(0),
            "another peer is not held back"
        );
        assert_eq!(limiter.admit(7, start + LOG_INTERVAL), Some(1000));
    }

    #[test]
    fn many_peers_share_one_slot_beyond_the_tracked_ones() {
        let mut limiter = PeerLimiter::new();
        let now = Instant::now();
        for uid in 0..10_000 {
            limiter.admit(uid, now);
        }
        assert!(limiter.slots.len() <= TRACKED_PEERS + 1);
    }
}
