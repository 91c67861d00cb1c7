//! Retained messages for a new subscription, streamed to its session in bounded batches
//! under flow control, in topic-tree order across every shard's store.
//!
//! After SUBACK, the accepted filters of a SUBSCRIBE become a *job* of the session's
//! stream. A job has one *part* per shard and filter: a part holds that shard's next
//! matches of the filter after a cursor (this shard's read directly, the others' asked
//! for over the control plane; the first batch of every other shard rides on its
//! `InterestAck`, so a small retained set goes out with the SUBACK without another round
//! trip). The parts merge by [`tree_order`]: a message is sent only when every part that
//! is not finished has a candidate, so the stream is in order (a parent level before its
//! children, as mosquitto sends them), and a topic matched by several filters of the
//! SUBSCRIBE is sent once, at the highest granted QoS [MQTT-3.3.5-1]. Messages
//! go out while the subscriber keeps up; the stream pauses when its connection's output
//! reaches a quarter of `max_write_buffer` or its queue a quarter of
//! `max_queued_messages` or of `max_queued_bytes` (below the flow-control watermarks, so a
//! stream never holds a publisher back; at least one message), and goes on as the
//! connection drains, on the answers of other shards, and when the session is resumed by a
//! new connection.
//!
//! ## Invariants and limits
//! - A stream belongs to a session ([`SessionId`], with generation): it pauses while the
//!   session has no connection and goes on when one resumes the session (a takeover that
//!   keeps it, a reconnect), and ends when the session does. Pausing rather than filling
//!   the offline queue keeps an offline session small, and loses nothing: QoS 0 retained
//!   messages would be dropped offline.
//! - Its current job buffers at most `PART_BUDGET` messages per shard (a fetch asks for
//!   `PART_BUDGET / filters` per part, at least one); waiting jobs hold filters only (a
//!   first batch that arrives for a job behind another is dropped and fetched again). A
//!   stream holds at most `MAX_JOBS` jobs: the filters of a SUBSCRIBE beyond that join the
//!   last waiting job (a union: no filter twice, and filters the session no longer holds
//!   leave it), so that job holds at most the session's subscriptions.
//! - A filter stops counting as soon as its session no longer holds it (an UNSUBSCRIBE
//!   [MQTT-3.10.4-2]); a job ends when none of its filters is held.
//! - A message dropped at a session's limit anyway (only possible when a single message
//!   is over the byte limit's remaining room) is counted in `retained_delivery_dropped`.
//! - Answers carry the job's token: one for a job that ended, or of another session, is
//!   dropped.
//! - A retained message that reached the session live after the SUBSCRIBE is at least as
//!   new as any snapshot of that topic, so that SUBSCRIBE's snapshot copy is skipped
//!   (a bounded set per job; when a SUBSCRIBE's filters join a waiting job, what that job
//!   saw under filters it still holds stays, with what the new SUBSCRIBE saw).
//! - This shard's own part is walked in steps of `FETCH_BUDGET` nodes, one step per
//!   stream and shard turn (a step that finds nothing schedules the next with
//!   [`Shard::continue_retained`]), as other shards answer fetches: a filter matching
//!   little in a large store never holds the shard for a whole walk.
//! - A filter unsubscribed while its job runs, or while its SUBSCRIBE waits for the other
//!   shards, leaves the job for good; subscribing to it again starts a new job, at the new
//!   QoS, from the start.
//! - Nothing of a job is sent while its SUBACK is still in the connection's gate (behind
//!   an earlier deferred answer); deferred answers after it do not hold it.
//!
//! **Owns:** the streams and their jobs; the answer to other shards' fetches.
//!
//! **Must not touch:** sockets; the retained store's contents other than through
//! [`RetainedTrie::matching`](crate::index::RetainedTrie::matching).

use std::collections::VecDeque;

use ahash::AHashSet;

use super::shard::{Shard, State};
use super::store::SessionId;
use super::ShardMsg;
use crate::index::tree_order;
use crate::protocol::{QoS, TopicFilter, TopicName};
use crate::session::{tag_identifier, DeliverOutcome, DropReason, Message, Subscribed, Tagged};

/// Messages one job buffers per shard at most (split between its filters).
pub(crate) const PART_BUDGET: usize = 64;
/// Trie nodes one fetch visits at most (a sparse match over a large store answers in
/// steps instead of one long walk).
pub(crate) const FETCH_BUDGET: usize = 4096;
/// Jobs a stream holds before a SUBSCRIBE's filters join the last waiting one.
pub(crate) const MAX_JOBS: usize = 64;
/// At most this many live retained topics are remembered per stream (see the module
/// invariants); beyond it, a snapshot copy may follow a newer live one.
pub(crate) const MAX_SEEN_LIVE: usize = 10_000;

