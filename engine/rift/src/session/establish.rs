//! Establishment (spec RIFT §3.2, §4, with the original's faults fixed): the Noise XX
//! handshake in RIFT handshake headers with retransmission and a deadline, then the
//! Hello/HelloAck exchange on the reliable control channel.
//!
//! Handshake datagrams carry `session_id` = the initiator's random handshake id (< 2⁹⁶; its
//! low 32 bits become the session alias) and `packet_id` = the step (1, 2, 3). The client
//! retransmits msg1 with exponential backoff; the host caches msg2 and answers duplicate msg1s
//! with it, and also re-sends it on its own timer until msg3 arrives; a client that sees msg2
//! again re-sends its cached msg3. So the handshake survives loss in both directions.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ring::rand::{SecureRandom, SystemRandom};

use super::{CloseReason, Event, Phase, Role, Session, SessionConfig, SessionError, send::Class};
use crate::{
    cc::Delta,
    crypto::{Handshake, HandshakeRole, HandshakeStep, MAX_HANDSHAKE_MSG},
    identity::IdentityKey,
    proto,
    wire::HandshakeHeader,
};

/// Handshake retransmission state.
#[derive(Debug, Default)]
pub(super) struct Establish {
    /// Our latest handshake datagram (RIFT header + Noise message), for re-sending.
    cached: Vec<u8>,
    next_retx: Option<Instant>,
    rto: Duration,
    deadline: Option<Instant>,
}

pub(super) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS generator failing is not recoverable; an all-zero id is still handled safely.
    let _ = SystemRandom::new().fill(&mut b);
    b
}

/// A fresh handshake id below 2⁹⁶ whose low 32 bits (the alias) are non-zero.
fn new_handshake_id() -> u128 {
    let b = random_bytes::<12>();
    let mut id = [0u8; 16];
    id[4..].copy_from_slice(&b);
    let v = u128::from_be_bytes(id);
    if v as u32 == 0 { v | 1 } else { v }
}

/// The host's answer to a Hello (spec RIFT §4, codec preference AV1 > HEVC > H.264).
fn answer_hello(cfg: &SessionConfig, hello: &proto::Hello, alias: u32) -> proto::HelloAck {
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
        stream_resolution: Some(proto::Resolution {
            width: w.clamp(320, 8192),
            height: h.clamp(320, 8192),
        }),
        fps: if hello.max_fps == 0 {
            host.fps
        } else {
            host.fps.min(hello.max_fps)
        },
        initial_bitrate_kbps: host.initial_bitrate_kbps,
        keyframe_interval_ms: host.keyframe_interval_ms,
        session_id: random_bytes::<16>().to_vec(),
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
        let hs = Handshake::new(HandshakeRole::Initiator, identity, cfg.policy.clone())?;
        let mut s = Self::blank(now, cfg, host, hs, new_handshake_id());
        s.handshake_step(now, None)?;
        Ok(s)
    }

    /// Starts a host session from a client's msg1 (as routed by the endpoint): msg2 is queued.
    pub fn accept(
        now: Instant,
        cfg: SessionConfig,
        identity: Arc<IdentityKey>,
        from: SocketAddr,
        header: HandshakeHeader,
        msg1: &[u8],
    ) -> Result<Self, SessionError> {
        debug_assert_eq!(cfg.role, Role::Host);
        let hs = Handshake::new(HandshakeRole::Responder, identity, cfg.policy.clone())?;
        let mut s = Self::blank(now, cfg, from, hs, header.session_id);
        s.handshake_step(now, Some((1, msg1)))?;
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
            self.est.cached.resize(HandshakeHeader::LEN + n, 0);
            HandshakeHeader {
                session_id: self.hs_id,
                packet_id: step_no,
            }
            .encode(&mut self.est.cached)
            .map_err(|e| SessionError::Encode(e.to_string()))?;
            self.est.cached[HandshakeHeader::LEN..].copy_from_slice(&out[..n]);
            self.send.queue_raw(&self.est.cached);
            // The client's msg3 is re-sent only when msg2 shows up again.
            self.est.next_retx = if complete {
                None
            } else {
                Some(now + self.est.rto)
            };
        }
        if complete {
            let Phase::Handshaking(hs) = std::mem::replace(&mut self.phase, Phase::Securing) else {
                unreachable!()
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
        match (self.cfg.role, header.packet_id) {
            // Duplicates: answer with our cached message (msg2 for a repeated msg1, msg3 for a
            // repeated msg2) without re-running Noise.
            (Role::Host, 1) | (Role::Client, 2) if !handshaking || header.packet_id != expected => {
                if !self.est.cached.is_empty() {
                    self.stats.handshake_retransmits += 1;
                    self.send.queue_raw(&self.est.cached);
                }
            }
            (_, k) if k == expected && handshaking => {
                self.last_rx = Some(now);
                if let Err(e) = self.handshake_step(now, Some((k, msg))) {
                    self.fail_handshake(&e);
                }
            }
            _ => self.stats.rejected += 1,
        }
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
            if now >= t && matches!(self.phase, Phase::Handshaking(_)) {
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
            Phase::Securing => self.est.deadline,
            _ => None,
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
        let ack = answer_hello(&self.cfg, hello, self.alias);
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
        for _ in 0..1000 {
            let id = new_handshake_id();
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
        let ack = answer_hello(&cfg, &hello, 7);
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
            answer_hello(&cfg, &hello, 7).selected_codec,
            proto::Codec::H264 as i32
        );
    }
}
