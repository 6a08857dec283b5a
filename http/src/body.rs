//! The limits every transport applies to request bodies: a size limit, a deadline and a
//! server-wide budget.
//!
//! A declared `Content-Length` over the limit is refused before any byte is read, and a chunked
//! body is cut off as soon as it passes the limit. Every byte being received is also taken from
//! one [`ByteBudget`] (`max_pending_body_bytes`) until the request is done with the body, so the
//! memory held by bodies in flight is bounded whatever the number of clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::ApiError;

/// How bodies are read.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest accepted body.
    pub max_bytes: usize,
    /// The body must arrive within this long.
    pub timeout: Duration,
    /// Server-wide budget of bytes in bodies being received or not yet handled.
    pub budget: Arc<ByteBudget>,
}

/// A count of bytes that may be held at once. Taking and returning bytes is one atomic
/// operation when there is room (every request does it, so no lock); only when the budget is
/// exhausted do takers wait, woken whenever bytes come back.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
    waiting: AtomicUsize,
    returned: Notify,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget {
            used: AtomicUsize::new(0),
            limit,
            waiting: AtomicUsize::new(0),
            returned: Notify::new(),
        }
    }

    fn try_take(&self, n: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(n);
            if after > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(used, after, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => used = actual,
            }
        }
    }

    /// Takes `n` bytes, waiting for room until `deadline`; `None` if the deadline passes.
    async fn take(self: &Arc<Self>, n: usize, deadline: Instant) -> Option<Share> {
        loop {
            if self.try_take(n) {
                return Some(Share { budget: self.clone(), bytes: n });
            }
            let returned = self.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            self.waiting.fetch_add(1, Ordering::AcqRel);
            // Bytes may have come back between the failed take and `enable`.
            let got = self.try_take(n);
            let woke = got || tokio::time::timeout_at(deadline, returned).await.is_ok();
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            if got {
                return Some(Share { budget: self.clone(), bytes: n });
            }
            if !woke {
                return None;
            }
        }
    }

    /// Bytes currently taken.
    #[must_use]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes taken from a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub struct Share {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        if self.budget.waiting.load(Ordering::Acquire) > 0 {
            self.budget.returned.notify_waiters();
        }
    }
}

/// A received body and its share of the budget, returned when this is dropped.
#[derive(Debug)]
pub struct Received {
    /// The body.
    pub bytes: Bytes,
    _share: Option<Share>,
}

impl Received {
    /// A body of `bytes` holding `share` of the budget until dropped.
    #[must_use]
    pub fn new(bytes: Bytes, share: Option<Share>) -> Received {
        Received { bytes, _share: share }
    }

    /// No body.
    #[must_use]
    pub fn empty() -> Received {
        Received { bytes: Bytes::new(), _share: None }
    }
}

impl BodyLimits {
    /// Takes `n` bytes of the server-wide budget, waiting for room until `deadline`.
    ///
    /// # Errors
    /// 408 if the deadline passes first.
    pub async fn take(&self, n: usize, deadline: Instant) -> Result<Share, ApiError> {
        self.budget.take(n, deadline).await.ok_or_else(ApiError::body_timeout)
    }

    /// The length a request declared, checked against the limit before any body byte is
    /// read.
    ///
    /// # Errors
    /// 413 over the limit.
    pub fn check_declared(&self, declared: u64) -> Result<usize, ApiError> {
        usize::try_from(declared)
            .ok()
            .filter(|n| *n <= self.max_bytes)
            .ok_or_else(|| ApiError::body_too_large(self.max_bytes))
    }
}

impl Share {
    /// Adds `other` to this share (both come back together).
    pub fn merge(&mut self, mut other: Share) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budget_waits_for_room_and_times_out() {
        let budget = Arc::new(ByteBudget::new(10));
        let far = Instant::now() + Duration::from_secs(5);
        let mut a = budget.take(6, far).await.unwrap();
        a.merge(budget.take(4, far).await.unwrap());
        assert_eq!(budget.used(), 10);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(budget.take(1, soon).await.is_none(), "no room, deadline passes");
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.take(7, far).await.map(|s| s.bytes) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert_eq!(waiter.await.unwrap(), Some(7));
        assert_eq!(budget.used(), 0, "every share came back");
    }
}
