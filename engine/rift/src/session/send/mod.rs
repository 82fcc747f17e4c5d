//! The sending half: priority queues (input ahead of control ahead of media), video
//! packetisation with parity per group (a single XOR shard built as the chunks leave, or
//! Reed-Solomon), pacing of media in equal-size GSO batches, the packet history that serves
//! NACKs (retransmissions are re-sealed under a fresh packet id, so relays' replay windows
//! never drop them), the reliable control channel, and RTT/delivery-rate sampling from
//! transport feedback.
//!
//! Concerns live in submodules: `frames` (the frame store: chunk envelopes, XOR parity built
//! as chunks leave, packetisation into FEC groups), `transmit` (priority selection, stale
//! media, GSO batches), `pacing`, `history` (sent packets, NACK service), `reliable`
//! (the acknowledged control channel) and `feedback` (RTT and delivery rate).

mod feedback;
mod frames;
mod history;
mod pacing;
pub(crate) use self::pacing::PathView;
mod reliable;
mod transmit;

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use prost::Message as _;

use self::{
    frames::{Envelope, OutFrame, XorGroup},
    history::{HISTORY, HistEntry},
    pacing::PACING_GAIN,
    reliable::Unacked,
};
use super::{SessionConfig, SessionError, pool::BufPool};
use crate::{
    fec::{FecCodec, FecPolicy},
    pacer::Pacer,
    proto,
};
pub use reliable::MAX_UNACKED;

/// Data shards per FEC group.
pub(crate) const GROUP_SHARDS: usize = crate::media::MAX_GROUP_SHARDS;

const MAX_DATAGRAM_BUF: usize = 2048;

/// Priority classes, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Input,
    Control,
    /// File-transfer chunks: reliable, paced with media, rate-limited where produced.
    File,
}

/// What a queued datagram carries: an encoded message, or a chunk of a frame in the frame
/// store, written straight into the send buffer when it leaves (no copy of its own). The NACK
/// history keeps the same.
#[derive(Debug)]
enum Body {
    Buf(Vec<u8>),
    Chunk {
        frame: u64,
        index: u32,
    },
    /// A frame's single (XOR) parity shard of group `group` (see [`XorGroup`]).
    Parity {
        frame: u64,
        group: u32,
    },
}

impl Body {
    /// A copy of a body that refers into the frame store (`None` for an owned buffer).
    fn frame_ref(&self) -> Option<Body> {
        match *self {
            Body::Buf(_) => None,
            Body::Chunk { frame, index } => Some(Body::Chunk { frame, index }),
            Body::Parity { frame, group } => Some(Body::Parity { frame, group }),
        }
    }
}

#[derive(Debug)]
struct Pending {
    body: Body,
    /// Plaintext length.
    len: usize,
    /// Drop instead of sending after this instant (stale media).
    deadline: Option<Instant>,
    kind: Kind,
}

