//! A shard's durable log on disk (issue 11, in progress; not wired into the shard yet): one
//! file, written in sealed commits (see [`crate::persist::frame`]) with direct I/O. A
//! commit is one `write_at` of whole blocks at the log's tail and one `fdatasync`, both
//! through io_uring, so the shard's thread never blocks on the disk and no helper thread is
//! involved; a shard turn's changes go out as one commit (group commit).
//!
//! Opening reads the log back: the records of every sealed commit, in order. What follows
//! the last commit that can be trusted (a torn tail after a crash, or damage) is reported
//! with its offset and cut off, so the next commit starts at a clean block; the broker
//! never refuses to start because of it.
//!
//! **Owns:** the log file and its tail. **Must not touch:** what records mean (the session
//! store decides), sockets.

// Tests are its only user until the session store writes through it.
#![cfg_attr(not(test), allow(dead_code))]

use std::io;
use std::path::Path;

use glommio::io::{DmaFile, OpenOptions};

use crate::persist::frame::{self, Scan};
use crate::persist::record::{self, Record};

/// A shard's log.
pub(crate) struct Journal {
    file: DmaFile,
    /// The direct-I/O block size: every commit starts and ends on a boundary.
    block: usize,
    /// Where the next commit is written (a block boundary).
    tail: u64,
    /// The frames of the commit being built.
    buf: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("block", &self.block)
            .field("tail", &self.tail)
            .field("pending", &self.buf.len())
            .finish()
    }
}

/// What opening a log found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The records of its sealed commits, in order.
    pub records: Vec<Record>,
    /// The scan (commits read; where and why it stopped, if before the end).
    pub scan: Scan,
    /// A record that did not decode (the log was cut before it), if any.
    pub bad_record: Option<record::RecordError>,
}

fn io_err(e: glommio::GlommioError<()>) -> io::Error {
    e.into()
}

impl Journal {
    /// Opens the log at `path` (creating it), reads what it holds and cuts off what cannot
    /// be trusted.
    pub(crate) async fn open(path: &Path) -> io::Result<(Journal, Recovered)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(io_err)?;
        let block = usize::try_from(file.alignment()).unwrap_or(4096).max(512);
        let size = file.file_size().await.map_err(io_err)?;
        let size = usize::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log too large"))?;
        let data = if size == 0 {
            Vec::new()
        } else {
            // Read once, at start, through the page cache (direct reads through the
            // polled ring are refused on some devices: EOPNOTSUPP on virtio here).
            let reader = OpenOptions::new()
                .read(true)
                .buffered_open(path)
                .await
                .map_err(io_err)?;
            // In chunks: one read returns at most about 2 GiB on Linux.
            let mut v = Vec::with_capacity(size);
            while v.len() < size {
                let want = (size - v.len()).min(64 << 20);
                let got = reader.read_at(v.len() as u64, want).await.map_err(io_err)?;
                if got.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the log ended before its size",
                    ));
                }
                v.extend_from_slice(&got);
            }
            let _ = reader.close().await;
            v
        };
        let scan = frame::scan(&data, block);
        let (mut records, bad_record) = record::read_all(&data, &scan);
        let keep = if let Some(e) = bad_record {
            // Cut before the commit holding the record that does not decode: the commits
            // before it end where a scan up to that record's frame stops.
            tracing::error!(error = %e, path = %path.display(), "log record unreadable: the log is cut before its commit");
            let at = scan
                .records
                .get(records.len())
                .map_or(scan.valid, |(_, r)| r.start);
            let keep = frame::scan(data.get(..at).unwrap_or_default(), block).valid;
            // Only the records of the commits kept.
            let kept = scan
                .records
                .iter()
                .take_while(|(_, r)| r.end <= keep)
                .count();
            records.truncate(kept);
            keep
        } else {
            scan.valid
        };
        if let Some((at, why)) = scan.stopped {
            tracing::warn!(path = %path.display(), offset = at, reason = ?why, dropped = size - at.min(size), "log cut after its last sealed commit");
        }
        let tail = (keep.div_ceil(block) * block) as u64;
        if tail != size as u64 {
            file.truncate(tail).await.map_err(io_err)?;
            // Durable before anything is appended: old commits past the cut must not come
            // back after a power loss.
            file.fdatasync().await.map_err(io_err)?;
        }
        // The file's directory entry is durable too (a new log would otherwise vanish
        // with its commits after a power loss).
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            glommio::io::Directory::open(dir)
                .await
                .map_err(io_err)?
                .sync()
                .await
                .map_err(io_err)?;
        }
        Ok((
            Journal {
                file,
                block,
                tail,
                buf: Vec::new(),
            },
            Recovered {
                records,
                scan,
                bad_record,
            },
        ))
    }

    /// Adds a record to the commit being built.
    pub(crate) fn append(&mut self, r: &Record) {
        r.write(&mut self.buf);
    }

    /// Whether records wait for a commit.
    pub(crate) fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Writes the records appended since the last commit as one sealed commit and makes it
    /// durable (`fdatasync`). Nothing appended: nothing done. On error the commit is not
    /// durable and stays pending (the caller decides: retry, or hold its acknowledgements).
    pub(crate) async fn commit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut sealed = self.buf.clone();
        frame::seal(&mut sealed, 0, self.block);
        let mut dma = self.file.alloc_dma_buffer(sealed.len());
        dma.as_bytes_mut().copy_from_slice(&sealed);
        let written = self.file.write_at(dma, self.tail).await.map_err(io_err)?;
        if written != sealed.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to the log",
            ));
        }
        self.file.fdatasync().await.map_err(io_err)?;
        self.tail += sealed.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Where the next commit goes.
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    fn created(i: usize) -> Record {
        Record::SessionCreated {
            client_id: ByteString::from(format!("c{i}")),
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T> + 'static) -> T
    where
        T: 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor")
            .run(f)
    }

    #[test]
    fn sealed_commits_survive_and_the_rest_is_cut_off() {
        let dir = std::env::temp_dir().join(format!("surgemq-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let p = path.clone();
        run(async move {
            let (mut j, got) = Journal::open(&p).await.unwrap();
            assert!(got.records.is_empty());
            for i in 0..3 {
                j.append(&created(i));
            }
            j.commit().await.unwrap();
            for i in 3..5 {
                j.append(&created(i));
            }
            j.commit().await.unwrap();
            // Appended, never committed: not durable.
            j.append(&created(99));
            assert!(j.has_pending());
        });
        // A crash in the middle of a write: a commit's first bytes made it, not its seal.
        let mut torn = Vec::new();
        created(7).write(&mut torn);
        torn.resize(700, 0xAB);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(&torn).unwrap();
        }
        let p = path.clone();
        run(async move {
            let (mut j, got) = Journal::open(&p).await.unwrap();
            assert_eq!(got.records, (0..5).map(created).collect::<Vec<_>>());
            assert!(got.scan.stopped.is_some(), "the torn tail is reported");
            assert_eq!(got.bad_record, None);
            assert_eq!(j.tail() % 512, 0);
            // The log goes on after the cut.
            j.append(&created(5));
            j.commit().await.unwrap();
        });
        let p = path.clone();
        run(async move {
            let (_, got) = Journal::open(&p).await.unwrap();
            assert_eq!(got.records, (0..6).map(created).collect::<Vec<_>>());
            assert_eq!(got.scan.stopped, None);
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
