//! The sending half: priority queues (input ahead of control ahead of media), video
//! packetisation with parity per group (a single XOR shard built as the chunks leave, or
//! Reed-Solomon), pacing of media in equal-size GSO batches, the packet history that serves
//! NACKs (retransmissions are re-sealed under a fresh packet id, so relays' replay windows
//! never drop them), the reliable control channel, and RTT/delivery-rate sampling from
//! transport feedback.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use prost::Message as _;

use super::{SessionConfig, SessionError, pool::BufPool};
use crate::{
    fec::{self, FecCodec, FecPolicy},
    media::{FecPacketRef, ShardLengths, VideoChunkRef},
    pacer::Pacer,
    proto,
};

/// Data shards per FEC group.
pub(crate) const GROUP_SHARDS: usize = crate::media::MAX_GROUP_SHARDS;
const HISTORY: usize = 2048;
const MAX_DATAGRAM_BUF: usize = 2048;

/// Priority classes, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Input,
    Control,
    /// File-transfer chunks: reliable, paced with media, rate-limited where produced.
    File,
}

/// Reliable sequence numbers a sender may have in flight past the oldest unacknowledged
/// one. The receiver's duplicate filter is a 128-wide replay window, and it acknowledges
/// what falls below it as a duplicate; keeping every first transmission within 96 of the
/// oldest outstanding one makes "below the window" always mean "already delivered".
pub(crate) const RELIABLE_SPAN: u64 = 96;

/// Reliable messages kept awaiting acknowledgement (each in a buffer of at most 2 KiB: about
/// 2 MiB). A peer that never acknowledges, while its Hellos or refused file offers each
/// queue a reliable answer, would otherwise grow the queue without bound: past this the
/// session closes ([`super::CloseReason::ReliableQueueFull`]).
pub const MAX_UNACKED: usize = 1024;

/// Most acknowledgements taken from one feedback report (a receiver lists at most 64).
const MAX_ACKS_PER_REPORT: usize = 256;

/// Largest acknowledgement delay believed from feedback: a receiver reports every 5..25 ms,
/// so more is a lie that would shave the RTT sample towards zero.
const MAX_ACK_DELAY: Duration = Duration::from_millis(100);

/// Retransmissions one sent packet gets for NACKs: a receiver asks twice at most.
const MAX_NACK_SERVES: u8 = 2;

/// A chunk message's bytes around its payload (at most 59 bytes for a video chunk),
/// computed once per chunk when its frame is queued: they serve the parity computation and
/// every transmission of the chunk.
#[derive(Debug, Clone, Copy)]
struct Envelope {
    /// Bytes before the payload; `u8::MAX`: not computed (encode the chunk generically).
    pre: u8,
    post: u8,
    bytes: [u8; 62],
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

/// One FEC group's single parity shard, built as the group's chunks are written into the
/// send buffer (XOR of each chunk's message while it is hot in cache), not in a pass over the
/// frame when it is queued: the frame's bytes are then read once, not twice.
#[derive(Debug)]
struct XorGroup {
    first: u32,
    len: u32,
    /// Shard bytes: the group's longest chunk message, rounded up (see `fec::shard_bytes`).
    acc: Vec<u8>,
    /// Chunks XORed into `acc` so far (each once, on its first transmission).
    xored: u32,
}

impl XorGroup {
    /// The parity message (FecPacket) of this group of frame `frame_id`.
    fn packet(&self, frame_id: u64) -> FecPacketRef<'_> {
        FecPacketRef {
            group_id: frame_id,
            first_chunk: u64::from(self.first),
            shard_count: self.len + 1,
            parity_index: self.len,
            payload: &self.acc,
            shard_lengths: ShardLengths::default(),
            data_shards: self.len,
        }
    }
}

/// A frame being sent: its bytes stay here, in one buffer, until its deadline, serving
/// first transmissions and NACKs (queue and history entries refer to its chunks).
#[derive(Debug)]
struct OutFrame {
    id: u64,
    data: Vec<u8>,
    meta: super::FrameMeta,
    count: u32,
    /// Payload bytes per chunk.
    chunk: usize,
    deadline: Instant,
    /// Per chunk: its message bytes around the payload.
    envs: Vec<Envelope>,
    /// Single-parity groups, in order (empty when parity is Reed-Solomon).
    xor: Vec<XorGroup>,
}

impl OutFrame {
    /// Computes every chunk's envelope into `envs`: the full chunks' envelopes differ only in
    /// the chunk index, so one is computed and the index rewritten for the others (again
    /// whenever the index's varint grows a byte); the last chunk's is computed on its own.
    fn fill_envelopes(&mut self) {
        self.envs.clear();
        self.envs.reserve(self.count as usize);
        let mut template: Option<(Envelope, crate::media::IndexSlot)> = None;
        for i in 0..self.count {
            let last = i + 1 == self.count;
            if let (false, Some((t, slot))) = (last, &template) {
                // Rewritten in its place in `envs`: rewriting a copy and then pushing it
                // re-read the bytes just written (a store-forwarding stall per chunk).
                let pre = usize::from(t.pre);
                self.envs.push(*t);
                if let Some(e) = self.envs.last_mut()
                    && slot.write(&mut e.bytes[..pre], i)
                {
                    continue;
                }
                self.envs.pop();
            }
            let e = self.envelope(i);
            if !last && e.pre != u8::MAX {
                template = self
                    .chunk_ref(i)
                    .and_then(|c| c.index_slot())
                    .map(|slot| (e, slot));
            }
            self.envs.push(e);
        }
    }

