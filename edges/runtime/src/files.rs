//! The runtimes' side of in-band file transfer: reading an upload from disk into the session
//! as its window allows, and writing offered files into a directory (`wavry_net::files` does
//! the hashing, part files and resume; the session checks the SHA-256).

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wavry_net::files::{IncomingFile, OutgoingFile};
use wavry_net::{ClientDriver, DriverError, HostDriver};
use wavry_rift::session::{Session, SessionHandle};
use wavry_rift::transfer::{FileError, FileOffer, Resume};

const CALL: Duration = Duration::from_secs(5);

/// Why a transfer step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Reading or writing the file failed.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The driver did not answer.
    #[error(transparent)]
    Driver(#[from] wavry_net::DriverError),
    /// The session refused the call.
    #[error(transparent)]
    Session(#[from] wavry_rift::session::SessionError),
}

/// Runs a closure with one session on its driver thread: a client's session, or one session
/// of a host.
pub trait SessionCaller {
    /// Runs `f` with the session and the driver's `now`; returns its result.
    fn call_session<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session, std::time::Instant) -> R + Send + 'static,
    ) -> Result<R, DriverError>;
}

impl SessionCaller for ClientDriver {
    fn call_session<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session, std::time::Instant) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.call(CALL, f)
    }
}

/// One session of a host driver.
#[derive(Debug, Clone, Copy)]
pub struct HostSession<'a>(pub &'a HostDriver, pub SessionHandle);

impl SessionCaller for HostSession<'_> {
    fn call_session<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session, std::time::Instant) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.0.call(self.1, CALL, f)
    }
}

/// A file this side sends to its peer.
#[derive(Debug)]
pub struct Upload {
    source: OutgoingFile,
    path: PathBuf,
    /// The session's transfer id.
    pub id: u64,
    pos: u64,
    block: Vec<u8>,
}

impl Upload {
    /// Hashes `path` and offers it to the host.
    pub fn start(peer: &impl SessionCaller, path: &Path) -> Result<Self, TransferError> {
        let source = OutgoingFile::open(path).map_err(|e| TransferError::Io(path.into(), e))?;
        let (name, size, sha) = (source.name.clone(), source.size, source.sha256);
        let id = peer.call_session(move |s, now| s.send_file(now, &name, size, sha))??;
        Ok(Self {
            source,
            path: path.to_owned(),
            id,
            pos: 0,
            block: vec![0; 64 * 1024],
        })
    }

    /// The host accepted from `offset` (0, or where an earlier part ended).
    pub fn accepted(&mut self, offset: u64) {
        self.pos = offset;
    }

    /// Hands the session bytes until its transfer window is full (called again on
    /// `FileWritable`). The chunk is copied into the driver command.
    pub fn feed(&mut self, peer: &impl SessionCaller) -> Result<(), TransferError> {
        loop {
            let n = self
                .source
                .read_at(self.pos, &mut self.block)
                .map_err(|e| TransferError::Io(self.path.clone(), e))?;
            if n == 0 {
                return Ok(());
            }
            let bytes = self.block[..n].to_vec();
            let id = self.id;
            let took = peer.call_session(move |s, now| s.write_file(now, id, &bytes))??;
            self.pos += took as u64;
            if took < n {
                return Ok(());
            }
        }
    }

    /// The file's name and size.
    pub fn describe(&self) -> (String, u64) {
        (self.source.name.clone(), self.source.size)
    }
}

/// Files peers send to this side, written under one directory.
#[derive(Debug)]
pub struct Downloads<K> {
    dir: PathBuf,
    open: HashMap<K, IncomingFile>,
}

impl<K: Hash + Eq> Downloads<K> {
    /// Files go to `dir` (created when the first one arrives).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: HashMap::new(),
        }
    }

    /// Opens (or resumes) the part file for an offer; answer the session with the `Resume`.
    pub fn offered(&mut self, key: K, offer: &FileOffer) -> Result<Resume, TransferError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| TransferError::Io(self.dir.clone(), e))?;
        let (sink, resume) = IncomingFile::open(&self.dir, offer)
            .map_err(|e| TransferError::Io(self.dir.clone(), e))?;
        self.open.insert(key, sink);
        Ok(resume)
    }

    /// Writes the next bytes of a file.
    pub fn data(&mut self, key: &K, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        if let Some(sink) = self.open.get_mut(key) {
            sink.write_at(offset, data)
                .map_err(|e| TransferError::Io(self.dir.clone(), e))?;
        }
        Ok(())
    }

    /// A transfer ended: on success the part file is renamed into place and its path
    /// returned; on failure the part is kept for a resume.
    pub fn done(
        &mut self,
        key: &K,
        result: Result<(), FileError>,
    ) -> Option<Result<PathBuf, String>> {
        let sink = self.open.remove(key)?;
        Some(match result {
            Ok(()) => sink.finish().map_err(|e| e.to_string()),
            Err(e) => {
                let _ = sink.abandon(true);
                Err(e.to_string())
            }
        })
    }
}
