//! Establishment (spec RIFT §3.2, §4, with the original's faults fixed): the Noise XX
//! handshake in RIFT handshake headers with retransmission and a deadline, then the
//! Hello/HelloAck exchange on the reliable control channel.
//!
//! Handshake datagrams carry `session_id` = the initiator's random handshake id (< 2⁹⁶; its
//! low 32 bits become the session alias) and `packet_id` = the step (1, 2, 3). The client
//! retransmits msg1 with exponential backoff; the host caches msg2 and answers duplicate msg1s
//! with it, and also re-sends it on its own timer until msg3 arrives; a client that sees msg2
//! again re-sends its cached msg3. So the handshake survives loss in both directions.
//!
//! Wavry's handshake extension (`wire::cookie`): msg1 is padded to 256 bytes; a loaded host
//! answers it with a cookie reply, and the client repeats msg1 with the cookie. A handshake
//! message that does not decrypt (forged by anyone who knows the handshake id) is dropped and
//! counted; it never ends the handshake.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{CloseReason, Event, Phase, Role, Session, SessionConfig, SessionError, send::Class};
use crate::{
    cc::Delta,
    crypto::{Handshake, HandshakeRole, HandshakeStep, MAX_HANDSHAKE_MSG},
    identity::IdentityKey,
    proto,
    rng::Rng,
    wire::{Cookie, FirstMessage, HandshakeHeader, HandshakeKind, MSG1_MIN_LEN, NOISE_MSG1_LEN},
};

/// Cookie replies a client acts on per handshake (each costs it one first message).
const MAX_COOKIE_REPLIES: u32 = 8;

/// Handshake retransmission state.
#[derive(Debug, Default)]
pub(super) struct Establish {
    /// Our latest handshake datagram (RIFT header + Noise message), for re-sending.
    cached: Vec<u8>,
    next_retx: Option<Instant>,
    rto: Duration,
    deadline: Option<Instant>,
    /// Client: the Noise msg1, to repeat it with a cookie.
    msg1: [u8; NOISE_MSG1_LEN],
    /// Client: cookie replies acted on.
    cookies: u32,
}

/// A fresh handshake id below 2⁹⁶ whose low 32 bits (the alias) are non-zero.
pub(super) fn new_handshake_id(rng: &mut Rng) -> u128 {
    let b = rng.bytes::<12>();
    let mut id = [0u8; 16];
    id[4..].copy_from_slice(&b);
    let v = u128::from_be_bytes(id);
    if v as u32 == 0 { v | 1 } else { v }
}

/// The host's answer to a Hello (spec RIFT §4, codec preference AV1 > HEVC > H.264).
fn answer_hello(
    cfg: &SessionConfig,
    hello: &proto::Hello,
    alias: u32,
    rng: &mut Rng,
) -> proto::HelloAck {
    let host = &cfg.host;
    let both =
        |c: proto::Codec| host.codecs.contains(&c) && hello.supported_codecs.contains(&(c as i32));
    let codec = [proto::Codec::Av1, proto::Codec::Hevc]
        .into_iter()
        .find(|&c| both(c))
        .unwrap_or(proto::Codec::H264);
    let (w, h) = hello.max_resolution.as_ref().map_or(host.resolution, |r| {
        (
            r.width.min(host.resolution.0),
            r.height.min(host.resolution.1),
        )
    });
    proto::HelloAck {
        accepted: true,
        selected_codec: codec as i32,
        // Spec RIFT §4 clamps both axes to 320..8192, which made a 320×240 host announce
        // 320×320; the floor here is the host's own smallest mode (320×240).
        stream_resolution: Some(proto::Resolution {
            width: w.clamp(320, 8192),
            height: h.clamp(240, 8192),
        }),
        fps: if hello.max_fps == 0 {
            host.fps
        } else {
            host.fps.min(hello.max_fps)
        },
        initial_bitrate_kbps: host.initial_bitrate_kbps,
        keyframe_interval_ms: host.keyframe_interval_ms,
        session_id: rng.bytes::<16>().to_vec(),
        session_alias: alias,
        public_addr: String::new(),
    }
}