/// A session's retained messages still to be sent.
#[derive(Debug, Default)]
pub(crate) struct RetainedStream {
    jobs: VecDeque<Job>,
    /// Listed in `State::retained_later` (a stream is listed once).
    later: bool,
}

/// One SUBSCRIBE's retained messages.
#[derive(Debug)]
struct Job {
    token: u64,
    /// The token of the last SUBACK whose filters this job holds: nothing is sent while
    /// that SUBACK is in the gate (answers leave the gate in order, so earlier SUBACKs
    /// are out too).
    suback: u64,
    /// Filters with their granted QoS and subscription identifier.
    filters: Vec<(TopicFilter, Subscribed)>,
    /// `parts[shard * filters.len() + filter]`.
    parts: Vec<Part>,
    /// Topics of retained messages delivered live to the session since the SUBSCRIBE.
    seen_live: AHashSet<TopicName>,
    /// Filters unsubscribed since the SUBSCRIBE: they stay out of this job even when the
    /// session subscribes to them again (that SUBSCRIBE has its own job, from the start,
    /// at its own QoS).
    gone: Vec<bool>,
}

/// One shard's matches of one filter.
#[derive(Debug, Default)]
struct Part {
    buf: VecDeque<Message>,
    next: Next,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Next {
    /// Fetch from the start.
    #[default]
    Start,
    /// Fetch after this topic.
    After(String),
    /// A fetch is on its way.
    Waiting,
    /// This shard has nothing more.
    Done,
}

/// A request for the next matches of one part of a job (`ShardMsg::RetainedFetch`).
#[derive(Debug)]
pub(crate) struct Fetch {
    /// The asking shard.
    from: usize,
    session: SessionId,
    token: u64,
    filter_index: usize,
    filter: TopicFilter,
    after: Option<String>,
    max: usize,
}

/// The answer to a [`Fetch`] (`ShardMsg::RetainedBatch`): matches, and where to go on
/// (`None`: no more).
#[derive(Debug)]
pub(crate) struct Batch {
    /// The answering shard.
    from: usize,
    session: SessionId,
    token: u64,
    filter_index: usize,
    messages: Vec<Message>,
    resume: Option<String>,
}

/// One shard's first batch of matches for each filter of a SUBSCRIBE: `(matches, resume)`.
pub(crate) type FirstBatch = Vec<(Vec<Message>, Option<String>)>;

/// Messages a fetch asks for per part when a job has `filters` filters.
pub(crate) fn fetch_max(filters: usize) -> usize {
    (PART_BUDGET / filters.max(1)).max(1)
}

/// The first batch of every filter, from `retained` (this shard's store).
pub(crate) fn first_batch(
    shard: &Shard,
    retained: &mut crate::index::RetainedTrie<Message>,
    filters: &[TopicFilter],
) -> FirstBatch {
    let max = fetch_max(filters.len());
    filters
        .iter()
        .map(|f| {
            let m = shard.retained_matching(retained, f.as_str(), None, max, FETCH_BUDGET);
            (m.values, m.resume)
        })
        .collect()
}

impl RetainedStream {
    /// The session subscribed to `filter` again (replacing its subscription): what the
    /// running jobs still send for it goes with the new subscription's QoS and identifier.
    pub(crate) fn resubscribed(&mut self, filter: &TopicFilter, sub: Subscribed) {
        for job in self.jobs.iter_mut() {
            for (f, s) in job.filters.iter_mut() {
                if f == filter {
                    *s = sub;
                }
            }
        }
    }

    /// The session unsubscribed from `filter`: no job sends anything more for it.
    pub(crate) fn forget(&mut self, filter: &TopicFilter) {
        for job in self.jobs.iter_mut() {
            for (i, (f, _)) in job.filters.iter().enumerate() {
                if f == filter {
                    if let Some(g) = job.gone.get_mut(i) {
                        *g = true;
                    }
                }
            }
        }
    }
}

impl Job {
    fn part_mut(&mut self, shard: usize, filter: usize) -> Option<&mut Part> {
        let n = self.filters.len();
        self.parts.get_mut(shard * n + filter)
    }

