//! In-band file transfer and clipboard on a session (spec RIFT §11).
//!
//! ```text
//!   sender                                   receiver
//!   send_file ── FileHeader (reliable) ──▶   Event::FileOffered
//!                                            accept_file(resume) / refuse_file
//!   Event::FileAccepted{offset} ◀── FileStatus{IN_PROGRESS, "resume_chunk=n"}
//!   write_file(bytes) … Event::FileWritable
//!             ── FileChunk (reliable, paced, token bucket) ──▶ Event::FileData{offset} (in order)
//!   Event::FileDone ◀── FileStatus{COMPLETE | ERROR}  ◀── SHA-256 checked   Event::FileDone
//! ```
//! Chunks ride the reliable channel (acknowledged in transport feedback, retransmitted), at
//! most [`WINDOW_CHUNKS`] unacknowledged per transfer, within a token bucket of
//! [`TransferConfig::budget_bps`] of DELTA's target; the encoder is told the rest. Clipboard
//! text goes as one reliable message when it fits a datagram, otherwise as a transfer under
//! [`CLIPBOARD_NAME`] that the receiving session takes into memory itself.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{Event, Session, SessionError, send::Class};
use crate::{
    media::FileChunkRef,
    proto::{self, control_message::Content as Ctl, file_status::Status},
    transfer::{
        CLIPBOARD_NAME, FileCommand, FileError, FileHasher, FileOffer, Resume, TransferConfig,
        WINDOW_CHUNKS, parse_commands, sanitize_filename, sanitize_message, sha256,
    },
};

/// Framing of a `FileChunk` message around its payload, worst case (ids at full width).
const CHUNK_FRAMING: usize = 40;
/// Reliable sequence numbers kept free of file chunks for input and control.
const RELIABLE_RESERVE: u64 = 16;
/// Token-bucket depth: this much of the budget may leave back to back (at least 4 chunks).
const BUCKET_DEPTH: Duration = Duration::from_millis(25);

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileProgress {
    /// True on the sending side.
    pub sending: bool,
    /// File size.
    pub size: u64,
    /// Bytes acknowledged (sender) or delivered in order (receiver).
    pub done: u64,
    /// Paused by either side.
    pub paused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Header sent, waiting for the receiver's answer.
    Offered,
    /// Producing chunks.
    Sending,
    /// Every chunk acknowledged; waiting for the receiver's verdict.
    Finishing,
}

#[derive(Debug)]
struct Outgoing {
    offer: FileOffer,
    state: OutState,
    /// Bytes written by the application and not yet cut into chunks: `staged[at..]`.
    staged: Vec<u8>,
    at: usize,
    /// Next chunk to cut.
    next_chunk: u32,
    /// Absolute offset just past the staged bytes.
    written: u64,
    /// Unacknowledged chunks: (chunk index, reliable seq), in chunk order.
    inflight: VecDeque<(u32, u64)>,
    paused_local: bool,
    paused_peer: bool,
    /// A write came up short: tell the application when there is room again.
    want_writable: bool,
    /// Clipboard text sent as a transfer (its own source; no application events).
    clipboard: Option<Vec<u8>>,
}

impl Outgoing {
    fn staging_cap(&self) -> usize {
        WINDOW_CHUNKS as usize * self.offer.chunk_size as usize
    }

    fn lowest_unacked(&self) -> u32 {
        self.inflight.front().map_or(self.next_chunk, |&(c, _)| c)
    }

    /// A whole chunk (or the file's last, shorter one) is staged.
    fn chunk_ready(&self) -> bool {
        let want = self.offer.chunk_len(self.next_chunk);
        self.next_chunk < self.offer.total_chunks && self.staged.len() - self.at >= want
    }

    fn can_produce(&self) -> bool {
        self.state == OutState::Sending
            && !self.paused_local
            && !self.paused_peer
            && self.chunk_ready()
            && self.next_chunk < self.lowest_unacked() + WINDOW_CHUNKS
    }

    fn active(&self) -> bool {
        self.state == OutState::Sending && !self.paused_local && !self.paused_peer
    }