impl Pending {
    fn buf(buf: Vec<u8>, deadline: Option<Instant>, kind: Kind) -> Self {
        Self {
            len: buf.len(),
            body: Body::Buf(buf),
            deadline,
            kind,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chunk,
    Parity,
    Retransmit,
    ReliableRetransmit,
    File,
    Other,
}

impl Kind {
    /// Media datagrams: paced, kept for NACKs, and sent in GSO batches.
    fn is_media(self) -> bool {
        matches!(self, Kind::Chunk | Kind::Parity | Kind::Retransmit)
    }
}

/// Sender state.
#[derive(Debug)]
pub(crate) struct Sender {
    raw: VecDeque<Vec<u8>>,
    input: VecDeque<Pending>,
    control: VecDeque<Pending>,
    media: VecDeque<Pending>,
    /// Frames whose chunks may still be sent, by ascending (consecutive) id.
    frames: VecDeque<OutFrame>,
    /// Buffers of frames past their deadline, for the next frame.
    spent: Vec<Vec<u8>>,
    /// Envelope tables of released frames, for the next frames.
    spent_envs: Vec<Vec<Envelope>>,
    /// Parity group tables of released frames (their shard buffers go to `pool`).
    spent_xor: Vec<Vec<XorGroup>>,
    /// One chunk's message, encoded for parity computation (reused).
    scratch: Vec<u8>,
    unacked: VecDeque<Unacked>,
    next_reliable: u64,
    history: Vec<HistEntry>,
    /// Oldest packet id whose history entry may still hold a buffer: entries are released
    /// in order once their deadline passes (a NACK cannot use them any more), so the buffers
    /// in circulation stay few and warm in cache instead of spanning the whole history.
    history_expiry: u64,
    pool: BufPool,
    pacer: Pacer,
    fec: FecCodec,
    pub(crate) fec_policy: FecPolicy,
    parity_scratch: Vec<Vec<u8>>,
    next_frame_id: u64,
    chunk_payload: usize,
    srtt: Option<Duration>,
    rttvar: Duration,
    delivery: VecDeque<(Instant, u64, u32)>,
    max_frame: usize,
    target_bps: u64,
    /// Pacing rate the latest frame asked for, bits/s: what it takes to leave within half an
    /// interval (see [`Sender::pace`]).
    frame_bps: f64,
    /// What the latest frame needs to leave within [`pacing::FAST_SHARE`] of an interval.
    fast_bps: f64,
    /// How fast frames may burst while the path shows no queue, bits/s (0: not opened yet,
    /// [`pacing::MAX_BURST_GAIN`] × target); see [`Sender::on_queue_delay`].
    burst_cap: f64,
    /// Largest plaintext message that fits one datagram (control messages are not fragmented).
    max_message: usize,
    /// Configured pacer burst, bytes (`pacer_burst` datagrams).
    base_burst: usize,
    max_datagram: usize,
    /// Most datagrams one `fill` call can batch (the driver's GSO limit and buffer).
    batch: usize,
    /// Media datagrams discarded unsent because their deadline passed.
    pub(crate) media_expired: u64,
    /// A reliable message was refused: the queue is at [`MAX_UNACKED`].
    pub(crate) reliable_overflow: bool,
    /// NACKed ids not served: unknown, or already retransmitted [`MAX_NACK_SERVES`] times.
    pub(crate) nacks_ignored: u64,
    /// Feedback reports with implausible fields that were clamped.
    pub(crate) feedback_clamped: u64,
}

impl Sender {
    pub(crate) fn new(cfg: &SessionConfig, target_bps: u64) -> Self {
        Self {
            raw: VecDeque::new(),
            input: VecDeque::new(),
            control: VecDeque::new(),
            media: VecDeque::new(),
            frames: VecDeque::new(),
            spent: Vec::new(),
            spent_envs: Vec::new(),
            scratch: Vec::new(),
            unacked: VecDeque::new(),
            next_reliable: 1,
            history: (0..HISTORY).map(|_| HistEntry::default()).collect(),
            history_expiry: 0,
            pool: BufPool::new(MAX_DATAGRAM_BUF),
            pacer: Pacer::new(
                (target_bps as f64 * PACING_GAIN) as u64,
                cfg.pacer_burst.max(1) * cfg.max_datagram,
            ),
            fec: FecCodec::default(),
            fec_policy: FecPolicy::default(),
            parity_scratch: Vec::new(),
            spent_xor: Vec::new(),
            media_expired: 0,
            reliable_overflow: false,
            nacks_ignored: 0,
            feedback_clamped: 0,
            next_frame_id: 0,
            chunk_payload: cfg.chunk_payload(),
            srtt: None,
            rttvar: Duration::ZERO,
            delivery: VecDeque::new(),
            max_frame: cfg.max_frame,
            target_bps,
            frame_bps: 0.0,
            fast_bps: 0.0,
            burst_cap: 0.0,
            max_message: cfg
                .max_datagram
                .saturating_sub(crate::crypto::OVERHEAD + if cfg.relay.is_some() { 20 } else { 0 }),
            base_burst: cfg.pacer_burst.max(1) * cfg.max_datagram,
            max_datagram: cfg.max_datagram,
            batch: 1,
        }
    }

    /// Queues a raw (pre-crypto) handshake datagram.
    pub(crate) fn queue_raw(&mut self, datagram: &[u8]) {
        let mut b = self.pool.get();
        b.extend_from_slice(datagram);
        self.raw.push_back(b);
    }

    fn encode(&mut self, msg: &proto::Message) -> Result<Vec<u8>, SessionError> {
        let len = prost::Message::encoded_len(msg);
        if len > self.max_message {
            return Err(SessionError::MessageTooLarge {
                len,
                max: self.max_message,
            });
        }
        let mut b = self.pool.get();
        msg.encode(&mut b)
            .map_err(|e| SessionError::Encode(e.to_string()))?;
        Ok(b)
    }

    /// Queues an unreliable message.
    pub(crate) fn queue_message(
        &mut self,
        class: Class,
        msg: &proto::Message,
        deadline: Option<Instant>,
    ) -> Result<(), SessionError> {
        let buf = self.encode(msg)?;
        self.queue_encoded(class, buf, deadline);
        Ok(())
    }

    /// Queues an already encoded plaintext message.
    pub(crate) fn queue_encoded(&mut self, class: Class, buf: Vec<u8>, deadline: Option<Instant>) {
        let p = Pending::buf(buf, deadline, Kind::Other);
        match class {
            Class::Input => self.input.push_back(p),
            Class::Control | Class::File => self.control.push_back(p),
        }
    }

    /// A pooled buffer for encoding into.
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        self.pool.get()
    }

    fn recycle(&mut self, body: Body) {
        if let Body::Buf(b) = body {
            self.pool.put(b);
        }
    }

    /// Media datagrams waiting for the pacer.
    pub(crate) fn media_queued(&self) -> usize {
        self.media.len()
    }
}
