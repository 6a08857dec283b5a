//! Cache-collapsing cursors (§10.1): the number of 20-second intervals since
//! 2024-10-09T00:00:00Z, pushed strictly past a client's echoed cursor with random jitter so
//! that a CDN never serves the same empty response in a loop.
//!
//! Cursors never go backwards (§10.1.3, MUST): an echoed cursor at or past the current
//! interval always gets a larger one. A client that long-polls an idle stream faster than the
//! jitter runs its cursor ahead of the clock; once it is more than a day of intervals ahead,
//! it moves by one interval per response instead of by the jitter, so it stays close without
//! ever being answered with a smaller value. Only `u64::MAX` itself cannot grow and is
//! answered unchanged.

use std::cell::Cell;

/// 2024-10-09T00:00:00Z in Unix milliseconds.
pub const CURSOR_EPOCH_MS: u64 = 1_728_432_000_000;
/// Length of one cursor interval.
pub const CURSOR_INTERVAL_MS: u64 = 20_000;
/// Jitter added on a collision: 1 to 3600 seconds.
const JITTER_SECS_MAX: u64 = 3600;
/// An echoed cursor further ahead of the current interval than this moves by one interval
/// rather than by the jitter (a day of intervals: plenty for jitter and clock skew).
const CURSOR_AHEAD_MAX: u64 = 86_400_000 / CURSOR_INTERVAL_MS;

/// The cursor for a live response at `now_ms`, given the client's `cursor` parameter.
#[must_use]
pub fn next(now_ms: u64, client: Option<u64>) -> u64 {
    let current = now_ms.saturating_sub(CURSOR_EPOCH_MS) / CURSOR_INTERVAL_MS;
    match client {
        Some(c) if c >= current => {
            let step = if c - current <= CURSOR_AHEAD_MAX {
                let jitter_secs = 1 + random() % JITTER_SECS_MAX;
                // At least one whole interval, so the cursor always moves.
                (jitter_secs * 1000 / CURSOR_INTERVAL_MS).max(1)
            } else {
                1
            };
            c.saturating_add(step)
        }
        _ => current,
    }
}

/// A cheap per-thread xorshift; jitter needs spread, not secrecy.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    (t ^ (std::ptr::from_ref(&local) as u64).rotate_left(32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_intervals_from_the_epoch() {
        assert_eq!(next(CURSOR_EPOCH_MS, None), 0);
        assert_eq!(next(CURSOR_EPOCH_MS + 19_999, None), 0);
        assert_eq!(next(CURSOR_EPOCH_MS + 20_000, None), 1);
        assert_eq!(next(0, None), 0);
    }

    #[test]
    fn always_moves_past_an_echoed_cursor() {
        let now = CURSOR_EPOCH_MS + 1000 * CURSOR_INTERVAL_MS;
        for client in [1000, 1001, 5000] {
            for _ in 0..1000 {
                let c = next(now, Some(client));
                assert!(c > client && c <= client + 180, "{client} -> {c}");
            }
        }
        assert_eq!(next(now, Some(3)), 1000, "an old cursor gets the current interval");
        assert!(next(now, Some(1000 + CURSOR_AHEAD_MAX)) > 1000 + CURSOR_AHEAD_MAX);
    }

    /// Regression: a cursor more than a day of intervals ahead of the clock was ignored and
    /// answered with the current interval, a smaller value (poll 46 at a 1 s long-poll
    /// timeout; after about 24 minutes at 30 s).
    #[test]
    fn a_cursor_far_ahead_still_moves_forward() {
        let now = CURSOR_EPOCH_MS + 1000 * CURSOR_INTERVAL_MS;
        let far = 1000 + CURSOR_AHEAD_MAX + 1;
        assert_eq!(next(now, Some(far)), far + 1);
        assert_eq!(next(now, Some(u64::MAX - 1)), u64::MAX);
        assert_eq!(next(now, Some(u64::MAX)), u64::MAX, "cannot grow, never shrinks");
    }
}
