//! Cancellation shared between the async scheduler and blocking worker calls, and the
//! per-node context [`Cx`] built on it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::event::{Event, EventKind, Stream};

/// A flag that, once raised, stays raised; waitable from blocking threads
/// ([`CancelToken::wait_timeout`]) and from async code ([`CancelToken::cancelled`]).
/// Clones share the flag.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    lock: Mutex<()>,
    condvar: Condvar,
    notify: tokio::sync::Notify,
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Raises the flag and wakes every waiter. Idempotent.
    pub fn cancel(&self) {
        // Set the flag under the lock, so a blocking waiter cannot check it and then
        // miss the wake-up.
        let guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.flag.store(true, Ordering::SeqCst);
        drop(guard);
        self.inner.condvar.notify_all();
        self.inner.notify.notify_waiters();
    }

    /// Whether the flag is raised.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Blocks until cancelled or until `timeout` has passed; returns whether cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        while !self.is_cancelled() {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return false;
            }
            guard = match self.inner.condvar.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    /// Resolves once the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            // Register before checking, so a `cancel` in between is not missed.
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Per-node context handed to the worker: which node, cancellation, and a log sink.
///
/// Worker methods run on blocking threads. A long `execute` must check
/// [`Cx::is_cancelled`] (or sleep in [`Cx::cancelled_wait`]) and return promptly, with
/// an error, once the solve is cancelled; the solve waits for it before returning.
pub struct Cx {
    node: usize,
    cancel: CancelToken,
    events: Arc<dyn Fn(Event) + Send + Sync>,
}

impl fmt::Debug for Cx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cx")
            .field("node", &self.node)
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

impl Cx {
    pub(crate) fn new(
        node: usize,
        cancel: CancelToken,
        events: Arc<dyn Fn(Event) + Send + Sync>,
    ) -> Cx {
        Cx {
            node,
            cancel,
            events,
        }
    }

    /// Index of the node being worked on.
    pub fn node(&self) -> usize {
        self.node
    }

    /// Whether the solve has been cancelled (another node failed, or the caller cancelled).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Sleeps until cancelled or until `timeout` has passed; returns whether cancelled.
    pub fn cancelled_wait(&self, timeout: Duration) -> bool {
        self.cancel.wait_timeout(timeout)
    }

    /// Reports output; it becomes an [`EventKind::Log`] event for this node.
    pub fn log(&self, stream: Stream, data: &[u8]) {
        (self.events)(Event {
            node: self.node,
            kind: EventKind::Log {
                stream,
                data: data.to_vec(),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_times_out_then_sees_cancel_from_another_thread() {
        let t = CancelToken::new();
        assert!(!t.wait_timeout(Duration::ZERO));
        assert!(!t.is_cancelled());
        let t2 = t.clone();
        let waiter = std::thread::spawn(move || t2.wait_timeout(Duration::MAX));
        t.cancel();
        assert!(waiter.join().expect("waiter thread"));
        assert!(t.is_cancelled());
        assert!(t.wait_timeout(Duration::ZERO));
    }

    #[tokio::test]
    async fn async_wait_sees_cancel() {
        let t = CancelToken::new();
        let t2 = t.clone();
        let task = tokio::spawn(async move { t2.cancelled().await });
        t.cancel();
        task.await.expect("task");
        t.cancelled().await; // already cancelled: returns at once
    }
}
