//! Soak: 2,000 clients on a two-shard broker at once, 1,000 publishers and 1,000
//! subscribers spread over both shards, about 100,000 QoS 1 / QoS 2 deliveries, each one
//! checked: nothing lost, nothing duplicated, per-publisher order kept, QoS and flags right.
//!
//! Layout: 200 groups of 5 publishers and 5 subscribers. Publisher `i` (group `i / 5`,
//! shard `i % 2`, QoS 1 when `i` is even, QoS 2 when odd) publishes `K` messages
//! `"<i>:<seq>"` to `soak/<group>/p<i>`. Subscriber `j` (group `j / 5`, shard `(j + 1) % 2`)
//! subscribes at QoS 2 to `soak/<group>/+` (even `j`) or `soak/<group>/#` (odd `j`), so it
//! must receive exactly the `5 * K` messages of its group's publishers, from both shards,
//! each publisher's in sequence order [MQTT-4.6.0-6] at the publisher's QoS
//! [MQTT-3.8.4-6], with DUP and RETAIN 0 (no reconnection happens, so no retransmission is
//! allowed [MQTT-4.4.0-1]).
//!
//! Every client is a blocking [`Raw`] client on its own thread. Clients connect (and
//! subscribers subscribe) one after another from the test thread, so that connection
//! bursts do not depend on the listen backlog; then every publisher sends its `K`
//! messages back to back (all in flight at once) and completes the flows, while every
//! subscriber acknowledges as it receives. The outgoing in-flight window is 10 so most
//! deliveries wait in a session queue first. Not timed: the phase timings are printed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use surgemq::protocol::*;

const PUBLISHERS: usize = 1000;
const SUBSCRIBERS: usize = 1000;
const GROUP: usize = 5;
/// Messages per publisher.
const K: u16 = 20;
/// Longest wait for any one packet under load (debug builds on two cores).
const SLOW: Duration = Duration::from_secs(30);
/// Longest the whole delivery phase may take.
const DEADLINE: Duration = Duration::from_secs(150);
/// Stack of each client thread (`Raw::recv_within` reads into a 64 KiB stack buffer).
const STACK: usize = 256 * 1024;

/// Makes sure the process can hold every socket: both ends of 2,000 connections live in
/// this process (about 4,000 descriptors plus the runtime's). Raises the soft limit up
/// to the hard limit if needed; fails with a clear message if the hard limit is too low.
fn ensure_fd_limit() {
    const NEED: libc::rlim_t = 2 * (PUBLISHERS + SUBSCRIBERS) as libc::rlim_t + 512;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur >= NEED {
            return;
        }
        assert!(
            lim.rlim_max >= NEED,
            "the soak test needs {NEED} file descriptors but the hard limit is {}; \
             raise it (ulimit -Hn / limits.conf) to run it",
            lim.rlim_max
        );
        lim.rlim_cur = NEED.max(lim.rlim_cur);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "setrlimit(RLIMIT_NOFILE, {NEED})"
        );
    }
}

fn qos_of(publisher: usize) -> QoS {
    if publisher % 2 == 0 {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    }
}

