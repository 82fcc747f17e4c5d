//! The receiving half: frame reassembly with Reed-Solomon repair, the deadline (jitter) buffer
//! that emits frames in order and drops late ones instead of queueing behind them, loss
//! detection with NACKs, reliable-channel de-duplication and acknowledgement, and the
//! transport feedback that drives the peer's congestion control and FEC.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{Event, Frame, FrameMeta, SessionConfig, pool::BufPool, send::GROUP_SHARDS};
use crate::{
    fec::FecCodec,
    media::{self, FecPacketRef, MediaRef, VideoChunkRef},
    proto,
    replay::ReplayWindow,
};

const SLOTS: usize = 16;
const MAX_CHUNKS: usize = 4096;
/// Missing packet ids tracked for NACKs. A forward jump in packet id larger than this is
/// counted as lost in one step: only its newest gaps are tracked (a jump to 2^62 costs no
/// more than one of 512).
const MAX_MISSING: usize = 512;
const MAX_ACKS: usize = 64;
/// Packet ids per NACK message: 64 ids of up to 10 bytes fit any datagram (and a sender
/// serves no more than 64 per NACK).
const MAX_NACK_IDS: usize = 64;
const MAX_FRAME_LOSSES: usize = 32;
/// FEC groups kept per frame. The sender's groups are balanced, at most 64 chunks and at
/// least 25 when a frame has more than one (see `fec::groups`), so a frame of
/// [`MAX_CHUNKS`] chunks has at most 164; more come only from a hostile peer.
const MAX_GROUPS: usize = 192;
/// Parity shards kept per frame. The sender gives a group of `n` chunks at most `n` parity
/// shards (`FecPolicy::parity_for`), so a frame needs at most its chunk count; this caps
/// frames whose count is not known yet, and the largest ones.
const MAX_FRAME_PARITY: usize = 1024;
/// Parity shards kept across every frame under assembly (each at most 2 KiB: about 4 MiB).
pub const MAX_HELD_PARITY: usize = 2048;
/// Most `FrameDropped` events for frame ids that never showed up, when the stream skips
/// ahead: a jump of 2^62 frame ids is reported as this many, then skipped in one step.
const MAX_SKIPPED_EVENTS: u64 = SLOTS as u64;

#[derive(Debug, Default)]
struct Parity {
    group_first: u32,
    index: u32,
    buf: Vec<u8>,
}

/// Longest envelope (the message bytes around a chunk's payload) kept per chunk so its FEC
/// shard can be rebuilt for a repair; ours are about 40 bytes.
const ENVELOPE: usize = 88;

/// What the receiver keeps of one chunk: its payload is already in the frame.
#[derive(Debug, Clone, Copy)]
struct ChunkRec {
    present: bool,
    /// Payload length.
    len: u32,
    /// Envelope bytes before and after the payload; `pre == u8::MAX`: too long to keep, so
    /// this chunk's group cannot take part in a repair.
    pre: u8,
    post: u8,
    env: [u8; ENVELOPE],
}

impl ChunkRec {
    const EMPTY: Self = Self {
        present: false,
        len: 0,
        pre: 0,
        post: 0,
        env: [0; ENVELOPE],
    };

    /// Records a chunk from its whole message `raw` and the payload's range in it.
    fn record(&mut self, raw: &[u8], (at, len): (u32, u32)) {
        let (at, len) = (at as usize, len as usize);
        let post = raw.len() - at - len;
        self.present = true;
        self.len = len as u32;
        if at + post <= ENVELOPE {
            self.pre = at as u8;
            self.post = post as u8;
            self.env[..at].copy_from_slice(&raw[..at]);
            self.env[at..at + post].copy_from_slice(&raw[at + len..]);
        } else {
            self.pre = u8::MAX;
        }
    }
}

/// A frame being reassembled. Payloads are written straight into `frame` (chunk `i` at
/// `i × chunk_len`) as they arrive: one copy per byte on the common path. A shard is rebuilt
/// from its envelope and the frame only when a repair needs it.
#[derive(Debug, Default)]
struct Slot {
    active: bool,
    done: bool,
    frame_id: u64,
    count: u32,
    meta: FrameMeta,
    deadline: Option<Instant>,
    /// Payload length of every chunk but the last; 0 until one of them arrives.
    chunk_len: u32,
    /// The last chunk's payload length, once it is in the frame.
    last_len: Option<u32>,
    chunks: Vec<ChunkRec>,
    /// The frame under assembly (a recycled buffer keeps its length: no zeroing per frame).
    frame: Vec<u8>,
    /// The last chunk's whole message, when it came before `chunk_len` was known.
    early_last: Option<(Vec<u8>, (u32, u32))>,
    have: u32,
    /// (first chunk, data shards, parity shards, shard bytes) per group seen in parity.
    groups: Vec<(u32, u32, u32, usize)>,
    parity: Vec<Parity>,
    recovered: u32,
}