    /// (Re)starts sending at chunk `n`.
    fn restart_at(&mut self, n: u32) {
        self.next_chunk = n;
        self.written = self.offer.offset_of(n);
        self.staged.clear();
        self.at = 0;
        if let Some(text) = &self.clipboard {
            self.staged
                .extend_from_slice(&text[(self.written as usize).min(text.len())..]);
            self.written = self.offer.size;
        }
        self.state = OutState::Sending;
    }
}

#[derive(Debug)]
struct Incoming {
    offer: FileOffer,
    receiving: bool,
    next_chunk: u32,
    hasher: FileHasher,
    /// Chunks ahead of `next_chunk`, waiting for the gap to fill.
    ahead: Vec<(u32, Vec<u8>)>,
    /// Clipboard text collected in memory.
    clipboard: Option<Vec<u8>>,
    paused: bool,
}

/// All transfers of one session.
#[derive(Debug, Default)]
pub(crate) struct Files {
    pub(crate) cfg: TransferConfig,
    out: Vec<Outgoing>,
    inc: Vec<Incoming>,
    /// Round-robin cursor over `out`.
    turn: usize,
    tokens: f64,
    refilled: Option<Instant>,
    /// SHA-256 of the clipboard text last sent or received (echo suppression).
    last_clipboard: Option<[u8; 32]>,
    free: Vec<Vec<u8>>,
    /// Whether the file budget was being taken from the encoder at the last report.
    was_active: bool,
}

impl Files {
    pub(crate) fn new(cfg: TransferConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// The file budget currently taken out of the encoder's share, bit/s.
    pub(crate) fn active_budget(&self, target_bps: u64) -> u64 {
        if self.out.iter().any(Outgoing::active) {
            self.cfg.budget_bps(target_bps)
        } else {
            0
        }
    }

    /// Fed the reliable acknowledgements of a feedback report.
    pub(crate) fn on_ack(&mut self, seq: u64) {
        for o in &mut self.out {
            if let Some(i) = o.inflight.iter().position(|&(_, s)| s == seq) {
                o.inflight.remove(i);
                if o.inflight.is_empty() && o.next_chunk >= o.offer.total_chunks {
                    o.state = OutState::Finishing;
                }
                return;
            }
        }
    }

    /// Index of outgoing transfer `id`.
    fn out_at(&self, id: u64) -> Option<usize> {
        self.out.iter().position(|o| o.offer.file_id == id)
    }

    /// Index of incoming transfer `id`.
    fn inc_at(&self, id: u64) -> Option<usize> {
        self.inc.iter().position(|t| t.offer.file_id == id)
    }

    pub(crate) fn has_outgoing(&self) -> bool {
        !self.out.is_empty()
    }

    /// An empty buffer, reused when one is free.
    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// When the token bucket will allow the next chunk, if that is all that holds one back
    /// (a full window or reliable span waits for acknowledgements, missing data for the
    /// application; neither needs a timer).
    pub(crate) fn next_wakeup(&self, target_bps: u64, reliable_room: u64) -> Option<Instant> {
        if reliable_room <= RELIABLE_RESERVE {
            return None;
        }
        let o = self.out.iter().find(|o| o.can_produce())?;
        let need = o.offer.chunk_len(o.next_chunk) as f64;
        if self.tokens >= need {
            return None;
        }
        let rate = self.cfg.budget_bps(target_bps) as f64 / 8.0;
        // Whole microseconds, at least one: a wake-up that rounds to "now" would spin.
        let wait_us = ((need - self.tokens) / rate.max(1.0) * 1e6)
            .ceil()
            .clamp(1.0, 1e6);
        self.refilled
            .map(|t| t + Duration::from_micros(wait_us as u64))
    }
}

fn status_msg(file_id: u64, status: Status, message: &str) -> Ctl {
    Ctl::FileStatus(proto::FileStatus {
        file_id,
        status: status as i32,
        message: sanitize_message(message),
    })
}

impl Session {
    /// Largest chunk that fits one datagram on this path.
    fn max_file_chunk(&self) -> u32 {
        let max_message = self.cfg.max_datagram.saturating_sub(
            crate::crypto::OVERHEAD + if self.cfg.relay.is_some() { 20 } else { 0 },
        );
        max_message.saturating_sub(CHUNK_FRAMING).max(1) as u32
    }

