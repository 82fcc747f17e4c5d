//! The frame store: a frame's bytes are kept once until its deadline and its chunks are
//! written straight from them (each chunk's envelope computed once when the frame is
//! queued), with a single XOR parity shard per group built as the chunks leave, or
//! Reed-Solomon parity computed when the frame is queued.

use std::time::{Duration, Instant};

use super::{Body, GROUP_SHARDS, Kind, Pending, Sender};
use crate::{
    fec,
    media::{FecPacketRef, ShardLengths, VideoChunkRef},
    session::SessionError,
};

/// A chunk message's bytes around its payload (at most 59 bytes for a video chunk),
/// computed once per chunk when its frame is queued: they serve the parity computation and
/// every transmission of the chunk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Envelope {
    /// Bytes before the payload; `u8::MAX`: not computed (encode the chunk generically).
    pre: u8,
    post: u8,
    bytes: [u8; 62],
}

/// One FEC group's single parity shard, built as the group's chunks are written into the
/// send buffer (XOR of each chunk's message while it is hot in cache), not in a pass over the
/// frame when it is queued: the frame's bytes are then read once, not twice.
#[derive(Debug)]
pub(super) struct XorGroup {
    first: u32,
    len: u32,
    /// Shard bytes: the group's longest chunk message, rounded up (see `fec::shard_bytes`).
    acc: Vec<u8>,
    /// Chunks XORed into `acc` so far (each once, on its first transmission).
    xored: u32,
}

impl XorGroup {
    /// The parity message (FecPacket) of this group of frame `frame_id`.
    pub(super) fn packet(&self, frame_id: u64) -> FecPacketRef<'_> {
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
pub(super) struct OutFrame {
    id: u64,
    data: Vec<u8>,
    meta: crate::session::FrameMeta,
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
    pub(super) fn write_chunk(&self, index: u32, out: &mut [u8]) -> bool {
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
    pub(super) fn xor_sent(&mut self, index: u32, message: &[u8]) {
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
    pub(super) fn xor_parity(&mut self, group: u32, scratch: &mut Vec<u8>) -> Option<&XorGroup> {
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

impl Sender {
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
    pub(super) fn release_frames(&mut self, now: Instant, scan_all: bool) {
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

    pub(super) fn frame(&self, id: u64) -> Option<&OutFrame> {
        let first = self.frames.front()?.id;
        let f = self
            .frames
            .get(usize::try_from(id.checked_sub(first)?).ok()?)?;
        (f.id == id).then_some(f)
    }

    pub(super) fn frames_mut(&mut self, id: u64) -> Option<&mut OutFrame> {
        let first = self.frames.front()?.id;
        let f = self
            .frames
            .get_mut(usize::try_from(id.checked_sub(first)?).ok()?)?;
        (f.id == id).then_some(f)
    }

    /// Message length of a body that refers into the frame store; `None` once its frame
    /// is gone (or for an owned buffer).
    pub(super) fn frame_ref_len(&self, body: &Body) -> Option<usize> {
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
        meta: crate::session::FrameMeta,
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
        let interval = frame_interval.as_secs_f64().max(1e-3);
        self.frame_bps = wire / (interval / 2.0);
        self.fast_bps = wire / (interval * super::pacing::FAST_SHARE);
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
            meta: crate::session::FrameMeta {
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
