//! Rekeying with forward secrecy inside an established session (issue #15 item 5).
//!
//! ```text
//!   host                                         client
//!   Rekey{g, E_host}  (reliable)  ─────────────▶ derive gen g; install next rx key,
//!                                                send key switches on its first use
//!   derive gen g; send under g at once ◀──────── RekeyAck{g, E_client} (reliable, old keys)
//!   (phase bit flips), expect g from peer
//!                     first packet under g ────▶ rx and tx move to g; old rx key kept
//!   old rx key kept   ◀──── first packet under g  for `rekey_grace`, then erased
//! ```
//! The host starts a rekey every `rekey_interval` and after `rekey_after_packets` packets
//! under one key (either direction); the client only answers (one initiator: no collisions).
//! Neither side ever sends under a key the other cannot yet open, so no packet is lost to the
//! switch; reordered old-phase packets open with the previous key until it is erased.

use std::time::Instant;

use super::{Phase, Role, Session, send::Class};
use crate::{
    crypto::{Ephemeral, PacketKey, derive_rekey},
    proto::{self, control_message::Content as Ctl, message::Content},
};

/// Rekey bookkeeping of one session.
#[derive(Debug)]
pub(super) struct RekeyState {
    /// Key generation in use (0: the handshake's keys).
    generation: u64,
    /// Host: the rekey in flight (its generation and our ephemeral key).
    pending: Option<(u64, Ephemeral)>,
    /// When the last rekey started (or the session began).
    last_start: Instant,
    /// When the previous receive key is erased.
    prev_until: Option<Instant>,
}

impl RekeyState {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            generation: 0,
            pending: None,
            last_start: now,
            prev_until: None,
        }
    }

    /// The key generation in use.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }
}

fn control(content: Ctl) -> proto::Message {
    proto::Message {
        content: Some(Content::Control(proto::ControlMessage {
            content: Some(content),
        })),
        reliable_seq: 0,
    }
}

impl Session {
    /// The next instant the rekey logic needs a look: the host's next rekey, or the erasure
    /// of the previous key.
    pub(super) fn rekey_next_timeout(&self) -> Option<Instant> {
        let start = (self.cfg.role == Role::Host
            && matches!(self.phase, Phase::Connected)
            && !self.cfg.rekey_interval.is_zero()
            && self.rekey.pending.is_none()
            && self
                .channel
                .as_ref()
                .is_some_and(|c| !c.has_next() && !c.has_previous()))
        .then(|| self.rekey.last_start + self.cfg.rekey_interval);
        [start, self.rekey.prev_until].into_iter().flatten().min()
    }

    /// Erases the previous receive key once its grace period is over, and (host) starts a
    /// rekey when the keys are old or used for many packets.
    pub(super) fn rekey_tick(&mut self, now: Instant) {
        let Some(ch) = self.channel.as_mut() else {
            return;
        };
        if self.rekey.prev_until.is_some_and(|t| t <= now) {
            ch.drop_previous();
            self.rekey.prev_until = None;
        }
        if self.cfg.role != Role::Host
            || !matches!(self.phase, Phase::Connected)
            || self.rekey.pending.is_some()
            || ch.has_next()
            || ch.has_previous()
        {
            return;
        }
        let old = !self.cfg.rekey_interval.is_zero()
            && now.saturating_duration_since(self.rekey.last_start) >= self.cfg.rekey_interval;
        if !old && ch.key_use() < self.cfg.rekey_after_packets {
            return;
        }
        let generation = self.rekey.generation + 1;
        let mut random = self.rng.bytes::<32>();
        let eph = Ephemeral::from_random(&mut random);
        let msg = control(Ctl::Rekey(proto::Rekey {
            generation,
            public_key: eph.public().to_vec(),
        }));
        self.rekey.last_start = now;
        if self.send.queue_reliable(Class::Control, msg, now).is_ok() {
            self.stats.rekeys_started += 1;
            self.rekey.pending = Some((generation, eph));
        }
        self.check_reliable();
    }

    /// A packet opened under the next receive key: both directions now use the new
    /// generation; the old receive key stays for reordered packets until `rekey_grace`.
    pub(super) fn on_rotated(&mut self, now: Instant) {
        self.stats.rekeys_completed += 1;
        self.rekey.prev_until = Some(now + self.cfg.rekey_grace);
    }

    /// Client: the host's Rekey. Derives the next generation, installs its receive key (the
    /// send key follows on its first use) and answers with our ephemeral key.
    pub(super) fn on_rekey(&mut self, now: Instant, r: &proto::Rekey) {
        let Some(ch) = self.channel.as_mut() else {
            return;
        };
        let g = self.rekey.generation;
        // A repeat for the generation still waiting for its first packet replaces it (the
        // host gave up on our earlier answer).
        let fresh = r.generation == g.wrapping_add(1) || (r.generation == g && ch.has_next());
        if self.cfg.role != Role::Client || !matches!(self.phase, Phase::Connected) || !fresh {
            self.stats.rekeys_failed += 1;
            return;
        }
        let mut random = self.rng.bytes::<32>();
        let eph = Ephemeral::from_random(&mut random);
        let Ok(keys) = derive_rekey(ch.chain(), &eph, &r.public_key, r.generation, false) else {
            self.stats.rekeys_failed += 1;
            return;
        };
        ch.install_next(PacketKey::new(&keys.r2i), Some(PacketKey::new(&keys.i2r)));
        ch.set_chain(keys.chain);
        self.rekey.generation = r.generation;
        self.rekey.prev_until = None;
        self.stats.rekeys_started += 1;
        let ack = control(Ctl::RekeyAck(proto::RekeyAck {
            generation: r.generation,
            public_key: eph.public().to_vec(),
        }));
        let _ = self.send.queue_reliable(Class::Control, ack, now);
        self.check_reliable();
    }

    /// Host: the client's RekeyAck. Derives the generation, sends under it at once (the
    /// client already holds its receive key) and expects the client's packets under it.
    pub(super) fn on_rekey_ack(&mut self, a: &proto::RekeyAck) {
        let Some(ch) = self.channel.as_mut() else {
            return;
        };
        let pending = match self.rekey.pending.take() {
            Some((g, eph)) if g == a.generation && self.cfg.role == Role::Host => eph,
            other => {
                self.rekey.pending = other;
                self.stats.rekeys_failed += 1;
                return;
            }
        };
        match derive_rekey(ch.chain(), &pending, &a.public_key, a.generation, true) {
            Ok(keys) => {
                ch.switch_tx(PacketKey::new(&keys.r2i));
                ch.install_next(PacketKey::new(&keys.i2r), None);
                ch.set_chain(keys.chain);
                self.rekey.generation = a.generation;
                self.rekey.prev_until = None;
            }
            // The client's key is unusable: count it; a later rekey retries this generation.
            Err(_) => self.stats.rekeys_failed += 1,
        }
    }

    /// The key generation in use (0 until the first rekey); for tests and diagnostics.
    pub fn key_generation(&self) -> u64 {
        self.rekey.generation()
    }
}
