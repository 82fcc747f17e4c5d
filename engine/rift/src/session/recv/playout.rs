//! The deadline (jitter) buffer: frames emitted in order, and a late frame dropped at its
//! deadline instead of holding back the ones behind it.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{MAX_FRAME_LOSSES, Receiver, SLOTS};
use crate::session::{Event, Frame};

/// Most `FrameDropped` events for frame ids that never showed up, when the stream skips
/// ahead: a jump of 2^62 frame ids is reported as this many, then skipped in one step.
const MAX_SKIPPED_EVENTS: u64 = SLOTS as u64;

impl Receiver {
    /// The stream's frame rate as the host announced it in `HelloAck` (0: keep the
    /// configured one). Frame deadlines allow one frame interval for a frame's chunks to
    /// arrive: timed from the local configuration, a 30 fps stream got half the time it
    /// needs.
    pub(crate) fn set_frame_rate(&mut self, fps: u32) {
        if fps > 0 {
            self.frame_interval = Duration::from_secs(1) / fps;
        }
    }

    pub(super) fn deadline_for(&mut self, now: Instant, ts_us: u64) -> Instant {
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

    pub(super) fn drop_frame(&mut self, i: usize, now: Instant, events: &mut VecDeque<Event>) {
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
    pub(super) fn emit(&mut self, now: Instant, events: &mut VecDeque<Event>) {
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
