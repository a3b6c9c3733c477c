//! How fast one stream may be read: a token bucket of bytes, refilled at
//! the service's `log_max_rate` bytes a second up to a burst of a tenth
//! of a second's worth (at least [`MIN_BURST`]).
//!
//! A stream that has spent its budget is not read until the bucket holds
//! [`MIN_BURST`] again (or the whole burst, if smaller): its pipe fills
//! and its writer waits, so a flood of output is slowed to the rate and
//! loses nothing, and the keeper's share of the CPUs (and of the disk,
//! rotations included) stays bounded, whatever one service writes.

use std::time::{Duration, Instant};

/// The smallest burst: one pipe read's worth, so that a low rate still
/// reads whole chunks rather than a few bytes at a time.
pub const MIN_BURST: u64 = 64 * 1024;

/// A stream's read budget; [`Budget::unlimited`] never runs out.
#[derive(Debug)]
pub struct Budget {
    /// Bytes a second; 0: no limit.
    rate: u64,
    /// The most bytes the bucket holds.
    burst: u64,
    /// Bytes that may be read now.
    credit: u64,
    /// When `credit` was last brought up to date.
    refilled: Instant,
}

impl Budget {
    /// A budget of `rate` bytes a second (0: unlimited), full at `now`.
    pub fn new(rate: u64, now: Instant) -> Budget {
        let burst = (rate / 10).max(MIN_BURST);
        Budget {
            rate,
            burst,
            credit: burst,
            refilled: now,
        }
    }

    /// How many bytes may be read at `now` (at most `want`): none until
    /// the bucket holds a whole chunk, so that a stream at its rate is read
    /// a chunk at a time, not a few bytes per wake-up.
    pub fn allowance(&mut self, want: usize, now: Instant) -> usize {
        if self.rate == 0 {
            return want;
        }
        self.refill(now);
        if self.credit < self.chunk() {
            return 0;
        }
        usize::try_from(self.credit).map_or(want, |credit| credit.min(want))
    }

    /// Takes `bytes` read from the budget.
    pub fn spend(&mut self, bytes: usize) {
        if self.rate != 0 {
            self.credit = self.credit.saturating_sub(bytes as u64);
        }
    }

    /// When a stream that has spent its budget may be read again: once
    /// the bucket holds a chunk (or the whole burst, if smaller). `None`
    /// while there is credit, and always when unlimited.
    pub fn exhausted_until(&mut self, now: Instant) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        self.refill(now);
        let chunk = self.chunk();
        (self.credit < chunk).then(|| {
            let missing = chunk - self.credit;
            let wait = Duration::from_nanos(
                u64::try_from(u128::from(missing) * 1_000_000_000 / u128::from(self.rate))
                    .unwrap_or(u64::MAX),
            );
            now + wait
        })
    }

    /// The least that is read at once: [`MIN_BURST`], or the whole burst.
    fn chunk(&self) -> u64 {
        MIN_BURST.min(self.burst)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = u128::from(self.rate) * elapsed.as_nanos() / 1_000_000_000;
        if earned > 0 {
            let earned = u64::try_from(earned).unwrap_or(u64::MAX);
            self.credit = self.credit.saturating_add(earned).min(self.burst);
            // Only the time the earned bytes stand for is used up, so
            // that frequent refills lose no fraction of a byte.
            let used = u128::from(earned) * 1_000_000_000 / u128::from(self.rate);
            self.refilled += Duration::from_nanos(u64::try_from(used).unwrap_or(u64::MAX));
            if self.credit == self.burst {
                self.refilled = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn an_unlimited_budget_never_runs_out() {
        let now = Instant::now();
        let mut budget = Budget::new(0, now);
        budget.spend(usize::MAX);
        assert_eq!(budget.allowance(1 << 30, now), 1 << 30);
        assert_eq!(budget.exhausted_until(now), None);
    }

    #[test]
    fn a_full_budget_allows_its_burst_and_then_waits_for_a_chunk() {
        let start = Instant::now();
        let mut budget = Budget::new(10 * MIB, start);
        let burst = usize::try_from(MIB).unwrap();
        assert_eq!(budget.allowance(usize::MAX, start), burst);
        budget.spend(burst);
        assert_eq!(budget.allowance(usize::MAX, start), 0);
        // A 64 KiB chunk at 10 MiB/s takes 6.25 ms.
        let until = budget.exhausted_until(start).unwrap();
        assert_eq!(until - start, Duration::from_micros(6250));
        assert_eq!(budget.exhausted_until(until), None);
        assert_eq!(
            budget.allowance(usize::MAX, until),
            usize::try_from(MIN_BURST).unwrap()
        );
    }

    #[test]
    fn over_any_span_no_more_than_the_rate_and_one_burst_is_read() {
        // A reader that takes whatever it may every 250 µs for 10 s reads
        // the rate's worth plus at most the first burst, and loses no
        // fraction of a byte to frequent refills.
        let start = Instant::now();
        let rate = 3 * MIB + 12_345;
        let mut budget = Budget::new(rate, start);
        let mut read = 0u64;
        let mut now = start;
        for _ in 0..40_000 {
            now += Duration::from_micros(250);
            let allowed = budget.allowance(usize::MAX, now);
            budget.spend(allowed);
            read += allowed as u64;
        }
        let expected = rate * 10;
        assert!(read <= expected + rate / 10, "{read} > {expected} + burst");
        assert!(read + 2 >= expected, "{read} well under {expected}");
    }

    #[test]
    fn an_idle_stream_saves_up_one_burst_only() {
        let start = Instant::now();
        let mut budget = Budget::new(MIB, start);
        budget.spend(usize::MAX);
        let later = start + Duration::from_secs(3600);
        assert_eq!(
            budget.allowance(usize::MAX, later) as u64,
            MIN_BURST.max(MIB / 10)
        );
    }

    #[test]
    fn a_rate_under_a_chunk_a_second_still_reads_whole_chunks() {
        let start = Instant::now();
        let mut budget = Budget::new(1000, start);
        budget.spend(usize::MAX);
        let until = budget.exhausted_until(start).unwrap();
        assert_eq!(until - start, Duration::from_nanos(MIN_BURST * 1_000_000));
        assert_eq!(budget.allowance(usize::MAX, until) as u64, MIN_BURST);
    }
}
