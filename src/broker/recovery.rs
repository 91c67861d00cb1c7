//! Durable state across restarts: reading the logs back at start, re-homing what they
//! hold onto the shards of this run, restoring it into each shard, and compacting a
//! shard's log while the broker runs.
//!
//! ## On disk
//! `persistence.dir` holds a `CURRENT` file naming the epoch in force, and one
//! `shard-N` directory per shard with that shard's log, `E-S.log` (epoch `E`, sequence
//! `S`). Every start begins a new epoch: the logs of the epoch in `CURRENT` are read (in
//! parallel, one thread per directory), replayed, merged (message numbers renumbered, as
//! each shard numbered its own), split by home shard for this run's shard count
//! (`home_shard(client_id)` for sessions, `home_shard(topic)` for retained messages),
//! stripped of sessions that expired while the broker was down, and written back as one
//! snapshot per shard, `E+1-0.log`, synced. Only then is `CURRENT` switched (write,
//! sync, rename, sync the directory), and the old files removed: a crash at any point
//! leaves either the old epoch or the new one whole. A shard compacts its log at run time
//! the same way within its directory: the snapshot goes to `E-(S+1).log`, and the older
//! file is removed once that is durable; at start the newest file of the epoch with a
//! sealed commit is the one read.
//!
//! ## What cannot be trusted
//! A log's torn or corrupt tail (a commit whose checksum or length does not check out) is
//! cut with a log line giving its offset and what was dropped; a record that decodes
//! badly in a sealed commit cuts the log before that commit. A record of a kind this
//! version does not know means a newer version wrote the log: the broker refuses to start
//! rather than lose what it cannot read.
//!
//! **Owns:** the layout of `persistence.dir`, start-up reading and writing (blocking file
//! I/O, before any shard runs), the image-to-shard restore, run-time compaction.
//! **Must not touch:** sockets; a running shard's thread is never blocked on a file
//! (compaction writes through the shard's [`Journal`], io_uring).

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use bytestring::ByteString;

use super::durable::{encode_message_into, wall_ms};
use super::journal::Journal;
use super::shard::Shard;
use crate::config::Persistence;
use crate::persist::frame::{self, BLOCK};
use crate::persist::image::{FlowImage, Image, MessageImage};
use crate::persist::record::{self, Record, RecordError};
use crate::protocol::{
    decode, DecodeOptions, Packet, PacketId, ProtocolVersion, QoS, SubscriptionOptions, TopicFilter,
};
use crate::session::{LogRef, Message, RestoredFlow, Session, Subscribed, Tags};

/// What one shard starts with.
#[derive(Debug, Default)]
pub(crate) struct ShardStart {
    /// The state to restore (already re-homed onto this shard).
    pub image: Image,
    /// Its log, holding that state as a snapshot; appended to from `tail`.
    pub path: PathBuf,
    pub tail: u64,
    pub epoch: u64,
    pub seq: u64,
}

/// What start-up recovery hands the shards.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub shards: Vec<ShardStart>,
    /// Every restored subscription's filter and its shard: each shard's replica of which
    /// shards are interested in which filters starts from it.
    pub interest: Vec<(ByteString, usize)>,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

