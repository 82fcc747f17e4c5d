//! Filling a transmit: the next plaintext by priority (raw handshake, input, control,
//! reliable, then paced media), stale media dropped, and media sealed in equal-size GSO
//! batches.

use std::time::Instant;

use super::{Body, Class, Kind, Pending, Sender, reliable::RELIABLE_SPAN};

/// Outcome of filling one transmit.
pub(crate) struct Sealed {
    pub(crate) len: usize,
    pub(crate) segment: Option<usize>,
}

impl Sender {
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
        stats: &mut crate::session::SessionStats,
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
}
