//! In-band file transfer and clipboard (spec RIFT §11): the protocol pieces that need no
//! session state — limits and bitrate share, offer validation, filename and status-message
//! sanitisation, the `FileStatus.message` command language, and incremental SHA-256.
//!
//! The session ([`crate::session::Session`]) runs the transfers themselves; reading and
//! writing files is the caller's job (see `wavry-net`'s `files` module for the disk side).

use crate::proto;

/// Chunks a sender may have unacknowledged per transfer, and so the most a receiver must
/// buffer out of order. A protocol constant: both sides rely on it.
pub const WINDOW_CHUNKS: u32 = 64;
/// Default chunk size on the wire (spec: 900 bytes); Wavry fills its datagrams instead, see
/// [`TransferConfig::chunk_size`].
pub const SPEC_CHUNK_SIZE: u32 = 900;
/// Longest `FileStatus.message` sent or accepted, in characters.
pub const MAX_STATUS_MESSAGE: usize = 512;
/// Longest file name on the wire, in bytes.
pub const MAX_FILENAME: usize = 255;
/// The file name that marks a clipboard too large for one datagram, carried as a transfer.
/// It holds a control character, which [`sanitize_filename`] never lets through, so no real
/// file can be mistaken for it.
pub const CLIPBOARD_NAME: &str = "\u{1}wavry-clipboard";

/// Limits and bitrate share of file transfers (the seed's `--file-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferConfig {
    /// Share of the congestion controller's target given to file chunks, percent (1..=100).
    pub share_percent: u8,
    /// Floor of the file budget, kbit/s.
    pub min_kbps: u32,
    /// Ceiling of the file budget, kbit/s.
    pub max_kbps: u32,
    /// Largest file accepted from the peer (offers above it are refused).
    pub max_file_bytes: u64,
    /// Largest clipboard text sent or accepted (spec: 1 MiB).
    pub max_clipboard: usize,
    /// Transfers in each direction at once; further offers are refused.
    pub max_transfers: usize,
    /// Chunk size for files this side sends (0: the largest that fits one datagram).
    pub chunk_size: u32,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            share_percent: 15,
            min_kbps: 256,
            max_kbps: 4096,
            max_file_bytes: 1 << 30,
            max_clipboard: 1 << 20,
            max_transfers: 16,
            chunk_size: 0,
        }
    }
}

impl TransferConfig {
    /// Bits per second file chunks may use while the path's target is `target_bps`:
    /// `clamp(target × share, min, max)`, never more than the target itself.
    pub fn budget_bps(&self, target_bps: u64) -> u64 {
        let share = target_bps * u64::from(self.share_percent.clamp(1, 100)) / 100;
        let lo = u64::from(self.min_kbps) * 1000;
        let hi = (u64::from(self.max_kbps) * 1000).max(lo);
        share.clamp(lo, hi).min(target_bps.max(lo))
    }
}

/// Why a transfer ended without success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The receiver refused the offer.
    #[error("refused by the receiver: {0}")]
    Refused(String),
    /// This side refused or cancelled it.
    #[error("cancelled here")]
    CancelledLocally,
    /// The peer cancelled it.
    #[error("cancelled by the peer")]
    CancelledByPeer,
    /// The received bytes do not hash to the offered SHA-256.
    #[error("SHA-256 of the received data does not match the offer")]
    Checksum,
    /// The offer broke a rule (size, name, chunk geometry).
    #[error("bad offer: {0}")]
    BadOffer(&'static str),
    /// The peer broke the transfer protocol (chunk outside the window, overflow).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The peer reported an error.
    #[error("peer reported: {0}")]
    Peer(String),
    /// The session closed first.
    #[error("session closed")]
    SessionClosed,
}

/// A file offered by the peer (or by this side), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffer {
    /// Random, non-zero transfer id.
    pub file_id: u64,
    /// Sanitised base name, ≤ 255 bytes.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
    /// Bytes per chunk (the last may be shorter).
    pub chunk_size: u32,
    /// Number of chunks: `ceil(size / chunk_size)`.
    pub total_chunks: u32,
}