    /// Chunk `index`'s envelope, computed on its own.
    fn envelope(&self, index: u32) -> Envelope {
        let mut e = Envelope {
            pre: u8::MAX,
            post: 0,
            bytes: [0; 62],
        };
        if let Some((pre, post)) = self.chunk_ref(index).and_then(|c| c.envelope(&mut e.bytes)) {
            e.pre = pre as u8;
            e.post = post as u8;
        }
        e
    }

    fn payload(&self, index: u32) -> Option<&[u8]> {
        let at = index as usize * self.chunk;
        self.data.get(at..(at + self.chunk).min(self.data.len()))
    }

    /// Length of chunk `index`'s message.
    fn message_len(&self, index: u32) -> Option<usize> {
        let e = self.envs.get(index as usize)?;
        if e.pre == u8::MAX {
            return self.chunk_ref(index).map(|c| c.encoded_len());
        }
        Some(e.pre as usize + self.payload(index)?.len() + e.post as usize)
    }

    /// Writes chunk `index`'s message into `out` (at least [`Self::message_len`] bytes).
    fn write_chunk(&self, index: u32, out: &mut [u8]) -> bool {
        let (Some(e), Some(payload)) = (self.envs.get(index as usize), self.payload(index)) else {
            return false;
        };
        if e.pre == u8::MAX {
            return self.chunk_ref(index).is_some_and(|c| c.encode(out).is_ok());
        }
        let (pre, post) = (e.pre as usize, e.post as usize);
        let end = pre + payload.len();
        out[..pre].copy_from_slice(&e.bytes[..pre]);
        out[pre..end].copy_from_slice(payload);
        out[end..end + post].copy_from_slice(&e.bytes[pre..pre + post]);
        true
    }

    /// XORs chunk `index`'s message into `acc` (a parity shard), without assembling it.
    fn xor_chunk(&self, index: u32, acc: &mut [u8], scratch: &mut Vec<u8>) {
        let (Some(e), Some(payload)) = (self.envs.get(index as usize), self.payload(index)) else {
            return;
        };
        if e.pre == u8::MAX {
            if let Some(c) = self.chunk_ref(index) {
                scratch.clear();
                c.append_to(scratch);
                fec::xor_into(acc, scratch);
            }
            return;
        }
        let (pre, post) = (e.pre as usize, e.post as usize);
        let end = pre + payload.len();
        fec::xor_into(acc, &e.bytes[..pre]);
        fec::xor_into(&mut acc[pre..], payload);
        fec::xor_into(&mut acc[end..], &e.bytes[pre..pre + post]);
    }

    /// Adds chunk `index`'s message (as written into a datagram) to its group's parity.
    fn xor_sent(&mut self, index: u32, message: &[u8]) {
        if let Some(g) = self
            .xor
            .iter_mut()
            .find(|g| (g.first..g.first + g.len).contains(&index))
        {
            fec::xor_into(&mut g.acc, message);
            g.xored += 1;
        }
    }

    /// Group `group`'s parity shard, complete: chunks that never went out (dropped as stale,
    /// say) mean it is rebuilt from the frame.
    fn xor_parity(&mut self, group: u32, scratch: &mut Vec<u8>) -> Option<&XorGroup> {
        let g = self.xor.get(group as usize)?;
        if g.xored != g.len {
            let (first, len) = (g.first, g.len);
            let mut acc = std::mem::take(&mut self.xor[group as usize].acc);
            acc.fill(0);
            for i in first..first + len {
                self.xor_chunk(i, &mut acc, scratch);
            }
            let g = &mut self.xor[group as usize];
            g.acc = acc;
            g.xored = len;
        }
        self.xor.get(group as usize)
    }

    fn chunk_ref(&self, index: u32) -> Option<VideoChunkRef<'_>> {
        let payload = self.payload(index)?;
        Some(VideoChunkRef {
            frame_id: self.id,
            chunk_index: index,
            chunk_count: self.count,
            timestamp_us: self.meta.timestamp_us,
            keyframe: self.meta.keyframe,
            payload,
            capture_us: self.meta.capture_us,
            encode_us: self.meta.encode_us,
        })
    }
}

/// Spent frame buffers kept for reuse.
const SPENT_FRAMES: usize = 64;

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

#[derive(Debug, Default)]
struct HistEntry {
    packet_id: u64,
    sent_at: Option<Instant>,
    /// What was sent, kept for NACK service (media only).
    body: Option<Body>,
    deadline: Option<Instant>,
    /// Retransmissions served for NACKs of this packet.
    served: u8,
}

#[derive(Debug)]
struct Unacked {
    seq: u64,
    class: Class,
    buf: Vec<u8>,
    next_send: Instant,
    sends: u32,
}

