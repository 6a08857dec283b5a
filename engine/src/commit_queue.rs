//! The queue between writers and a committer thread: writers queue the stream they left a
//! pending batch on; the committer takes everything queued at once, so that one commit (one
//! sync) covers every stream that was waiting. Shared by the file log and the acid shards.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Streams with a batch to commit. One committer thread takes from each queue.
pub(crate) struct CommitQueue<T> {
    queue: Mutex<Queued<T>>,
    wake: Condvar,
}

struct Queued<T> {
    items: Vec<T>,
    stop: bool,
    /// The committer is waiting on the condition variable: only then does a push need a
    /// wake-up (each one is a system call, and a busy committer takes the items anyway).
    waiting: bool,
}

impl<T> Default for CommitQueue<T> {
    fn default() -> CommitQueue<T> {
        CommitQueue {
            queue: Mutex::new(Queued { items: Vec::new(), stop: false, waiting: false }),
            wake: Condvar::new(),
        }
    }
}

impl<T> CommitQueue<T> {
    fn lock(&self) -> MutexGuard<'_, Queued<T>> {
        // Pushes and takes are single steps: a poisoned lock holds a consistent queue.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a stream and wakes the committer.
    pub(crate) fn enqueue(&self, item: T) {
        let mut q = self.lock();
        q.items.push(item);
        let wake = std::mem::take(&mut q.waiting);
        drop(q);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Waits for the next round's streams; `None` once stopped and drained.
    pub(crate) fn next_round(&self) -> Option<Vec<T>> {
        let mut q = self.lock();
        loop {
            if !q.items.is_empty() {
                return Some(std::mem::take(&mut q.items));
            }
            if q.stop {
                return None;
            }
            q.waiting = true;
            q = self.wake.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Lets the committer finish what is queued, then end.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }
}

/// Committer threads, stopped (after draining their queues) and joined when dropped.
pub(crate) struct CommitterThreads {
    stop: Box<dyn Fn() + Send + Sync>,
    handles: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl CommitterThreads {
    /// Starts one thread per entry of `runs`, named `ds-commit-{i}`; `stop` must make every
    /// `run` return.
    ///
    /// # Errors
    /// A thread that cannot be started (the ones already started are stopped and joined):
    /// a store without its committer would leave appends waiting forever.
    pub(crate) fn spawn(
        runs: Vec<Box<dyn FnOnce() + Send>>,
        stop: Box<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<CommitterThreads> {
        let threads = CommitterThreads { stop, handles: Mutex::new(Vec::new()) };
        for (i, run) in runs.into_iter().enumerate() {
            let handle = std::thread::Builder::new().name(format!("ds-commit-{i}")).spawn(run)?;
            threads.handles.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(handle);
        }
        Ok(threads)
    }
}

impl Drop for CommitterThreads {
    fn drop(&mut self) {
        (self.stop)();
        let handles = std::mem::take(
            &mut *self.handles.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for handle in handles {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_round_takes_everything_queued_and_stop_drains_first() {
        let q: Arc<CommitQueue<u32>> = Arc::default();
        q.enqueue(1);
        q.enqueue(2);
        q.stop();
        assert_eq!(q.next_round(), Some(vec![1, 2]));
        assert_eq!(q.next_round(), None);
    }

    /// Pushes wake the committer only while it waits; one that arrives while it is busy is
    /// found by its next look, and one that arrives while it waits wakes it.
    #[test]
    fn a_waiting_committer_is_woken_and_a_busy_one_finds_the_items() {
        let q: Arc<CommitQueue<u32>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let rq = q.clone();
        let consumer = std::thread::spawn(move || {
            while let Some(round) = rq.next_round() {
                tx.send(round).unwrap();
            }
        });
        let timeout = std::time::Duration::from_secs(10);
        for i in 0..50 {
            // Sometimes while the committer waits, sometimes while it is busy sending.
            if i % 2 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            q.enqueue(i);
            let mut got = rx.recv_timeout(timeout).expect("the committer was not woken");
            while !got.contains(&i) {
                got = rx.recv_timeout(timeout).expect("the committer was not woken");
            }
        }
        q.stop();
        consumer.join().unwrap();
    }

    #[test]
    fn dropping_the_threads_stops_and_joins_them() {
        let q: Arc<CommitQueue<u32>> = Arc::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (rq, rs) = (q.clone(), seen.clone());
        let run: Box<dyn FnOnce() + Send> = Box::new(move || {
            while let Some(round) = rq.next_round() {
                rs.lock().unwrap().extend(round);
            }
        });
        let sq = q.clone();
        let threads = CommitterThreads::spawn(vec![run], Box::new(move || sq.stop())).unwrap();
        q.enqueue(7);
        drop(threads);
        assert_eq!(*seen.lock().unwrap(), vec![7]);
    }
}