impl Session {
    fn blank(
        now: Instant,
        cfg: SessionConfig,
        remote: SocketAddr,
        hs: Handshake,
        hs_id: u128,
        rng: Rng,
    ) -> Self {
        let cc = Delta::new(cfg.cc.clone());
        let send = super::send::Sender::new(&cfg, cc.target_bps());
        let recv = super::recv::Receiver::new(&cfg);
        let files = super::files::Files::new(cfg.files.clone());
        Self {
            est: Establish {
                rto: cfg.handshake_rto,
                deadline: Some(now + cfg.handshake_timeout),
                ..Establish::default()
            },
            cfg,
            remote,
            phase: Phase::Handshaking(Box::new(hs)),
            channel: None,
            alias: hs_id as u32,
            hs_id,
            send,
            recv,
            files,
            cc,
            events: std::collections::VecDeque::new(),
            stats: super::SessionStats::default(),
            last_rx: None,
            last_tx: None,
            created: now,
            clock: now,
            last_target: None,
            period: super::stats::Period::default(),
            next_stats: None,
            rng,
            local_ip: None,
            rekey: super::rekey::RekeyState::new(now),
            path: super::path::PathState::default(),
            relay_client: None,
        }
    }

    /// Starts a client session towards `host`: msg1 is queued at once.
    pub fn client(
        now: Instant,
        cfg: SessionConfig,
        identity: Arc<IdentityKey>,
        host: SocketAddr,
    ) -> Result<Self, SessionError> {
        debug_assert_eq!(cfg.role, Role::Client);
        let mut rng = Rng::new(cfg.rng_seed);
        let hs = Handshake::with_rng(
            HandshakeRole::Initiator,
            identity,
            cfg.policy.clone(),
            rng.fork(),
        )?;
        let hs_id = new_handshake_id(&mut rng);
        let mut s = Self::blank(now, cfg, host, hs, hs_id, rng);
        s.handshake_step(now, None)?;
        Ok(s)
    }

    /// Starts a host session from a client's msg1 (`msg1`: the datagram after the handshake
    /// header, padded, with or without a cookie): msg2 is queued. This is the single-peer
    /// path; an [`super::Endpoint`] keeps handshakes half-open and small until msg3 instead.
    pub fn accept(
        now: Instant,
        cfg: SessionConfig,
        identity: Arc<IdentityKey>,
        from: SocketAddr,
        header: HandshakeHeader,
        msg1: &[u8],
    ) -> Result<Self, SessionError> {
        debug_assert_eq!(cfg.role, Role::Host);
        let skip = match HandshakeKind::from_packet_id(header.packet_id) {
            Some(HandshakeKind::Msg1Cookie) => Cookie::LEN,
            _ => 0,
        };
        let noise = msg1
            .get(skip..skip + NOISE_MSG1_LEN)
            .ok_or(SessionError::Crypto(crate::crypto::CryptoError::Noise(
                "short msg1".into(),
            )))?;
        let mut rng = Rng::new(cfg.rng_seed);
        let hs = Handshake::with_rng(
            HandshakeRole::Responder,
            identity,
            cfg.policy.clone(),
            rng.fork(),
        )?;
        let mut s = Self::blank(now, cfg, from, hs, header.session_id, rng);
        s.handshake_step(now, Some((1, noise)))?;
        Ok(s)
    }

    /// A host session from a handshake an endpoint completed with msg3 (address validated):
    /// it starts in the Hello phase. `msg2` is the RIFT datagram the host sent, answered again
    /// if the client repeats msg1.
    pub(super) fn from_handshake(
        now: Instant,
        cfg: SessionConfig,
        rng: Rng,
        from: SocketAddr,
        hs_id: u128,
        hs: Handshake,
        msg2: &[u8],
    ) -> Result<Self, SessionError> {
        let mut s = Self::blank(now, cfg, from, hs, hs_id, rng);
        s.est.cached.extend_from_slice(msg2);
        s.last_rx = Some(now);
        s.complete(now)?;
        Ok(s)
    }