    /// The smallest head among the parts of filters still `held`, if every unfinished
    /// one has a head: `Err` while one waits.
    fn ready(&self, held: &[bool]) -> Result<Option<usize>, ()> {
        let n = self.filters.len().max(1);
        let mut best: Option<(usize, &Message)> = None;
        for (i, p) in self.parts.iter().enumerate() {
            if !held.get(i % n).copied().unwrap_or(false) {
                continue;
            }
            match p.buf.front() {
                Some(m) => {
                    if best.map_or(true, |(_, b)| tree_order(&m.topic, &b.topic).is_lt()) {
                        best = Some((i, m));
                    }
                }
                None if p.next == Next::Done => {}
                None => return Err(()),
            }
        }
        Ok(best.map(|(i, _)| i))
    }
}

impl Shard {
    /// Queues the retained messages of a SUBSCRIBE's `wanted` filters (granted QoS each,
    /// and whether the session unsubscribed from it meanwhile) for the session, after its
    /// SUBACK; `first` holds other shards' first batches (by shard).
    pub(crate) fn stream_retained(
        &self,
        st: &mut State,
        id: SessionId,
        token: u64,
        wanted: Vec<((TopicFilter, Subscribed), bool)>,
        first: Vec<(usize, FirstBatch)>,
        seen_live: AHashSet<TopicName>,
    ) {
        if wanted.iter().all(|(_, gone)| *gone) {
            return;
        }
        let (filters, gone): (Vec<(TopicFilter, Subscribed)>, Vec<bool>) =
            wanted.into_iter().unzip();
        let stream = st.streams.entry(id).or_default();
        if stream.jobs.len() >= MAX_JOBS {
            let waiting = stream.jobs.len() > 1;
            if let Some(last) = stream.jobs.back_mut().filter(|_| waiting) {
                // Joins the last waiting job (which has not fetched anything: see below).
                let session = st.sessions.get(id);
                let old_gone = std::mem::take(&mut last.gone);
                let mut i = 0;
                last.filters.retain(|(f, _)| {
                    let keep = !old_gone.get(i).copied().unwrap_or(false)
                        && session.is_some_and(|s| s.has_subscription(f));
                    i += 1;
                    keep
                });
                let kept_old = last.filters.len();
                for ((f, q), _) in filters.into_iter().zip(gone).filter(|(_, g)| !*g) {
                    match last.filters.iter_mut().find(|(g, _)| *g == f) {
                        Some((_, g)) => {
                            // Subscribed again: the higher QoS of the two, the newer
                            // identifier (the subscription now has it).
                            g.options.qos = g.options.qos.max(q.options.qos);
                            g.identifier = q.identifier;
                        }
                        None => last.filters.push((f, q)),
                    }
                }
                last.parts = (0..self.shards * last.filters.len())
                    .map(|_| Part::default())
                    .collect();
                last.gone = vec![false; last.filters.len()];
                last.suback = token;
                // What was seen live under a filter the job still held before the merge
                // stays valid (a fetch may still be older than it); what was seen under a
                // filter no longer held does not count for one subscribed again.
                let kept = &last.filters[..kept_old];
                last.seen_live
                    .retain(|t| kept.iter().any(|(f, _)| f.matches(t)));
                let room = MAX_SEEN_LIVE.saturating_sub(last.seen_live.len());
                last.seen_live.extend(seen_live.into_iter().take(room));
                self.pump_retained(st, id);
                return;
            }
        }
        let n = filters.len();
        let mut job = Job {
            token,
            suback: token,
            filters,
            parts: (0..self.shards * n).map(|_| Part::default()).collect(),
            seen_live,
            gone,
        };
        // Only the job at the front reads: one behind another holds its filters only.
        if stream.jobs.is_empty() {
            for (shard, batch) in first {
                for (fi, (msgs, resume)) in batch.into_iter().enumerate().take(n) {
                    if let Some(p) = job.part_mut(shard, fi) {
                        p.buf.extend(msgs);
                        p.next = resume.map_or(Next::Done, Next::After);
                    }
                }
            }
        }
        stream.jobs.push_back(job);
        self.pump_retained(st, id);
    }