fn with_path(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The log file of `epoch` and `seq` in a shard directory.
pub(crate) fn log_path(shard_dir: &Path, epoch: u64, seq: u64) -> PathBuf {
    shard_dir.join(format!("{epoch}-{seq}.log"))
}

/// `(epoch, seq)` of a log file's name (exactly as [`log_path`] writes it).
fn parse_log_name(name: &str) -> Option<(u64, u64)> {
    let (e, s) = name.strip_suffix(".log")?.split_once('-')?;
    let (e, s) = (e.parse().ok()?, s.parse().ok()?);
    (format!("{e}-{s}.log") == name).then_some((e, s))
}

/// What reading one shard directory found.
struct ReadShard {
    image: Image,
    bytes: usize,
    /// Logs that damage (not just a torn tail) cut or made unreadable: kept aside,
    /// renamed, rather than removed with the old epoch.
    damaged: Vec<PathBuf>,
}

/// Reads the newest log of `epoch` in `dir` that holds a sealed commit.
fn read_shard_dir(dir: &Path, epoch: u64) -> io::Result<ReadShard> {
    let mut seqs: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(with_path(dir))? {
        let entry = entry.map_err(with_path(dir))?;
        if let Some((e, s)) = entry.file_name().to_str().and_then(parse_log_name) {
            if e == epoch {
                seqs.push(s);
            }
        }
    }
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    let mut unsealed = Vec::new();
    for (i, &seq) in seqs.iter().enumerate() {
        let path = log_path(dir, epoch, seq);
        let data = std::fs::read(&path).map_err(with_path(&path))?;
        let scan = frame::scan(&data, BLOCK);
        if scan.commits == 0 {
            // Compactions write their file under another name and rename it once synced,
            // so a log without a sealed commit is damaged (or empty): an older one, if
            // any, is read instead, and a damaged one is kept aside.
            if data.iter().any(|b| *b != 0) {
                tracing::error!(path = %path.display(), older = seqs.len() - i - 1, "log without a sealed commit: damaged; kept as *.damaged");
                unsealed.push(path);
            }
            continue;
        }
        let mut damaged = Vec::new();
        if let Some((at, why)) = scan.stopped {
            let rest = data.get(at..).unwrap_or_default();
            // A torn tail is the end of the log; sealed data further on means damage.
            let more = rest.len() > BLOCK && rest.iter().skip(BLOCK).any(|b| *b != 0);
            if more {
                damaged.push(path.clone());
                tracing::error!(path = %path.display(), offset = at, reason = ?why, dropped_bytes = rest.len(), "log damaged: starting with the commits before the damage; the file is kept as *.damaged");
            } else {
                tracing::warn!(path = %path.display(), offset = at, reason = ?why, dropped_bytes = rest.len(), "log cut after its last sealed commit");
            }
        }
        let (mut records, bad) = record::read_all(&data, &scan);
        match bad {
            Some(RecordError::UnknownKind(k)) => {
                return Err(invalid(
                    &path,
                    format!("record kind {k} unknown to this version: written by a newer SurgeMQ? Refusing to start rather than lose it"),
                ))
            }
            Some(e) => {
                // A sealed commit holding a record that does not decode: cut before it.
                let at = scan
                    .records
                    .get(records.len())
                    .map_or(scan.valid, |(_, r)| r.start);
                let keep = frame::scan(data.get(..at).unwrap_or_default(), BLOCK).valid;
                let kept = scan
                    .records
                    .iter()
                    .take_while(|(_, r)| r.end <= keep)
                    .count();
                records.truncate(kept);
                tracing::error!(path = %path.display(), offset = at, error = %e, "unreadable log record: the log is cut before its commit");
            }
            None => {}
        }
        let mut image = Image::default();
        for r in &records {
            image.apply(r);
        }
        image.collect_garbage();
        unsealed.extend(damaged);
        return Ok(ReadShard {
            image,
            bytes: data.len(),
            damaged: unsealed,
        });
    }
    Ok(ReadShard {
        image: Image::default(),
        bytes: 0,
        damaged: unsealed,
    })
}

/// Moves `from` into `into`, renumbering its messages after `into`'s.
fn merge(into: &mut Image, from: Image, next: &mut u64) {
    let mut map: HashMap<u64, u64> = HashMap::new();
    let mut renumber = |old: u64| -> u64 {
        *map.entry(old).or_insert_with(|| {
            *next += 1;
            *next
        })
    };
    for (id, m) in from.messages {
        into.messages.insert(renumber(id), m);
    }
    for (ingress, (client_id, msg)) in from.inbound {
        into.inbound.insert(ingress, (client_id, renumber(msg)));
    }
    into.seen.extend(from.seen);
    for (topic, id) in from.retained {
        into.retained.insert(topic, renumber(id));
    }
    for (client_id, mut s) in from.sessions {
        for f in &mut s.flows {
            f.msg = renumber(f.msg);
        }
        if let Some((_, msg)) = &mut s.will {
            *msg = renumber(*msg);
        }
        // One client id in two logs cannot happen (a session lives on its home shard
        // only); should it, the first one read is kept.
        into.sessions.entry(client_id).or_insert(s);
    }
    into.last_message_id = *next;
}

/// Splits `all` onto `shards` home shards, leaving out sessions expired at `now_ms`;
/// sessions that were online when the log ended count as offline from `now_ms`.
fn partition(all: Image, shards: usize, now_ms: u64) -> (Vec<Image>, usize) {
    let mut out: Vec<Image> = (0..shards).map(|_| Image::default()).collect();
    let mut expired = 0;
    let messages = all.messages;
    let take = |img: &mut Image, id: u64| {
        if let Some(m) = messages.get(&id) {
            img.messages.entry(id).or_insert_with(|| m.clone());
        }
    };
    for (topic, id) in all.retained {
        let img = &mut out[super::home_shard(&topic, shards)];
        take(img, id);
        img.retained.insert(topic, id);
    }
    for (client_id, mut s) in all.sessions {
        // A will whose session ended while the broker was down is due now
        // [MQTT-3.1.3-9]. (One whose delay passed stays with its session, due at once
        // after the start, so that it is in the new epoch until it is published.)
        let ended = s.expired(now_ms);
        if let (Some((_, msg)), true) = (s.will, ended) {
            let img = &mut out[super::home_shard(&client_id, shards)];
            take(img, msg);
            img.due_wills.push(msg);
            s.will = None;
        }
        if ended {
            expired += 1;
            continue;
        }
        if s.offline.is_none() {
            s.offline = Some(now_ms);
        }
        let img = &mut out[super::home_shard(&client_id, shards)];
        for f in s.flows.iter().filter(|f| !f.released) {
            take(img, f.msg);
        }
        if let Some((_, msg)) = s.will {
            take(img, msg);
        }
        img.sessions.insert(client_id, s);
    }
    for img in &mut out {
        img.last_message_id = all.last_message_id;
    }
    (out, expired)
}

/// Writes `records` as one sealed commit to a new file at `path`, synced; returns its size.
fn write_snapshot(path: &Path, records: &[Record]) -> io::Result<u64> {
    let mut frames = Vec::new();
    for r in records {
        r.write(&mut frames)
            .map_err(|e| invalid(path, format!("snapshot record: {e}")))?;
    }
    frame::seal(&mut frames, 0, BLOCK);
    let mut f = std::fs::File::create(path).map_err(with_path(path))?;
    f.write_all(&frames).map_err(with_path(path))?;
    f.sync_all().map_err(with_path(path))?;
    Ok(frames.len() as u64)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(with_path(dir))
}

/// Reads every shard's log, re-homes what they hold onto `shards` shards, writes it back as
/// a new epoch and switches `CURRENT` to it (module docs). Blocking: runs before any
/// shard starts.
pub(crate) fn recover(cfg: &Persistence, shards: usize) -> io::Result<Recovered> {
    let started = Instant::now();
    let dir = cfg.dir.as_path();
    std::fs::create_dir_all(dir).map_err(with_path(dir))?;
    let current = dir.join("CURRENT");
    let epoch = match std::fs::read_to_string(&current) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| invalid(&current, format!("not an epoch number: {text:?}")))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(with_path(&current)(e)),
    };
    let mut old_dirs: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(with_path(dir))? {
        let entry = entry.map_err(with_path(dir))?;
        let name = entry.file_name();
        let is_shard = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .is_some_and(|n| n.parse::<usize>().is_ok());
        if is_shard && entry.path().is_dir() {
            old_dirs.push(entry.path());
        }
    }
    old_dirs.sort();
    // One thread per directory: each log is read and replayed in parallel.
    let read: Vec<io::Result<ReadShard>> = std::thread::scope(|s| {
        let handles: Vec<_> = old_dirs
            .iter()
            .map(|d| s.spawn(move || read_shard_dir(d, epoch)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("log reader panicked")))
            })
            .collect()
    });
    let mut all = Image::default();
    let mut next = 0u64;
    let mut bytes = 0usize;
    let mut damaged = Vec::new();
    for r in read {
        let r = r?;
        bytes += r.bytes;
        damaged.extend(r.damaged);
        merge(&mut all, r.image, &mut next);
    }
    // QoS 2 messages acknowledged to their publishers whose deliveries were not all
    // durable when the logs ended go to the sessions that lack them.
    let unrouted = all.inbound.len();
    all.resolve_inbound(|m| {
        let msg = decode_message(m, 0, Instant::now())?;
        Some((
            msg.topic.to_string(),
            msg.qos as u8,
            msg.retain,
            msg.payload.is_empty(),
        ))
    });
    let now_ms = wall_ms(SystemTime::now());
    let (images, expired) = partition(all, shards, now_ms);
    let new_epoch = epoch + 1;
    let mut interest = Vec::new();
    for (i, img) in images.iter().enumerate() {
        for s in img.sessions.values() {
            interest.extend(s.subscriptions.keys().map(|f| (f.clone(), i)));
        }
    }
    // Each shard's snapshot, written and synced in parallel.
    let written: Vec<io::Result<ShardStart>> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .into_iter()
            .enumerate()
            .map(|(i, image)| {
                s.spawn(move || -> io::Result<ShardStart> {
                    let shard_dir = dir.join(format!("shard-{i}"));
                    std::fs::create_dir_all(&shard_dir).map_err(with_path(&shard_dir))?;
                    let path = log_path(&shard_dir, new_epoch, 0);
                    let tail = write_snapshot(&path, &image.snapshot())?;
                    sync_dir(&shard_dir)?;
                    Ok(ShardStart {
                        image,
                        path,
                        tail,
                        epoch: new_epoch,
                        seq: 0,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("snapshot writer panicked")))
            })
            .collect()
    });
    let starts: Vec<ShardStart> = written.into_iter().collect::<io::Result<_>>()?;
    sync_dir(dir)?;
    // The switch: from here on the new epoch is the state.
    let tmp = dir.join("CURRENT.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(with_path(&tmp))?;
        writeln!(f, "{new_epoch}").map_err(with_path(&tmp))?;
        f.sync_all().map_err(with_path(&tmp))?;
    }
    std::fs::rename(&tmp, &current).map_err(with_path(&current))?;
    sync_dir(dir)?;
    // What the old epoch (and any unfinished one, and unfinished compactions) left
    // behind; a damaged log is kept.
    for path in &damaged {
        let mut aside = path.clone().into_os_string();
        aside.push(format!(".damaged-{new_epoch}"));
        let _ = std::fs::rename(path, &aside);
    }
    for d in &old_dirs {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_str().unwrap_or_default();
                let stale = name.ends_with(".log.tmp")
                    || parse_log_name(name).is_some_and(|(ep, _)| ep != new_epoch);
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(d); // only when empty (a shard beyond this run's count)
    }
    let sessions: usize = starts.iter().map(|s| s.image.sessions.len()).sum();
    let queued: usize = starts
        .iter()
        .flat_map(|s| s.image.sessions.values())
        .map(|s| s.flows.len())
        .sum();
    let retained: usize = starts.iter().map(|s| s.image.retained.len()).sum();
    tracing::info!(
        dir = %dir.display(),
        epoch = new_epoch,
        sessions,
        messages_held = queued,
        retained,
        sessions_expired = expired,
        ingresses_resolved = unrouted,
        read_bytes = bytes,
        ms = started.elapsed().as_millis() as u64,
        "persistent state recovered"
    );
    Ok(Recovered {
        shards: starts,
        interest,
    })
}