    /// Runs the handshake state machine on an incoming message (or none, to start).
    fn handshake_step(
        &mut self,
        now: Instant,
        incoming: Option<(u64, &[u8])>,
    ) -> Result<(), SessionError> {
        let Phase::Handshaking(hs) = &mut self.phase else {
            return Ok(());
        };
        let mut out = [0u8; MAX_HANDSHAKE_MSG];
        let step = hs.step(incoming.map(|(_, m)| m), &mut out)?;
        let (n, complete) = match step {
            HandshakeStep::Send(n) => (Some(n), false),
            HandshakeStep::SendAndComplete(n) => (Some(n), true),
            HandshakeStep::Wait => (None, false),
            HandshakeStep::Complete => (None, true),
        };
        if let Some(n) = n {
            let step_no = incoming.map_or(1, |(k, _)| k + 1);
            self.est.cached.clear();
            if step_no == 1 {
                // The first message is padded (anti-amplification) and kept for a cookie.
                self.est.msg1.copy_from_slice(
                    out.get(..NOISE_MSG1_LEN)
                        .ok_or(SessionError::Encode("noise msg1 length".into()))?,
                );
                self.est.cached.resize(MSG1_MIN_LEN, 0);
                FirstMessage::encode(self.hs_id, None, &out[..n], &mut self.est.cached)
                    .map_err(|e| SessionError::Encode(e.to_string()))?;
            } else {
                self.est.cached.resize(HandshakeHeader::LEN + n, 0);
                HandshakeHeader {
                    session_id: self.hs_id,
                    packet_id: step_no,
                }
                .encode(&mut self.est.cached)
                .map_err(|e| SessionError::Encode(e.to_string()))?;
                self.est.cached[HandshakeHeader::LEN..].copy_from_slice(&out[..n]);
            }
            self.send.queue_raw(&self.est.cached);
            // msg3 too is re-sent on a timer until the host answers (a repeated msg2 also
            // brings it back): an endpoint keeps a half-open handshake only a few seconds.
            self.est.next_retx = Some(now + self.est.rto);
        }
        if complete {
            self.complete(now)?;
        }
        Ok(())
    }

    /// The Noise handshake finished: derive the channel, start Hello/HelloAck.
    fn complete(&mut self, now: Instant) -> Result<(), SessionError> {
        if !matches!(self.phase, Phase::Handshaking(_)) {
            return Ok(());
        }
        let Phase::Handshaking(hs) = std::mem::replace(&mut self.phase, Phase::Securing) else {
            return Ok(());
        };
        let channel = hs.into_channel()?;
        self.channel = Some(channel);
        self.est.deadline = Some(now + self.cfg.handshake_timeout);
        if self.cfg.role == Role::Client {
            let hello = proto::Message {
                content: Some(proto::message::Content::Control(proto::ControlMessage {
                    content: Some(proto::control_message::Content::Hello(
                        self.cfg.hello.clone(),
                    )),
                })),
                reliable_seq: 0,
            };
            self.send.queue_reliable(Class::Control, hello, now)?;
        }
        Ok(())
    }

