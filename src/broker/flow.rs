//! Flow control: when a subscriber's pending output or queue passes its soft watermark,
//! the shard holds back its publishers and the other shards' channels to it, until the
//! subscriber drains or is marked slow.
//!
//! **Owns:** the congestion marks of connections and the shard's count of them, the slow
//! consumer rule, and the waits of publishers held back.
//!
//! **Must not touch:** sockets, sessions, routing. A closed connection is never congested.

use std::time::Instant;

use super::connection::ConnShared;
use super::shard::Shard;

impl Shard {
    /// Flow control: when a connection's pending output passes half of
    /// `max_write_buffer`, or its session queue half of `max_queued_messages`, the shard
    /// stops reading from its publishers and from other shards (which in turn stop reading
    /// theirs), so a flood slows down to what subscribers drain instead of filling queues
    /// until messages are dropped. A connection that does not drain below a quarter of both
    /// within a second is marked slow and stops holding anyone back; then its limits apply:
    /// QoS 0 past `max_write_buffer` and QoS 1/2 past the queue limits are dropped and
    /// counted.
    ///
    /// A connection that has ended is never marked: nothing would ever clear the mark, and
    /// the shard would stop reading its publishers for good.
    pub(crate) fn note_output(&self, conn: &ConnShared) {
        if !conn.open.get() {
            return;
        }
        let l = &self.cfg.limits;
        let over = conn.pending_output() >= l.max_write_buffer / 2
            || conn.queued.get() >= l.max_queued_messages.div_ceil(2);
        if over && !conn.congested.get() && !conn.slow.get() {
            let now = Instant::now();
            conn.congested.set(true);
            conn.congested_since.set(now);
            if self.output_congested.get() == 0 {
                self.congestion_episodes
                    .set(self.congestion_episodes.get() + 1);
                self.holdback_since.set(Some(now));
            }
            self.output_congested.set(self.output_congested.get() + 1);
        }
    }

    /// Called as a connection's output drains.
    pub(crate) fn note_drained(&self, conn: &ConnShared) {
        let l = &self.cfg.limits;
        let under = conn.pending_output() < l.max_write_buffer / 4
            && conn.queued.get() <= l.max_queued_messages / 4;
        if (conn.congested.get() || conn.slow.get()) && under {
            conn.slow.set(false);
            self.clear_congested(conn);
        }
    }

    pub(crate) fn clear_congested(&self, conn: &ConnShared) {
        if conn.congested.replace(false) {
            let n = self.output_congested.get().saturating_sub(1);
            self.output_congested.set(n);
            if n == 0 {
                if let Some(since) = self.holdback_since.take() {
                    let held = super::stats::micros_since(since);
                    self.holdback_micros
                        .set(self.holdback_micros.get().saturating_add(held));
                }
                self.output_drained.wake_all();
            }
        }
    }

    /// True while some connection's output is above its soft watermark.
    pub(crate) fn output_congested(&self) -> bool {
        self.output_congested.get() > 0
    }

    /// True while publishers are held back: a subscriber here is behind, or the channels
    /// to other shards are full.
    pub(crate) fn holding_back(&self) -> bool {
        self.output_congested() || self.data_congested()
    }

    /// Completes when publishers are no longer held back.
    pub(crate) async fn until_released(&self) {
        while self.holding_back() {
            if self.data_congested() {
                let a = self.output_drained.wait();
                let b = self.until_data_uncongested();
                futures::pin_mut!(a, b);
                futures::future::select(a, b).await;
            } else {
                self.output_drained.wait().await;
            }
        }
    }
}
