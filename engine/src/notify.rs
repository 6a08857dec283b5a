//! Notification fanout: each stream publishes its tail (next offset, closed, gone) on a watch
//! channel. Live readers wait for the tail to move, then read the data themselves, so a write
//! wakes any number of readers without a payload copy per reader and without polling.

use tokio::sync::watch;

use crate::offset::Offset;

/// What a live reader needs to know to decide whether to read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// The offset after the last visible byte.
    pub next: Offset,
    /// The stream is closed: `next` is final.
    pub closed: bool,
    /// The stream was deleted or expired: readers should stop.
    pub gone: bool,
}

/// The sending side, owned by the stream.
#[derive(Debug)]
pub struct TailSignal(watch::Sender<Tail>);

impl TailSignal {
    /// A signal starting at `tail`.
    #[must_use]
    pub fn new(tail: Tail) -> TailSignal {
        TailSignal(watch::Sender::new(tail))
    }

    /// Publishes a new tail and wakes every waiting reader. Callers publish and subscribe
    /// under the stream's lock, so with no receiver at this moment none can be between
    /// reading the old tail and waiting for a change: the tail is then stored without a
    /// wake-up (which would lock every shard of the channel's waiter list for nobody).
    pub fn publish(&self, tail: Tail) {
        if self.0.receiver_count() == 0 {
            self.0.send_if_modified(|t| {
                *t = tail;
                false
            });
        } else {
            self.0.send_replace(tail);
        }
    }

    /// Marks the stream gone, waking every reader so it can stop.
    pub fn publish_gone(&self) {
        self.0.send_modify(|t| t.gone = true);
    }

    /// Whether any live reader is watching (a watched stream is not idle).
    #[must_use]
    pub fn has_watchers(&self) -> bool {
        self.0.receiver_count() > 0
    }

    /// A receiver for one live reader.
    #[must_use]
    pub fn subscribe(&self) -> TailWatch {
        TailWatch(self.0.subscribe())
    }
}

/// The receiving side, held by one live reader.
#[derive(Debug, Clone)]
pub struct TailWatch(watch::Receiver<Tail>);

impl TailWatch {
    /// The latest published tail.
    #[must_use]
    pub fn current(&self) -> Tail {
        *self.0.borrow()
    }

    /// Waits until the tail moves past `offset`, the stream closes, or it goes away, and
    /// returns that tail. Returns at once if that is already so.
    pub async fn wait_beyond(&mut self, offset: Offset) -> Tail {
        let seen = self.0.wait_for(|t| t.next > offset || t.closed || t.gone).await.map(|t| *t);
        // The sender lives as long as the stream; if it is dropped the stream is gone.
        seen.unwrap_or(Tail { next: offset, closed: false, gone: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tail(pos: u64) -> Tail {
        Tail { next: Offset::at(pos), closed: false, gone: false }
    }

    #[tokio::test]
    async fn wakes_only_when_tail_passes_offset() {
        let signal = TailSignal::new(tail(5));
        let mut w = signal.subscribe();
        assert_eq!(w.wait_beyond(Offset::at(4)).await, tail(5));
        let waiter = tokio::spawn(async move { w.wait_beyond(Offset::at(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        signal.publish(tail(9));
        assert_eq!(waiter.await.expect("join"), tail(9));
    }

    #[tokio::test]
    async fn close_and_gone_wake_readers_at_the_tail() {
        let signal = TailSignal::new(tail(5));
        let mut a = signal.subscribe();
        let mut b = signal.subscribe();
        signal.publish(Tail { closed: true, ..tail(5) });
        assert!(a.wait_beyond(Offset::at(5)).await.closed);
        signal.publish_gone();
        assert!(b.wait_beyond(Offset::at(5)).await.gone);
        drop(signal);
        assert!(a.wait_beyond(Offset::at(100)).await.gone);
    }
}