    fn new_file_id(&mut self) -> u64 {
        loop {
            let id = u64::from_le_bytes(self.rng.bytes::<8>());
            if id != 0 && self.files.out_at(id).is_none() && self.files.inc_at(id).is_none() {
                return id;
            }
        }
    }

    /// Offers a file to the peer: `name` (sanitised to its base name), `size` bytes whose
    /// SHA-256 is `sha256`. Returns the transfer id; data is written with
    /// [`Self::write_file`] once [`Event::FileAccepted`] says from which offset.
    pub fn send_file(
        &mut self,
        now: Instant,
        name: &str,
        size: u64,
        sha256: [u8; 32],
    ) -> Result<u64, SessionError> {
        self.require_connected(now)?;
        let name = sanitize_filename(name).ok_or(SessionError::InvalidFile("unusable name"))?;
        self.offer_transfer(now, name, size, sha256, None)
    }

    fn offer_transfer(
        &mut self,
        now: Instant,
        name: String,
        size: u64,
        sha256: [u8; 32],
        clipboard: Option<Vec<u8>>,
    ) -> Result<u64, SessionError> {
        if self.files.out.len() >= self.files.cfg.max_transfers {
            return Err(SessionError::TooManyTransfers);
        }
        let max = self.max_file_chunk();
        let chunk_size = match self.files.cfg.chunk_size {
            0 => max,
            c => c.min(max),
        };
        let total = u32::try_from(size.div_ceil(u64::from(chunk_size)))
            .map_err(|_| SessionError::InvalidFile("too many chunks"))?;
        let offer = FileOffer {
            file_id: self.new_file_id(),
            name,
            size,
            sha256,
            chunk_size,
            total_chunks: total,
        };
        self.send_control(now, Ctl::FileHeader(offer.to_header()))?;
        let id = offer.file_id;
        self.files.out.push(Outgoing {
            offer,
            state: OutState::Offered,
            staged: Vec::new(),
            at: 0,
            next_chunk: 0,
            written: 0,
            inflight: VecDeque::new(),
            paused_local: false,
            paused_peer: false,
            want_writable: false,
            clipboard,
        });
        Ok(id)
    }

    /// Hands the session the next bytes of an accepted outgoing file (in order, from the
    /// offset [`Event::FileAccepted`] gave). Returns how many were taken; on a short count
    /// wait for [`Event::FileWritable`].
    pub fn write_file(
        &mut self,
        now: Instant,
        file_id: u64,
        data: &[u8],
    ) -> Result<usize, SessionError> {
        self.require_connected(now)?;
        let o = self
            .files
            .out
            .iter_mut()
            .find(|o| o.offer.file_id == file_id && o.clipboard.is_none())
            .ok_or(SessionError::UnknownTransfer(file_id))?;
        if o.state == OutState::Offered {
            return Ok(0);
        }
        if o.at > 0 {
            o.staged.drain(..o.at);
            o.at = 0;
        }
        let room = o.staging_cap().saturating_sub(o.staged.len());
        let left = o.offer.size - o.written;
        let n = data
            .len()
            .min(room)
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        o.staged.extend_from_slice(&data[..n]);
        o.written += n as u64;
        if n < data.len() && o.written < o.offer.size {
            o.want_writable = true;
        }
        Ok(n)
    }

    /// Accepts an offered file, from the start or resuming after chunks already held.
    pub fn accept_file(
        &mut self,
        now: Instant,
        file_id: u64,
        resume: Resume,
    ) -> Result<(), SessionError> {
        self.require_connected(now)?;
        let i = self
            .files
            .inc
            .iter()
            .position(|t| t.offer.file_id == file_id && !t.receiving)
            .ok_or(SessionError::UnknownTransfer(file_id))?;
        let (chunk, hasher) = match resume {
            Resume::Start => (0, FileHasher::new()),
            Resume::At { chunk, hasher } => {
                let t = &self.files.inc[i];
                if chunk > t.offer.total_chunks
                    || hasher.len() != t.offer.offset_of(chunk).min(t.offer.size)
                {
                    return Err(SessionError::InvalidFile(
                        "resume point and hashed length disagree",
                    ));
                }
                (chunk, *hasher)
            }
        };
        let t = &mut self.files.inc[i];
        t.receiving = true;
        t.next_chunk = chunk;
        t.hasher = hasher;
        let msg = FileCommand::ResumeChunk(chunk).to_text();
        self.send_control(now, status_msg(file_id, Status::InProgress, &msg))?;
        self.check_complete(now, i);
        Ok(())
    }