/// A message as the log kept it, back as the broker's.
fn decode_message(m: &MessageImage, now_ms: u64, now: Instant) -> Option<Message> {
    let mut buf = BytesMut::from(&m.publish[..]);
    let opts = DecodeOptions {
        version: ProtocolVersion::V5,
        max_packet_size: crate::config::MAX_PACKET_SIZE,
    };
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, &opts) else {
        tracing::error!("a message in the log does not decode: left out");
        return None;
    };
    let mut msg = Message::from_publish(p);
    msg.expires = (m.expires_ms != 0)
        .then(|| now + Duration::from_millis(m.expires_ms.saturating_sub(now_ms)));
    Some(msg)
}

impl Shard {
    /// Restores what recovery gave this shard (before it serves anyone): offline sessions
    /// with their subscriptions and flows, the retained messages it owns, and the replica
    /// of every shard's restored filters. Nothing of it is written to the log again: the
    /// log already holds it as its snapshot.
    ///
    /// Returns the wills due now, for the caller to publish once the shard runs.
    pub(crate) fn restore(
        &self,
        image: Image,
        interest: &[(ByteString, usize)],
    ) -> Vec<crate::protocol::Will> {
        let now = Instant::now();
        let now_ms = wall_ms(SystemTime::now());
        let mut messages: HashMap<u64, Message> = HashMap::with_capacity(image.messages.len());
        for (id, m) in &image.messages {
            if let Some(msg) = decode_message(m, now_ms, now) {
                messages.insert(*id, msg);
            }
        }
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        for (filter, shard) in interest {
            st.interest.add(filter, *shard);
        }
        for (topic, id) in &image.retained {
            if let Some(m) = messages.get(id) {
                let mut m = m.clone();
                m.retain = true;
                st.retained.insert(topic, m);
            }
        }
        for (client_id, s) in image.sessions {
            let subs: Vec<(TopicFilter, Subscribed)> = s
                .subscriptions
                .iter()
                .filter_map(|(f, (options, identifier))| {
                    Some((
                        TopicFilter::new(f.clone()).ok()?,
                        Subscribed {
                            options: SubscriptionOptions::from_byte(*options)?,
                            identifier: *identifier,
                        },
                    ))
                })
                .collect();
            let flows = s.flows.iter().map(|f| restored_flow(f, &messages));
            let session = Session::restore(
                client_id,
                s.expiry,
                self.limits,
                subs.iter().cloned(),
                flows,
                s.incoming_qos2.iter().filter_map(|i| PacketId::new(*i)),
            );
            let mut session = Box::new(session);
            // Its rules until it reconnects are those of the user that last connected
            // (when they depend on its listener, none until then: see `Domains::restored`).
            let username = s.username.as_deref().map(Box::<str>::from);
            let domain = self.domains.restored();
            session.set_domain(domain);
            session.set_rights(self.rights_for(domain, session.client_id(), username.as_deref()));
            session.set_username(username);
            let id = st.sessions.insert(session);
            for (filter, sub) in subs {
                if st.subs.insert(&filter, id, sub).is_none() {
                    *st.local_filters.entry(filter).or_insert(0) += 1;
                }
            }
            let since_ms = s.offline.unwrap_or(now_ms);
            let ago = Duration::from_millis(now_ms.saturating_sub(since_ms));
            st.sessions
                .mark_offline(id, now.checked_sub(ago).unwrap_or(now));
            if let Some(will) = s
                .will
                .and_then(|(due_ms, m)| Some((due_ms, as_will(messages.get(&m)?))))
            {
                let at = now + Duration::from_millis(will.0.saturating_sub(now_ms));
                st.will_deadlines.push(std::cmp::Reverse((at, id)));
                st.delayed_wills.insert(id, (at, Box::new(will.1)));
            }
        }
        // What restoring recorded is in the snapshot already.
        let _ = st.sessions.take_changes();
        image
            .due_wills
            .iter()
            .filter_map(|m| messages.get(m).map(as_will))
            .collect()
    }
}