impl FileOffer {
    /// Byte offset of chunk `index`.
    pub fn offset_of(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Length of chunk `index`.
    pub fn chunk_len(&self, index: u32) -> usize {
        let start = self.offset_of(index);
        (self.size.saturating_sub(start)).min(u64::from(self.chunk_size)) as usize
    }

    /// The `FileHeader` announcing this offer.
    pub fn to_header(&self) -> proto::FileHeader {
        proto::FileHeader {
            file_id: self.file_id,
            filename: self.name.clone(),
            file_size: self.size,
            checksum_sha256: hex(&self.sha256),
            chunk_size: self.chunk_size,
            total_chunks: self.total_chunks,
        }
    }

    /// Validates a received `FileHeader`. `max_chunk` is the largest chunk that fits one
    /// datagram on this path; `max_size` the receiver's file limit. The reserved clipboard
    /// name passes through unchanged; any other name is sanitised.
    pub fn from_header(
        h: &proto::FileHeader,
        max_chunk: u32,
        max_size: u64,
    ) -> Result<Self, FileError> {
        if h.file_id == 0 {
            return Err(FileError::BadOffer("file id is zero"));
        }
        if h.file_size > max_size {
            return Err(FileError::BadOffer(
                "file is larger than this receiver accepts",
            ));
        }
        if h.chunk_size == 0 || h.chunk_size > max_chunk {
            return Err(FileError::BadOffer("chunk size does not fit a datagram"));
        }
        let total = h.file_size.div_ceil(u64::from(h.chunk_size));
        if total != u64::from(h.total_chunks) {
            return Err(FileError::BadOffer(
                "total_chunks disagrees with size / chunk_size",
            ));
        }
        let sha256 = parse_hex32(&h.checksum_sha256)
            .ok_or(FileError::BadOffer("checksum is not 64 hex digits"))?;
        let name = if h.filename == CLIPBOARD_NAME {
            h.filename.clone()
        } else {
            sanitize_filename(&h.filename).ok_or(FileError::BadOffer("unusable file name"))?
        };
        Ok(Self {
            file_id: h.file_id,
            name,
            size: h.file_size,
            sha256,
            chunk_size: h.chunk_size,
            total_chunks: h.total_chunks,
        })
    }

    /// True when this transfer carries clipboard text rather than a file.
    pub fn is_clipboard(&self) -> bool {
        self.name == CLIPBOARD_NAME
    }
}

/// A file name safe to create in a download folder: the last path component only, control
/// characters replaced, no `.`/`..`, at most 255 bytes. `None` when nothing usable is left.
pub fn sanitize_filename(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_control() || c == ':' { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    let mut end = trimmed.len().min(MAX_FILENAME);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let name = &trimmed[..end];
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return None;
    }
    Some(name.to_owned())
}

/// A `FileStatus.message` as sent and as accepted: ≤ 512 characters, control characters
/// turned into spaces.
pub fn sanitize_message(raw: &str) -> String {
    raw.chars()
        .take(MAX_STATUS_MESSAGE)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A command carried in `FileStatus.message` (spec §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCommand {
    /// Stop sending chunks until `Resume`.
    Pause,
    /// Continue after `Pause`.
    Resume,
    /// Abandon the transfer.
    Cancel,
    /// Start over (from chunk 0 unless a `ResumeChunk` comes with it).
    Retry,
    /// Send from this chunk on: the receiver holds everything before it.
    ResumeChunk(u32),
}

impl FileCommand {
    /// The command's text form.
    pub fn to_text(self) -> String {
        match self {
            Self::Pause => "pause".into(),
            Self::Resume => "resume".into(),
            Self::Cancel => "cancel".into(),
            Self::Retry => "retry".into(),
            Self::ResumeChunk(n) => format!("resume_chunk={n}"),
        }
    }
}

/// The commands in a status message, in order; unknown words are ignored (the message is
/// also free text for people).
pub fn parse_commands(message: &str) -> impl Iterator<Item = FileCommand> + '_ {
    message
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter_map(|token| {
            let t = token.trim();
            if t.eq_ignore_ascii_case("pause") {
                Some(FileCommand::Pause)
            } else if t.eq_ignore_ascii_case("resume") {
                Some(FileCommand::Resume)
            } else if t.eq_ignore_ascii_case("cancel") || t.eq_ignore_ascii_case("canceled") {
                Some(FileCommand::Cancel)
            } else if t.eq_ignore_ascii_case("retry") {
                Some(FileCommand::Retry)
            } else {
                let (k, v) = t.split_once('=')?;
                k.eq_ignore_ascii_case("resume_chunk")
                    .then(|| v.parse().ok().map(FileCommand::ResumeChunk))
                    .flatten()
            }
        })
}

/// Incremental SHA-256 of a file's bytes, in order. A receiver resuming a partial file
/// hashes the bytes it already holds and hands the hasher to `Session::accept_file`.
#[derive(Clone)]
pub struct FileHasher {
    ctx: ring::digest::Context,
    len: u64,
}

impl std::fmt::Debug for FileHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHasher")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for FileHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FileHasher {
    /// An empty hash state.
    pub fn new() -> Self {
        Self {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            len: 0,
        }
    }

    /// Adds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before any byte was hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.finish().as_ref());
        out
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = FileHasher::new();
    h.update(bytes);
    h.finish()
}

impl Resume {
    /// Resume after the first `chunk` chunks, whose bytes `hasher` has hashed.
    pub fn at(chunk: u32, hasher: FileHasher) -> Self {
        Self::At {
            chunk,
            hasher: Box::new(hasher),
        }
    }
}

/// Where a receiver starts: from nothing, or after chunks it already holds (resume).
#[derive(Debug, Clone, Default)]
pub enum Resume {
    /// Receive the whole file.
    #[default]
    Start,
    /// The first `chunk` chunks are already stored; `hasher` has hashed exactly them.
    At {
        /// First chunk still needed.
        chunk: u32,
        /// Hash state over chunks `0..chunk`.
        hasher: Box<FileHasher>,
    },
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses 64 hex digits (either case) into 32 bytes.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_follows_share_and_clamps() {
        let c = TransferConfig::default();
        assert_eq!(c.budget_bps(20_000_000), 3_000_000);
        assert_eq!(c.budget_bps(100_000_000), 4_096_000);
        assert_eq!(c.budget_bps(1_000_000), 256_000);
        // Never above the path's own target, except the floor.
        assert_eq!(c.budget_bps(100_000), 256_000);
    }

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(
            sanitize_filename("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_filename("C:\\x\\a b.txt").as_deref(),
            Some("a b.txt")
        );
        assert_eq!(sanitize_filename("a\u{0}b\nc").as_deref(), Some("a_b_c"));
        assert_eq!(sanitize_filename("..").as_deref(), None);
        assert_eq!(sanitize_filename("dir/").as_deref(), None);
        assert_eq!(
            sanitize_filename(CLIPBOARD_NAME).as_deref(),
            Some("_wavry-clipboard")
        );
        let long = "é".repeat(200);
        let s = sanitize_filename(&long).unwrap();
        assert!(s.len() <= MAX_FILENAME && s.chars().all(|c| c == 'é'));
    }