    /// Refuses an offered file (or abandons one being received) with a reason for the peer.
    pub fn refuse_file(
        &mut self,
        now: Instant,
        file_id: u64,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.require_connected(now)?;
        let i = self
            .files
            .inc_at(file_id)
            .ok_or(SessionError::UnknownTransfer(file_id))?;
        self.drop_incoming(i);
        self.send_control(now, status_msg(file_id, Status::Error, reason))
    }

    /// Pauses a transfer in either direction (the peer is told).
    pub fn pause_file(&mut self, now: Instant, file_id: u64) -> Result<(), SessionError> {
        self.set_paused(now, file_id, true)
    }

    /// Resumes a paused transfer.
    pub fn resume_file(&mut self, now: Instant, file_id: u64) -> Result<(), SessionError> {
        self.set_paused(now, file_id, false)
    }

    fn set_paused(&mut self, now: Instant, file_id: u64, paused: bool) -> Result<(), SessionError> {
        self.require_connected(now)?;
        if let Some(o) = self.files.out_at(file_id).map(|i| &mut self.files.out[i]) {
            o.paused_local = paused;
        } else if let Some(t) = self.files.inc_at(file_id).map(|i| &mut self.files.inc[i]) {
            t.paused = paused;
        } else {
            return Err(SessionError::UnknownTransfer(file_id));
        }
        let cmd = if paused {
            FileCommand::Pause
        } else {
            FileCommand::Resume
        };
        self.send_control(now, status_msg(file_id, Status::InProgress, &cmd.to_text()))?;
        self.report_file_budget();
        Ok(())
    }

    /// Cancels a transfer in either direction; [`Event::FileDone`] follows with
    /// [`FileError::CancelledLocally`].
    pub fn cancel_file(&mut self, now: Instant, file_id: u64) -> Result<(), SessionError> {
        self.require_connected(now)?;
        if let Some(i) = self.files.out_at(file_id) {
            self.end_outgoing(i, Err(FileError::CancelledLocally));
        } else if let Some(i) = self.files.inc_at(file_id) {
            self.end_incoming(i, Err(FileError::CancelledLocally));
        } else {
            return Err(SessionError::UnknownTransfer(file_id));
        }
        self.send_control(
            now,
            status_msg(file_id, Status::Error, &FileCommand::Cancel.to_text()),
        )
    }

    /// Progress of a transfer in either direction.
    pub fn file_progress(&self, file_id: u64) -> Option<FileProgress> {
        if let Some(o) = self.files.out_at(file_id).map(|i| &self.files.out[i]) {
            return Some(FileProgress {
                sending: true,
                size: o.offer.size,
                done: o.offer.offset_of(o.lowest_unacked()).min(o.offer.size),
                paused: o.paused_local || o.paused_peer,
            });
        }
        self.files
            .inc_at(file_id)
            .map(|i| &self.files.inc[i])
            .map(|t| FileProgress {
                sending: false,
                size: t.offer.size,
                done: t.offer.offset_of(t.next_chunk).min(t.offer.size),
                paused: t.paused,
            })
    }

    /// Returns the buffer of an [`Event::FileData`] for reuse.
    pub fn recycle_file_data(&mut self, mut data: Vec<u8>) {
        if self.files.free.len() < 2 * WINDOW_CHUNKS as usize {
            data.clear();
            self.files.free.push(data);
        }
    }

