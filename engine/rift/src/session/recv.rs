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
const MAX_MISSING: usize = 512;
const MAX_ACKS: usize = 64;
const MAX_FRAME_LOSSES: usize = 32;

#[derive(Debug, Default)]
struct Parity {
    group_first: u32,
    index: u32,
    buf: Vec<u8>,
}

#[derive(Debug, Default)]
struct Slot {
    active: bool,
    done: bool,
    frame_id: u64,
    count: u32,
    meta: FrameMeta,
    deadline: Option<Instant>,
    shards: Vec<Option<Vec<u8>>>,
    /// Where each shard's chunk payload sits inside its buffer (so completion copies without
    /// decoding again).
    payload_at: Vec<(u32, u32)>,
    have: u32,
    /// (first chunk, data shards, parity shards, shard bytes) per group seen in parity.
    groups: Vec<(u32, u32, u32, usize)>,
    parity: Vec<Parity>,
    recovered: u32,
    frame: Option<Vec<u8>>,
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
    last_kf_request: Option<Instant>,
    jitter_us: f64,
    last_transit_us: Option<i128>,
    max_frame: usize,
    recovered_total: u64,
    pub(crate) frames_delivered: u64,
    pub(crate) frames_dropped: u64,
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
            pool: BufPool::new(1500),
            frame_pool: Vec::new(),
            fec: FecCodec::default(),
            last_kf_request: None,
            jitter_us: 0.0,
            last_transit_us: None,
            max_frame: cfg.max_frame,
            recovered_total: 0,
            frames_delivered: 0,
            frames_dropped: 0,
        }
    }

    pub(crate) fn recycle(&mut self, mut frame: Vec<u8>) {
        if self.frame_pool.len() < 32 {
            frame.clear();
            self.frame_pool.push(frame);
        }
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
        a.received += 1;
        a.bytes += wire_len as u64;
        a.first_at.get_or_insert(now);
        if pid >= a.highest {
            a.highest = pid;
            a.highest_at = Some(now);
        }
        if pid >= self.expected {
            for gap in self.expected..pid {
                if self.missing.len() == MAX_MISSING {
                    self.missing.pop_front();
                }
                self.missing.push_back((gap, now, 0));
                a.lost += 1;
            }
            self.expected = pid + 1;
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

    /// A video chunk arrived (its plaintext `Message` bytes are `raw`).
    pub(crate) fn on_chunk(
        &mut self,
        now: Instant,
        raw: &[u8],
        c: VideoChunkRef<'_>,
        events: &mut VecDeque<Event>,
    ) {
        if c.chunk_count == 0
            || c.chunk_count as usize > MAX_CHUNKS
            || c.chunk_index >= c.chunk_count
        {
            return;
        }
        let Some(i) = self.slot_for(c.frame_id, now, events) else {
            return;
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
            s.shards.resize_with(c.chunk_count as usize, || None);
            s.payload_at.clear();
            s.payload_at.resize(c.chunk_count as usize, (0, 0));
            for sh in &mut s.shards {
                if let Some(b) = sh.take() {
                    self.pool.put(b);
                }
            }
        }
        let s = &mut self.slots[i];
        if s.done || s.count != c.chunk_count {
            return;
        }
        let idx = c.chunk_index as usize;
        if s.shards[idx].is_none() {
            let mut b = self.pool.get();
            b.extend_from_slice(raw);
            s.payload_at[idx] = payload_range(raw, c.payload);
            s.shards[idx] = Some(b);
            s.have += 1;
        }
        self.try_repair(i);
        self.try_complete(i, now, events);
    }

    /// A parity packet arrived.
    pub(crate) fn on_parity(
        &mut self,
        now: Instant,
        p: &FecPacketRef<'_>,
        events: &mut VecDeque<Event>,
    ) {
        let n = if p.data_shards > 0 {
            p.data_shards
        } else {
            p.shard_lengths.as_slice().len() as u32
        };
        if n == 0
            || n as usize > GROUP_SHARDS
            || p.shard_count <= n
            || p.parity_index < n
            || p.parity_index >= p.shard_count
            || p.payload.len() > 2048
        {
            return;
        }
        let Some(i) = self.slot_for(p.group_id, now, events) else {
            return;
        };
        let s = &mut self.slots[i];
        if s.done {
            return;
        }
        let first = u32::try_from(p.first_chunk).unwrap_or(u32::MAX);
        if !s.groups.iter().any(|g| g.0 == first) {
            s.groups
                .push((first, n, p.shard_count - n, p.payload.len()));
        }
        if s.parity
            .iter()
            .any(|x| x.group_first == first && x.index == p.parity_index)
        {
            return;
        }
        let mut b = self.pool.get();
        b.extend_from_slice(p.payload);
        s.parity.push(Parity {
            group_first: first,
            index: p.parity_index,
            buf: b,
        });
        self.try_repair(i);
        self.try_complete(i, now, events);
    }

    /// Rebuilds missing chunks of any group with enough shards.
    fn try_repair(&mut self, i: usize) {
        let s = &mut self.slots[i];
        if s.count == 0 || s.done {
            return;
        }
        for g in 0..s.groups.len() {
            let (first, n, p, sb) = s.groups[g];
            let (first_u, n_u) = (first as usize, n as usize);
            if first_u + n_u > s.shards.len() || sb % 2 != 0 {
                continue;
            }
            let present = s.shards[first_u..first_u + n_u]
                .iter()
                .filter(|x| x.is_some())
                .count();
            let parity_have = s.parity.iter().filter(|x| x.group_first == first).count();
            if present == n_u || present + parity_have < n_u {
                continue;
            }
            // Pad present data shards to the shard size for the codec.
            for b in s.shards[first_u..first_u + n_u].iter_mut().flatten() {
                if b.len() > sb {
                    continue;
                }
                b.resize(sb, 0);
            }
            let mut restored: [Option<Vec<u8>>; GROUP_SHARDS] = std::array::from_fn(|_| None);
            let pool = &mut self.pool;
            let result = self.fec.decode(
                sb,
                n_u,
                p as usize,
                s.shards[first_u..first_u + n_u]
                    .iter()
                    .enumerate()
                    .filter_map(|(k, b)| b.as_deref().filter(|b| b.len() == sb).map(|b| (k, b))),
                s.parity
                    .iter()
                    .filter(|x| x.group_first == first && x.buf.len() == sb)
                    .map(|x| ((x.index - n) as usize, x.buf.as_slice())),
                |k, bytes| {
                    if k < GROUP_SHARDS {
                        let mut b = pool.get();
                        b.extend_from_slice(bytes);
                        restored[k] = Some(b);
                    }
                },
            );
            // Cut the padded shards back to their true (self-delimited) lengths.
            for b in s.shards[first_u..first_u + n_u].iter_mut().flatten() {
                if let Some(l) = media::message_len(b) {
                    b.truncate(l);
                }
            }
            if result.is_err() {
                continue;
            }
            for (k, r) in restored.iter_mut().enumerate() {
                if let Some(mut b) = r.take() {
                    let len = media::message_len(&b).unwrap_or(0);
                    b.truncate(len);
                    // The rebuilt bytes must be the chunk they claim to be.
                    let range = match media::decode(&b) {
                        Ok(MediaRef::Video(v))
                            if v.frame_id == s.frame_id
                                && v.chunk_index as usize == first_u + k
                                && v.chunk_count == s.count =>
                        {
                            Some(payload_range(&b, v.payload))
                        }
                        _ => None,
                    };
                    if let Some(range) = range.filter(|_| s.shards[first_u + k].is_none()) {
                        s.payload_at[first_u + k] = range;
                        s.shards[first_u + k] = Some(b);
                        s.have += 1;
                        s.recovered += 1;
                    } else {
                        pool.put(b);
                    }
                }
            }
        }
    }

    fn try_complete(&mut self, i: usize, now: Instant, events: &mut VecDeque<Event>) {
        let s = &mut self.slots[i];
        if s.done || s.count == 0 || s.have < s.count {
            return;
        }
        let mut frame = self.frame_pool.pop().unwrap_or_default();
        frame.clear();
        // One allocation at most (a recycled buffer usually fits): never grow while copying.
        let total: usize = s.payload_at.iter().map(|&(_, len)| len as usize).sum();
        frame.reserve(total.min(self.max_frame));
        for (b, &(at, len)) in s.shards.iter().zip(&s.payload_at) {
            let Some(b) = b else { continue };
            let payload = b.get(at as usize..(at + len) as usize).unwrap_or_default();
            if frame.len() + payload.len() <= self.max_frame {
                frame.extend_from_slice(payload);
            }
        }
        s.done = true;
        s.frame = Some(frame);
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
        for sh in &mut s.shards {
            if let Some(b) = sh.take() {
                self.pool.put(b);
            }
        }
        for p in s.parity.drain(..) {
            self.pool.put(p.buf);
        }
        if let Some(f) = s.frame.take() {
            if self.frame_pool.len() < 32 {
                self.frame_pool.push(f);
            }
        }
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
            self.next_emit = Some(frame_id + 1);
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
                        events.push_back(Event::FrameDropped { frame_id: next });
                        self.next_emit = Some(next + 1);
                        continue;
                    }
                    _ => return,
                }
            };
            if self.slots[i].done {
                let s = &mut self.slots[i];
                if let Some(data) = s.frame.take() {
                    events.push_back(Event::Frame(Frame {
                        frame_id: s.frame_id,
                        meta: s.meta,
                        data,
                        fec_recovered: s.recovered,
                    }));
                    self.frames_delivered += 1;
                }
                self.next_emit = Some(next + 1);
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