/// A will kept in the log as a message.
fn as_will(m: &Message) -> crate::protocol::Will {
    crate::protocol::Will {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: m.qos,
        retain: m.retain,
        properties: m.properties.clone(),
    }
}

fn restored_flow(f: &FlowImage, messages: &HashMap<u64, Message>) -> RestoredFlow {
    let tags = (!f.identifiers.is_empty() || !f.share.is_empty()).then(|| {
        Box::new(Tags {
            identifiers: f.identifiers.iter().copied().collect(),
            share: TopicFilter::new(f.share.clone()).ok(),
        })
    });
    RestoredFlow {
        message: if f.released {
            None
        } else {
            messages.get(&f.msg).cloned()
        },
        durable: LogRef {
            msg: f.msg,
            ingress: f.ingress,
        },
        qos: if f.qos == 2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        },
        retain: f.retain,
        tags,
        packet_id: f.packet_id.and_then(PacketId::new),
        released: f.released,
    }
}

/// What the shard's live durable state holds, roughly (queued and in-flight messages of
/// persistent sessions, retained messages): a compaction that would not halve the log is
/// not worth its cost.
fn live_bytes(shard: &Shard) -> u64 {
    let st = shard.state.borrow();
    let mut live = 0u64;
    // A message held by many sessions is written once.
    let mut seen = std::collections::HashSet::new();
    for (_, s) in st.sessions.iter() {
        if s.is_persistent() {
            for (n, cost) in s.durable_costs() {
                if seen.insert(n) {
                    live += cost as u64;
                }
            }
        }
    }
    st.retained.for_each(|m| {
        if !super::stats::is_sys(&m.topic) {
            live += m.cost() as u64;
        }
    });
    live
}