    /// Sends what the session's stream can send now (see the module docs).
    pub(crate) fn pump_retained(&self, st: &mut State, id: SessionId) {
        self.journal_changes(&mut st.sessions);
        self.refresh_rights(&mut st.sessions);
        let l = &self.cfg.limits;
        let mut fetched_remote = false;
        // Which of the front job's filters the session holds; subscriptions cannot change
        // while this runs, so it is worked out once per job.
        let mut held: Vec<bool> = Vec::new();
        let mut held_for: Option<u64> = None;
        while let Some(stream) = st.streams.get_mut(&id) {
            let Some(session) = st.sessions.get_mut(id) else {
                st.streams.remove(&id);
                break;
            };
            let conn = st.links.get(id);
            let Some(job) = stream.jobs.front_mut() else {
                st.streams.remove(&id);
                break;
            };
            if held_for != Some(job.token) {
                held.clear();
                held.extend(
                    job.filters
                        .iter()
                        .zip(&job.gone)
                        .map(|((f, _), gone)| !*gone && session.has_subscription(f)),
                );
                held_for = Some(job.token);
            }
            if !held.iter().any(|h| *h) {
                stream.jobs.pop_front();
                continue;
            }
            // Paused while offline (module docs), while the SUBACK these messages follow is
            // still in the gate (behind an earlier deferred answer), and below a quarter of
            // every limit.
            let suback = job.suback;
            let room = conn.is_some_and(|c| {
                c.is_live()
                    && !c.in_gate(suback)
                    && c.pending_output() < (l.max_write_buffer / 4).max(1)
                    && session.queued_len() < (l.max_queued_messages / 4).max(1)
                    && session.queued_bytes() < (l.max_queued_bytes / 4).max(1)
            });
            if !room {
                break;
            }
            // Fill the parts that ran dry: this shard's at once, the others' by asking.
            let n = job.filters.len();
            let max = fetch_max(n);
            let mut local_more = false;
            for (i, part) in job.parts.iter_mut().enumerate() {
                let (shard, fi) = (i / n, i % n);
                if !part.buf.is_empty() || !held.get(fi).copied().unwrap_or(false) {
                    continue;
                }
                let after = match std::mem::replace(&mut part.next, Next::Waiting) {
                    Next::Start => None,
                    Next::After(t) => Some(t),
                    other => {
                        part.next = other;
                        continue;
                    }
                };
                let Some((filter, _)) = job.filters.get(fi) else {
                    continue;
                };
                if shard == self.id {
                    let m = self.retained_matching(
                        &mut st.retained,
                        filter.as_str(),
                        after.as_deref(),
                        max,
                        FETCH_BUDGET,
                    );
                    part.buf.extend(m.values);
                    part.next = m.resume.map_or(Next::Done, Next::After);
                    local_more |= part.buf.is_empty() && part.next != Next::Done;
                } else {
                    fetched_remote = true;
                    let sent = self.send_control(
                        shard,
                        ShardMsg::RetainedFetch(Fetch {
                            from: self.id,
                            session: id,
                            token: job.token,
                            filter_index: fi,
                            filter: filter.clone(),
                            after,
                            max,
                        }),
                    );
                    if !sent {
                        // That shard has stopped (shutdown): nothing more comes from it.
                        part.next = Next::Done;
                    }
                }
            }
            let pick = match job.ready(&held) {
                // This shard's walk stopped at its budget with nothing yet: it goes on in
                // a later turn of the shard (`continue_retained`), so a filter that
                // matches little in a large store never holds the shard for a whole walk.
                Err(()) if local_more => {
                    if !stream.later {
                        stream.later = true;
                        st.retained_later.push(id);
                    }
                    self.retained_work.wake_all();
                    break;
                }
                // Another shard's answer is on its way: wait for it.
                Err(()) => break,
                Ok(None) => {
                    stream.jobs.pop_front();
                    continue;
                }
                Ok(Some(i)) => i,
            };
            let Some(msg) = job.parts.get_mut(pick).and_then(|p| p.buf.pop_front()) else {
                break;
            };
            // The same topic at the head of other filters' parts is the same message:
            // sent once, at the highest granted QoS of the filters that match it.
            // Each with the identifiers of the filters that match it [MQTT-3.3.4-3].
            let mut tags: Tagged = None;
            let mut granted = QoS::AtMostOnce;
            if let Some((_, sub)) = job.filters.get(pick % n) {
                granted = sub.options.qos;
                tag_identifier(&mut tags, sub.identifier);
            }
            for (i, part) in job.parts.iter_mut().enumerate() {
                if part.buf.front().is_some_and(|m| m.topic == msg.topic) {
                    part.buf.pop_front();
                    if held.get(i % n).copied().unwrap_or(false) {
                        if let Some((_, sub)) = job.filters.get(i % n) {
                            granted = granted.max(sub.options.qos);
                            tag_identifier(&mut tags, sub.identifier);
                        }
                    }
                }
            }
            if job.seen_live.contains(&msg.topic) {
                continue;
            }
            // [MQTT-3.3.1-8]: RETAIN set; at the lower of its QoS and the granted QoS.
            let qos = msg.qos.min(granted);
            match self.offer(session, conn, &msg, qos, true, tags, &mut 0) {
                DeliverOutcome::Written | DeliverOutcome::Queued => {
                    self.count(|m| m.messages_delivered += 1)
                }
                DeliverOutcome::Dropped(DropReason::QueueFull) => {
                    self.count(|m| m.retained_delivery_dropped += 1)
                }
                // Counted by `offer`; offline never happens (the stream pauses).
                DeliverOutcome::Dropped(
                    DropReason::TooLarge
                    | DropReason::Expired
                    | DropReason::Offline
                    | DropReason::NotAuthorized,
                ) => {}
            }
        }
        if fetched_remote {
            self.control.flush();
        }
    }

