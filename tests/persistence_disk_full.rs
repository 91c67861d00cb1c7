//! A disk that fills up under a durable broker (`persistence.mode = "sync"`): the log sits
//! on a small ext4 file system (a loop device, so the test needs root and loop devices;
//! without them it says so and checks nothing). Once a commit fails, nothing more is
//! acknowledged, the failures are counted, and the log is not damaged: moved to a disk
//! with room, it gives back every acknowledged message and nothing else.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use surgemq::config::Config;
use surgemq::protocol::*;

/// A small ext4 file system mounted on a loop device, unmounted and removed on drop.
struct SmallDisk {
    base: PathBuf,
    mnt: PathBuf,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Result<SmallDisk, String> {
        let base = std::env::temp_dir().join(format!("surgemq-diskfull-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        let img = base.join("disk.img");
        let mnt = base.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| e.to_string())?;
        let run = |cmd: &mut Command| -> Result<(), String> {
            match cmd.output() {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
                Err(e) => Err(e.to_string()),
            }
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt))?;
        Ok(SmallDisk { base, mnt })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn broker_on(dir: &Path) -> Broker {
    let dir = dir.to_owned();
    Broker::with(2, move |c: &mut Config| {
        persist_sync(c, &dir);
    })
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "copying {} failed", from.display());
}

#[test]
fn a_full_disk_stops_acknowledgements_and_loses_nothing_acknowledged() {
    let disk = match SmallDisk::mount(8 << 20) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot mount a small file system here (needs root and loop devices): {e}"
            );
            return;
        }
    };
    let data = disk.mnt.join("data");
    let mut b = broker_on(&data);
    let v = ProtocolVersion::V5;
    let sid = b.id_on(0, "full-sub");
    let mut s = b.raw(v);
    let mut properties = Properties::new();
    properties.get_mut().session_expiry_interval = Some(u32::MAX);
    let ack = s.connect_with(Connect {
        version: v,
        clean_start: true,
        keep_alive: 0,
        client_id: bytestring::ByteString::from(sid.as_str()),
        will: None,
        username: None,
        password: None,
        properties: properties.clone(),
    });
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(
        s.subscribe(1, &[("f/#", QoS::AtLeastOnce)]),
        vec![ReasonCode(1)]
    );
    s.disconnect_and_wait();
    let mut p = b.client(v, &b.id_on(0, "full-pub"), true);
    let payload = vec![b'f'; 64_000];
    let mut acked = Vec::new();
    let mut stalled = false;
    // About 6 MiB of room: the disk is full long before 200 messages.
    for i in 1..=200u16 {
        p.publish(
            &format!("f/{i}"),
            &payload,
            QoS::AtLeastOnce,
            false,
            Some(i),
        );
        match p.recv_within(Duration::from_secs(3)) {
            Some(Packet::PubAck(a)) if a.reason.is_success() => acked.push(i),
            None => {
                stalled = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(stalled, "the disk never filled");
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the disk filled"
    );
    // Nothing more is acknowledged while commits fail, whatever comes next.
    p.publish("f/late", b"x", QoS::AtLeastOnce, false, Some(1000));
    assert!(p.recv_within(Duration::from_secs(1)).is_none());
    drop(p);
    let summary = b.handle.take().unwrap().shutdown();
    assert!(summary.persist_errors > 0, "{summary:?}");
    // The log moves to a disk with room: every acknowledged message is there, in order,
    // and nothing that was not acknowledged.
    let roomy = std::env::temp_dir().join(format!("surgemq-diskfull-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&roomy);
    copy_dir(&data, &roomy);
    drop(disk);
    let b = broker_on(&roomy);
    let mut s = b.raw(v);
    let ack = s.connect_with(Connect {
        version: v,
        clean_start: false,
        keep_alive: 0,
        client_id: bytestring::ByteString::from(sid.as_str()),
        will: None,
        username: None,
        password: None,
        properties,
    });
    assert!(ack.session_present);
    let got: Vec<String> = acked
        .iter()
        .map(|_| s.recv_publish().topic.to_string())
        .collect();
    let want: Vec<String> = acked.iter().map(|i| format!("f/{i}")).collect();
    assert_eq!(got, want);
    if let Some(extra) = s.recv_within(Duration::from_millis(500)) {
        // A message whose commit failed is not there; one sent after is not either.
        panic!("not acknowledged, yet delivered: {extra:?}");
    }
    drop(s);
    drop(b);
    let _ = std::fs::remove_dir_all(&roomy);
}