    /// Sends the local clipboard text. Returns `Ok(false)` when it is the text last sent or
    /// received (no echo between two synchronised clipboards).
    pub fn send_clipboard(&mut self, now: Instant, text: &str) -> Result<bool, SessionError> {
        self.require_connected(now)?;
        if text.len() > self.files.cfg.max_clipboard {
            return Err(SessionError::MessageTooLarge {
                len: text.len(),
                max: self.files.cfg.max_clipboard,
            });
        }
        let digest = sha256(text.as_bytes());
        if self.files.last_clipboard == Some(digest) {
            return Ok(false);
        }
        let msg = Ctl::Clipboard(proto::ClipboardMessage { text: text.into() });
        match self.send_control(now, msg) {
            Ok(()) => {}
            Err(SessionError::MessageTooLarge { .. }) => {
                self.offer_transfer(
                    now,
                    CLIPBOARD_NAME.into(),
                    text.len() as u64,
                    digest,
                    Some(text.as_bytes().to_vec()),
                )?;
            }
            Err(e) => return Err(e),
        }
        self.files.last_clipboard = Some(digest);
        Ok(true)
    }

    pub(super) fn on_clipboard(&mut self, text: String) {
        if text.len() > self.files.cfg.max_clipboard {
            self.stats.clipboard_ignored += 1;
            return;
        }
        self.files.last_clipboard = Some(sha256(text.as_bytes()));
        self.events.push_back(Event::Clipboard(text));
    }

    pub(super) fn on_file_header(&mut self, now: Instant, h: &proto::FileHeader) {
        let file_id = h.file_id;
        if self.files.inc_at(file_id).is_some() {
            self.stats.file_ignored += 1;
            return;
        }
        let clip = h.filename == CLIPBOARD_NAME;
        let max_size = if clip {
            self.files.cfg.max_clipboard as u64
        } else {
            self.files.cfg.max_file_bytes
        };
        let offer = match FileOffer::from_header(h, self.max_file_chunk(), max_size) {
            Ok(o) if self.files.inc.len() < self.files.cfg.max_transfers => o,
            Ok(_) => {
                self.stats.file_offers_refused += 1;
                let _ = self.send_control(
                    now,
                    status_msg(file_id, Status::Error, "busy: too many transfers"),
                );
                return;
            }
            Err(e) => {
                self.stats.file_offers_refused += 1;
                let _ = self.send_control(now, status_msg(file_id, Status::Error, &e.to_string()));
                return;
            }
        };
        self.files.inc.push(Incoming {
            offer: offer.clone(),
            receiving: false,
            next_chunk: 0,
            hasher: FileHasher::new(),
            ahead: Vec::new(),
            clipboard: clip.then(Vec::new),
            paused: false,
        });
        if clip {
            let _ = self.accept_file(now, file_id, Resume::Start);
        } else {
            self.events.push_back(Event::FileOffered(offer));
        }
    }

    pub(super) fn on_file_status(&mut self, now: Instant, s: &proto::FileStatus) {
        let message = sanitize_message(&s.message);
        let status = Status::try_from(s.status).unwrap_or(Status::Error);
        if let Some(i) = self.files.out_at(s.file_id) {
            let cancel = parse_commands(&message).any(|c| c == FileCommand::Cancel);
            match status {
                Status::Complete => self.end_outgoing(i, Ok(())),
                Status::Error if cancel => self.end_outgoing(i, Err(FileError::CancelledByPeer)),
                Status::Error if self.files.out[i].state == OutState::Offered => {
                    self.end_outgoing(i, Err(FileError::Refused(message)));
                }
                Status::Error => self.end_outgoing(i, Err(FileError::Peer(message))),
                Status::Pending | Status::InProgress => self.on_receiver_commands(now, i, &message),
            }
        } else if let Some(i) = self.files.inc_at(s.file_id) {
            if status == Status::Error {
                let cancel = parse_commands(&message).any(|c| c == FileCommand::Cancel);
                let e = if cancel {
                    FileError::CancelledByPeer
                } else {
                    FileError::Peer(message)
                };
                self.end_incoming(i, Err(e));
            }
            // The sender's pause/resume notes are informational.
        } else {
            self.stats.file_ignored += 1;
        }
    }