    /// Another shard asks for this shard's next retained matches of a part of a job.
    pub(crate) fn on_retained_fetch(&self, f: Fetch) {
        let m = self.retained_matching(
            &mut self.state.borrow_mut().retained,
            f.filter.as_str(),
            f.after.as_deref(),
            f.max.clamp(1, PART_BUDGET),
            FETCH_BUDGET,
        );
        self.send_control(
            f.from,
            ShardMsg::RetainedBatch(Batch {
                from: self.id,
                session: f.session,
                token: f.token,
                filter_index: f.filter_index,
                messages: m.values,
                resume: m.resume,
            }),
        );
    }

    /// Another shard answers a fetch of one of this shard's jobs.
    pub(crate) fn on_retained_batch(&self, b: Batch) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let Some(job) = st
            .streams
            .get_mut(&b.session)
            .and_then(|s| s.jobs.front_mut())
        else {
            return;
        };
        if job.token != b.token {
            return;
        }
        let Some(part) = job.part_mut(b.from, b.filter_index) else {
            return;
        };
        if part.next != Next::Waiting {
            return;
        }
        part.buf.extend(b.messages);
        part.next = b.resume.map_or(Next::Done, Next::After);
        self.pump_retained(st, b.session);
    }

    /// Goes on with the streams whose walk of this shard's store stopped at its budget
    /// (one step each; run by the shard's runtime between turns).
    pub(crate) fn continue_retained(&self) {
        // Every stream listed gets one step, in the order listed; a stream that needs more
        // lists itself again for the next round. Flags are cleared first, so a step that
        // panics (caught by the runtime) leaves no stream marked as listed when it is not.
        let later = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let later = std::mem::take(&mut st.retained_later);
            for id in &later {
                if let Some(s) = st.streams.get_mut(id) {
                    s.later = false;
                }
            }
            later
        };
        for id in later {
            self.resume_retained(Some(id));
        }
    }

    /// The session's connection drained some output, or acks opened its window.
    pub(crate) fn resume_retained(&self, id: Option<SessionId>) {
        let Some(id) = id else { return };
        let Ok(mut st) = self.state.try_borrow_mut() else {
            debug_assert!(false, "resume_retained with the shard state borrowed");
            return;
        };
        if !st.streams.is_empty() && st.streams.contains_key(&id) {
            self.pump_retained(&mut st, id);
        }
    }

    /// Notes, for streams and pending SUBSCRIBEs of `id`, that a retained message on
    /// `topic` reached the session live (see the module invariants).
    ///
    /// The topic is remembered as a copy of its own: the message's topic shares one
    /// allocation with its payload, which must not stay alive for the topic's sake.
    pub(crate) fn note_live_retained(st: &mut State, id: SessionId, topic: &TopicName) {
        let mut own: Option<TopicName> = None;
        let mut own = || own.get_or_insert_with(|| topic.detached()).clone();
        for p in st.pending.values_mut() {
            if p.session == id
                && p.seen_live.len() < MAX_SEEN_LIVE
                && p.filters.iter().any(|(f, _)| f.matches(topic))
            {
                p.seen_live.insert(own());
            }
        }
        if let Some(s) = st.streams.get_mut(&id) {
            for j in s.jobs.iter_mut() {
                if j.seen_live.len() < MAX_SEEN_LIVE
                    && j.filters.iter().any(|(f, _)| f.matches(topic))
                {
                    j.seen_live.insert(own());
                }
            }
        }
    }
}
