//! Reassembly: chunks into slots (one per frame under assembly), completed frames handed
//! to the deadline buffer.

use std::{collections::VecDeque, time::Instant};

use super::{MAX_CHUNKS, MAX_FRAME_LOSSES, Receiver, payload_range, slot::ChunkRec};
use crate::{
    media::VideoChunkRef,
    session::{Event, FrameMeta},
};

impl Receiver {
    pub(super) fn slot_for(
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

    pub(super) fn try_complete(&mut self, i: usize, now: Instant, events: &mut VecDeque<Event>) {
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

    pub(super) fn release(&mut self, i: usize) {
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
}
