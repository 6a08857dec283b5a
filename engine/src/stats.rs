//! What the engine counts for the server's metrics: each commit round's size (appends) and
//! time (writing and making durable), how long recovery took at start, and webhook
//! deliveries by outcome and time. Atomics only, so
//! counting costs a committer no lock; the HTTP layer encodes them (`ds_http::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of a [`Histogram`] besides the last one (`+Inf`).
pub const BOUNDS: usize = 18;

/// A histogram of power-of-two buckets: the first bound is `first`, each next one twice
/// the one before, then one bucket for everything larger.
#[derive(Debug)]
pub struct Histogram {
    first: u64,
    /// Observations per bucket (not cumulative).
    buckets: [AtomicU64; BOUNDS + 1],
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram whose first bucket holds values up to `first` (at least 1).
    #[must_use]
    pub const fn new(first: u64) -> Histogram {
        Histogram {
            first: if first == 0 { 1 } else { first },
            buckets: [const { AtomicU64::new(0) }; BOUNDS + 1],
            sum: AtomicU64::new(0),
        }
    }

    /// The bucket of `value`: the first whose bound is at least `value`.
    #[must_use]
    pub fn bucket(&self, value: u64) -> usize {
        // The smallest i with first * 2^i >= value, i.e. 2^i >= ceil(value / first).
        let q = value.div_ceil(self.first);
        let i = if q <= 1 { 0 } else { (64 - (q - 1).leading_zeros()) as usize };
        i.min(BOUNDS)
    }

    /// Counts one observation.
    pub fn observe(&self, value: u64) {
        self.buckets[self.bucket(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Each bucket's upper bound (`None` for the last, unbounded one) and count, not
    /// cumulative; and the sum of every observation.
    #[must_use]
    pub fn snapshot(&self) -> (Vec<(Option<u64>, u64)>, u64) {
        let buckets = (0..=BOUNDS)
            .map(|i| {
                let bound = (i < BOUNDS).then(|| self.first << i);
                (bound, self.buckets[i].load(Ordering::Relaxed))
            })
            .collect();
        (buckets, self.sum.load(Ordering::Relaxed))
    }
}

/// Commit rounds of a persistent store.
#[derive(Debug)]
pub struct CommitStats {
    /// Appends per round.
    pub appends: Histogram,
    /// Nanoseconds per round, from its first write until it is durable (the `fdatasync`,
    /// journal sync, redb commit or PostgreSQL `COMMIT` included).
    pub nanos: Histogram,
}

impl Default for CommitStats {
    fn default() -> CommitStats {
        // 1 append to 131,072; 10 µs to 1.3 s.
        CommitStats { appends: Histogram::new(1), nanos: Histogram::new(10_000) }
    }
}

impl CommitStats {
    /// Counts a round of `appends` that took `took`.
    pub fn round(&self, appends: usize, took: Duration) {
        self.appends.observe(appends as u64);
        self.nanos.observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Webhook deliveries (§7.1) this node made.
#[derive(Debug)]
pub struct WebhookStats {
    /// Answered 2xx with `{"done": true}`.
    pub done: AtomicU64,
    /// Answered 2xx otherwise (the worker calls back).
    pub accepted: AtomicU64,
    /// Anything else: no connection, a timeout, a redirect, another status, a body too large.
    pub failed: AtomicU64,
    /// Nanoseconds per delivery, whatever its outcome.
    pub nanos: Histogram,
}

impl Default for WebhookStats {
    fn default() -> WebhookStats {
        // 1 ms to 131 s.
        WebhookStats {
            done: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            nanos: Histogram::new(1_000_000),
        }
    }
}

impl WebhookStats {
    /// Counts one delivery that came to `outcome` after `took`.
    pub fn delivery(&self, outcome: crate::subscription::state::Delivered, took: Duration) {
        use crate::subscription::state::Delivered;
        let counter = match outcome {
            Delivered::Done => &self.done,
            Delivered::Accepted => &self.accepted,
            Delivered::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.nanos.observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Everything the engine counts.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Commit rounds (none in the memory mode).
    pub commits: std::sync::Arc<CommitStats>,
    /// Webhook deliveries of the subscriptions service.
    pub webhooks: WebhookStats,
    /// How long opening the store took, in nanoseconds (recovery in the persistent modes,
    /// reaching the database in the postgres mode); 0 until it is open.
    pub open_nanos: AtomicU64,
}

impl EngineStats {
    /// The store opened after `took`.
    pub fn opened(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.open_nanos.store(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_what_their_bounds_say() {
        let h = Histogram::new(50_000);
        for (value, bucket) in [
            (0, 0),
            (50_000, 0),
            (50_001, 1),
            (100_000, 1),
            (100_001, 2),
            (50_000 << 17, 17),
            ((50_000 << 17) + 1, 18),
            (u64::MAX, 18),
        ] {
            assert_eq!(h.bucket(value), bucket, "{value}");
        }
        h.observe(1);
        h.observe(70_000);
        let (buckets, sum) = h.snapshot();
        assert_eq!((buckets[0], buckets[1], sum), ((Some(50_000), 1), (Some(100_000), 1), 70_001));
        assert_eq!(buckets[BOUNDS], (None, 0));
    }

    #[test]
    fn rounds_count_their_appends_and_time() {
        let c = CommitStats::default();
        c.round(3, Duration::from_micros(15));
        let (appends, n) = c.appends.snapshot();
        assert_eq!((appends[2], n), ((Some(4), 1), 3));
        let (nanos, total) = c.nanos.snapshot();
        assert_eq!((nanos[1], total), ((Some(20_000), 1), 15_000));
    }

    #[test]
    fn deliveries_count_by_outcome() {
        use crate::subscription::state::Delivered;
        let w = WebhookStats::default();
        w.delivery(Delivered::Done, Duration::from_millis(3));
        w.delivery(Delivered::Failed, Duration::from_millis(1));
        w.delivery(Delivered::Failed, Duration::from_secs(1));
        let counts = [&w.done, &w.accepted, &w.failed].map(|c| c.load(Ordering::Relaxed));
        assert_eq!(counts, [1, 0, 2]);
        let (nanos, total) = w.nanos.snapshot();
        assert_eq!((nanos[0].1, nanos[2].1, nanos[10].1), (1, 1, 1));
        assert_eq!(total, 1_004_000_000);
    }
}
