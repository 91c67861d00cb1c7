//! A shard's durable log on disk: one file, appended in sealed commits (see
//! [`crate::persist::frame`]) with direct I/O. A commit is one `write_at` of whole blocks
//! at the log's tail and one `fdatasync`, both through io_uring, so the shard's thread
//! never blocks on the disk and no helper thread is involved. What one commit carries is
//! everything the shard appended while the previous one was on its way (group commit:
//! see [`super::durable`]).
//!
//! The file is created and read back before the shard starts (see [`super::recovery`]):
//! here it is only appended to.
//!
//! **Owns:** the log file and its tail. **Must not touch:** what records mean, sockets.

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

#[cfg(test)]
use crate::persist::frame;
use crate::persist::frame::BLOCK;

/// A shard's log, open for appending.
pub(crate) struct Journal {
    file: DmaFile,
    path: PathBuf,
    /// Where the next commit is written (a block boundary): also the file's size.
    tail: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("tail", &self.tail)
            .finish()
    }
}

fn io_err(e: glommio::GlommioError<()>) -> io::Error {
    e.into()
}

impl Journal {
    /// Opens the log at `path` (created by recovery), whose trusted part ends at `tail` (a
    /// block boundary: what follows is overwritten).
    pub(crate) async fn open_at(path: &Path, tail: u64) -> io::Result<Journal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(io_err)?;
        Ok(Journal {
            file,
            path: path.to_owned(),
            tail: tail.div_ceil(BLOCK as u64) * BLOCK as u64,
        })
    }

    /// Writes `frames` (records as [`frame::encode`] lays them out) as one sealed commit
    /// at the tail and makes it durable (`fdatasync`). On error nothing is known to be
    /// durable and the tail does not move: the caller retries with the same frames (the
    /// write is repeated too, since a failed sync may have dropped the dirty pages).
    #[cfg(test)]
    pub(crate) async fn commit(&mut self, frames: &[u8]) -> io::Result<()> {
        let mut sealed = Vec::with_capacity(frames.len() + BLOCK);
        sealed.extend_from_slice(frames);
        frame::seal(&mut sealed, 0, BLOCK);
        self.commit_sealed(&sealed).await
    }

    /// [`Journal::commit`] of frames the caller sealed already ([`frame::seal`], so that
    /// they are copied once, into the direct-I/O buffer).
    pub(crate) async fn commit_sealed(&mut self, sealed: &[u8]) -> io::Result<()> {
        let mut dma = self.file.alloc_dma_buffer(sealed.len());
        dma.as_bytes_mut().copy_from_slice(sealed);
        let written = self.file.write_at(dma, self.tail).await.map_err(io_err)?;
        if written != sealed.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to the log",
            ));
        }
        self.file.fdatasync().await.map_err(io_err)?;
        self.tail += sealed.len() as u64;
        Ok(())
    }

    /// Bytes the log holds (where the next commit goes).
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    /// The log's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed to `path`.
    pub(crate) fn renamed(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// Closes the file.
    pub(crate) async fn close(self) {
        let _ = self.file.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::record::Record;
    use bytestring::ByteString;

    fn created(i: usize) -> Record {
        Record::SessionCreated {
            client_id: ByteString::from(format!("c{i}")),
            expiry: 1,
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
    fn commits_are_sealed_blocks_that_read_back_in_order() {
        let dir = std::env::temp_dir().join(format!("surgemq-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let p = path.clone();
        let tail = run(async move {
            let mut j = Journal::open_at(&p, 0).await.unwrap();
            let mut frames = Vec::new();
            for i in 0..3 {
                created(i).write(&mut frames).unwrap();
            }
            j.commit(&frames).await.unwrap();
            assert_eq!(j.tail(), BLOCK as u64);
            frames.clear();
            for i in 3..5 {
                created(i).write(&mut frames).unwrap();
            }
            j.commit(&frames).await.unwrap();
            let tail = j.tail();
            j.close().await;
            tail
        });
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, tail);
        let scan = frame::scan(&data, BLOCK);
        assert_eq!((scan.commits, scan.stopped), (2, None));
        let (records, error) = crate::persist::record::read_all(&data, &scan);
        assert_eq!(error, None);
        assert_eq!(records, (0..5).map(created).collect::<Vec<_>>());
        // Reopened at its tail, the log goes on after what it holds.
        let p = path.clone();
        run(async move {
            let mut j = Journal::open_at(&p, tail).await.unwrap();
            let mut frames = Vec::new();
            created(5).write(&mut frames).unwrap();
            j.commit(&frames).await.unwrap();
        });
        let data = std::fs::read(&path).unwrap();
        let scan = frame::scan(&data, BLOCK);
        let (records, _) = crate::persist::record::read_all(&data, &scan);
        assert_eq!(records, (0..6).map(created).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