impl Slot {
    /// Writes chunk `idx`'s payload into the frame. False when it contradicts the frame's
    /// geometry (every chunk but the last equally long, the last no longer, the frame within
    /// `max_frame`): such a chunk is malformed and dropped. Also false when the frame buffer
    /// would have to grow past `cap` bytes (the receiver's frame budget).
    fn place(&mut self, idx: usize, payload: &[u8], max_frame: usize, cap: usize) -> bool {
        let count = self.count as usize;
        let len = payload.len();
        let grow = self.growth(idx, len);
        if grow > 0 && self.frame.capacity().saturating_add(grow) > cap {
            return false;
        }
        if idx + 1 < count {
            if self.chunk_len == 0 {
                if len == 0 || (count - 1).saturating_mul(len) >= max_frame {
                    return false;
                }
                self.chunk_len = len as u32;
            } else if len != self.chunk_len as usize {
                return false;
            }
        } else if (count > 1 && (len == 0 || len > self.chunk_len as usize)) || len > max_frame {
            return false;
        }
        let at = idx * self.chunk_len as usize;
        let end = at + len;
        let whole = self.whole(end);
        let f = &mut self.frame;
        if f.capacity() < whole {
            // Grow once to the whole frame, not chunk by chunk (exactly: the receiver's
            // frame budget counts capacities, see `Receiver::frame_room`).
            f.reserve_exact(whole - f.len());
        }
        if f.len() == at {
            f.extend_from_slice(payload);
        } else {
            if f.len() < end {
                f.resize(end, 0);
            }
            f[at..end].copy_from_slice(payload);
        }
        if idx + 1 == count {
            self.last_len = Some(len as u32);
        }
        true
    }

    /// Moves a last chunk that arrived before `chunk_len` was known into the frame, once it
    /// is known.
    fn place_early_last(&mut self, pool: &mut BufPool, max_frame: usize, cap: usize) {
        if self.chunk_len == 0 {
            return;
        }
        let Some((b, (at, len))) = self.early_last.take() else {
            return;
        };
        let last = self.count as usize - 1;
        if self.place(last, &b[at as usize..(at + len) as usize], max_frame, cap) {
            self.chunks[last].record(&b, (at, len));
        } else {
            // It does not fit the frame after all: as if never received.
            self.chunks[last].present = false;
            self.have -= 1;
        }
        pool.put(b);
    }

    /// Appends chunk `k`'s FEC shard (its whole message) to `out`; false if it is absent or
    /// its envelope was not kept.
    fn shard_into(&self, k: usize, out: &mut Vec<u8>) -> bool {
        let r = &self.chunks[k];
        if !r.present {
            return false;
        }
        if k + 1 == self.count as usize {
            if let Some((raw, _)) = &self.early_last {
                out.extend_from_slice(raw);
                return true;
            }
        }
        if r.pre == u8::MAX {
            return false;
        }
        let (pre, post) = (r.pre as usize, r.post as usize);
        let at = k * self.chunk_len as usize;
        let Some(payload) = self.frame.get(at..at + r.len as usize) else {
            return false;
        };
        out.extend_from_slice(&r.env[..pre]);
        out.extend_from_slice(payload);
        out.extend_from_slice(&r.env[pre..pre + post]);
        true
    }

    /// Capacity the frame grows to when a chunk ending at `end` needs room.
    fn whole(&self, end: usize) -> usize {
        (self.count as usize * self.chunk_len as usize).max(end)
    }

    /// Bytes the frame buffer may still grow by once chunk `idx` of `len` payload bytes is
    /// in (to the whole frame, as far as its geometry is known; 0: it fits already).
    fn growth(&self, idx: usize, len: usize) -> usize {
        let chunk_len = if self.chunk_len == 0 && idx + 1 < self.count as usize {
            len
        } else {
            self.chunk_len as usize
        };
        let end = idx.saturating_mul(chunk_len).saturating_add(len);
        let whole = (self.count as usize).saturating_mul(chunk_len).max(end);
        whole.saturating_sub(self.frame.capacity())
    }

    /// Length of the complete frame.
    fn total(&self) -> Option<usize> {
        let last = self.last_len? as usize;
        Some((self.count as usize - 1) * self.chunk_len as usize + last)
    }
}

/// Feedback counters since the previous report.
#[derive(Debug, Default)]
struct Acc {
    received: u32,
    lost: u32,
    bytes: u64,
    first_at: Option<Instant>,
    highest: u64,
    highest_at: Option<Instant>,
    recovered: u32,
    frame_losses: Vec<u32>,
    acked: Vec<u64>,
}

/// Receiver state.
#[derive(Debug)]
pub(crate) struct Receiver {
    acc: Acc,
    next_feedback: Option<Instant>,
    expected: u64,
    missing: VecDeque<(u64, Instant, u8)>,
    reliable: ReplayWindow,
    slots: Vec<Slot>,
    next_emit: Option<u64>,
    /// min(arrival − sender timestamp), µs, relative to `epoch`.
    offset_us: Option<i128>,
    epoch: Option<Instant>,
    frame_interval: Duration,
    slack: Duration,
    pool: BufPool,
    frame_pool: Vec<Vec<u8>>,
    fec: FecCodec,
    /// Shard bytes rebuilt for a repair (reused).
    scratch: Vec<u8>,
    last_kf_request: Option<Instant>,
    jitter_us: f64,
    last_transit_us: Option<i128>,
    max_frame: usize,
    /// Most bytes of frame buffers (under assembly or pooled) this receiver holds.
    frame_budget: usize,
    /// Parity shards held across all slots (at most [`MAX_HELD_PARITY`]).
    parity_held: usize,
    recovered_total: u64,
    pub(crate) frames_delivered: u64,
    pub(crate) frames_dropped: u64,
    /// Chunks refused because the frame buffers' byte budget was spent.
    pub(crate) frame_budget_refused: u64,
    /// Authenticated packets whose id jumped further ahead than the NACK window.
    pub(crate) packet_id_jumps: u64,
}

