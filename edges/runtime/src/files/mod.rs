//! The runtimes' side of in-band file transfer: reading an upload from disk into the session
//! as its window allows, and writing offered files into a directory ([`disk`] does the
//! hashing, part files and resume; the session checks the SHA-256).

pub mod disk;

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wavry_net::{ClientDriver, DriverError, HostDriver};
use wavry_rift::session::{Session, SessionHandle};
use wavry_rift::transfer::{FileError, FileOffer, Resume};

use self::disk::{IncomingFile, OutgoingFile};

/// Bytes read from disk and handed to the session per call.
const UPLOAD_BLOCK: usize = 64 * 1024;

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
    /// How the transfer ended: `Some(true)` delivered, `Some(false)` failed or cancelled.
    outcome: Option<bool>,
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
            block: vec![0; UPLOAD_BLOCK],
            outcome: None,
        })
    }

    /// The host accepted from `offset` (0, or where an earlier part ended).
    pub fn accepted(&mut self, offset: u64) {
        self.pos = offset;
    }

    /// Hands the session bytes until its transfer window is full (called again on
    /// `FileWritable`). The read buffer itself travels to the driver thread and back with the
    /// answer: no copy, no allocation per chunk.
    pub fn feed(&mut self, peer: &impl SessionCaller) -> Result<(), TransferError> {
        if self.outcome.is_some() {
            // Ended here (a cancel) or by the peer: a `FileWritable` or `FileAccepted` that
            // was already on its way is stale, and writing would only be refused.
            return Ok(());
        }
        if self.block.is_empty() {
            // Lost with a driver call that failed.
            self.block = vec![0; UPLOAD_BLOCK];
        }
        loop {
            let n = self
                .source
                .read_at(self.pos, &mut self.block)
                .map_err(|e| TransferError::Io(self.path.clone(), e))?;
            if n == 0 {
                return Ok(());
            }
            let block = std::mem::take(&mut self.block);
            let id = self.id;
            let (took, block) = peer.call_session(move |s, now| {
                let took = s.write_file(now, id, &block[..n]);
                (took, block)
            })?;
            self.block = block;
            let took = took?;
            self.pos += took as u64;
            if took < n {
                return Ok(());
            }
        }
    }

    /// Records how the transfer ended (`FileDone`).
    pub fn ended(&mut self, ok: bool) {
        self.outcome = Some(ok);
    }

    /// Offers the same file again after it failed or was cancelled, under a new transfer id;
    /// the receiver resumes from the part file it kept. `None` if it has not failed.
    pub fn retry(&self, peer: &impl SessionCaller) -> Option<Result<Self, TransferError>> {
        (self.outcome == Some(false)).then(|| Self::start(peer, &self.path))
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

/// What a `--file-control-stdin` line asks of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileControl {
    /// Stop sending or receiving chunks until `Resume`.
    Pause,
    /// Continue after `Pause`.
    Resume,
    /// Abandon the transfer (the receiver keeps its part file for a retry).
    Cancel,
    /// Offer a failed or cancelled upload again; the receiver resumes from its part file.
    Retry,
}

impl FileControl {
    /// What was done, for a confirmation line: "paused", "resumed", "cancelled", "retried".
    pub fn done(self) -> &'static str {
        match self {
            Self::Pause => "paused",
            Self::Resume => "resumed",
            Self::Cancel => "cancelled",
            Self::Retry => "retried",
        }
    }
}

/// Parses one `--file-control-stdin` line: `<file_id> pause|resume|cancel|retry`.
///
/// # Errors
/// A message for the person typing: what was wrong and what the line should look like.
pub fn parse_control(line: &str) -> Result<(u64, FileControl), String> {
    const USAGE: &str = "expected `<file_id> pause|resume|cancel|retry`";
    let mut words = line.split_whitespace();
    let (Some(id), Some(cmd), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("{line:?}: {USAGE}"));
    };
    let id = id
        .parse()
        .map_err(|_| format!("{id:?} is not a file id: {USAGE}"))?;
    let cmd = match cmd.to_ascii_lowercase().as_str() {
        "pause" => FileControl::Pause,
        "resume" => FileControl::Resume,
        "cancel" => FileControl::Cancel,
        "retry" => FileControl::Retry,
        _ => return Err(format!("{cmd:?} is not a command: {USAGE}")),
    };
    Ok((id, cmd))
}

/// Lines of standard input, read on their own thread; the channel closes at end of input.
pub fn stdin_lines() -> crossbeam_channel::Receiver<String> {
    let (tx, rx) = crossbeam_channel::bounded(64);
    std::thread::Builder::new()
        .name("wavry-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
        .map_or_else(|_| crossbeam_channel::never(), |_| rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session caller that must not be called.
    struct NoCalls;

    impl SessionCaller for NoCalls {
        fn call_session<R: Send + 'static>(
            &self,
            _: impl FnOnce(&mut Session, std::time::Instant) -> R + Send + 'static,
        ) -> Result<R, DriverError> {
            panic!("an ended upload called its session");
        }
    }

    #[test]
    fn an_ended_upload_ignores_stale_writable_events() {
        let dir = std::env::temp_dir().join(format!("wavry-upload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        std::fs::write(&path, [7u8; 100]).unwrap();
        let mut u = Upload {
            source: OutgoingFile::open(&path).unwrap(),
            path: path.clone(),
            id: 1,
            pos: 0,
            block: vec![0; UPLOAD_BLOCK],
            outcome: None,
        };
        u.ended(false);
        assert!(u.feed(&NoCalls).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn control_lines_parse_and_bad_ones_say_why() {
        assert_eq!(parse_control("7 pause"), Ok((7, FileControl::Pause)));
        assert_eq!(
            parse_control("  12\tRESUME "),
            Ok((12, FileControl::Resume))
        );
        assert_eq!(parse_control("1 cancel"), Ok((1, FileControl::Cancel)));
        assert_eq!(parse_control("1 retry"), Ok((1, FileControl::Retry)));
        for bad in ["", "pause", "x pause", "1 stop", "1 pause now", "-1 pause"] {
            let e = parse_control(bad).unwrap_err();
            assert!(e.contains("expected `<file_id>"), "{bad:?}: {e}");
        }
    }
}
