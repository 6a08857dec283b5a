//! Reading request bodies with a size limit, a deadline and a server-wide budget.
//!
//! A declared `Content-Length` over the limit is refused before any byte is read, and a chunked
//! body is cut off as soon as it passes the limit. Every byte being received is also taken from
//! one [`ByteBudget`] (`max_pending_body_bytes`) until the handler is done with the body, so the
//! memory held by bodies in flight is bounded whatever the number of clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
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

impl Share {
    fn merge(&mut self, mut other: Share) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
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

/// Reads the whole body within the limits.
///
/// # Errors
/// 413 over the limit, 408 past the deadline (also while waiting for budget), 400 for a
/// malformed `Content-Length` or a broken body.
pub async fn collect(
    headers: &HeaderMap,
    body: Body,
    limits: &BodyLimits,
) -> Result<Received, ApiError> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?,
        ),
    };
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(ApiError::body_too_large(limits.max_bytes));
    }
    if declared == Some(0) {
        return Ok(Received { bytes: Bytes::new(), _share: None });
    }
    let deadline = Instant::now() + limits.timeout;
    let mut share = match declared {
        Some(n) => Some(take(limits, n, deadline).await?),
        None => None,
    };
    let mut body = body;
    let mut single: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::body_timeout()),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ApiError::bad_request("request body was cut off")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > limits.max_bytes {
            return Err(ApiError::body_too_large(limits.max_bytes));
        }
        if declared.is_none() {
            let more = take(limits, data.len(), deadline).await?;
            match &mut share {
                Some(s) => s.merge(more),
                None => share = Some(more),
            }
        }
        match (&mut single, &mut joined) {
            (None, None) => single = Some(data),
            (Some(first), None) => {
                let mut buf = BytesMut::with_capacity(declared.unwrap_or(total).max(total));
                buf.extend_from_slice(first);
                buf.extend_from_slice(&data);
                single = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    let bytes = match (single, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(one), None) => one,
        (None, None) => Bytes::new(),
    };
    Ok(Received { bytes, _share: share })
}

/// Waiting for room past the body deadline is a body timeout.
async fn take(limits: &BodyLimits, n: usize, deadline: Instant) -> Result<Share, ApiError> {
    limits.budget.take(n, deadline).await.ok_or_else(ApiError::body_timeout)
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