/// Bytes of frame buffers a receiver may hold (under assembly or pooled) for a largest frame
/// of `max_frame` bytes: two such frames at once, and 1 MiB for the small ones around them.
pub fn frame_budget(max_frame: usize) -> usize {
    max_frame.saturating_mul(2).saturating_add(1 << 20)
}

/// Offset and length of `payload` (a sub-slice of `msg`) inside `msg`.
fn payload_range(msg: &[u8], payload: &[u8]) -> (u32, u32) {
    let at = (payload.as_ptr() as usize).saturating_sub(msg.as_ptr() as usize);
    (at as u32, payload.len() as u32)
}

impl Receiver {
    pub(crate) fn new(cfg: &SessionConfig) -> Self {
        Self {
            acc: Acc {
                frame_losses: Vec::with_capacity(MAX_FRAME_LOSSES),
                acked: Vec::with_capacity(MAX_ACKS),
                ..Acc::default()
            },
            next_feedback: None,
            expected: 1,
            missing: VecDeque::with_capacity(MAX_MISSING),
            reliable: ReplayWindow::new(),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            next_emit: None,
            offset_us: None,
            epoch: None,
            frame_interval: Duration::from_secs(1) / cfg.host.fps.max(1),
            slack: cfg.playout_slack,
            // Room for the largest parity shard accepted (2 KiB): no buffer grows per packet.
            pool: BufPool::new(2048),
            frame_pool: Vec::new(),
            fec: FecCodec::default(),
            scratch: Vec::new(),
            last_kf_request: None,
            jitter_us: 0.0,
            last_transit_us: None,
            max_frame: cfg.max_frame,
            frame_budget: frame_budget(cfg.max_frame),
            parity_held: 0,
            recovered_total: 0,
            frames_delivered: 0,
            frames_dropped: 0,
            frame_budget_refused: 0,
            packet_id_jumps: 0,
        }
    }

    /// Takes a delivered frame's buffer back. Its length is kept: the bytes are initialised,
    /// so the next frame assembled in it is written over them without zeroing first (they
    /// are never exposed: a frame is delivered only once every byte of it was written).
    pub(crate) fn recycle(&mut self, frame: Vec<u8>) {
        if self.frame_pool.len() < 32
            && frame.capacity() > 0
            && self.frame_bytes_held().saturating_add(frame.capacity()) <= self.frame_budget
        {
            self.frame_pool.push(frame);
        }
    }

    /// Bytes of frame buffers held: in the slots and pooled.
    fn frame_bytes_held(&self) -> usize {
        let slots: usize = self.slots.iter().map(|s| s.frame.capacity()).sum();
        let pooled: usize = self.frame_pool.iter().map(Vec::capacity).sum();
        slots + pooled
    }

    /// Capacity slot `i`'s frame buffer may grow to within the budget, given the others.
    fn slot_cap(&self, i: usize) -> usize {
        let others = self.frame_bytes_held() - self.slots[i].frame.capacity();
        self.frame_budget.saturating_sub(others)
    }

    /// Makes room for slot `i`'s frame buffer to grow by `need` bytes within the budget:
    /// pooled buffers go first, then idle slots' buffers. False if it still does not fit.
    fn frame_room(&mut self, i: usize, need: usize) -> bool {
        if need == 0 {
            return true;
        }
        let mut held = self.frame_bytes_held();
        while held.saturating_add(need) > self.frame_budget {
            if let Some(b) = self.frame_pool.pop() {
                held -= b.capacity();
                continue;
            }
            let Some(j) = (0..self.slots.len())
                .find(|&j| j != i && !self.slots[j].active && self.slots[j].frame.capacity() > 0)
            else {
                return false;
            };
            held -= std::mem::take(&mut self.slots[j].frame).capacity();
        }
        true
    }

    /// Chunks rebuilt from parity so far.
    /// Current inter-arrival jitter estimate, µs.
    pub(crate) fn jitter_us(&self) -> u32 {
        self.jitter_us as u32
    }

    pub(crate) fn recovered_total(&self) -> u64 {
        self.recovered_total
    }

    /// Counts an authenticated datagram for feedback and loss detection.
    pub(crate) fn on_packet(&mut self, now: Instant, pid: u64, wire_len: usize) {
        let a = &mut self.acc;
        a.received = a.received.saturating_add(1);
        a.bytes = a.bytes.saturating_add(wire_len as u64);
        a.first_at.get_or_insert(now);
        if pid >= a.highest {
            a.highest = pid;
            a.highest_at = Some(now);
        }
        if pid >= self.expected {
            let gaps = pid - self.expected;
            // Only the newest MAX_MISSING gaps fit the NACK list: older ones would be evicted
            // as soon as they were pushed, so a far jump (a peer's id leaping to 2^62) is one
            // step, not a walk over every id it skipped.
            let from = if gaps > MAX_MISSING as u64 {
                self.packet_id_jumps += 1;
                self.missing.clear();
                pid - MAX_MISSING as u64
            } else {
                self.expected
            };
            for gap in from..pid {
                if self.missing.len() == MAX_MISSING {
                    self.missing.pop_front();
                }
                self.missing.push_back((gap, now, 0));
            }
            a.lost = a
                .lost
                .saturating_add(u32::try_from(gaps).unwrap_or(u32::MAX));
            self.expected = pid.saturating_add(1);
        } else if let Some(i) = self.missing.iter().position(|&(m, _, _)| m == pid) {
            // Reordered, not lost.
            self.missing.remove(i);
            a.lost = a.lost.saturating_sub(1);
        }
        if self.next_feedback.is_none() {
            self.next_feedback = Some(now);
        }
    }