    /// A handshake datagram arrived from `from`.
    pub(super) fn on_handshake(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: HandshakeHeader,
        msg: &[u8],
    ) {
        if header.session_id != self.hs_id || from != self.remote {
            self.stats.rejected += 1;
            return;
        }
        let expected = match self.cfg.role {
            Role::Client => 2,
            Role::Host => 3,
        };
        let handshaking = matches!(self.phase, Phase::Handshaking(_));
        let kind = match (
            self.cfg.role,
            HandshakeKind::from_packet_id(header.packet_id),
        ) {
            // A repeated first message with a cookie is a duplicate msg1 to a host session.
            (Role::Host, Some(HandshakeKind::Msg1Cookie)) => 1,
            (Role::Client, Some(HandshakeKind::CookieReply)) => {
                self.on_cookie_reply(now, msg);
                return;
            }
            _ => header.packet_id,
        };
        match (self.cfg.role, kind) {
            // Duplicates: answer with our cached message (msg2 for a repeated msg1, msg3 for a
            // repeated msg2) without re-running Noise.
            (Role::Host, 1) | (Role::Client, 2) if !handshaking || header.packet_id != expected => {
                if !self.est.cached.is_empty() {
                    self.stats.handshake_retransmits += 1;
                    self.send.queue_raw(&self.est.cached);
                }
            }
            // A client re-sends msg3 until it hears from us: nothing to do once we have it.
            (Role::Host, 3) if !handshaking => {}
            (_, k) if k == expected && handshaking => {
                match self.handshake_step(now, Some((k, msg))) {
                    Ok(()) => self.last_rx = Some(now),
                    // Anyone who saw the handshake id can send a message that does not decrypt:
                    // dropped and counted, the real one still completes the handshake.
                    Err(SessionError::Crypto(e)) if e.is_unauthenticated() => {
                        self.stats.handshake_forged += 1;
                    }
                    Err(e) => self.fail_handshake(&e),
                }
            }
            _ => self.stats.rejected += 1,
        }
    }

    /// Client: a loaded host asks for msg1 again with its cookie (before msg2 only).
    fn on_cookie_reply(&mut self, now: Instant, body: &[u8]) {
        let waiting_msg2 = matches!(&self.phase, Phase::Handshaking(hs) if hs.peer().is_none());
        let cookie = match Cookie::decode(body) {
            Ok(c) if body.len() == Cookie::LEN => c,
            _ => {
                self.stats.rejected += 1;
                return;
            }
        };
        if !waiting_msg2 || self.est.cookies >= MAX_COOKIE_REPLIES {
            self.stats.rejected += 1;
            return;
        }
        self.est.cookies += 1;
        self.stats.cookie_replies += 1;
        self.est.cached.clear();
        self.est.cached.resize(MSG1_MIN_LEN, 0);
        if FirstMessage::encode(
            self.hs_id,
            Some(&cookie),
            &self.est.msg1,
            &mut self.est.cached,
        )
        .is_err()
        {
            return;
        }
        self.send.queue_raw(&self.est.cached);
        self.est.next_retx = Some(now + self.est.rto);
    }

    fn fail_handshake(&mut self, e: &SessionError) {
        self.finish(CloseReason::HandshakeFailed(e.to_string()));
    }