fn publisher(mut c: Raw, i: usize, deliveries: Arc<AtomicUsize>) {
    let topic = format!("soak/{}/p{i}", i / GROUP);
    let qos = qos_of(i);
    // Every message in flight at once.
    for seq in 0..K {
        c.publish(
            &topic,
            format!("{i}:{seq}").as_bytes(),
            qos,
            false,
            Some(seq + 1),
        );
    }
    let all: BTreeSet<u16> = (1..=K).collect();
    let mut acked = BTreeSet::new();
    let mut completed = BTreeSet::new();
    let want_done = |acked: &BTreeSet<u16>, completed: &BTreeSet<u16>| match qos {
        QoS::AtLeastOnce => acked.len() == usize::from(K),
        _ => completed.len() == usize::from(K),
    };
    while !want_done(&acked, &completed) {
        let p = c.recv_within(SLOW).unwrap_or_else(|| {
            panic!("publisher {i}: no ack within {SLOW:?}; acked {acked:?} completed {completed:?}")
        });
        match (qos, p) {
            (QoS::AtLeastOnce, Packet::PubAck(a)) => {
                assert!(
                    acked.insert(a.packet_id.get()),
                    "publisher {i}: PUBACK {a:?} twice"
                );
            }
            (QoS::ExactlyOnce, Packet::PubRec(a)) => {
                assert!(
                    acked.insert(a.packet_id.get()),
                    "publisher {i}: PUBREC {a:?} twice"
                );
                c.send(&Packet::PubRel(Ack::new(a.packet_id)));
            }
            (QoS::ExactlyOnce, Packet::PubComp(a)) => {
                let id = a.packet_id.get();
                assert!(
                    acked.contains(&id),
                    "publisher {i}: PUBCOMP {id} before PUBREC"
                );
                assert!(completed.insert(id), "publisher {i}: PUBCOMP {id} twice");
            }
            (_, other) => panic!("publisher {i} ({qos:?}): unexpected {other:?}"),
        }
    }
    assert_eq!(acked, all, "publisher {i}");
    deliveries.fetch_add(usize::from(K), Ordering::Relaxed);
    c.disconnect();
}

fn subscriber(c: &mut Raw, j: usize, deadline: Instant, received: &AtomicUsize) {
    let group = j / GROUP;
    let pubs = group * GROUP..(group + 1) * GROUP;
    // next[k]: the sequence number expected next from publisher pubs.start + k.
    let mut next = [0u16; GROUP];
    let want = GROUP * usize::from(K);
    let mut got = 0;
    while got < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(p) = c.recv_within(left) else {
            panic!("subscriber {j}: {got} of {want} messages by the deadline; next expected per publisher {next:?}")
        };
        let Packet::Publish(p) = p else {
            panic!("subscriber {j}: expected PUBLISH, got {p:?}")
        };
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => c.send(&Packet::PubAck(Ack::new(id))),
            (QoS::ExactlyOnce, Some(id)) => c.send(&Packet::PubRec(Ack::new(id))),
            _ => panic!("subscriber {j}: {p:?} without QoS 1/2 packet id"),
        }
        let text = std::str::from_utf8(&p.payload).unwrap();
        let (from, seq) = text.split_once(':').unwrap();
        let (from, seq): (usize, u16) = (from.parse().unwrap(), seq.parse().unwrap());
        assert!(
            pubs.contains(&from),
            "subscriber {j}: message {text} from another group"
        );
        assert_eq!(
            (&*p.topic, p.qos, p.dup, p.retain),
            (
                &*format!("soak/{group}/p{from}"),
                qos_of(from),
                false,
                false
            ),
            "subscriber {j}: message {text}"
        );
        let k = from - pubs.start;
        assert_eq!(
            seq, next[k],
            "subscriber {j}: from publisher {from} got seq {seq}, expected {} \
             (lower: duplicate, higher: loss or reordering)",
            next[k]
        );
        next[k] += 1;
        got += 1;
        received.fetch_add(1, Ordering::Relaxed);
    }
    assert_eq!(next, [K; GROUP], "subscriber {j}");
}

/// After every subscriber has all its messages: nothing more arrives (the QoS 2 PUBRELs
/// still due are answered inside `recv_within`).
fn nothing_more(mut c: Raw, j: usize) {
    if let Some(p) = c.recv_within(Duration::from_millis(500)) {
        panic!("subscriber {j}: unexpected extra {p:?}");
    }
    c.ping();
    c.disconnect();
}

