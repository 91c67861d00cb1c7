//! What a log's session records add up to: the persistent sessions a shard restores at
//! start, and what a compaction writes back as a snapshot (the shortest list of records
//! that gives the same sessions).

use std::collections::BTreeMap;

use bytestring::ByteString;

use super::record::Record;

/// What the log says about one persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionImage {
    /// When it went offline (wall-clock ms since the Unix epoch) and for how many seconds
    /// it is kept after that; None while a connection serves it.
    pub offline: Option<(u64, u32)>,
    /// Its subscriptions: filter -> (5.0 options byte, subscription identifier or 0).
    pub subscriptions: BTreeMap<ByteString, (u8, u32)>,
}

impl SessionImage {
    /// Whether its expiry has run out at `now_ms` (an offline session kept `u32::MAX`
    /// seconds never expires).
    pub fn expired(&self, now_ms: u64) -> bool {
        match self.offline {
            Some((_, u32::MAX)) | None => false,
            Some((since, expiry)) => now_ms >= since.saturating_add(u64::from(expiry) * 1000),
        }
    }
}

/// The persistent sessions, by client identifier, that `records` (in log order) describe.
/// A subscription recorded for a session the log never created creates it (a log is only
/// ever cut at a commit boundary, so this does not happen in a log we wrote; it is not
/// worth losing the subscription over).
pub fn replay<'a>(
    records: impl IntoIterator<Item = &'a Record>,
) -> BTreeMap<ByteString, SessionImage> {
    let mut sessions: BTreeMap<ByteString, SessionImage> = BTreeMap::new();
    for r in records {
        match r {
            Record::SessionCreated { client_id } => {
                sessions.insert(client_id.clone(), SessionImage::default());
            }
            Record::SessionRemoved { client_id } => {
                sessions.remove(client_id);
            }
            Record::SessionOffline {
                client_id,
                since_ms,
                expiry,
            } => {
                sessions.entry(client_id.clone()).or_default().offline = Some((*since_ms, *expiry));
            }
            Record::SessionOnline { client_id } => {
                sessions.entry(client_id.clone()).or_default().offline = None;
            }
            Record::Subscribed {
                client_id,
                filter,
                options,
                identifier,
            } => {
                sessions
                    .entry(client_id.clone())
                    .or_default()
                    .subscriptions
                    .insert(filter.clone(), (*options, *identifier));
            }
            Record::Unsubscribed { client_id, filter } => {
                if let Some(s) = sessions.get_mut(client_id) {
                    s.subscriptions.remove(filter);
                }
            }
        }
    }
    sessions
}

/// The records that recreate `sessions` from nothing (a compaction's snapshot).
pub fn snapshot(sessions: &BTreeMap<ByteString, SessionImage>) -> Vec<Record> {
    let mut out = Vec::new();
    for (client_id, s) in sessions {
        out.push(Record::SessionCreated {
            client_id: client_id.clone(),
        });
        for (filter, (options, identifier)) in &s.subscriptions {
            out.push(Record::Subscribed {
                client_id: client_id.clone(),
                filter: filter.clone(),
                options: *options,
                identifier: *identifier,
            });
        }
        if let Some((since_ms, expiry)) = s.offline {
            out.push(Record::SessionOffline {
                client_id: client_id.clone(),
                since_ms,
                expiry,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ByteString {
        ByteString::from(s)
    }

    fn sub(c: &str, f: &str, o: u8, i: u32) -> Record {
        Record::Subscribed {
            client_id: id(c),
            filter: id(f),
            options: o,
            identifier: i,
        }
    }

    #[test]
    fn records_add_up_to_the_sessions_and_a_snapshot_gives_them_back() {
        let log = vec![
            Record::SessionCreated { client_id: id("a") },
            sub("a", "x/#", 1, 0),
            sub("a", "y", 2, 7),
            sub("a", "x/#", 0x21, 9), // replaced
            Record::SessionCreated { client_id: id("b") },
            sub("b", "z", 1, 0),
            Record::Unsubscribed {
                client_id: id("a"),
                filter: id("y"),
            },
            Record::SessionOffline {
                client_id: id("a"),
                since_ms: 1_000,
                expiry: 60,
            },
            Record::SessionRemoved { client_id: id("b") },
            Record::SessionCreated { client_id: id("c") },
            Record::SessionOffline {
                client_id: id("c"),
                since_ms: 5,
                expiry: u32::MAX,
            },
            Record::SessionOnline { client_id: id("c") },
        ];
        let sessions = replay(&log);
        assert_eq!(sessions.len(), 2);
        let a = &sessions[&id("a")];
        assert_eq!(a.offline, Some((1_000, 60)));
        assert_eq!(
            a.subscriptions.iter().collect::<Vec<_>>(),
            [(&id("x/#"), &(0x21, 9))]
        );
        assert_eq!(sessions[&id("c")], SessionImage::default());
        // Expiry: a at 1 s + 60 s; c never.
        assert!(!a.expired(60_999));
        assert!(a.expired(61_000));
        assert!(!SessionImage {
            offline: Some((0, u32::MAX)),
            ..Default::default()
        }
        .expired(u64::MAX));
        // A snapshot is shorter and gives the same sessions.
        let snap = snapshot(&sessions);
        assert!(snap.len() < log.len());
        assert_eq!(replay(&snap), sessions);
        // A session created again starts empty.
        let again = [
            log.clone(),
            vec![Record::SessionCreated { client_id: id("a") }],
        ]
        .concat();
        assert_eq!(replay(&again)[&id("a")], SessionImage::default());
    }
}
