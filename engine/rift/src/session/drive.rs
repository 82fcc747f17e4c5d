//! The driver-facing methods of [`Session`]: datagrams in, datagrams out, timers, and the
//! application's send calls.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use prost::Message as _;

use super::{
    CloseReason, Event, FrameMeta, Phase, Role, Session, SessionError, Transmit,
    send::{Class, PathView},
};
use crate::{
    crypto::CryptoError,
    media::{self, MediaError, MediaRef},
    proto::{self, control_message::Content as Ctl, message::Content},
    wire::{Header, RelayHeader, RelayType},
};

impl Session {
    /// Handles one datagram from `from`. The buffer is decrypted in place (its contents are
    /// garbage afterwards). Bad input is counted in [`Session::stats`], never panics.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8]) {
        self.clock = self.clock.max(now);
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if self.relay_control_in(now, from, buf) {
            return;
        }
        let buf = match &self.cfg.relay {
            Some(r) => match RelayHeader::decode(buf) {
                Ok(h) if h.kind == RelayType::Forward && h.session_id == r.session_id => {
                    &mut buf[RelayHeader::LEN..]
                }
                _ => {
                    self.stats.rejected += 1;
                    return;
                }
            },
            None => buf,
        };
        match Header::decode(buf) {
            Ok(Header::Handshake(h)) => {
                let (_, msg) = buf.split_at(30);
                self.on_handshake(now, from, h, msg);
            }
            Ok(Header::Transport(t)) => {
                // Only a host roams to a client's new address, and not through a relay.
                let new_path = from != self.remote;
                if t.alias != self.alias
                    || (new_path && (self.cfg.role != Role::Host || self.cfg.relay.is_some()))
                {
                    self.stats.rejected += 1;
                    return;
                }
                self.rekey_tick(now);
                let Some(ch) = self.channel.as_mut() else {
                    self.stats.rejected += 1;
                    return;
                };
                let newest = t.packet_id > ch.highest_received();
                let wire_len = buf.len();
                match ch.open_decoded(t, buf) {
                    Ok(opened) => {
                        let pid = opened.header.packet_id;
                        if ch.take_rotated() {
                            self.on_rotated(now);
                        }
                        if new_path {
                            self.on_new_path(now, from, newest, wire_len);
                        }
                        self.path.from = Some(from);
                        self.stats.datagrams_received += 1;
                        self.last_rx = Some(now);
                        self.recv.on_packet(now, pid, wire_len);
                        self.period.bytes_received += wire_len as u64;
                        self.on_plaintext(now, opened.payload);
                        self.check_reliable();
                    }
                    Err(CryptoError::Replay(_)) => self.stats.replayed += 1,
                    Err(CryptoError::KeyPhase) => self.stats.stale_key_phase += 1,
                    Err(_) => self.stats.rejected += 1,
                }
            }
            Err(_) => self.stats.rejected += 1,
        }
    }

    /// Closes the session once the reliable queue overflowed (the peer does not acknowledge):
    /// a Goodbye goes out, best effort.
    pub(super) fn check_reliable(&mut self) {
        if !self.send.reliable_overflow || matches!(self.phase, Phase::Closed) {
            return;
        }
        let bye = proto::Message {
            content: Some(Content::Control(proto::ControlMessage {
                content: Some(Ctl::Goodbye(proto::Goodbye {
                    code: 0,
                    reason: "reliable queue full".into(),
                })),
            })),
            reliable_seq: 0,
        };
        let _ = self.send.queue_message(Class::Control, &bye, None);
        self.finish(CloseReason::ReliableQueueFull);
    }

    fn on_plaintext(&mut self, now: Instant, plain: &[u8]) {
        let plain = media::unpadded(plain);
        let media = media::decode(plain);
        // Video, parity and audio flow from host to client only.
        if self.cfg.role == Role::Host
            && matches!(
                media,
                Ok(MediaRef::Video(_) | MediaRef::Fec(_) | MediaRef::Audio(_))
            )
        {
            self.stats.role_refused += 1;
            return;
        }
        match media {
            Ok(MediaRef::Video(c)) => {
                if !self.recv.on_chunk(now, plain, c, &mut self.events) {
                    self.stats.malformed += 1;
                }
            }
            Ok(MediaRef::Fec(p)) => {
                if !self.recv.on_parity(now, &p, &mut self.events) {
                    self.stats.parity_refused += 1;
                }
            }
            Ok(MediaRef::Audio(a)) => self.events.push_back(Event::Audio {
                timestamp_us: a.timestamp_us,
                data: a.payload.to_vec(),
            }),
            Ok(MediaRef::File(c)) => {
                if c.reliable_seq != 0 && !self.recv.accept_reliable(c.reliable_seq) {
                    return; // a retransmission of a chunk already delivered
                }
                if matches!(self.phase, Phase::Connected) {
                    self.on_file_chunk(now, c);
                }
            }
            Err(MediaError::NotMedia) => {
                // Feedback arrives several times per RTT: decode it without allocating.
                if let Some(fb) = crate::feedback::decode(plain) {
                    self.on_feedback(now, &fb);
                } else {
                    match proto::decode_message(plain) {
                        Ok(m) => self.on_message(now, m),
                        Err(_) => self.stats.malformed += 1,
                    }
                }
            }
            Err(_) => self.stats.malformed += 1,
        }
    }

    fn on_message(&mut self, now: Instant, m: proto::Message) {
        if m.reliable_seq != 0 && !self.recv.accept_reliable(m.reliable_seq) {
            return; // duplicate of a reliable message: acknowledged again, not delivered
        }
        match m.content {
            Some(Content::Input(i)) => {
                if matches!(self.phase, Phase::Connected) {
                    self.events.push_back(Event::Input(i));
                }
            }
            Some(Content::Control(c)) => match c.content {
                Some(Ctl::Hello(h)) => self.on_hello(now, &h),
                Some(Ctl::HelloAck(a)) => self.on_hello_ack(a),
                Some(Ctl::Nack(n)) => {
                    self.send.on_nack(now, &n.packet_ids);
                }
                Some(Ctl::Rfi(r)) => self.events.push_back(Event::KeyframeRequested {
                    last_valid: r.last_valid_frame_id,
                }),
                Some(Ctl::Goodbye(g)) => self.finish(CloseReason::Remote(g.reason)),
                Some(Ctl::Ping(p)) => {
                    let pong = proto::Message {
                        content: Some(Content::Control(proto::ControlMessage {
                            content: Some(Ctl::Pong(proto::Pong {
                                timestamp_us: p.timestamp_us,
                            })),
                        })),
                        reliable_seq: 0,
                    };
                    let _ = self.send.queue_message(Class::Control, &pong, None);
                }
                Some(Ctl::Pong(_)) => {}
                Some(Ctl::Rekey(r)) => self.on_rekey(now, &r),
                Some(Ctl::RekeyAck(a)) => self.on_rekey_ack(&a),
                Some(Ctl::PathChallenge(c)) if self.cfg.role == Role::Client => {
                    self.on_path_challenge(c);
                }
                Some(Ctl::PathResponse(r)) if self.cfg.role == Role::Host => {
                    self.on_path_response(r);
                }
                Some(Ctl::PathChallenge(_) | Ctl::PathResponse(_)) => self.stats.role_refused += 1,
                // Feedback takes the allocation-free path in `on_plaintext`; one that reaches
                // here was malformed for that decoder.
                Some(Ctl::Feedback(_)) => self.stats.malformed += 1,
                Some(Ctl::FileHeader(h)) if matches!(self.phase, Phase::Connected) => {
                    self.on_file_header(now, &h);
                }
                Some(Ctl::FileStatus(s)) if matches!(self.phase, Phase::Connected) => {
                    self.on_file_status(now, &s);
                }
                Some(Ctl::Clipboard(c)) if matches!(self.phase, Phase::Connected) => {
                    self.on_clipboard(c.text);
                }
                Some(other) => self.events.push_back(Event::Control(proto::ControlMessage {
                    content: Some(other),
                })),
                None => self.stats.malformed += 1,
            },
            Some(Content::Media(_)) | None => self.stats.malformed += 1,
        }
    }

    fn on_feedback(&mut self, now: Instant, fb: &crate::feedback::FeedbackRef<'_>) {
        if self.files.has_outgoing() {
            // A receiver lists at most 64; more are a peer's padding, not acknowledgements.
            for seq in fb.acked_reliable.iter().take(256) {
                self.files.on_ack(seq);
            }
        }
        let congested = self.cc.state() != crate::cc::DeltaState::Stable;
        let (rtt, delivery) = self.send.on_feedback(now, fb, congested);
        let p = &mut self.period;
        p.peer_received = p
            .peer_received
            .saturating_add(u64::from(fb.received_packets));
        p.peer_lost = p.peer_lost.saturating_add(u64::from(fb.lost_packets));
        self.period.peer_jitter_us = fb.jitter_us;
        if delivery.is_some() {
            self.period.delivery_bps = delivery;
        }
        if let Some(rtt) = rtt {
            let changed = self.cc.on_sample(crate::cc::CcSample {
                now,
                rtt,
                delivery_bps: delivery,
                received: fb.received_packets,
                lost: fb.lost_packets,
            });
            if changed {
                self.send.set_target(self.cc.target_bps());
                self.emit_target();
            }
            let path = match self.cc.state() {
                _ if fb.lost_packets > 0 => PathView::Overrun,
                crate::cc::DeltaState::Congested => PathView::Overrun,
                crate::cc::DeltaState::Rising => PathView::Rising,
                crate::cc::DeltaState::Stable => PathView::Calm,
            };
            self.send.on_queue_delay(self.cc.queue_delay(), path);
        }
    }

    /// Tells the encoder its budget: DELTA's rate less the share parity currently takes.
    pub(super) fn emit_target(&mut self) {
        let target = self.cc.target_bps();
        let bps = self
            .send
            .encoder_budget(target)
            .saturating_sub(self.files.active_budget(target));
        let fps = self.cc.target_fps();
        if self.last_target != Some((bps / 10_000, fps)) {
            self.last_target = Some((bps / 10_000, fps));
            self.events.push_back(Event::TargetBitrate { bps, fps });
        }
    }

    /// Writes the next datagram(s) into `buf` (at least `max_datagram` bytes; more lets
    /// equal-size media datagrams be batched for GSO, up to `max_datagrams`). Call repeatedly
    /// until it returns `None`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_datagrams: usize,
    ) -> Option<Transmit> {
        self.clock = self.clock.max(now);
        if let Some(t) = self.relay_transmit(now, buf) {
            return Some(t);
        }
        self.produce(now);
        self.check_reliable();
        if let Some(t) = self.poll_path_challenge(now, buf) {
            return Some(t);
        }
        let prefix = self.prefix_len();
        let alias = self.alias;
        let relay = self.cfg.relay;
        let mut channel = self.channel.as_mut();
        let sealed = self.send.fill(
            now,
            buf,
            max_datagrams,
            self.cfg.max_datagram,
            prefix,
            |out, len, raw| {
                if let Some(r) = relay {
                    RelayHeader {
                        kind: RelayType::Forward,
                        flags: 0,
                        session_id: r.session_id,
                    }
                    .encode(out)
                    .ok()?;
                }
                if raw {
                    return Some((0, prefix + len));
                }
                let ch = channel.as_mut()?;
                let (pid, n) = ch.seal(alias, &mut out[prefix..], len).ok()?;
                Some((pid, prefix + n))
            },
            &mut self.stats,
        )?;
        self.last_tx = Some(now);
        Some(Transmit {
            destination: self.remote,
            src_ip: self.local_ip,
            ecn: None,
            len: sealed.len,
            segment_size: sealed.segment,
        })
    }

    /// Moves due feedback, NACKs and keepalives into the send queues.
    fn produce(&mut self, now: Instant) {
        if self.channel.is_none() || matches!(self.phase, Phase::Closed) {
            return;
        }
        self.rekey_tick(now);
        let srtt = self.send.srtt().unwrap_or(Duration::from_millis(50));
        let interval = (srtt / 4).clamp(Duration::from_millis(5), Duration::from_millis(25));
        if let Some(fb) = self.recv.poll_feedback(now, interval) {
            let _ = self.send.queue_message(Class::Control, &fb, None);
            self.recv.reclaim(fb);
        }
        if matches!(self.phase, Phase::Connected) {
            self.produce_file_chunks(now);
        }
        let hold = Duration::from_millis(2);
        if let Some(nack) = self
            .recv
            .poll_nack(now, hold, srtt + Duration::from_millis(5))
        {
            self.stats.nacks_sent += 1;
            let _ = self.send.queue_message(Class::Control, &nack, None);
        }
        if matches!(self.phase, Phase::Connected)
            && self
                .last_tx
                .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.keepalive)
        {
            let ping = proto::Message {
                content: Some(Content::Control(proto::ControlMessage {
                    content: Some(Ctl::Ping(proto::Ping {
                        timestamp_us: now.saturating_duration_since(self.created).as_micros()
                            as u64,
                    })),
                })),
                reliable_seq: 0,
            };
            let _ = self.send.queue_message(Class::Control, &ping, None);
            self.last_tx = Some(now);
        }
    }

    /// Processes timers. Call when the instant from [`Self::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.relay_timeout(now);
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.establish_timeout(now);
        if matches!(self.phase, Phase::Connected | Phase::Securing)
            && self
                .last_rx
                .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.idle_timeout)
        {
            self.finish(CloseReason::IdleTimeout);
            return;
        }
        if self.next_stats.is_some_and(|t| t <= now) {
            self.report_stats(now);
        }
        self.rekey_tick(now);
        self.path_timeout(now);
        let gap = self.send.srtt().unwrap_or(Duration::from_millis(50));
        if let Some(last_valid) = self.recv.on_timeout(now, gap, &mut self.events) {
            let rfi = proto::Message {
                content: Some(Content::Control(proto::ControlMessage {
                    content: Some(Ctl::Rfi(proto::ReferenceInvalidation {
                        last_valid_frame_id: last_valid,
                    })),
                })),
                reliable_seq: 0,
            };
            let _ = self.send.queue_message(Class::Control, &rfi, None);
        }
    }

    /// When [`Self::handle_timeout`] should next run (None: no timer needed).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if matches!(self.phase, Phase::Closed) {
            return None;
        }
        let srtt = self.send.srtt().unwrap_or(Duration::from_millis(50));
        if matches!(self.phase, Phase::Connected)
            && self.next_stats.is_none()
            && !self.cfg.stats_interval.is_zero()
        {
            self.period = super::stats::Period {
                started: Some(self.clock),
                base: self.stats(),
                ..Default::default()
            };
            self.next_stats = Some(self.clock + self.cfg.stats_interval);
        }
        let idle = self.last_rx.map(|t| t + self.cfg.idle_timeout);
        let keepalive = matches!(self.phase, Phase::Connected)
            .then(|| self.last_tx.map(|t| t + self.cfg.keepalive))
            .flatten();
        [
            self.relay_next_timeout(),
            self.establish_next_timeout(),
            idle,
            keepalive,
            self.recv.next_feedback_time(),
            self.recv
                .next_nack_time(Duration::from_millis(2), srtt + Duration::from_millis(5)),
            self.recv.next_deadline(),
            self.next_stats,
            self.send.next_send_time(self.clock),
            self.files
                .next_wakeup(self.cc.target_bps(), self.send.reliable_room()),
            self.rekey_next_timeout(),
            self.path_next_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Each timer source's next deadline in µs from the session's clock (negative: overdue),
    /// for diagnosing a driver that spins or stalls.
    #[doc(hidden)]
    pub fn debug_timers(&mut self) -> String {
        let srtt = self.send.srtt().unwrap_or(Duration::from_millis(50));
        let c = self.clock;
        let f = |t: Option<Instant>| {
            t.map(|t| {
                t.saturating_duration_since(c).as_micros() as i64
                    - t.checked_duration_since(c).map_or(1, |_| 0)
            })
        };
        format!(
            "est {:?} fb {:?} nack {:?} dl {:?} send {:?} files {:?}",
            f(self.establish_next_timeout()),
            f(self.recv.next_feedback_time()),
            f(self
                .recv
                .next_nack_time(Duration::from_millis(2), srtt + Duration::from_millis(5))),
            f(self.recv.next_deadline()),
            f(self.send.next_send_time(self.clock)),
            f(self
                .files
                .next_wakeup(self.cc.target_bps(), self.send.reliable_room())),
        )
    }

    /// Emits [`Event::Stats`] for the period ending `now` and starts the next one.
    fn report_stats(&mut self, now: Instant) {
        let s = self.stats();
        let base = std::mem::take(&mut self.period.base);
        let p = std::mem::take(&mut self.period);
        let period = p.started.map_or(self.cfg.stats_interval, |t| {
            now.saturating_duration_since(t)
        });
        let secs = period.as_secs_f64().max(1e-3);
        let total = p.peer_received + p.peer_lost;
        self.events.push_back(Event::Stats(super::PathStats {
            period,
            rtt: self.send.srtt(),
            jitter_us: self.recv.jitter_us(),
            peer_jitter_us: p.peer_jitter_us,
            loss: if total == 0 {
                0.0
            } else {
                p.peer_lost as f64 / total as f64
            },
            peer_received: p.peer_received,
            peer_lost: p.peer_lost,
            fec_recovered: s.fec_recovered - base.fec_recovered,
            nacks_sent: s.nacks_sent - base.nacks_sent,
            retransmitted: s.retransmitted - base.retransmitted,
            frames_delivered: s.frames_delivered - base.frames_delivered,
            frames_dropped: s.frames_dropped - base.frames_dropped,
            target_bps: self.cc.target_bps(),
            delivery_bps: p.delivery_bps,
            send_bps: ((s.bytes_sent - base.bytes_sent) as f64 * 8.0 / secs) as u64,
            recv_bps: (p.bytes_received as f64 * 8.0 / secs) as u64,
        }));
        self.period.started = Some(now);
        self.period.base = s;
        self.next_stats = Some(now + self.cfg.stats_interval);
    }

    /// When the next queued datagram may leave (pacing); `now` if something is ready.
    pub fn next_send_time(&self, now: Instant) -> Option<Instant> {
        self.send.next_send_time(now)
    }

    pub(super) fn require_connected(&mut self, now: Instant) -> Result<(), SessionError> {
        self.clock = self.clock.max(now);
        if matches!(self.phase, Phase::Connected) {
            Ok(())
        } else {
            Err(SessionError::NotConnected)
        }
    }

    /// Queues an encoded video frame: chunked, protected with parity, paced out. Returns its
    /// frame id. `frame_interval` is the time until the next frame (1/fps).
    pub fn send_frame(
        &mut self,
        now: Instant,
        data: &[u8],
        meta: FrameMeta,
        frame_interval: Duration,
    ) -> Result<u64, SessionError> {
        self.require_connected(now)?;
        let mut buf = self.send.frame_buffer();
        buf.extend_from_slice(data);
        self.send
            .queue_frame(now, buf, meta, frame_interval, self.cfg.playout_slack)
    }

    /// [`Self::send_frame`] for a frame the caller hands over: the session sends its chunks
    /// straight from `data` (no copy) and keeps it until the frame's deadline; get the buffer
    /// back for the next frame with [`Self::take_spent_frame`] (an error drops it).
    pub fn send_frame_buf(
        &mut self,
        now: Instant,
        data: Vec<u8>,
        meta: FrameMeta,
        frame_interval: Duration,
    ) -> Result<u64, SessionError> {
        self.require_connected(now)?;
        self.send
            .queue_frame(now, data, meta, frame_interval, self.cfg.playout_slack)
    }

    /// A frame buffer the session no longer needs (frames given to [`Self::send_frame_buf`]
    /// come back here once past their deadline; a few are kept for `send_frame`'s copies).
    pub fn take_spent_frame(&mut self) -> Option<Vec<u8>> {
        self.send.take_spent()
    }

    /// Sends an input event ahead of all media. Key, button and gamepad events are reliable
    /// (retransmitted until acknowledged, delivered once); pointer motion is not.
    pub fn send_input(
        &mut self,
        now: Instant,
        input: proto::InputMessage,
    ) -> Result<(), SessionError> {
        use proto::input_message::Event as E;
        self.require_connected(now)?;
        let reliable = matches!(
            input.event,
            Some(E::Key(_) | E::MouseButton(_) | E::Gamepad(_))
        );
        let msg = proto::Message {
            content: Some(Content::Input(input)),
            reliable_seq: 0,
        };
        if reliable {
            let r = self.send.queue_reliable(Class::Input, msg, now).map(|_| ());
            self.check_reliable();
            r
        } else {
            self.send.queue_message(Class::Input, &msg, None)
        }
    }

    /// Sends a control message on the reliable channel.
    pub fn send_control(&mut self, now: Instant, content: Ctl) -> Result<(), SessionError> {
        self.require_connected(now)?;
        let msg = proto::Message {
            content: Some(Content::Control(proto::ControlMessage {
                content: Some(content),
            })),
            reliable_seq: 0,
        };
        let r = self
            .send
            .queue_reliable(Class::Control, msg, now)
            .map(|_| ());
        self.check_reliable();
        r
    }

    /// Sends one Opus packet (unreliable, ahead of video).
    pub fn send_audio(
        &mut self,
        now: Instant,
        timestamp_us: u64,
        packet: &[u8],
    ) -> Result<(), SessionError> {
        self.require_connected(now)?;
        let mut buf = self.send.buffer();
        buf.resize(packet.len() + 32, 0);
        let n = media::AudioPacketRef {
            timestamp_us,
            payload: packet,
        }
        .encode(&mut buf)
        .map_err(|e| SessionError::Encode(e.to_string()))?;
        buf.truncate(n);
        // Audio is useless after ~2 frame intervals: drop rather than queue behind.
        self.send
            .queue_encoded(Class::Control, buf, Some(now + Duration::from_millis(40)));
        Ok(())
    }

    /// Role of this session.
    pub fn role(&self) -> Role {
        self.cfg.role
    }

    /// Reliable messages not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.send.unacked_len()
    }

    /// Media datagrams waiting for the pacer.
    pub fn media_queued(&self) -> usize {
        self.send.media_queued()
    }

    /// Seals `plaintext` as this session's next transport datagram into `out`, its packet id
    /// first moved forward to at least `min_packet_id` (never back: no id is sealed twice).
    /// Returns `(packet_id, datagram_len)`. For tests and fuzzing of a peer's receive path
    /// with arbitrary but authentic messages and packet ids.
    #[doc(hidden)]
    pub fn seal_for_test(
        &mut self,
        min_packet_id: u64,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Option<(u64, usize)> {
        let prefix = self.prefix_len();
        let relay = self.cfg.relay;
        let alias = self.alias;
        let ch = self.channel.as_mut()?;
        let at = prefix + crate::wire::TransportHeader::LEN;
        out.get_mut(at..at + plaintext.len())?
            .copy_from_slice(plaintext);
        if let Some(r) = relay {
            RelayHeader {
                kind: RelayType::Forward,
                flags: 0,
                session_id: r.session_id,
            }
            .encode(out)
            .ok()?;
        }
        ch.skip_to(min_packet_id);
        let (pid, n) = ch.seal(alias, &mut out[prefix..], plaintext.len()).ok()?;
        Some((pid, prefix + n))
    }

    /// Encodes a message for tests of malformed input.
    #[doc(hidden)]
    pub fn encode_for_test(m: &proto::Message) -> Vec<u8> {
        m.encode_to_vec()
    }
}
