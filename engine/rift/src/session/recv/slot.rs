//! A frame under reassembly: payloads written in place, and what is kept of each chunk
//! (its envelope) so its FEC shard can be rebuilt for a repair.

use std::time::Instant;

use super::BufPool;
use crate::session::FrameMeta;

#[derive(Debug, Default)]
pub(super) struct Parity {
    pub(super) group_first: u32,
    pub(super) index: u32,
    pub(super) buf: Vec<u8>,
}

/// Longest envelope (the message bytes around a chunk's payload) kept per chunk so its FEC
/// shard can be rebuilt for a repair; ours are about 40 bytes.
const ENVELOPE: usize = 88;

/// What the receiver keeps of one chunk: its payload is already in the frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkRec {
    pub(super) present: bool,
    /// Payload length.
    pub(super) len: u32,
    /// Envelope bytes before and after the payload; `pre == u8::MAX`: too long to keep, so
    /// this chunk's group cannot take part in a repair.
    pub(super) pre: u8,
    pub(super) post: u8,
    pub(super) env: [u8; ENVELOPE],
}

impl ChunkRec {
    pub(super) const EMPTY: Self = Self {
        present: false,
        len: 0,
        pre: 0,
        post: 0,
        env: [0; ENVELOPE],
    };

    /// Records a chunk from its whole message `raw` and the payload's range in it.
    pub(super) fn record(&mut self, raw: &[u8], (at, len): (u32, u32)) {
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
pub(super) struct Slot {
    pub(super) active: bool,
    pub(super) done: bool,
    pub(super) frame_id: u64,
    pub(super) count: u32,
    pub(super) meta: FrameMeta,
    pub(super) deadline: Option<Instant>,
    /// Payload length of every chunk but the last; 0 until one of them arrives.
    pub(super) chunk_len: u32,
    /// The last chunk's payload length, once it is in the frame.
    pub(super) last_len: Option<u32>,
    pub(super) chunks: Vec<ChunkRec>,
    /// The frame under assembly (a recycled buffer keeps its length: no zeroing per frame).
    pub(super) frame: Vec<u8>,
    /// The last chunk's whole message, when it came before `chunk_len` was known.
    pub(super) early_last: Option<(Vec<u8>, (u32, u32))>,
    pub(super) have: u32,
    /// (first chunk, data shards, parity shards, shard bytes) per group seen in parity.
    pub(super) groups: Vec<(u32, u32, u32, usize)>,
    pub(super) parity: Vec<Parity>,
    pub(super) recovered: u32,
}

impl Slot {
    /// Writes chunk `idx`'s payload into the frame. False when it contradicts the frame's
    /// geometry (every chunk but the last equally long, the last no longer, the frame within
    /// `max_frame`): such a chunk is malformed and dropped. Also false when the frame buffer
    /// would have to grow past `cap` bytes (the receiver's frame budget).
    pub(super) fn place(
        &mut self,
        idx: usize,
        payload: &[u8],
        max_frame: usize,
        cap: usize,
    ) -> bool {
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
    pub(super) fn place_early_last(&mut self, pool: &mut BufPool, max_frame: usize, cap: usize) {
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
    pub(super) fn shard_into(&self, k: usize, out: &mut Vec<u8>) -> bool {
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
    pub(super) fn growth(&self, idx: usize, len: usize) -> usize {
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
    pub(super) fn total(&self) -> Option<usize> {
        let last = self.last_len? as usize;
        Some((self.count as usize - 1) * self.chunk_len as usize + last)
    }
}