/// Outcome of filling one transmit.
pub(crate) struct Sealed {
    pub(crate) len: usize,
    pub(crate) segment: Option<usize>,
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

/// Pacing rate relative to the target bitrate: frames drain within about 2/3 of an interval.
const PACING_GAIN: f64 = 1.5;
/// Fastest pacing relative to the target, for frames much larger than average.
const MAX_BURST_GAIN: f64 = 4.0;

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
            max_message: cfg
                .max_datagram
                .saturating_sub(crate::crypto::OVERHEAD + if cfg.relay.is_some() { 20 } else { 0 }),
            base_burst: cfg.pacer_burst.max(1) * cfg.max_datagram,
            max_datagram: cfg.max_datagram,
            batch: 1,
        }
    }

    /// Sizes the pacer's bucket like TCP's TSO autosizing: about 1 ms of the pacing rate, at
    /// least the configured burst, at most one batch the driver can send at once (GSO). At
    /// tens of Mbit/s this is the configured burst; on a fast path it lets a whole GSO batch
    /// leave in one send instead of a few datagrams per loop turn, while still spreading a
    /// frame over its pacing interval.
    fn resize_burst(&mut self) {
        let per_ms = usize::try_from(self.pacer.rate_bps() / 8_000).unwrap_or(usize::MAX);
        let cap = self.batch.saturating_mul(self.max_datagram);
        let burst = self.base_burst.max(per_ms.min(cap));
        if burst != self.pacer.burst_bytes() {
            self.pacer.set_burst(burst);
        }
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Retransmission timeout for the reliable channel. Acknowledgements ride the next
    /// feedback report, which goes out every `srtt / 4` (5..25 ms): that delay is added on
    /// top of the RTT estimate (QUIC's max_ack_delay), or every ack would race its timer.
    fn rto(&self) -> Duration {
        self.srtt
            .map_or(Duration::from_millis(250), |s| {
                let ack_delay = (s / 4).clamp(Duration::from_millis(5), Duration::from_millis(25));
                s + 4 * self.rttvar + ack_delay + Duration::from_millis(5)
            })
            .max(Duration::from_millis(20))
    }

    /// The encoder's share of `bps` once parity for a typical frame is paid for.
    pub(crate) fn encoder_budget(&self, bps: u64) -> u64 {
        let n = 32;
        let p = self.fec_policy.parity_for(n);
        bps * n as u64 / (n + p) as u64
    }

    pub(crate) fn set_target(&mut self, bps: u64) {
        self.target_bps = bps;
        self.pace();
    }

    /// Sets the pacer from the target and the latest frame's need. Latency first: a frame
    /// should leave within half an interval, so large frames (keyframes) are paced faster,
    /// but never above MAX_BURST_GAIN × target, so a keyframe cannot flood a bottleneck DELTA
    /// has measured. A target change re-clamps the frame's rate rather than replacing it: a
    /// change mid-keyframe once slowed the keyframe's tail to PACING_GAIN × target and it
    /// expired unsent (test `a_target_change_mid_keyframe_keeps_its_burst_rate`).
    fn pace(&mut self) {
        let target = self.target_bps as f64;
        let rate = self
            .frame_bps
            .clamp(target * PACING_GAIN, target * MAX_BURST_GAIN);
        self.pacer.set_rate(rate as u64);
        self.resize_burst();
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

    /// Queues a message on the reliable channel: retransmitted until acknowledged.
    pub(crate) fn queue_reliable(
        &mut self,
        class: Class,
        mut msg: proto::Message,
        now: Instant,
    ) -> Result<u64, SessionError> {
        if self.unacked.len() >= MAX_UNACKED {
            self.reliable_overflow = true;
            return Err(SessionError::ReliableQueueFull);
        }
        let seq = self.alloc_seq();
        msg.reliable_seq = seq;
        let buf = self.encode(&msg)?;
        self.push_reliable_encoded(seq, class, buf, now)?;
        Ok(seq)
    }

    /// Takes the next reliable sequence number (for messages encoded by the caller).
    pub(crate) fn alloc_seq(&mut self) -> u64 {
        let seq = self.next_reliable;
        self.next_reliable += 1;
        seq
    }

    /// Queues an encoded reliable message whose `reliable_seq` came from [`Self::alloc_seq`].
    /// Refused (and the overflow flagged) when [`MAX_UNACKED`] messages already wait.
    pub(crate) fn push_reliable_encoded(
        &mut self,
        seq: u64,
        class: Class,
        buf: Vec<u8>,
        now: Instant,
    ) -> Result<(), SessionError> {
        if self.unacked.len() >= MAX_UNACKED {
            self.reliable_overflow = true;
            self.pool.put(buf);
            return Err(SessionError::ReliableQueueFull);
        }
        self.unacked.push_back(Unacked {
            seq,
            class,
            buf,
            next_send: now,
            sends: 0,
        });
        Ok(())
    }

    /// Index of reliable message `seq` in the queue (which is in sequence order).
    fn unacked_index(&self, seq: u64) -> Option<usize> {
        self.unacked.binary_search_by_key(&seq, |u| u.seq).ok()
    }

    /// Sequence numbers that may still be allocated before first transmissions stall on
    /// [`RELIABLE_SPAN`].
    pub(crate) fn reliable_room(&self) -> u64 {
        let oldest = self.unacked.front().map_or(self.next_reliable, |u| u.seq);
        (oldest + RELIABLE_SPAN).saturating_sub(self.next_reliable)
    }

    /// Stops retransmitting `seq` (its transfer was abandoned).
    pub(crate) fn forget_reliable(&mut self, seq: u64) {
        if let Some(i) = self.unacked_index(seq) {
            if let Some(u) = self.unacked.remove(i) {
                self.pool.put(u.buf);
            }
        }
    }

    /// A buffer for a frame's bytes (a spent frame's, when there is one).
    pub(crate) fn frame_buffer(&mut self) -> Vec<u8> {
        let mut b = self.spent.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Hands back the buffer of a frame that no longer needs it (see `Session::send_frame_buf`).
    pub(crate) fn take_spent(&mut self) -> Option<Vec<u8>> {
        self.spent.pop()
    }

    fn spend(&mut self, buf: Vec<u8>, envs: Vec<Envelope>, mut xor: Vec<XorGroup>) {
        if self.spent.len() < SPENT_FRAMES && buf.capacity() > 0 {
            self.spent.push(buf);
        }
        if self.spent_envs.len() < SPENT_FRAMES && envs.capacity() > 0 {
            self.spent_envs.push(envs);
        }
        for g in xor.drain(..) {
            self.pool.put(g.acc);
        }
        if self.spent_xor.len() < SPENT_FRAMES && xor.capacity() > 0 {
            self.spent_xor.push(xor);
        }
    }

    /// Releases frames past their deadline (none of their chunks can be of use any more):
    /// from the front of the store, and with `scan_all` (once per queued frame) anywhere in it.
    fn release_frames(&mut self, now: Instant, scan_all: bool) {
        if scan_all {
            // Deadlines need not grow with frame ids (the frame interval can change): a frame
            // past its deadline gives its buffers back even behind one that is not, and stays
            // in the store, empty, until it reaches the front.
            for i in 0..self.frames.len() {
                if self.frames[i].deadline <= now {
                    let f = &mut self.frames[i];
                    let data = std::mem::take(&mut f.data);
                    let (envs, xor) = (std::mem::take(&mut f.envs), std::mem::take(&mut f.xor));
                    self.spend(data, envs, xor);
                }
            }
        }
        while self.frames.front().is_some_and(|f| f.deadline <= now) {
            if let Some(f) = self.frames.pop_front() {
                self.spend(f.data, f.envs, f.xor);
            }
        }
    }

    fn frame(&self, id: u64) -> Option<&OutFrame> {
        let first = self.frames.front()?.id;
        let f = self
            .frames
            .get(usize::try_from(id.checked_sub(first)?).ok()?)?;
        (f.id == id).then_some(f)
    }

    fn frames_mut(&mut self, id: u64) -> Option<&mut OutFrame> {
        let first = self.frames.front()?.id;
        let f = self
            .frames
            .get_mut(usize::try_from(id.checked_sub(first)?).ok()?)?;
        (f.id == id).then_some(f)
    }

    /// Message length of a body that refers into the frame store; `None` once its frame
    /// is gone (or for an owned buffer).
    fn frame_ref_len(&self, body: &Body) -> Option<usize> {
        match *body {
            Body::Buf(_) => None,
            Body::Chunk { frame, index } => self.frame(frame)?.message_len(index),
            Body::Parity { frame, group } => {
                let g = self.frame(frame)?.xor.get(group as usize)?;
                Some(g.packet(frame).encoded_len())
            }
        }
    }

    /// Keeps a frame and queues its chunks plus parity for paced sending.
    pub(crate) fn queue_frame(
        &mut self,
        now: Instant,
        data: Vec<u8>,
        meta: super::FrameMeta,
        frame_interval: Duration,
        slack: Duration,
    ) -> Result<u64, SessionError> {
        let c = self.chunk_payload;
        let n = data.len().div_ceil(c);
        let count = match u32::try_from(n) {
            Ok(count) if !data.is_empty() && data.len() <= self.max_frame => count,
            _ => {
                let len = data.len();
                self.spend(data, Vec::new(), Vec::new());
                return Err(SessionError::FrameSize(len));
            }
        };
        self.release_frames(now, true);
        let frame_id = self.next_frame_id;
        self.next_frame_id += 1;
        let wire = data.len() as f64 * 1.1 * 8.0;
        self.frame_bps = wire / (frame_interval.as_secs_f64() / 2.0).max(1e-3);
        self.pace();
        let deadline = now + frame_interval + self.srtt.unwrap_or(Duration::ZERO) / 2 + slack;
        let mut frame = OutFrame {
            id: frame_id,
            data,
            meta,
            count,
            chunk: c,
            deadline,
            envs: self.spent_envs.pop().unwrap_or_default(),
            xor: self.spent_xor.pop().unwrap_or_default(),
        };
        frame.fill_envelopes();
        self.frames.push_back(frame);
        let group = self.fec_policy.group_size(n, GROUP_SHARDS);
        let mut result = Ok(());
        for (first, len) in fec::groups(n, group) {
            let parity = self.fec_policy.parity_for(len);
            if let Err(e) = self.queue_group(frame_id, first, len, parity, deadline) {
                result = Err(e);
            }
        }
        result.map(|()| frame_id)
    }

    /// Queues one FEC group of the newest frame: its chunks (by reference), then parity.
    fn queue_group(
        &mut self,
        frame_id: u64,
        first: usize,
        len: usize,
        parity: usize,
        deadline: Instant,
    ) -> Result<(), SessionError> {
        let Some(frame) = self.frames.back_mut() else {
            return Ok(());
        };
        let mut max_len = 0;
        for i in first..first + len {
            let Some(l) = frame.message_len(i as u32) else {
                continue;
            };
            max_len = max_len.max(l);
            self.media.push_back(Pending {
                body: Body::Chunk {
                    frame: frame_id,
                    index: i as u32,
                },
                len: l,
                deadline: Some(deadline),
                kind: Kind::Chunk,
            });
        }
        let sb = fec::shard_bytes(max_len);
        fec::check(len, parity, sb).map_err(|e| SessionError::Encode(e.to_string()))?;
        let shard_count = (len + parity) as u32;
        let parity_msg = |j: usize, bytes: &[u8], out: &mut Vec<u8>| {
            let pkt = FecPacketRef {
                group_id: frame_id,
                first_chunk: first as u64,
                shard_count,
                parity_index: (len + j) as u32,
                payload: bytes,
                shard_lengths: ShardLengths::default(),
                data_shards: len as u32,
            };
            out.resize(pkt.encoded_len(), 0);
            let _ = pkt.encode(out);
        };
        if parity == 1 {
            // One parity shard (the clean path) is the XOR of the group's chunk messages
            // (see fec::xor_into): no padding, no codec pass, and built as the chunks leave
            // (see XorGroup).
            let mut acc = self.pool.get();
            acc.resize(sb, 0);
            let g = XorGroup {
                first: first as u32,
                len: len as u32,
                acc,
                xored: 0,
            };
            let len = g.packet(frame_id).encoded_len();
            let group = frame.xor.len() as u32;
            frame.xor.push(g);
            self.media.push_back(Pending {
                body: Body::Parity {
                    frame: frame_id,
                    group,
                },
                len,
                deadline: Some(deadline),
                kind: Kind::Parity,
            });
            return Ok(());
        }
        let scratch = &mut self.scratch;
        let mut outs = std::mem::take(&mut self.parity_scratch);
        for _ in 0..parity {
            outs.push(self.pool.get());
        }
        let res = self.fec.encode_with(
            sb,
            len,
            parity,
            |feed| {
                for i in first..first + len {
                    scratch.clear();
                    if let Some(chunk) = frame.chunk_ref(i as u32) {
                        chunk.append_to(scratch);
                    }
                    scratch.resize(sb, 0);
                    feed.original(scratch)?;
                }
                Ok(())
            },
            |j, bytes| parity_msg(j, bytes, &mut outs[j]),
        );
        for b in outs.drain(..) {
            if res.is_ok() {
                self.media
                    .push_back(Pending::buf(b, Some(deadline), Kind::Parity));
            } else {
                self.pool.put(b);
            }
        }
        self.parity_scratch = outs;
        res.map_err(|e| SessionError::Encode(e.to_string()))
    }

    /// Earliest instant something could be sent (None: nothing queued).
    pub(crate) fn next_send_time(&self, now: Instant) -> Option<Instant> {
        if !self.raw.is_empty() || !self.input.is_empty() || !self.control.is_empty() {
            return Some(now);
        }
        let oldest = self.unacked.front().map_or(0, |u| u.seq);
        let reliable = self
            .unacked
            .iter()
            // Held back by the span: they wait for an acknowledgement, not a timer.
            .filter(|u| u.sends > 0 || u.seq < oldest + RELIABLE_SPAN)
            .map(|u| {
                if u.class == Class::File {
                    u.next_send
                        .max(self.pacer.next_send_time(now, u.buf.len() + 64))
                } else {
                    u.next_send
                }
            })
            .min();
        let media = self
            .media
            .front()
            .map(|p| self.pacer.next_send_time(now, p.len + 64));
        [reliable, media].into_iter().flatten().min()
    }

    fn recycle(&mut self, body: Body) {
        if let Body::Buf(b) = body {
            self.pool.put(b);
        }
    }

    /// Drops media that can no longer arrive in time, and frames no chunk of which can.
    fn drop_stale(&mut self, now: Instant) {
        while self
            .media
            .front()
            .is_some_and(|p| p.deadline.is_some_and(|d| d <= now))
        {
            if let Some(p) = self.media.pop_front() {
                self.media_expired += 1;
                self.recycle(p.body);
            }
        }
        self.release_frames(now, false);
    }

    /// Picks the next plaintext to seal; raw datagrams (handshake) are returned with
    /// `raw = true` and are sent as they are.
    fn next_plain(&mut self, now: Instant, only_media: bool) -> Option<(Pending, bool)> {
        if only_media {
            return self.next_media(now).map(|p| (p, false));
        }
        if let Some(b) = self.raw.pop_front() {
            return Some((Pending::buf(b, None, Kind::Other), true));
        }
        for q in [&mut self.input, &mut self.control] {
            while q
                .front()
                .is_some_and(|p| p.deadline.is_some_and(|d| d <= now))
            {
                if let Some(Pending {
                    body: Body::Buf(b), ..
                }) = q.pop_front()
                {
                    self.pool.put(b);
                }
            }
        }
        let oldest = self.unacked.front().map_or(0, |u| u.seq);
        for class in [Class::Input, Class::Control, Class::File] {
            let pacer = &self.pacer;
            if let Some(i) = self.unacked.iter().position(|u| {
                u.class == class
                    && u.next_send <= now
                    && (u.sends > 0 || u.seq < oldest + RELIABLE_SPAN)
                    // File chunks are paced with media.
                    && (class != Class::File || pacer.next_send_time(now, u.buf.len() + 64) <= now)
            }) {
                let rto = self.rto();
                let u = &mut self.unacked[i];
                u.sends += 1;
                u.next_send = now + rto * (1 << (u.sends - 1).min(4));
                let kind = match (u.sends > 1, class) {
                    (true, _) => Kind::ReliableRetransmit,
                    (false, Class::File) => Kind::File,
                    (false, _) => Kind::Other,
                };
                let mut b = self.pool.get();
                b.extend_from_slice(&u.buf);
                return Some((Pending::buf(b, None, kind), false));
            }
            let q = match class {
                Class::Input => &mut self.input,
                Class::Control => &mut self.control,
                Class::File => continue,
            };
            if let Some(p) = q.pop_front() {
                return Some((p, false));
            }
        }
        self.next_media(now).map(|p| (p, false))
    }

    /// The next media datagram, if the pacer allows it now.
    fn next_media(&mut self, now: Instant) -> Option<Pending> {
        self.drop_stale(now);
        let len = self.media.front()?.len + 64;
        if self.pacer.next_send_time(now, len) <= now {
            return self.media.pop_front();
        }
        None
    }

    /// Writes `body`'s plaintext into `out` (at least its length); false if its frame is
    /// gone (it was past its deadline).
    fn write_body(&mut self, body: &Body, out: &mut [u8]) -> bool {
        match body {
            Body::Buf(b) => {
                out[..b.len()].copy_from_slice(b);
                true
            }
            Body::Chunk { frame, index } => self
                .frame(*frame)
                .is_some_and(|f| f.write_chunk(*index, out)),
            Body::Parity { frame, group } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                let ok = self.frames_mut(*frame).is_some_and(|f| {
                    f.xor_parity(*group, &mut scratch)
                        .is_some_and(|g| g.packet(*frame).encode(out).is_ok())
                });
                self.scratch = scratch;
                ok
            }
        }
    }

    /// Fills `out` with up to `max_datagrams` datagrams (equal sizes for GSO). Each
    /// plaintext is written in place, `prefix` bytes (the relay header) plus the 18-byte RIFT
    /// header into its datagram (raw handshake datagrams right after `prefix`); then
    /// `seal(datagram, plaintext_len, raw) -> (packet_id, datagram_len)` finishes it.
    #[allow(clippy::too_many_arguments)] // one call site; a parameter struct would only rename them
    pub(crate) fn fill(
        &mut self,
        now: Instant,
        out: &mut [u8],
        max_datagrams: usize,
        max_datagram: usize,
        prefix: usize,
        mut seal: impl FnMut(&mut [u8], usize, bool) -> Option<(u64, usize)>,
        stats: &mut super::SessionStats,
    ) -> Option<Sealed> {
        let batch = max_datagrams
            .max(1)
            .min(out.len() / max_datagram.max(1))
            .max(1);
        if batch > self.batch {
            self.batch = batch;
            self.resize_burst();
        }
        let mut at = 0;
        let mut segment = None;
        let mut count = 0;
        // Size every datagram of a GSO batch is padded to (see `batch_size`).
        let mut size = 0;
        let max = max_datagrams.max(1);
        while count < max {
            // After the first datagram only media is appended (GSO batches are media runs).
            let Some((p, raw)) = self.next_plain(now, count > 0) else {
                break;
            };
            let sealed = prefix + if raw { 0 } else { crate::crypto::OVERHEAD };
            let expected = p.len + sealed;
            let room = out.len() - at;
            let too_big = segment.is_some_and(|s| expected > s);
            if count > 0 && (room < max_datagram.min(out.len()) || too_big) {
                // Not sealed, so no packet id is consumed: it goes first next time.
                self.media.push_front(p);
                break;
            }
            if count == 0 && !raw && max > 1 && p.kind.is_media() {
                size = self.batch_size(expected, sealed, max - 1);
            }
            // Padding only pays when another datagram may follow in this batch.
            let pad =
                if size > expected && count + 1 < max && !self.media.is_empty() && room >= size {
                    size - expected
                } else {
                    0
                };
            let plain_at = at + prefix + if raw { 0 } else { 18 };
            if room < expected || !self.write_body(&p.body, &mut out[plain_at..]) {
                // Its frame is gone: released at its deadline.
                self.media_expired += 1;
                self.recycle(p.body);
                continue;
            }
            if let (Kind::Chunk, Body::Chunk { frame, index }) = (p.kind, &p.body) {
                // First transmission: the message joins its group's parity while hot.
                if let Some(f) = self.frames_mut(*frame) {
                    f.xor_sent(*index, &out[plain_at..plain_at + p.len]);
                }
            }
            // Zero padding after the message (receivers cut it, see media::unpadded).
            out[plain_at + p.len..plain_at + p.len + pad].fill(0);
            let Some((pid, n)) = seal(&mut out[at..], p.len + pad, raw) else {
                self.recycle(p.body);
                continue;
            };
            let kind = p.kind;
            stats.datagrams_sent += 1;
            stats.bytes_sent += n as u64;
            match kind {
                Kind::Chunk => {
                    stats.chunks_sent += 1;
                    stats.video_bytes += n as u64;
                }
                Kind::Parity => {
                    stats.parity_sent += 1;
                    stats.parity_bytes += n as u64;
                }
                Kind::Retransmit => stats.retransmitted += 1,
                Kind::ReliableRetransmit => stats.reliable_retransmits += 1,
                Kind::File => stats.file_chunks_sent += 1,
                Kind::Other => {}
            }
            if matches!(
                kind,
                Kind::Chunk | Kind::Parity | Kind::Retransmit | Kind::File
            ) {
                self.pacer.on_sent(now, n);
            }
            if raw {
                self.recycle(p.body);
            } else {
                self.remember(pid, now, p.body, p.deadline, kind);
            }
            let first_size = *segment.get_or_insert(n);
            at += n;
            count += 1;
            if n < first_size || raw || !kind.is_media() {
                break;
            }
        }
        if at == 0 {
            return None;
        }
        Some(Sealed {
            len: at,
            segment: if count > 1 { segment } else { None },
        })
    }

    /// The size of every datagram in a GSO batch that starts with one of `first` bytes: the
    /// largest among it and the next `more` queued media datagrams (each `sealed` bytes over
    /// its message). Smaller ones are zero-padded to it, so a parity datagram (a little
    /// larger than the chunks it covers), a frame's short last chunk or the next frame's
    /// chunks do not end the batch: the kernel's cost per datagram falls steeply with the
    /// number of segments per send (measured in `wavry-bench net`).
    fn batch_size(&self, first: usize, sealed: usize, more: usize) -> usize {
        self.media
            .iter()
            .take(more)
            .map(|p| p.len + sealed)
            .fold(first, usize::max)
    }

    fn remember(
        &mut self,
        pid: u64,
        now: Instant,
        body: Body,
        deadline: Option<Instant>,
        kind: Kind,
    ) {
        let slot = (pid % HISTORY as u64) as usize;
        let keep = kind.is_media();
        let old = std::mem::replace(
            &mut self.history[slot],
            HistEntry {
                packet_id: pid,
                sent_at: Some(now),
                body: None,
                deadline,
                served: 0,
            },
        );
        if let Some(b) = old.body {
            self.recycle(b);
        }
        if keep {
            self.history[slot].body = Some(body);
        } else {
            self.recycle(body);
        }
        self.expire_history(now, pid);
    }

    /// Releases what sent media whose deadline has passed kept for NACKs, oldest first,
    /// stopping at the first one still useful (ids older than the history are skipped), so
    /// the buffers in circulation stay few and warm in cache.
    fn expire_history(&mut self, now: Instant, newest: u64) {
        self.history_expiry = self
            .history_expiry
            .max(newest.saturating_sub(HISTORY as u64 - 1));
        while self.history_expiry < newest {
            let e = &mut self.history[(self.history_expiry % HISTORY as u64) as usize];
            if e.packet_id == self.history_expiry && e.body.is_some() {
                if e.deadline.is_some_and(|d| d > now) {
                    return;
                }
                if let Some(b) = e.body.take() {
                    self.recycle(b);
                }
            }
            self.history_expiry += 1;
        }
    }

    /// A NACK listed these packet ids: re-queue those still useful before their deadline.
    pub(crate) fn on_nack(&mut self, now: Instant, ids: &[u64]) -> u32 {
        let half_rtt = self.srtt.unwrap_or(Duration::ZERO) / 2;
        let mut n = 0;
        for &pid in ids.iter().take(64) {
            let slot = (pid % HISTORY as u64) as usize;
            let e = &mut self.history[slot];
            if e.packet_id != pid
                || e.served >= MAX_NACK_SERVES
                || e.deadline.is_none_or(|d| d <= now + half_rtt)
            {
                self.nacks_ignored += 1;
                continue;
            }
            e.served += 1;
            let e = &self.history[slot];
            let deadline = e.deadline;
            let p = match &e.body {
                Some(Body::Buf(src)) => {
                    let mut b = self.pool.get();
                    b.extend_from_slice(src);
                    Pending::buf(b, deadline, Kind::Retransmit)
                }
                Some(sent) => {
                    let (Some(body), Some(len)) = (sent.frame_ref(), self.frame_ref_len(sent))
                    else {
                        continue;
                    };
                    Pending {
                        body,
                        len,
                        deadline,
                        kind: Kind::Retransmit,
                    }
                }
                None => continue,
            };
            self.media.push_front(p);
            n += 1;
        }
        n
    }

    /// Processes transport feedback: RTT sample, delivery rate, reliable acks, FEC policy.
    /// Returns (rtt sample, delivery rate bps).
    /// `congested`: the path's queue is over DELTA's limit, so losses in this report are
    /// congestion drops that parity would only worsen; they do not raise the FEC rate.
    pub(crate) fn on_feedback(
        &mut self,
        now: Instant,
        fb: &crate::feedback::FeedbackRef<'_>,
        congested: bool,
    ) -> (Option<Duration>, Option<u64>) {
        for seq in fb.acked_reliable.iter().take(MAX_ACKS_PER_REPORT) {
            if let Some(i) = self.unacked_index(seq) {
                if let Some(u) = self.unacked.remove(i) {
                    self.pool.put(u.buf);
                }
            }
        }
        if !congested {
            self.fec_policy.on_feedback(
                fb.received_packets,
                fb.lost_packets,
                fb.frame_losses
                    .iter()
                    .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            );
        }
        let ack_delay = Duration::from_micros(u64::from(fb.ack_delay_us));
        let mut clamped = ack_delay > MAX_ACK_DELAY;
        let e = &self.history[(fb.highest_packet_id % HISTORY as u64) as usize];
        let rtt = (e.packet_id == fb.highest_packet_id)
            .then_some(e.sent_at)
            .flatten()
            .map(|t| {
                now.saturating_duration_since(t)
                    .saturating_sub(ack_delay.min(MAX_ACK_DELAY))
            })
            .filter(|r| !r.is_zero());
        if let Some(r) = rtt {
            match self.srtt {
                None => {
                    self.srtt = Some(r);
                    self.rttvar = r / 2;
                }
                Some(s) => {
                    let diff = s.abs_diff(r);
                    self.rttvar = (self.rttvar * 3 + diff) / 4;
                    self.srtt = Some((s * 7 + r) / 8);
                }
            }
        }
        if fb.interval_us > 0 {
            // A datagram is at most MAX_DATAGRAM_BUF bytes: a report cannot claim more.
            let most = u64::from(fb.received_packets).saturating_mul(MAX_DATAGRAM_BUF as u64);
            clamped |= fb.received_bytes > most;
            if self.delivery.len() == 64 {
                self.delivery.pop_front();
            }
            self.delivery
                .push_back((now, fb.received_bytes.min(most), fb.interval_us));
        }
        // Delivery rate over the most recent ≥ 100 ms of feedback.
        let mut bytes = 0u64;
        let mut us = 0u64;
        for &(_, b, i) in self.delivery.iter().rev() {
            bytes = bytes.saturating_add(b);
            us += u64::from(i);
            if us >= 100_000 {
                break;
            }
        }
        let rate = (us >= 20_000).then(|| {
            let bps = u128::from(bytes) * 8 * 1_000_000 / u128::from(us);
            // Nothing arrives faster than this side sends: at most its pacing rate (which
            // runs ahead of the target), with room for bursts.
            let most = self.pacer.rate_bps().saturating_mul(2);
            clamped |= bps > u128::from(most);
            u64::try_from(bps).unwrap_or(u64::MAX).min(most)
        });
        if clamped {
            self.feedback_clamped += 1;
        }
        (rtt, rate)
    }

    /// Reliable messages awaiting acknowledgement.
    pub(crate) fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Media datagrams waiting for the pacer.
    pub(crate) fn media_queued(&self) -> usize {
        self.media.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of `len` bytes with envelopes computed and one single-parity group over all
    /// of its chunks.
    fn frame(len: usize) -> OutFrame {
        let mut f = OutFrame {
            id: 300,
            data: (0..len).map(|i| (i * 13 + 7) as u8).collect(),
            meta: super::super::FrameMeta {
                timestamp_us: 123_456,
                ..Default::default()
            },
            count: len.div_ceil(100) as u32,
            chunk: 100,
            deadline: Instant::now(),
            envs: Vec::new(),
            xor: Vec::new(),
        };
        f.fill_envelopes();
        let sb = fec::shard_bytes((0..f.count).filter_map(|i| f.message_len(i)).max().unwrap());
        f.xor.push(XorGroup {
            first: 0,
            len: f.count,
            acc: vec![0; sb],
            xored: 0,
        });
        f
    }

    /// The group's parity computed in one pass over the frame (the reference).
    fn reference(f: &OutFrame) -> Vec<u8> {
        let mut acc = vec![0; f.xor[0].acc.len()];
        for i in 0..f.count {
            f.xor_chunk(i, &mut acc, &mut Vec::new());
        }
        acc
    }

    /// Writes chunk `i` as `fill` does and adds it to the parity.
    fn send(f: &mut OutFrame, i: u32) {
        let mut out = vec![0; f.message_len(i).unwrap()];
        assert!(f.write_chunk(i, &mut out));
        f.xor_sent(i, &out);
    }

    #[test]
    fn envelopes_from_the_template_equal_envelopes_computed_one_by_one() {
        // Frames from one chunk to past 128 chunks (the index's varint grows a byte), with
        // frame ids and metadata that change the envelope's length.
        for (len, id, keyframe) in [
            (1, 0, false),
            (99, 1, true),
            (100, 300, false),
            (101, 0, true),
            (12_700, 1 << 40, false),
            (12_800, 300, true),
            (12_801, 7, false),
            (13_137, 0, false),
            (40_000, u64::MAX >> 1, true),
        ] {
            let mut f = frame(len);
            f.id = id;
            f.meta.keyframe = keyframe;
            f.meta.capture_us = 5_000;
            f.fill_envelopes();
            assert_eq!(f.envs.len(), f.count as usize);
            for i in 0..f.count {
                let (got, want) = (f.envs[i as usize], f.envelope(i));
                assert_eq!(
                    (got.pre, got.post),
                    (want.pre, want.post),
                    "{len} B, chunk {i}"
                );
                let n = usize::from(got.pre) + usize::from(got.post);
                assert_eq!(got.bytes[..n], want.bytes[..n], "{len} B, chunk {i}");
                let mut out = vec![0; f.message_len(i).unwrap()];
                assert!(f.write_chunk(i, &mut out));
                let mut generic = Vec::new();
                f.chunk_ref(i).unwrap().append_to(&mut generic);
                assert_eq!(out, generic, "{len} B, chunk {i}");
            }
        }
    }

    #[test]
    fn parity_built_as_chunks_leave_equals_one_pass_over_the_frame() {
        let mut f = frame(1_234);
        let want = reference(&f);
        for i in 0..f.count {
            send(&mut f, i);
        }
        let g = f.xor_parity(0, &mut Vec::new()).unwrap();
        assert_eq!(g.xored, g.len);
        assert_eq!(g.acc, want);
    }

    #[test]
    fn parity_of_a_group_with_unsent_chunks_is_rebuilt_from_the_frame() {
        let mut f = frame(1_234);
        let want = reference(&f);
        // Chunks 3 and 7 never went out (dropped as stale, say).
        for i in (0..f.count).filter(|&i| i != 3 && i != 7) {
            send(&mut f, i);
        }
        assert_eq!(f.xor[0].xored, f.count - 2);
        let g = f.xor_parity(0, &mut Vec::new()).unwrap();
        assert_eq!(g.xored, g.len);
        assert_eq!(g.acc, want);
        assert!(f.xor_parity(1, &mut Vec::new()).is_none());
    }
}