    /// Commands from the receiver of outgoing transfer `i`.
    fn on_receiver_commands(&mut self, _now: Instant, i: usize, message: &str) {
        let mut start = None;
        for c in parse_commands(message) {
            let o = &mut self.files.out[i];
            match c {
                FileCommand::Pause => o.paused_peer = true,
                FileCommand::Resume => o.paused_peer = false,
                FileCommand::Retry => start = start.or(Some(0)),
                FileCommand::ResumeChunk(n) => start = Some(n),
                FileCommand::Cancel => {}
            }
        }
        if self.files.out[i].state == OutState::Offered && start.is_none() {
            start = Some(0);
        }
        if let Some(n) = start {
            if n > self.files.out[i].offer.total_chunks {
                self.end_outgoing(i, Err(FileError::Protocol("resume point past the end")));
                return;
            }
            let seqs: Vec<u64> = self.files.out[i]
                .inflight
                .drain(..)
                .map(|(_, s)| s)
                .collect();
            for s in seqs {
                self.send.forget_reliable(s);
            }
            let o = &mut self.files.out[i];
            o.restart_at(n);
            if o.next_chunk >= o.offer.total_chunks {
                o.state = OutState::Finishing;
            }
            if o.clipboard.is_none() {
                let (file_id, offset) = (o.offer.file_id, o.offer.offset_of(n).min(o.offer.size));
                self.events
                    .push_back(Event::FileAccepted { file_id, offset });
            }
        }
        self.report_file_budget();
    }

    pub(super) fn on_file_chunk(&mut self, now: Instant, c: FileChunkRef<'_>) {
        let Some(i) = self
            .files
            .inc
            .iter()
            .position(|t| t.offer.file_id == c.file_id && t.receiving)
        else {
            self.stats.file_ignored += 1;
            return;
        };
        let t = &self.files.inc[i];
        if c.chunk_index < t.next_chunk || t.ahead.iter().any(|(n, _)| *n == c.chunk_index) {
            self.stats.file_ignored += 1;
            return;
        }
        if c.chunk_index >= t.offer.total_chunks
            || c.chunk_index >= t.next_chunk.saturating_add(WINDOW_CHUNKS)
            || c.payload.len() != t.offer.chunk_len(c.chunk_index)
        {
            let e = FileError::Protocol("chunk outside the window or of the wrong size");
            let id = t.offer.file_id;
            self.end_incoming(i, Err(e.clone()));
            let _ = self.send_control(now, status_msg(id, Status::Error, &e.to_string()));
            return;
        }
        self.stats.file_chunks_received += 1;
        let mut buf = self.files.buffer();
        buf.extend_from_slice(c.payload);
        let t = &mut self.files.inc[i];
        t.ahead.push((c.chunk_index, buf));
        // Deliver everything now in order.
        while let Some(k) = t.ahead.iter().position(|(n, _)| *n == t.next_chunk) {
            let (n, data) = t.ahead.swap_remove(k);
            t.hasher.update(&data);
            t.next_chunk = n + 1;
            if let Some(clip) = &mut t.clipboard {
                clip.extend_from_slice(&data);
                self.files.free.push(data);
            } else {
                self.events.push_back(Event::FileData {
                    file_id: t.offer.file_id,
                    offset: t.offer.offset_of(n),
                    data,
                });
            }
        }
        self.check_complete(now, i);
    }

    /// Finishes incoming transfer `i` once every chunk is in: verify, answer, report.
    fn check_complete(&mut self, now: Instant, i: usize) {
        let t = &self.files.inc[i];
        if !t.receiving || t.next_chunk < t.offer.total_chunks {
            return;
        }
        let id = t.offer.file_id;
        let ok = t.hasher.clone().finish() == t.offer.sha256;
        let status = if ok {
            status_msg(id, Status::Complete, "complete")
        } else {
            status_msg(id, Status::Error, "checksum mismatch")
        };
        let _ = self.send_control(now, status);
        self.end_incoming(i, if ok { Ok(()) } else { Err(FileError::Checksum) });
    }

