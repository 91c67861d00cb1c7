//! Cross-core grid micro-benchmark: messages per second from one shard to another over
//! `surgemq::mesh` (bounded SPSC channels), batched and unbatched, each shard on its own
//! pinned executor. Prints a table and one JSON line per case:
//! `{"case":"mesh_batch_64","msgs_per_s":...}`. `MESH_BENCH_QUICK=1` for a short run.

use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use surgemq::mesh;

fn case(batch: usize, n: u64) -> f64 {
    let mut ends = mesh::grid::<u64>(2, 256).into_iter();
    let (e0, e1) = (ends.next().unwrap(), ends.next().unwrap());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let place = move |i: usize| {
        if cpus > 1 {
            Placement::Fixed(i % cpus)
        } else {
            Placement::Unbound
        }
    };
    let receiver = std::thread::spawn(move || {
        LocalExecutorBuilder::new(place(1))
            .make()
            .unwrap()
            .run(async move {
                let (_tx, mut rx) = e1.connect(batch, 1 << 20).await;
                let (_, rx) = rx.pop().unwrap();
                let mut got = 0u64;
                let mut start = None;
                while got < n {
                    let Some(b) = rx.recv().await else { break };
                    start.get_or_insert_with(Instant::now);
                    got += b.len() as u64;
                }
                start.map_or(Duration::ZERO, |s| s.elapsed())
            })
    });
    let sender = std::thread::spawn(move || {
        LocalExecutorBuilder::new(place(0))
            .make()
            .unwrap()
            .run(async move {
                let (tx, _rx) = e0.connect(batch, 1 << 20).await;
                for i in 0..n {
                    tx.push(1, i).expect("peer alive");
                    if i % 1024 == 0 {
                        tx.flush();
                        glommio::yield_if_needed().await;
                    }
                    // Let the flusher drain when the channel is full.
                    while tx.congested() {
                        glommio::timer::sleep(Duration::from_micros(50)).await;
                    }
                }
                tx.flush();
                // Keep the executor alive until the overflow queue is drained.
                glommio::timer::sleep(Duration::from_millis(200)).await;
            })
    });
    sender.join().unwrap();
    let took = receiver.join().unwrap();
    n as f64 / took.as_secs_f64().max(1e-9)
}

fn main() {
    let n = if std::env::var_os("MESH_BENCH_QUICK").is_some() {
        200_000
    } else {
        5_000_000
    };
    let mut rows = Vec::new();
    for batch in [1usize, 16, 64, 256] {
        rows.push((format!("mesh_batch_{batch}"), case(batch, n)));
    }
    println!("{:<16} {:>14}", "case", "msgs/s");
    for (name, rate) in &rows {
        println!("{name:<16} {rate:>14.0}");
    }
    for (name, rate) in &rows {
        println!("{{\"case\":\"{name}\",\"msgs_per_s\":{rate:.0}}}");
    }
}
