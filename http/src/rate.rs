//! Per-client rate limiting (§12.5): a token bucket per client IP address.
//!
//! Each request takes one token; a bucket holds at most `burst` tokens and refills at `rate`
//! tokens a second. A request that finds its bucket empty is refused with 429 and a
//! `Retry-After` of the whole seconds until a token is back. A live read (long-poll or SSE)
//! costs one token when it arrives, however long it then stays open.
//!
//! Memory is bounded: at most `max_clients` buckets are kept, spread over shards. A shard
//! that is full first drops the buckets that have refilled completely (they hold nothing a
//! fresh bucket would not); if every bucket is still refilling, it drops an arbitrary
//! eighth of them. Under a flood from more addresses than that, some clients get a fresh
//! bucket early: the limiter errs towards admitting, never towards refusing a client that
//! stayed within its rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Shards of the bucket map, so that clients rarely wait on one another's lock.
const SHARDS: usize = 16;

/// The settings of a limiter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second: the sustained requests per second of one client.
    pub per_sec: f64,
    /// Most tokens a bucket holds: the requests a client may send at once after idling.
    pub burst: f64,
    /// Most client addresses remembered at once.
    pub max_clients: usize,
}

/// Token buckets by client address.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    per_shard: usize,
    shards: Box<[Mutex<HashMap<IpAddr, Bucket>>]>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter with `limit`. `per_sec` must be positive; `burst` is at least 1.
    #[must_use]
    pub fn new(limit: RateLimit) -> RateLimiter {
        let limit = RateLimit { burst: limit.burst.max(1.0), ..limit };
        RateLimiter {
            limit,
            per_shard: limit.max_clients.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes a token for a request from `client` at `now`.
    ///
    /// # Errors
    /// The bucket is empty: how long until the next token.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.shard(client).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(&client) && map.len() >= self.per_shard {
            self.make_room(&mut map, now);
        }
        let limit = self.limit;
        let bucket = map.entry(client).or_insert(Bucket { tokens: limit.burst, at: now });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / limit.per_sec))
        }
    }

    /// How many client addresses are remembered.
    #[must_use]
    pub fn clients(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }

    fn shard(&self, client: IpAddr) -> &Mutex<HashMap<IpAddr, Bucket>> {
        let h = match client {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let n = u128::from(v6);
                (n as u64) ^ ((n >> 64) as u64)
            }
        };
        // Fibonacci hashing: the top bits of the product are well mixed.
        let index = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS;
        &self.shards[index]
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.limit.per_sec).min(self.limit.burst)
    }

    /// Frees at least one slot in a full shard: first every bucket that has refilled
    /// completely; if none has, an arbitrary eighth of the shard, so that a flood of new
    /// addresses costs one sweep per many requests rather than one per request.
    fn make_room(&self, map: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = self.limit.burst;
        map.retain(|_, b| self.refilled(b, now) < burst);
        if map.len() >= self.per_shard {
            let evict: Vec<IpAddr> =
                map.keys().take((self.per_shard / 8).max(1)).copied().collect();
            for ip in evict {
                map.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limiter(per_sec: f64, burst: f64, max_clients: usize) -> RateLimiter {
        RateLimiter::new(RateLimit { per_sec, burst, max_clients })
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limiter(10.0, 20.0, 100);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(l.check(ip(1), t0).is_ok());
        }
        let wait = l.check(ip(1), t0).unwrap_err();
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(l.check(ip(2), t0).is_ok(), "another client has its own bucket");
        let later = t0 + Duration::from_millis(100);
        assert!(l.check(ip(1), later).is_ok(), "one token back after 1/rate");
        assert!(l.check(ip(1), later).is_err());
        // A refused request takes nothing: the client is not punished for asking.
        let t1 = later + Duration::from_millis(100);
        assert!(l.check(ip(1), t1).is_ok());
    }

    #[test]
    fn a_steady_client_within_its_rate_is_never_refused() {
        let l = limiter(5.0, 10.0, 100);
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(200 * i);
            assert!(l.check(ip(7), now).is_ok(), "request {i}");
        }
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let l = limiter(1.0, 2.0, 256);
        let t0 = Instant::now();
        for n in 0..100_000 {
            let _ = l.check(ip(n), t0);
        }
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(l.check(v6, t0).is_ok());
        let per_shard = 256usize.div_ceil(SHARDS);
        assert!(l.clients() <= SHARDS * per_shard, "{} buckets", l.clients());
    }

    #[test]
    fn full_buckets_are_dropped_first() {
        // Two buckets per shard; three clients of one shard.
        let l = limiter(1.0, 2.0, 2 * SHARDS);
        let same: Vec<IpAddr> =
            (0..).map(ip).filter(|c| std::ptr::eq(l.shard(*c), l.shard(ip(0)))).take(3).collect();
        let (drained, idle, newcomer) = (same[0], same[1], same[2]);
        let t0 = Instant::now();
        assert!(l.check(drained, t0).is_ok() && l.check(drained, t0).is_ok());
        assert!(l.check(idle, t0).is_ok());
        // A second later `idle` is full again and `drained` holds one token.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.check(newcomer, t1).is_ok());
        assert_eq!(l.clients(), 2);
        assert!(l.check(drained, t1).is_ok());
        assert!(l.check(drained, t1).is_err(), "the refilling bucket was kept");
    }
}
