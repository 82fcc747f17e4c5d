//! The byte budget of frame buffers: what a receiver holds under assembly or pooled stays
//! within it, so a hostile sender cannot make it reserve memory without bound.

use super::Receiver;

/// Bytes of frame buffers a receiver may hold (under assembly or pooled) for a largest frame
/// of `max_frame` bytes: two such frames at once, and 1 MiB for the small ones around them.
pub fn frame_budget(max_frame: usize) -> usize {
    max_frame.saturating_mul(2).saturating_add(1 << 20)
}

impl Receiver {
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
    pub(super) fn slot_cap(&self, i: usize) -> usize {
        let others = self.frame_bytes_held() - self.slots[i].frame.capacity();
        self.frame_budget.saturating_sub(others)
    }

    /// Makes room for slot `i`'s frame buffer to grow by `need` bytes within the budget:
    /// pooled buffers go first, then idle slots' buffers. False if it still does not fit.
    pub(super) fn frame_room(&mut self, i: usize, need: usize) -> bool {
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
}