    /// Feedback due at `now`, if any; `interval` is the reporting period.
    pub(crate) fn poll_feedback(
        &mut self,
        now: Instant,
        interval: Duration,
    ) -> Option<proto::Message> {
        let due = self.next_feedback?;
        if now < due {
            return None;
        }
        let a = &mut self.acc;
        if a.received == 0 && a.acked.is_empty() {
            self.next_feedback = None;
            return None;
        }
        let span = a
            .first_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let fb = proto::TransportFeedback {
            highest_packet_id: a.highest,
            ack_delay_us: a
                .highest_at
                .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u32),
            received_packets: a.received,
            lost_packets: a.lost,
            received_bytes: a.bytes,
            interval_us: span.as_micros().min(u128::from(u32::MAX)) as u32,
            fec_recovered: a.recovered,
            jitter_us: self.jitter_us as u32,
            frame_losses: std::mem::take(&mut a.frame_losses),
            acked_reliable: std::mem::take(&mut a.acked),
        };
        a.received = 0;
        a.lost = 0;
        a.bytes = 0;
        a.first_at = Some(now);
        a.recovered = 0;
        self.next_feedback = Some(now + interval);
        Some(proto::Message {
            content: Some(proto::message::Content::Control(proto::ControlMessage {
                content: Some(proto::control_message::Content::Feedback(fb)),
            })),
            reliable_seq: 0,
        })
    }

    /// Gives the feedback message's vectors back after encoding (keeps their capacity).
    pub(crate) fn reclaim(&mut self, msg: proto::Message) {
        if let Some(proto::message::Content::Control(proto::ControlMessage {
            content: Some(proto::control_message::Content::Feedback(mut fb)),
        })) = msg.content
        {
            if self.acc.frame_losses.is_empty() {
                fb.frame_losses.clear();
                self.acc.frame_losses = fb.frame_losses;
            }
            if self.acc.acked.is_empty() {
                fb.acked_reliable.clear();
                self.acc.acked = fb.acked_reliable;
            }
        }
    }

    /// A NACK for packets missing longer than `hold`, re-asked every `retry` (twice at most).
    pub(crate) fn poll_nack(
        &mut self,
        now: Instant,
        hold: Duration,
        retry: Duration,
    ) -> Option<proto::Message> {
        let mut ids = Vec::new();
        for m in &mut self.missing {
            if ids.len() == MAX_NACK_IDS {
                // The rest go in the next NACK: one must fit a datagram.
                break;
            }
            let wait = if m.2 == 0 { hold } else { retry };
            if now.saturating_duration_since(m.1) >= wait && m.2 < 2 {
                ids.push(m.0);
                m.1 = now;
                m.2 += 1;
            }
        }
        while self
            .missing
            .front()
            .is_some_and(|m| m.2 >= 2 && now.saturating_duration_since(m.1) >= retry)
        {
            self.missing.pop_front();
        }
        (!ids.is_empty()).then_some(proto::Message {
            content: Some(proto::message::Content::Control(proto::ControlMessage {
                content: Some(proto::control_message::Content::Nack(proto::Nack {
                    packet_ids: ids,
                })),
            })),
            reliable_seq: 0,
        })
    }

    /// Next instant a NACK could become due.
    pub(crate) fn next_nack_time(&self, hold: Duration, retry: Duration) -> Option<Instant> {
        self.missing
            .iter()
            .filter(|m| m.2 < 2)
            .map(|m| m.1 + if m.2 == 0 { hold } else { retry })
            .min()
    }

    pub(crate) fn next_feedback_time(&self) -> Option<Instant> {
        self.next_feedback
    }

    /// Reliable-channel bookkeeping: true if this sequence number is new (deliver it).
    pub(crate) fn accept_reliable(&mut self, seq: u64) -> bool {
        if self.acc.acked.len() < MAX_ACKS {
            self.acc.acked.push(seq);
        }
        self.reliable.check_and_update(seq).is_ok()
    }

    fn slot_for(
        &mut self,
        frame_id: u64,
        now: Instant,
        events: &mut VecDeque<Event>,
    ) -> Option<usize> {
        if self.next_emit.is_some_and(|n| frame_id < n) {
            return None;
        }
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.active && s.frame_id == frame_id)
        {
            return Some(i);
        }
        let i = if let Some(i) = self.slots.iter().position(|s| !s.active) {
            i
        } else {
            // Out of slots: the oldest frame is dropped.
            let oldest = self
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.frame_id)
                .map(|(i, _)| i)?;
            if self.slots[oldest].frame_id > frame_id {
                return None;
            }
            self.drop_frame(oldest, now, events);
            oldest
        };
        let s = &mut self.slots[i];
        s.active = true;
        s.done = false;
        s.frame_id = frame_id;
        s.count = 0;
        s.have = 0;
        s.recovered = 0;
        s.deadline = None;
        s.groups.clear();
        s.chunk_len = 0;
        s.last_len = None;
        if s.frame.capacity() == 0 {
            if let Some(f) = self.frame_pool.pop() {
                s.frame = f;
            }
        }
        Some(i)
    }

    fn deadline_for(&mut self, now: Instant, ts_us: u64) -> Instant {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival =
            i128::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(i128::MAX);
        let transit = arrival - i128::from(ts_us);
        let off = self.offset_us.map_or(transit, |o| o.min(transit));
        self.offset_us = Some(off);
        if let Some(prev) = self.last_transit_us {
            let d = (transit - prev).abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last_transit_us = Some(transit);
        let local = i128::from(ts_us) + off;
        let base = epoch + Duration::from_micros(local.max(0) as u64);
        base + self.frame_interval + self.slack
    }

    /// A video chunk arrived (its plaintext `Message` bytes are `raw`). False if the chunk
    /// contradicts its frame's geometry (counted as malformed by the caller).
    pub(crate) fn on_chunk(
        &mut self,
        now: Instant,
        raw: &[u8],
        c: VideoChunkRef<'_>,
        events: &mut VecDeque<Event>,
    ) -> bool {
        if c.chunk_count == 0
            || c.chunk_count as usize > MAX_CHUNKS
            || c.chunk_index >= c.chunk_count
        {
            return false;
        }
        let Some(i) = self.slot_for(c.frame_id, now, events) else {
            return true;
        };
        if self.slots[i].count == 0 {
            let deadline = self.deadline_for(now, c.timestamp_us);
            let s = &mut self.slots[i];
            s.count = c.chunk_count;
            s.meta = FrameMeta {
                timestamp_us: c.timestamp_us,
                keyframe: c.keyframe,
                capture_us: c.capture_us,
                encode_us: c.encode_us,
            };
            s.deadline = Some(deadline);
            s.chunks.clear();
            s.chunks.resize(c.chunk_count as usize, ChunkRec::EMPTY);
        }
        let s = &mut self.slots[i];
        if s.done || s.count != c.chunk_count {
            return true;
        }
        let idx = c.chunk_index as usize;
        if s.chunks[idx].present {
            return true;
        }
        let need = s.growth(idx, c.payload.len());
        if !self.frame_room(i, need) {
            self.frame_budget_refused += 1;
            return true;
        }
        // Nothing in this call grows the buffer past the whole frame's geometry checked here.
        let cap = if need == 0 {
            usize::MAX
        } else {
            self.slot_cap(i)
        };
        let s = &mut self.slots[i];
        let range = payload_range(raw, c.payload);
        if idx + 1 == s.count as usize && s.count > 1 && s.chunk_len == 0 {
            // The last chunk first: where it goes is known once another chunk arrives.
            if c.payload.is_empty() || c.payload.len() > self.max_frame {
                return false;
            }
            let mut b = self.pool.get();
            b.extend_from_slice(raw);
            s.early_last = Some((b, range));
        } else if !s.place(idx, c.payload, self.max_frame, cap) {
            return false;
        }
        s.chunks[idx].record(raw, range);
        s.have += 1;
        s.place_early_last(&mut self.pool, self.max_frame, cap);
        self.try_repair(i, c.chunk_index);
        self.try_complete(i, now, events);
        true
    }

    /// A parity packet arrived. False if it was refused: over a cap (per group, per frame,
    /// per session) or contradicting its group's geometry.
    pub(crate) fn on_parity(
        &mut self,
        now: Instant,
        p: &FecPacketRef<'_>,
        events: &mut VecDeque<Event>,
    ) -> bool {
        let n = if p.data_shards > 0 {
            p.data_shards
        } else {
            p.shard_lengths.as_slice().len() as u32
        };
        if n == 0
            || n as usize > GROUP_SHARDS
            || p.shard_count <= n
            // A group of n chunks carries at most min(n, MAX_PARITY) parity shards.
            || p.shard_count - n > n.min(crate::fec::MAX_PARITY as u32)
            || p.parity_index < n
            || p.parity_index >= p.shard_count
            || p.payload.len() > 2048
        {
            return false;
        }
        let Some(i) = self.slot_for(p.group_id, now, events) else {
            return true;
        };
        if self.slots[i].count == 0 && self.slots[i].deadline.is_none() {
            // Parity before any chunk: the slot expires like an on-time frame would, until a
            // chunk brings the frame's own deadline.
            self.slots[i].deadline = Some(now + self.frame_interval + self.slack);
        }
        let held = self.parity_held;
        let s = &mut self.slots[i];
        if s.done {
            return true;
        }
        let first = u32::try_from(p.first_chunk).unwrap_or(u32::MAX);
        let geometry = (n, p.shard_count - n, p.payload.len());
        match s.groups.iter().find(|g| g.0 == first) {
            Some(g) if (g.1, g.2, g.3) != geometry => return false,
            Some(_) => {}
            None => {
                let end = u64::from(first) + u64::from(n);
                let overlaps = s.groups.iter().any(|g| {
                    u64::from(first) < u64::from(g.0) + u64::from(g.1) && u64::from(g.0) < end
                });
                if overlaps
                    || s.groups.len() >= MAX_GROUPS
                    || (s.count > 0 && end > u64::from(s.count))
                {
                    return false;
                }
                s.groups
                    .push((first, n, p.shard_count - n, p.payload.len()));
            }
        }
        if s.parity
            .iter()
            .any(|x| x.group_first == first && x.index == p.parity_index)
        {
            return true;
        }
        if s.parity.len() >= MAX_FRAME_PARITY
            || (s.count > 0 && s.parity.len() >= s.count as usize)
            || held >= MAX_HELD_PARITY
        {
            return false;
        }
        let mut b = self.pool.get();
        b.extend_from_slice(p.payload);
        s.parity.push(Parity {
            group_first: first,
            index: p.parity_index,
            buf: b,
        });
        self.parity_held += 1;
        self.try_repair(i, first);
        self.try_complete(i, now, events);
        true
    }

    /// Rebuilds the missing chunks of the group holding chunk `at` (what just arrived: a
    /// chunk, or a parity shard naming its group's first chunk) if it has enough shards.
    fn try_repair(&mut self, i: usize, at: u32) {
        let max_frame = self.max_frame;
        let s = &self.slots[i];
        // Without parity there is nothing to repair with (the common case: every chunk of a
        // group arrives before its parity).
        if s.count == 0 || s.done || s.parity.is_empty() {
            return;
        }
        let cap = self.slot_cap(i);
        let s = &mut self.slots[i];
        for g in 0..s.groups.len() {
            let (first, n, p, sb) = s.groups[g];
            if at < first || at - first >= n {
                continue;
            }
            let (first_u, n_u) = (first as usize, n as usize);
            if first_u + n_u > s.chunks.len() || sb % 2 != 0 {
                continue;
            }
            // No parity of the group yet (on a clean path, every chunk before its parity):
            // nothing to repair with, so the chunks need no count.
            let parity_have = s.parity.iter().filter(|x| x.group_first == first).count();
            if parity_have == 0 {
                continue;
            }
            let present = s.chunks[first_u..first_u + n_u]
                .iter()
                .filter(|x| x.present)
                .count();
            if present == n_u || present + parity_have < n_u {
                continue;
            }
            let mut restored: [Option<Vec<u8>>; GROUP_SHARDS] = std::array::from_fn(|_| None);
            let pool = &mut self.pool;
            let scratch = &mut self.scratch;
            let slot = &*s;
            let result = self.fec.decode_with(
                sb,
                n_u,
                p as usize,
                |feed| {
                    for k in 0..n_u {
                        scratch.clear();
                        if !slot.chunks[first_u + k].present {
                            continue;
                        }
                        if !slot.shard_into(first_u + k, scratch) || scratch.len() > sb {
                            return Err(crate::fec::FecError::Params("shard not kept".into()));
                        }
                        scratch.resize(sb, 0);
                        feed.original(k, scratch)?;
                    }
                    for x in slot.parity.iter().filter(|x| x.group_first == first) {
                        if x.buf.len() == sb {
                            feed.recovery((x.index - n) as usize, &x.buf)?;
                        }
                    }
                    Ok(())
                },
                |k, bytes| {
                    if k < GROUP_SHARDS {
                        let mut b = pool.get();
                        b.extend_from_slice(bytes);
                        restored[k] = Some(b);
                    }
                },
            );
            if result.is_err() {
                continue;
            }
            for (k, r) in restored.iter_mut().enumerate() {
                let Some(mut b) = r.take() else { continue };
                let len = media::message_len(&b).unwrap_or(0);
                b.truncate(len);
                // The rebuilt bytes must be the chunk they claim to be, and fit the frame.
                let idx = first_u + k;
                if let Ok(MediaRef::Video(v)) = media::decode(&b) {
                    if v.frame_id == s.frame_id
                        && v.chunk_index as usize == idx
                        && v.chunk_count == s.count
                        && !s.chunks[idx].present
                        && s.place(idx, v.payload, max_frame, cap)
                    {
                        let range = payload_range(&b, v.payload);
                        s.chunks[idx].record(&b, range);
                        s.have += 1;
                        s.recovered += 1;
                    }
                }
                pool.put(b);
            }
            s.place_early_last(pool, max_frame, cap);
        }
    }

    fn try_complete(&mut self, i: usize, now: Instant, events: &mut VecDeque<Event>) {
        let s = &mut self.slots[i];
        if s.done || s.count == 0 || s.have < s.count || s.early_last.is_some() {
            return;
        }
        // Every chunk is in place, so every byte up to the total was written.
        let Some(total) = s.total().filter(|&t| t <= s.frame.len()) else {
            return;
        };
        s.frame.truncate(total);
        s.done = true;
        self.acc.recovered += s.recovered;
        self.recovered_total += u64::from(s.recovered);
        let permille = s.recovered * 1000 / s.count.max(1);
        if self.acc.frame_losses.len() < MAX_FRAME_LOSSES {
            self.acc.frame_losses.push(permille);
        }
        self.emit(now, events);
    }

    fn release(&mut self, i: usize) {
        let s = &mut self.slots[i];
        s.active = false;
        s.done = false;
        if let Some((b, _)) = s.early_last.take() {
            self.pool.put(b);
        }
        self.parity_held -= s.parity.len();
        for p in s.parity.drain(..) {
            self.pool.put(p.buf);
        }
        // A dropped frame's buffer stays with the slot for the next frame.
    }

    fn drop_frame(&mut self, i: usize, now: Instant, events: &mut VecDeque<Event>) {
        let s = &self.slots[i];
        let frame_id = s.frame_id;
        let count = s.count.max(1);
        let missing = s.count.saturating_sub(s.have);
        if self.acc.frame_losses.len() < MAX_FRAME_LOSSES {
            self.acc
                .frame_losses
                .push((missing + s.recovered) * 1000 / count);
        }
        self.release(i);
        self.frames_dropped += 1;
        events.push_back(Event::FrameDropped { frame_id });
        if self.next_emit.is_none_or(|n| n <= frame_id) {
            self.next_emit = Some(frame_id.saturating_add(1));
        }
        let _ = now;
    }

    /// Emits complete frames in order; frames behind an incomplete one wait for it until its
    /// deadline (then it is dropped) — never longer.
    fn emit(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        loop {
            let next = match self.next_emit {
                Some(n) => n,
                None => match self
                    .slots
                    .iter()
                    .filter(|s| s.active)
                    .map(|s| s.frame_id)
                    .min()
                {
                    Some(m) => m,
                    None => return,
                },
            };
            let Some(i) = self
                .slots
                .iter()
                .position(|s| s.active && s.frame_id == next)
            else {
                // The next frame has not shown up at all: skip it once a later frame is due.
                let later = self
                    .slots
                    .iter()
                    .filter(|s| s.active && s.frame_id > next)
                    .min_by_key(|s| s.frame_id);
                match later {
                    Some(l) if l.deadline.is_some_and(|d| d <= now) || l.done => {
                        // Every id up to the later frame is skipped in one step; a far jump
                        // reports only its first few as dropped.
                        let to = l.frame_id;
                        for frame_id in next..to.min(next.saturating_add(MAX_SKIPPED_EVENTS)) {
                            events.push_back(Event::FrameDropped { frame_id });
                        }
                        self.next_emit = Some(to);
                        continue;
                    }
                    _ => return,
                }
            };
            if self.slots[i].done {
                let s = &mut self.slots[i];
                events.push_back(Event::Frame(Frame {
                    frame_id: s.frame_id,
                    meta: s.meta,
                    data: std::mem::take(&mut s.frame),
                    fec_recovered: s.recovered,
                }));
                self.frames_delivered += 1;
                self.next_emit = Some(next.saturating_add(1));
                self.release(i);
                continue;
            }
            if self.slots[i].deadline.is_some_and(|d| d <= now) {
                self.drop_frame(i, now, events);
                continue;
            }
            return;
        }
    }

    /// Drops frames past their deadline; returns true if a keyframe request should go out.
    pub(crate) fn on_timeout(
        &mut self,
        now: Instant,
        min_gap: Duration,
        events: &mut VecDeque<Event>,
    ) -> Option<u64> {
        let before = events.len();
        self.emit(now, events);
        // Late frames that are not next in line: drop when past deadline too.
        for i in 0..self.slots.len() {
            if self.slots[i].active
                && !self.slots[i].done
                && self.slots[i].deadline.is_some_and(|d| d <= now)
            {
                self.drop_frame(i, now, events);
            }
        }
        self.emit(now, events);
        let dropped = events
            .iter()
            .skip(before)
            .any(|e| matches!(e, Event::FrameDropped { .. }));
        if dropped
            && self
                .last_kf_request
                .is_none_or(|t| now.saturating_duration_since(t) >= min_gap)
        {
            self.last_kf_request = Some(now);
            return Some(self.next_emit.unwrap_or(1).saturating_sub(1));
        }
        None
    }

    /// Earliest frame deadline still pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.active && !s.done)
            .filter_map(|s| s.deadline)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crypto::PeerPolicy, identity::WavryId, media::ShardLengths, session::Role};

    const C: usize = 100;

    fn receiver() -> Receiver {
        Receiver::new(&SessionConfig::new(
            Role::Client,
            PeerPolicy::Pinned(WavryId::from_bytes([7; 32])),
        ))
    }

    /// A frame of `len` bytes as the sender encodes it: chunk messages of `C`-byte payloads.
    fn chunks(frame: &[u8]) -> Vec<Vec<u8>> {
        let n = frame.len().div_ceil(C);
        (0..n)
            .map(|i| {
                let mut b = Vec::new();
                VideoChunkRef {
                    frame_id: 0,
                    chunk_index: i as u32,
                    chunk_count: n as u32,
                    timestamp_us: 1_000,
                    keyframe: true,
                    payload: &frame[i * C..((i + 1) * C).min(frame.len())],
                    capture_us: 3,
                    encode_us: 4,
                }
                .append_to(&mut b);
                b
            })
            .collect()
    }

    /// Reed-Solomon parity messages over all of `msgs` as one group.
    fn parity(msgs: &[Vec<u8>], p: usize) -> Vec<Vec<u8>> {
        let sb = crate::fec::shard_bytes(msgs.iter().map(Vec::len).max().unwrap());
        let padded: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m.resize(sb, 0);
                m
            })
            .collect();
        let mut out = Vec::new();
        FecCodec::default()
            .encode(
                sb,
                msgs.len(),
                p,
                padded.iter().map(Vec::as_slice),
                |j, b| {
                    let pkt = FecPacketRef {
                        group_id: 0,
                        first_chunk: 0,
                        shard_count: (msgs.len() + p) as u32,
                        parity_index: (msgs.len() + j) as u32,
                        payload: b,
                        shard_lengths: ShardLengths::default(),
                        data_shards: msgs.len() as u32,
                    };
                    let mut buf = vec![0; pkt.encoded_len()];
                    pkt.encode(&mut buf).unwrap();
                    out.push(buf);
                },
            )
            .unwrap();
        out
    }

    fn feed(r: &mut Receiver, now: Instant, msg: &[u8], events: &mut VecDeque<Event>) -> bool {
        match media::decode(msg).unwrap() {
            MediaRef::Video(c) => r.on_chunk(now, msg, c, events),
            MediaRef::Fec(p) => r.on_parity(now, &p, events),
            _ => panic!("not video"),
        }
    }

    fn frames(events: &VecDeque<Event>) -> Vec<&Frame> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn chunks_in_any_order_assemble_the_frame_in_place() {
        let frame = sample(1_050);
        let now = Instant::now();
        let mut r = receiver();
        let mut events = VecDeque::new();
        // Reverse order: the short last chunk first, before the chunk length is known.
        for m in chunks(&frame).iter().rev() {
            assert!(feed(&mut r, now, m, &mut events));
        }
        let got = frames(&events);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, frame);
        // A recycled buffer longer than the next frame: the stale tail is cut off.
        let Some(Event::Frame(f)) = events.pop_front() else {
            panic!()
        };
        r.recycle(f.data);
        let next = sample(250);
        let mut events = VecDeque::new();
        for mut m in chunks(&next) {
            // Same encoding, next frame id.
            m.clone_from(&{
                let mut b = Vec::new();
                let MediaRef::Video(mut c) = media::decode(&m).unwrap() else {
                    panic!()
                };
                c.frame_id = 1;
                c.append_to(&mut b);
                b
            });
            assert!(feed(&mut r, now, &m, &mut events));
        }
        assert_eq!(frames(&events)[0].data, next);
    }

    #[test]
    fn chunks_that_contradict_the_frame_geometry_are_refused() {
        let frame = sample(1_050);
        let now = Instant::now();
        let mut r = receiver();
        let mut events = VecDeque::new();
        let msgs = chunks(&frame);
        assert!(feed(&mut r, now, &msgs[0], &mut events));
        // Chunk 1 claiming a different length than chunk 0.
        let mut b = Vec::new();
        VideoChunkRef {
            frame_id: 0,
            chunk_index: 1,
            chunk_count: msgs.len() as u32,
            timestamp_us: 1_000,
            keyframe: true,
            payload: &frame[..C - 1],
            capture_us: 3,
            encode_us: 4,
        }
        .append_to(&mut b);
        assert!(!feed(&mut r, now, &b, &mut events));
        // A last chunk longer than the others.
        let mut b = Vec::new();
        VideoChunkRef {
            frame_id: 0,
            chunk_index: msgs.len() as u32 - 1,
            chunk_count: msgs.len() as u32,
            timestamp_us: 1_000,
            keyframe: true,
            payload: &frame[..=C],
            capture_us: 3,
            encode_us: 4,
        }
        .append_to(&mut b);
        assert!(!feed(&mut r, now, &b, &mut events));
        // The genuine chunks still complete the frame.
        for m in &msgs[1..] {
            assert!(feed(&mut r, now, m, &mut events));
        }
        assert_eq!(frames(&events)[0].data, frame);
    }

    #[test]
    fn repair_rebuilds_shards_from_envelopes_and_the_frame() {
        let frame = sample(1_050);
        let msgs = chunks(&frame);
        let par = parity(&msgs, 2);
        let now = Instant::now();
        let mut r = receiver();
        let mut events = VecDeque::new();
        // Chunks 0 and 4 lost; the last arrives first.
        feed(&mut r, now, &msgs[10], &mut events);
        for i in [1, 2, 3, 5, 6, 7, 8, 9] {
            feed(&mut r, now, &msgs[i], &mut events);
        }
        assert!(frames(&events).is_empty());
        feed(&mut r, now, &par[0], &mut events);
        assert!(frames(&events).is_empty(), "two losses, one parity shard");
        feed(&mut r, now, &par[1], &mut events);
        let got = frames(&events);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, frame);
        assert_eq!(got[0].fec_recovered, 2);
    }

    #[test]
    fn repair_from_the_last_chunk_alone_places_it_once_the_length_is_known() {
        let frame = sample(250);
        let msgs = chunks(&frame);
        assert_eq!(msgs.len(), 3);
        let par = parity(&msgs, 2);
        let now = Instant::now();
        let mut r = receiver();
        let mut events = VecDeque::new();
        feed(&mut r, now, &msgs[2], &mut events);
        feed(&mut r, now, &par[0], &mut events);
        feed(&mut r, now, &par[1], &mut events);
        let got = frames(&events);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, frame);
        assert_eq!(got[0].fec_recovered, 2);
    }
}