    /// Handshake timers: retransmission and the overall deadline.
    pub(super) fn establish_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Handshaking(_) | Phase::Securing)
            && self.est.deadline.is_some_and(|d| now >= d)
        {
            self.finish(CloseReason::HandshakeTimeout);
            return;
        }
        if let Some(t) = self.est.next_retx {
            if now >= t && self.retransmits_handshake() {
                self.stats.handshake_retransmits += 1;
                self.send.queue_raw(&self.est.cached);
                self.est.rto = (self.est.rto * 2).min(Duration::from_secs(2));
                self.est.next_retx = Some(now + self.est.rto);
            }
        }
    }

    pub(super) fn establish_next_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshaking(_) => [self.est.next_retx, self.est.deadline]
                .into_iter()
                .flatten()
                .min(),
            Phase::Securing if self.retransmits_handshake() => {
                [self.est.next_retx, self.est.deadline]
                    .into_iter()
                    .flatten()
                    .min()
            }
            Phase::Securing => self.est.deadline,
            _ => None,
        }
    }

    /// Handshaking, or a client whose msg3 has had no answer yet.
    fn retransmits_handshake(&self) -> bool {
        match self.phase {
            Phase::Handshaking(_) => true,
            Phase::Securing => self.cfg.role == Role::Client,
            _ => false,
        }
    }

    /// Hello (host side) or HelloAck (client side) arrived on the reliable channel.
    pub(super) fn on_hello(&mut self, now: Instant, hello: &proto::Hello) {
        if self.cfg.role != Role::Host || self.channel.is_none() {
            return;
        }
        if self.cfg.busy {
            // Spec §4: a busy host still answers, so the client learns it at once instead of
            // timing out. The session stays in Securing and ends at its handshake deadline.
            let refusal = proto::HelloAck {
                accepted: false,
                ..proto::HelloAck::default()
            };
            let msg = proto::Message {
                content: Some(proto::message::Content::Control(proto::ControlMessage {
                    content: Some(proto::control_message::Content::HelloAck(refusal)),
                })),
                reliable_seq: 0,
            };
            let _ = self.send.queue_reliable(Class::Control, msg, now);
            return;
        }
        let ack = answer_hello(&self.cfg, hello, self.alias, &mut self.rng);
        if matches!(self.phase, Phase::Securing) {
            self.phase = Phase::Connected;
            self.est.deadline = None;
            if let Some(peer) = self.peer() {
                self.events.push_back(Event::Connected {
                    peer,
                    params: Box::new(ack.clone()),
                });
            }
        }
        let msg = proto::Message {
            content: Some(proto::message::Content::Control(proto::ControlMessage {
                content: Some(proto::control_message::Content::HelloAck(ack)),
            })),
            reliable_seq: 0,
        };
        let _ = self.send.queue_reliable(Class::Control, msg, now);
    }

    pub(super) fn on_hello_ack(&mut self, ack: proto::HelloAck) {
        if self.cfg.role != Role::Client || !matches!(self.phase, Phase::Securing) {
            return;
        }
        if !ack.accepted {
            self.finish(CloseReason::Refused);
            return;
        }
        self.phase = Phase::Connected;
        self.est.deadline = None;
        self.recv.set_frame_rate(ack.fps);
        if let Some(peer) = self.peer() {
            self.events.push_back(Event::Connected {
                peer,
                params: Box::new(ack),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_ids_fit_header_detection_and_give_a_non_zero_alias() {
        let mut rng = Rng::new(Some(1));
        for _ in 0..1000 {
            let id = new_handshake_id(&mut rng);
            assert!(id <= HandshakeHeader::MAX_SESSION_ID);
            assert_ne!(id as u32, 0);
        }
    }

    #[test]
    fn codec_and_resolution_negotiation() {
        let mut cfg = SessionConfig::new(Role::Host, crate::crypto::PeerPolicy::AnyAuthenticated);
        cfg.host.codecs = vec![proto::Codec::Av1, proto::Codec::Hevc, proto::Codec::H264];
        let mut hello = cfg.hello.clone();
        hello.supported_codecs = vec![proto::Codec::Hevc as i32, proto::Codec::H264 as i32];
        hello.max_resolution = Some(proto::Resolution {
            width: 100,
            height: 100_000,
        });
        let mut rng = Rng::new(None);
        let ack = answer_hello(&cfg, &hello, 7, &mut rng);
        assert_eq!(ack.selected_codec, proto::Codec::Hevc as i32);
        assert_eq!(
            ack.stream_resolution,
            Some(proto::Resolution {
                width: 320,
                height: 720
            })
        );
        assert_eq!(ack.session_alias, 7);
        hello.supported_codecs.clear();
        assert_eq!(
            answer_hello(&cfg, &hello, 7, &mut rng).selected_codec,
            proto::Codec::H264 as i32
        );
        // A 320×240 host announces what it streams.
        cfg.host.resolution = (320, 240);
        hello.max_resolution = None;
        assert_eq!(
            answer_hello(&cfg, &hello, 7, &mut rng).stream_resolution,
            Some(proto::Resolution {
                width: 320,
                height: 240
            })
        );
    }
}