#[test]
fn soak_2000_clients_100k_deliveries() {
    ensure_fd_limit();
    let b = Broker::with(2, |cfg| {
        cfg.limits.max_connections = 2 * (PUBLISHERS + SUBSCRIBERS);
        // A window smaller than the 100 messages each subscriber gets, so that deliveries
        // also go through the session queues, not only straight into flight.
        cfg.limits.max_inflight = 10;
    });
    let t0 = Instant::now();

    // Subscribers: connect and subscribe one after another.
    let mut subs = Vec::with_capacity(SUBSCRIBERS);
    for j in 0..SUBSCRIBERS {
        let id = b.id_on((j + 1) % 2, &format!("ss{j}"));
        let mut c = b.client(V311, &id, true);
        let filter = if j % 2 == 0 {
            format!("soak/{}/+", j / GROUP)
        } else {
            format!("soak/{}/#", j / GROUP)
        };
        assert_eq!(
            c.subscribe(1, &[(&filter, QoS::ExactlyOnce)]),
            vec![ReasonCode(2)],
            "subscriber {j}"
        );
        subs.push(c);
    }
    // Publishers: connect only.
    let mut pubs = Vec::with_capacity(PUBLISHERS);
    for i in 0..PUBLISHERS {
        let id = b.id_on(i % 2, &format!("sp{i}"));
        pubs.push(b.client(V311, &id, true));
    }
    let t_connected = t0.elapsed();

    let received = Arc::new(AtomicUsize::new(0));
    let published = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + DEADLINE;
    let t1 = Instant::now();
    let sub_threads: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(j, c)| {
            let received = received.clone();
            thread::Builder::new()
                .name(format!("soak-sub-{j}"))
                .stack_size(STACK)
                .spawn(move || {
                    let mut c = c;
                    subscriber(&mut c, j, deadline, &received);
                    c
                })
                .expect("spawn subscriber thread")
        })
        .collect();
    let pub_threads: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let published = published.clone();
            thread::Builder::new()
                .name(format!("soak-pub-{i}"))
                .stack_size(STACK)
                .spawn(move || publisher(c, i, published))
                .expect("spawn publisher thread")
        })
        .collect();

    let mut failures = Vec::new();
    for (i, t) in pub_threads.into_iter().enumerate() {
        if let Err(e) = t.join() {
            failures.push(format!("publisher {i}: {}", panic_text(&e)));
        }
    }
    let t_published = t1.elapsed();
    let mut finished = Vec::new();
    for (j, t) in sub_threads.into_iter().enumerate() {
        match t.join() {
            Ok(c) => finished.push((j, c)),
            Err(e) => failures.push(format!("subscriber {j}: {}", panic_text(&e))),
        }
    }
    let t_delivered = t1.elapsed();
    assert!(
        failures.is_empty(),
        "{} client(s) failed (published {} of {}, received {} of {}); first: {:#?}",
        failures.len(),
        published.load(Ordering::Relaxed),
        PUBLISHERS * usize::from(K),
        received.load(Ordering::Relaxed),
        SUBSCRIBERS * GROUP * usize::from(K),
        &failures[..failures.len().min(10)]
    );

    // Nothing extra, every connection still answers PINGREQ.
    let quiet_threads: Vec<_> = finished
        .into_iter()
        .map(|(j, c)| {
            thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || nothing_more(c, j))
                .expect("spawn")
        })
        .collect();
    for (j, t) in quiet_threads.into_iter().enumerate() {
        if let Err(e) = t.join() {
            failures.push(format!("subscriber {j}: {}", panic_text(&e)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    assert_eq!(
        published.load(Ordering::Relaxed),
        PUBLISHERS * usize::from(K)
    );
    assert_eq!(
        received.load(Ordering::Relaxed),
        SUBSCRIBERS * GROUP * usize::from(K)
    );
    println!(
        "soak: {} clients connected+subscribed in {:.2?}; {} publishes acknowledged in {:.2?}; \
         {} deliveries verified in {:.2?}; total {:.2?}",
        PUBLISHERS + SUBSCRIBERS,
        t_connected,
        PUBLISHERS * usize::from(K),
        t_published,
        SUBSCRIBERS * GROUP * usize::from(K),
        t_delivered,
        t0.elapsed()
    );
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}