    #[test]
    fn commands_parse_case_insensitively_with_any_separator() {
        let got: Vec<_> =
            parse_commands("PAUSE, resume;Canceled  retry\tresume_chunk=42 x=1 resume_chunk=z")
                .collect();
        assert_eq!(
            got,
            [
                FileCommand::Pause,
                FileCommand::Resume,
                FileCommand::Cancel,
                FileCommand::Retry,
                FileCommand::ResumeChunk(42)
            ]
        );
        for c in got {
            assert_eq!(parse_commands(&c.to_text()).collect::<Vec<_>>(), [c]);
        }
    }

    #[test]
    fn messages_are_bounded_and_printable() {
        let m = sanitize_message(&format!("a\u{7}b{}", "x".repeat(600)));
        assert_eq!(m.chars().count(), MAX_STATUS_MESSAGE);
        assert!(m.starts_with("a b"));
    }

    #[test]
    fn offers_are_validated() {
        let good = FileOffer {
            file_id: 7,
            name: "a.bin".into(),
            size: 1801,
            sha256: sha256(b"x"),
            chunk_size: 900,
            total_chunks: 3,
        };
        let h = good.to_header();
        assert_eq!(FileOffer::from_header(&h, 1100, 1 << 30), Ok(good.clone()));
        assert_eq!(good.chunk_len(2), 1);
        assert_eq!(good.chunk_len(3), 0);
        let bad = |f: &dyn Fn(&mut proto::FileHeader)| {
            let mut h = h.clone();
            f(&mut h);
            FileOffer::from_header(&h, 1100, 1 << 30)
        };
        assert!(bad(&|h| h.file_id = 0).is_err());
        assert!(bad(&|h| h.total_chunks = 2).is_err());
        assert!(bad(&|h| h.chunk_size = 2000).is_err());
        assert!(bad(&|h| h.chunk_size = 0).is_err());
        assert!(bad(&|h| h.checksum_sha256.truncate(63)).is_err());
        assert!(bad(&|h| h.filename = "/".into()).is_err());
        assert!(
            bad(&|h| {
                h.file_size = (1 << 30) + 1;
                h.total_chunks = h.file_size.div_ceil(900) as u32;
            })
            .is_err()
        );
        let upper = bad(&|h| h.checksum_sha256 = h.checksum_sha256.to_uppercase()).unwrap();
        assert_eq!(upper.sha256, good.sha256);
    }

    #[test]
    fn hasher_matches_one_shot_digest_and_hex_round_trips() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut h = FileHasher::new();
        for c in data.chunks(333) {
            h.update(c);
        }
        assert_eq!(h.len(), 5000);
        let d = h.finish();
        assert_eq!(d, sha256(&data));
        assert_eq!(parse_hex32(&hex(&d)), Some(d));
        // The empty-input digest from FIPS 180-2.
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