    fn drop_incoming(&mut self, i: usize) -> Incoming {
        let mut t = self.files.inc.swap_remove(i);
        for (_, b) in t.ahead.drain(..) {
            self.files.free.push(b);
        }
        t
    }

    fn end_incoming(&mut self, i: usize, result: Result<(), FileError>) {
        let t = self.drop_incoming(i);
        match (t.clipboard, result) {
            (Some(text), Ok(())) => match String::from_utf8(text) {
                Ok(text) => self.on_clipboard(text),
                Err(_) => self.stats.clipboard_ignored += 1,
            },
            (Some(_), Err(_)) => self.stats.clipboard_ignored += 1,
            (None, result) => self.events.push_back(Event::FileDone {
                file_id: t.offer.file_id,
                sending: false,
                result,
            }),
        }
    }

    fn end_outgoing(&mut self, i: usize, result: Result<(), FileError>) {
        let o = self.files.out.swap_remove(i);
        for &(_, s) in &o.inflight {
            self.send.forget_reliable(s);
        }
        if o.clipboard.is_none() {
            self.events.push_back(Event::FileDone {
                file_id: o.offer.file_id,
                sending: true,
                result,
            });
        }
        self.report_file_budget();
    }

    /// Every transfer ends with the session.
    pub(super) fn end_all_transfers(&mut self) {
        self.files.was_active = false;
        for o in std::mem::take(&mut self.files.out) {
            if o.clipboard.is_none() {
                self.events.push_back(Event::FileDone {
                    file_id: o.offer.file_id,
                    sending: true,
                    result: Err(FileError::SessionClosed),
                });
            }
        }
        while !self.files.inc.is_empty() {
            self.end_incoming(0, Err(FileError::SessionClosed));
        }
    }

    /// Tells the encoder its share again when a transfer starts or stops taking the budget.
    fn report_file_budget(&mut self) {
        let active = self.files.out.iter().any(Outgoing::active);
        if active != self.files.was_active {
            self.files.was_active = active;
            self.emit_target();
        }
    }

    /// Cuts due chunks from staged data into the reliable queue, round-robin across
    /// transfers, within the window and the token bucket.
    pub(super) fn produce_file_chunks(&mut self, now: Instant) {
        if self.files.out.is_empty() {
            return;
        }
        let rate = self.files.cfg.budget_bps(self.cc.target_bps()) as f64 / 8.0;
        let max_chunk = f64::from(self.max_file_chunk());
        let depth = (rate * BUCKET_DEPTH.as_secs_f64()).max(4.0 * max_chunk);
        let elapsed = self
            .files
            .refilled
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.files.tokens = (self.files.tokens + elapsed * rate).min(depth);
        self.files.refilled = Some(now);
        let n = self.files.out.len();
        let mut idle = 0;
        while idle < n && self.send.reliable_room() > RELIABLE_RESERVE {
            let i = self.files.turn % n;
            self.files.turn = self.files.turn.wrapping_add(1);
            let o = &self.files.out[i];
            if !o.can_produce() {
                idle += 1;
                continue;
            }
            let len = o.offer.chunk_len(o.next_chunk);
            if self.files.tokens < len as f64 {
                break;
            }
            idle = 0;
            self.files.tokens -= len as f64;
            let seq = self.send.alloc_seq();
            let mut buf = self.send.buffer();
            let o = &mut self.files.out[i];
            let index = o.next_chunk;
            FileChunkRef {
                file_id: o.offer.file_id,
                chunk_index: index,
                payload: &o.staged[o.at..o.at + len],
                reliable_seq: seq,
            }
            .append_to(&mut buf);
            o.at += len;
            o.next_chunk += 1;
            o.inflight.push_back((index, seq));
            if self
                .send
                .push_reliable_encoded(seq, Class::File, buf, now)
                .is_err()
            {
                // The reliable queue is full: the session closes (see `check_reliable`).
                break;
            }
        }
        for o in &mut self.files.out {
            if o.want_writable && o.staged.len() - o.at <= o.staging_cap() / 2 {
                o.want_writable = false;
                self.events.push_back(Event::FileWritable {
                    file_id: o.offer.file_id,
                });
            }
        }
        self.report_file_budget();
    }
}
