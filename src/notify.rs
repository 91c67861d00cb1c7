//! Single-threaded wake-ups between tasks of one shard.
//!
//! **Owns:** two tiny primitives: [`Notify`] (one waiter, a level-triggered "there is
//! work" flag, as used between a connection's producers and its task) and [`WaitList`]
//! (any number of waiters woken together). `!Send` by design: they never cross cores.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A flag plus the waker of the one task that waits for it. `notify` before `notified`
/// is not lost: the flag stays set until a `notified().await` consumes it.
#[derive(Debug, Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Sets the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        if !self.set.replace(true) {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Whether the flag is set (without consuming it).
    #[cfg(test)]
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Completes when the flag is set, and clears it.
    pub fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

/// Future of [`Notify::notified`].
#[derive(Debug)]
pub struct Notified<'a>(&'a Notify);

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.replace(false) {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Waiters woken all at once (e.g. readers paused by back-pressure).
#[derive(Debug, Default)]
pub struct WaitList {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl WaitList {
    /// Wakes every current waiter.
    pub fn wake_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Completes at the next `wake_all`.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            list: self,
            generation: self.generation.get(),
        }
    }
}

/// Future of [`WaitList::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    list: &'a WaitList,
    generation: u64,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.list.generation.get() != self.generation {
            return Poll::Ready(());
        }
        self.list.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_before_wait_is_kept() {
        let n = Notify::default();
        n.notify();
        assert!(n.is_set());
        futures::executor::block_on(n.notified());
        assert!(!n.is_set());
    }

    #[test]
    fn wait_list_wakes_after_generation_change() {
        let l = WaitList::default();
        let w = l.wait();
        l.wake_all();
        futures::executor::block_on(w);
    }
}
