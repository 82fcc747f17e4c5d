//! FEC repair: parity shards kept per group within caps (per group, per frame, per
//! session), and the lost chunks of a group rebuilt from the shards that arrived.

use std::{collections::VecDeque, time::Instant};

use super::{Receiver, payload_range, slot::Parity};
use crate::{
    media::{self, FecPacketRef, MediaRef},
    session::{Event, send::GROUP_SHARDS},
};

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

impl Receiver {
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
    pub(super) fn try_repair(&mut self, i: usize, at: u32) {
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
}