/// The shard's live durable state written as a snapshot's frames, straight from memory
/// (each message encoded once, into the frame): persistent sessions with their
/// subscriptions, flows and incoming QoS 2 ids, the retained messages, the unrouted
/// ingresses and the recent deliveries of ingresses. Synchronous: it is the state at one
/// moment. Returns the frames and (sessions, retained) counts.
fn snapshot_frames(shard: &Shard) -> (Vec<u8>, usize, usize) {
    let Some(d) = shard.durable() else {
        return (Vec::new(), 0, 0);
    };
    let st = shard.state.borrow();
    let now = Instant::now();
    let now_ms = wall_ms(SystemTime::now());
    let expires = |m: &Message| {
        m.expires.map_or(0, |e| {
            (now_ms + e.saturating_duration_since(now).as_millis() as u64).max(1)
        })
    };
    let mut out = Vec::new();
    let mut scratch = BytesMut::new();
    let mut message = |out: &mut Vec<u8>, id: u64, m: &Message| -> bool {
        scratch.clear();
        if !encode_message_into(m, &mut scratch) {
            return false;
        }
        Record::write_message(out, id, expires(m), &scratch).is_ok()
    };
    let put = |out: &mut Vec<u8>, r: Record| {
        if let Err(e) = r.write(out) {
            tracing::error!(error = %e, "compaction: record not written");
        }
    };
    // Numbers for the retained and unrouted messages come after every number the log has
    // used, and the shard's count moves past them: a later message must not take one.
    let mut last = d.last_message();
    let mut written = std::collections::HashSet::new();
    let mut sessions = 0;
    for (id, s) in st.sessions.iter() {
        if !s.is_persistent() {
            continue;
        }
        sessions += 1;
        let c = || s.client_id().clone();
        put(
            &mut out,
            Record::SessionCreated {
                client_id: c(),
                expiry: s.expiry(),
            },
        );
        if let Some(u) = s.username() {
            put(
                &mut out,
                Record::SessionUser {
                    client_id: c(),
                    username: Some(ByteString::from(u)),
                },
            );
        }
        for (f, sub) in s.subscriptions() {
            put(
                &mut out,
                Record::Subscribed {
                    client_id: c(),
                    filter: f.as_bytestring().clone(),
                    options: sub.options.to_byte(),
                    identifier: sub.identifier,
                },
            );
        }
        for f in s.durable_flows() {
            let n = f.durable.msg;
            last = last.max(n);
            if let (Some(m), false) = (&f.message, written.contains(&n)) {
                if message(&mut out, n, m) {
                    written.insert(n);
                }
            }
            let tags = f.tags.as_deref();
            put(
                &mut out,
                Record::Delivered {
                    client_id: c(),
                    msg: n,
                    qos: f.qos as u8,
                    retain: f.retain,
                    identifiers: tags.map(|t| t.identifiers.to_vec()).unwrap_or_default(),
                    share: tags
                        .and_then(|t| t.share.as_ref())
                        .map_or_else(ByteString::new, |s| s.as_bytestring().clone()),
                    ingress: f.durable.ingress,
                },
            );
            if let Some(packet_id) = f.packet_id {
                put(
                    &mut out,
                    Record::Sent {
                        client_id: c(),
                        msg: n,
                        packet_id: packet_id.get(),
                    },
                );
                if f.released {
                    put(
                        &mut out,
                        Record::Released {
                            client_id: c(),
                            packet_id: packet_id.get(),
                        },
                    );
                }
            }
        }
        for packet_id in s.incoming_qos2_ids() {
            put(
                &mut out,
                Record::Qos2Received {
                    client_id: c(),
                    packet_id,
                },
            );
        }
        // Its delayed will, with a number after every one the log used.
        if let Some((at, will)) = st.delayed_wills.get(&id) {
            last += 1;
            if message(&mut out, last, &super::will::will_message(will)) {
                let left = at.saturating_duration_since(now).as_millis() as u64;
                put(
                    &mut out,
                    Record::WillDelayed {
                        client_id: c(),
                        due_ms: now_ms + left,
                        msg: last,
                    },
                );
            }
        }
        // The log keeps when it went offline; the store keeps when it expires.
        if let Some(deadline) = st.sessions.offline_deadline(id) {
            let since_ms = match deadline {
                Some(dl) => {
                    let left = dl.saturating_duration_since(now).as_millis() as u64;
                    (now_ms + left).saturating_sub(u64::from(s.expiry()) * 1000)
                }
                None => now_ms,
            };
            put(
                &mut out,
                Record::SessionOffline {
                    client_id: c(),
                    since_ms,
                    expiry: s.expiry(),
                },
            );
        }
    }
    let mut retained = 0;
    st.retained.for_each(|m| {
        // `$SYS` values describe one run: never written (see `Shard::store_retained`).
        if super::stats::is_sys(&m.topic) {
            return;
        }
        last += 1;
        if message(&mut out, last, m) {
            retained += 1;
            put(
                &mut out,
                Record::RetainSet {
                    topic: ByteString::from(m.topic.as_str()),
                    msg: last,
                    ingress: 0,
                },
            );
        }
    });
    drop(st);
    for (ingress, client_id, m) in d.unrouted() {
        last += 1;
        if message(&mut out, last, &m) {
            put(
                &mut out,
                Record::Ingress {
                    ingress,
                    client_id,
                    msg: last,
                },
            );
        }
    }
    for (ingress, who) in d.recent_ingress() {
        put(
            &mut out,
            Record::IngressSeen {
                ingress,
                client_id: who,
            },
        );
    }
    d.used_messages(last);
    (out, sessions, retained)
}

/// Replaces the shard's log by a snapshot of its live state (module docs), taken now:
/// it holds every change appended so far, so it stands for the batch the caller took
/// (whose frames it supersedes). Returns false, leaving the log as it was, when the
/// snapshot could not be written (the caller then commits that batch to the old log, and
/// compaction is tried again after the next commit).
pub(crate) async fn compact(shard: &Shard, journal: &mut Journal) -> bool {
    let Some(d) = shard.durable() else {
        return false;
    };
    let started = Instant::now();
    // Not worth it when most of the log is live (an offline session's long queue): the
    // caller tries again once the log has grown further.
    if !d.compaction_worth(live_bytes(shard), journal.tail()) {
        return false;
    }
    // Built before any await: exactly the changes appended so far.
    let (mut frames, sessions, retained) = snapshot_frames(shard);
    frame::seal(&mut frames, 0, BLOCK);
    let Some(dir) = journal.path().parent().map(Path::to_path_buf) else {
        return false;
    };
    let (epoch, seq) = d.file.get();
    let path = log_path(&dir, epoch, seq + 1);
    // Written under a name recovery ignores, synced, then renamed: a file of the final
    // name always holds a whole snapshot.
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = glommio::io::remove(&tmp).await;
    let result = async {
        let mut new = Journal::open_at(&tmp, 0).await?;
        new.commit_sealed(&frames).await?;
        glommio::io::rename(&tmp, &path)
            .await
            .map_err(io::Error::from)?;
        new.renamed(path.clone());
        io::Result::Ok(new)
    }
    .await;
    // Once renamed, the new file is the log (recovery reads the newest whole one): a
    // directory that cannot be synced is reported, not undone.
    if result.is_ok() {
        let synced = async {
            glommio::io::Directory::open(&dir)
                .await
                .map_err(io::Error::from)?
                .sync()
                .await
                .map_err(io::Error::from)
        }
        .await;
        if let Err(e) = synced {
            tracing::error!(error = %e, dir = %dir.display(), "log directory not synced after compaction");
        }
    }
    match result {
        Ok(new) => {
            let before = journal.tail();
            let old = std::mem::replace(journal, new);
            let old_path = old.path().to_owned();
            old.close().await;
            if let Err(e) = glommio::io::remove(&old_path).await {
                tracing::warn!(error = %e, path = %old_path.display(), "old log not removed");
            }
            d.file.set((epoch, seq + 1));
            d.snapshot_bytes.set(journal.tail());
            shard.count(|m| m.persist_compactions += 1);
            tracing::info!(
                shard = shard.id,
                from_bytes = before,
                to_bytes = journal.tail(),
                sessions,
                retained,
                ms = started.elapsed().as_millis() as u64,
                "log compacted"
            );
            true
        }
        Err(e) => {
            shard.count(|m| m.persist_errors += 1);
            tracing::error!(error = %e, path = %path.display(), "compaction failed: going on with the old log");
            let _ = glommio::io::remove(&tmp).await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PersistMode;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "surgemq-recovery-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn cfg(dir: &Path) -> Persistence {
        Persistence {
            mode: PersistMode::Sync,
            dir: dir.to_owned(),
            ..Persistence::default()
        }
    }

    fn created(i: usize) -> Record {
        Record::SessionCreated {
            client_id: ByteString::from(format!("c{i}")),
            expiry: u32::MAX,
        }
    }

    /// A log of `n` sessions, one commit each, as epoch 1 of shard 0; returns its bytes
    /// and where each commit starts.
    fn write_log(dir: &Path, n: usize) -> (PathBuf, Vec<u8>, Vec<usize>) {
        let shard = dir.join("shard-0");
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(dir.join("CURRENT"), "1\n").unwrap();
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(log.len());
            let start = log.len();
            created(i).write(&mut log).unwrap();
            frame::seal(&mut log, start, BLOCK);
        }
        let path = log_path(&shard, 1, 0);
        std::fs::write(&path, &log).unwrap();
        (path, log, starts)
    }

    fn sessions(r: &Recovered) -> Vec<String> {
        let mut v: Vec<String> = r
            .shards
            .iter()
            .flat_map(|s| s.image.sessions.keys().map(|k| k.to_string()))
            .collect();
        v.sort();
        v
    }

    fn names(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        v.sort();
        v
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_restored() {
        let dir = tmp("torn");
        let (path, log, starts) = write_log(&dir, 4);
        // The last commit's write stopped half-way.
        std::fs::write(&path, &log[..starts[3] + 20]).unwrap();
        let r = recover(&cfg(&dir), 2).unwrap();
        assert_eq!(sessions(&r), names(3));
        // The new epoch is in force, the old file gone, and it restores the same.
        assert_eq!(std::fs::read_to_string(dir.join("CURRENT")).unwrap(), "2\n");
        assert!(!path.exists());
        let again = recover(&cfg(&dir), 2).unwrap();
        assert_eq!(sessions(&again), names(3));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flipped_byte_keeps_the_commits_before_it() {
        let dir = tmp("flip");
        let (path, mut log, starts) = write_log(&dir, 5);
        log[starts[2] + 12] ^= 0x40;
        std::fs::write(&path, &log).unwrap();
        let r = recover(&cfg(&dir), 1).unwrap();
        assert_eq!(sessions(&r), names(2));
        // The damaged file is kept aside for inspection.
        let mut aside = path.clone().into_os_string();
        aside.push(".damaged-2");
        assert_eq!(std::fs::read(&aside).unwrap(), log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_zero_filled_or_empty_log_starts_empty() {
        for len in [0usize, 3 * BLOCK] {
            let dir = tmp(&format!("zero{len}"));
            let (path, _, _) = write_log(&dir, 3);
            std::fs::write(&path, vec![0u8; len]).unwrap();
            let r = recover(&cfg(&dir), 2).unwrap();
            assert!(sessions(&r).is_empty());
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn an_unfinished_compaction_falls_back_to_the_older_file() {
        let dir = tmp("unfinished");
        write_log(&dir, 3);
        // A newer file of the epoch whose snapshot never got sealed.
        let newer = log_path(&dir.join("shard-0"), 1, 1);
        let mut torn = Vec::new();
        created(9).write(&mut torn).unwrap();
        std::fs::write(&newer, &torn).unwrap();
        // And a compaction's file never renamed into place.
        let tmp = dir.join("shard-0").join("1-2.log.tmp");
        std::fs::write(&tmp, &torn).unwrap();
        let r = recover(&cfg(&dir), 1).unwrap();
        assert_eq!(sessions(&r), names(3));
        assert!(!tmp.exists(), "an unfinished compaction's file is removed");
        let aside = dir.join("shard-0").join("1-1.log.damaged-2");
        assert_eq!(std::fs::read(&aside).unwrap(), torn, "kept aside");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_of_an_unknown_kind_refuses_to_start() {
        let dir = tmp("unknown");
        let (path, mut log, _) = write_log(&dir, 2);
        let start = log.len();
        frame::encode(200, b"from the future", &mut log).unwrap();
        frame::seal(&mut log, start, BLOCK);
        std::fs::write(&path, &log).unwrap();
        let e = recover(&cfg(&dir), 1).unwrap_err();
        assert!(e.to_string().contains("unknown"), "{e}");
        // Nothing was changed: the log is still there for a newer version.
        assert_eq!(std::fs::read(&path).unwrap(), log);
        assert_eq!(std::fs::read_to_string(dir.join("CURRENT")).unwrap(), "1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sessions_and_retained_messages_are_rehomed_and_renumbered() {
        let dir = tmp("rehome");
        // Two old shards that both used message number 1.
        for (shard, client, topic) in [(0, "a", "t/a"), (1, "b", "t/b")] {
            let d = dir.join(format!("shard-{shard}"));
            std::fs::create_dir_all(&d).unwrap();
            let mut msg = BytesMut::new();
            Packet::Publish(crate::protocol::Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: crate::protocol::TopicName::new(topic).unwrap(),
                packet_id: PacketId::new(1),
                properties: crate::protocol::Properties::new(),
                payload: bytes::Bytes::from(client.to_owned()),
            })
            .encode(ProtocolVersion::V5, &mut msg)
            .unwrap();
            let records = [
                Record::SessionCreated {
                    client_id: ByteString::from(client),
                    expiry: u32::MAX,
                },
                Record::Message {
                    id: 1,
                    expires_ms: 0,
                    publish: msg.freeze(),
                },
                Record::Delivered {
                    client_id: ByteString::from(client),
                    msg: 1,
                    qos: 1,
                    retain: false,
                    identifiers: vec![],
                    share: ByteString::new(),
                    ingress: 0,
                },
                Record::RetainSet {
                    topic: ByteString::from(topic),
                    msg: 1,
                    ingress: 0,
                },
            ];
            write_snapshot(&log_path(&d, 0, 0), &records).unwrap();
        }
        let r = recover(&cfg(&dir), 3).unwrap();
        assert_eq!(r.shards.len(), 3);
        for (client, topic) in [("a", "t/a"), ("b", "t/b")] {
            let home = &r.shards[crate::broker::home_shard(client, 3)].image;
            let s = &home.sessions[&ByteString::from(client)];
            let m = &home.messages[&s.flows[0].msg];
            assert!(
                m.publish.ends_with(client.as_bytes()),
                "{client}'s own message"
            );
            let owner = &r.shards[crate::broker::home_shard(topic, 3)].image;
            let id = owner.retained[&ByteString::from(topic)];
            assert!(owner.messages[&id].publish.ends_with(client.as_bytes()));
        }
        assert!(!dir.join("shard-1").join("0-0.log").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_names_are_read_exactly_as_written() {
        assert_eq!(parse_log_name("3-14.log"), Some((3, 14)));
        for bad in [
            "03-1.log",
            "3-01.log",
            "3-1.log.tmp",
            "3_1.log",
            "-1-2.log",
            "x-1.log",
        ] {
            assert_eq!(parse_log_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_current_file_that_is_not_an_epoch_refuses_to_start() {
        let dir = tmp("current");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("CURRENT"), "garbage").unwrap();
        assert!(recover(&cfg(&dir), 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
