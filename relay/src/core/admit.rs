//! LEASE_PRESENT / LEASE_RENEW: lease verification (once, then cached), role slots, the
//! holder-signed address binding, capacity and load shedding, LEASE_ACK.

use std::net::SocketAddr;

use time::OffsetDateTime;
use uuid::Uuid;
use wavry_rift::identity::WavryId;
use wavry_rift::lease::{LeaseError, LeaseRole};
use wavry_rift::wire::{
    BINDING_MESSAGE_MAX, LeaseAck, LeasePresent, PeerRole, RejectReason, RelayHeader, RelayType,
    binding_message,
};

use super::{
    BINDING_SKEW_MS, BindingEvent, DEFAULT_HARD_KBPS, DEFAULT_SOFT_KBPS, LeaseAuth, Now, Peer,
    REPLY_MAX, RelayCore, Session, Verdict, bucket::TokenBucket, slot,
};

/// What an admitted lease grants.
struct Grant {
    sub: Box<str>,
    identity: Option<WavryId>,
    exp_unix_ms: i64,
    soft_kbps: u32,
    hard_kbps: u32,
}

fn reason_for(e: &LeaseError) -> RejectReason {
    match e {
        LeaseError::Expired => RejectReason::Expired,
        LeaseError::WrongRelay => RejectReason::WrongRelay,
        _ => RejectReason::InvalidSignature,
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl RelayCore {
    /// Spends one verification from the source's and the relay's budgets.
    fn spend_verify(&mut self, now: Now, src: SocketAddr) -> bool {
        let bursts = self.cfg.ip_bursts();
        let per_ip = self.cfg.verify_per_ip_per_s;
        self.ips.entry(src.ip(), now.mono_ns, bursts).verify.take(
            now.mono_ns,
            per_ip,
            bursts.verify,
            1.0,
        ) && self.verify_global.take(
            now.mono_ns,
            self.cfg.verify_global_per_s,
            self.cfg.verify_global_per_s.max(1.0),
            1.0,
        )
    }

    fn limits(&self, slimit: Option<u32>, hlimit: Option<u32>) -> (u32, u32) {
        let soft = slimit.unwrap_or(DEFAULT_SOFT_KBPS).max(1000);
        let hard = hlimit
            .unwrap_or(DEFAULT_HARD_KBPS)
            .max(soft)
            .min(self.cfg.max_bitrate_kbps.max(1000));
        (soft.min(hard), hard)
    }

    /// Verifies `token` (or takes the insecure-dev shortcut).
    fn verify_lease(
        &self,
        now: Now,
        sid: &[u8; 16],
        role: PeerRole,
        token: &str,
    ) -> Result<Grant, RejectReason> {
        match &self.auth {
            LeaseAuth::InsecureDev => {
                let (soft_kbps, hard_kbps) = self.limits(None, None);
                Ok(Grant {
                    sub: "insecure-dev-peer".into(),
                    identity: None,
                    exp_unix_ms: now.unix_ms.saturating_add(
                        i64::try_from(self.cfg.lease_duration.as_millis()).unwrap_or(i64::MAX),
                    ),
                    soft_kbps,
                    hard_kbps,
                })
            }
            LeaseAuth::Verify(v) => {
                self.stats.lease_verifications.inc();
                let wall =
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(now.unix_ms) * 1_000_000)
                        .map_err(|_| RejectReason::Expired)?;
                let claims = v
                    .verify(token, wall, Uuid::from_bytes(*sid), LeaseRole::from(role))
                    .map_err(|e| reason_for(&e))?;
                // The holder's key: the Wavry ID claim, else a `sub` that is one.
                let identity = claims
                    .wavry_id
                    .as_deref()
                    .and_then(|w| w.parse::<WavryId>().ok())
                    .or_else(|| claims.sub.parse::<WavryId>().ok());
                let (soft_kbps, hard_kbps) = self.limits(claims.slimit, claims.hlimit);
                let exp_unix_ms =
                    i64::try_from(claims.exp.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                Ok(Grant {
                    sub: claims.sub.into_boxed_str(),
                    identity,
                    exp_unix_ms,
                    soft_kbps,
                    hard_kbps,
                })
            }
        }
    }

    /// Handles LEASE_PRESENT and LEASE_RENEW.
    pub(super) fn admit(
        &mut self,
        now: Now,
        src: SocketAddr,
        header: &RelayHeader,
        payload: &[u8],
        reply: &mut [u8; REPLY_MAX],
    ) -> Verdict {
        let renew = header.kind == RelayType::LeaseRenew;
        if renew {
            self.stats.lease_renew_packets.inc();
        } else {
            self.stats.lease_present_packets.inc();
        }
        let sid = header.session_id;
        let req_len = RelayHeader::LEN + payload.len();
        let bursts = self.cfg.ip_bursts();
        let rate = self.cfg.ip_rate_pps;
        if !self.ips.entry(src.ip(), now.mono_ns, bursts).packets.take(
            now.mono_ns,
            rate,
            bursts.packets,
            1.0,
        ) {
            self.stats.rate_limited_packets.inc();
            return self.reject(now, src, &sid, req_len, RejectReason::RateLimited, reply);
        }
        if renew && payload.is_empty() {
            return self.renew_without_token(now, src, &sid, req_len, reply);
        }
        let Ok(present) = LeasePresent::decode(payload) else {
            self.stats.invalid_packets.inc();
            return self.reject(
                now,
                src,
                &sid,
                req_len,
                RejectReason::InvalidSignature,
                reply,
            );
        };
        let idx = slot(present.role);
        let existing = self.sessions.get(&sid);
        let current = existing.and_then(|s| s.peers[idx].as_ref());
        if renew {
            match current {
                None if existing.is_none() => {
                    return self.reject(now, src, &sid, req_len, RejectReason::Expired, reply);
                }
                Some(p) if p.addr == src => {}
                _ => {
                    return self.reject(
                        now,
                        src,
                        &sid,
                        req_len,
                        RejectReason::InvalidSignature,
                        reply,
                    );
                }
            }
        }
        if existing.is_none() {
            let n = self.sessions.len();
            let max = self.cfg.max_sessions;
            if n >= max {
                return self.reject(now, src, &sid, req_len, RejectReason::SessionFull, reply);
            }
            if n * 100 >= max * usize::from(self.cfg.load_shed_pct.clamp(50, 100)) {
                self.stats.overload_shed_packets.inc();
                return self.reject(now, src, &sid, req_len, RejectReason::SessionFull, reply);
            }
        }
        let digest = token_digest(present.token);
        let cached = current.filter(|p| p.token_digest == digest).map(|p| Grant {
            sub: p.sub.clone(),
            identity: p.identity,
            exp_unix_ms: p.token_exp_unix_ms,
            soft_kbps: p.lease_kbps.0,
            hard_kbps: p.lease_kbps.1,
        });
        let grant = if let Some(g) = cached {
            self.stats.lease_cache_hits.inc();
            if g.exp_unix_ms
                <= now.unix_ms - wavry_rift::lease::CLOCK_SKEW.whole_milliseconds() as i64
            {
                return self.reject(now, src, &sid, req_len, RejectReason::Expired, reply);
            }
            g
        } else {
            if !matches!(self.auth, LeaseAuth::InsecureDev) && !self.spend_verify(now, src) {
                self.stats.verify_budget_dropped.inc();
                return self.reject(now, src, &sid, req_len, RejectReason::RateLimited, reply);
            }
            match self.verify_lease(now, &sid, present.role, present.token) {
                Ok(g) => g,
                Err(r) => return self.reject(now, src, &sid, req_len, r, reply),
            }
        };
        // Re-borrow: verification needed `&self`.
        let current = self.sessions.get(&sid).and_then(|s| s.peers[idx].as_ref());
        let (prev_addr, prev_binding) = match current {
            Some(p) if p.sub != grant.sub => {
                // The role is locked to the identity that first took it.
                return self.reject(
                    now,
                    src,
                    &sid,
                    req_len,
                    RejectReason::InvalidSignature,
                    reply,
                );
            }
            Some(p) => (Some(p.addr), p.last_binding_ms),
            None => (None, 0),
        };
        let mut binding_ms = prev_binding;
        if prev_addr != Some(src) && !matches!(self.auth, LeaseAuth::InsecureDev) {
            // Binding or moving an address: the holder must have signed it.
            match self.check_binding(now, src, &sid, &present, grant.identity, prev_binding) {
                Ok(ts) => binding_ms = ts,
                Err(r) => return self.reject(now, src, &sid, req_len, r, reply),
            }
        }
        self.commit(
            now, src, sid, idx, grant, digest, binding_ms, prev_addr, reply,
        )
    }

    /// Checks a PRESENT's binding: present, identity known, timestamp fresh and increasing,
    /// signature valid (under the verification budget). Returns the accepted timestamp.
    fn check_binding(
        &mut self,
        now: Now,
        src: SocketAddr,
        sid: &[u8; 16],
        present: &LeasePresent<'_>,
        identity: Option<WavryId>,
        prev_binding: u64,
    ) -> Result<u64, RejectReason> {
        let (Some(b), Some(id)) = (present.binding, identity) else {
            self.stats.binding_rejects.inc();
            return Err(RejectReason::InvalidSignature);
        };
        let ts = i64::try_from(b.timestamp_ms).unwrap_or(i64::MAX);
        if ts.abs_diff(now.unix_ms) > BINDING_SKEW_MS.unsigned_abs() {
            self.stats.binding_rejects.inc();
            return Err(RejectReason::InvalidSignature);
        }
        if b.timestamp_ms <= prev_binding {
            self.stats.replay_dropped_packets.inc();
            return Err(RejectReason::InvalidSignature);
        }
        if !self.spend_verify(now, src) {
            self.stats.verify_budget_dropped.inc();
            return Err(RejectReason::RateLimited);
        }
        self.stats.binding_verifications.inc();
        let mut msg = [0u8; BINDING_MESSAGE_MAX];
        let n = binding_message(
            sid,
            present.role,
            &self.cfg.relay_id,
            b.timestamp_ms,
            &mut msg,
        )
        .map_err(|_| RejectReason::InvalidSignature)?;
        if id.verify(&msg[..n], &b.signature).is_err() {
            self.stats.binding_rejects.inc();
            return Err(RejectReason::InvalidSignature);
        }
        Ok(b.timestamp_ms)
    }

    #[allow(clippy::too_many_arguments)] // one admission's facts, passed once
    fn commit(
        &mut self,
        now: Now,
        src: SocketAddr,
        sid: [u8; 16],
        idx: usize,
        grant: Grant,
        digest: [u8; 32],
        binding_ms: u64,
        prev_addr: Option<SocketAddr>,
        reply: &mut [u8; REPLY_MAX],
    ) -> Verdict {
        let cap_ms = i64::try_from(self.cfg.lease_duration.as_millis()).unwrap_or(i64::MAX);
        let expires_unix_ms = grant.exp_unix_ms.min(now.unix_ms.saturating_add(cap_ms));
        let ahead_ms = u64::try_from(expires_unix_ms.saturating_sub(now.unix_ms)).unwrap_or(0);
        let expires_mono_ns = now
            .mono_ns
            .saturating_add(ahead_ms.saturating_mul(1_000_000));
        let created = !self.sessions.contains_key(&sid);
        let session = self.sessions.entry(sid).or_insert_with(|| Session {
            peers: [None, None],
            soft_kbps: grant.soft_kbps,
            hard_kbps: grant.hard_kbps,
            last_activity_ns: now.mono_ns,
        });
        if created {
            self.stats.sessions_created.inc();
        }
        session.soft_kbps = grant.soft_kbps;
        session.hard_kbps = grant.hard_kbps;
        session.last_activity_ns = now.mono_ns;
        let burst = session.burst_bytes();
        let bucket = session.peers[idx]
            .as_ref()
            .map_or_else(|| TokenBucket::full(burst, now.mono_ns), |p| p.bucket);
        let lease_kbps = (grant.soft_kbps, grant.hard_kbps);
        session.peers[idx] = Some(Peer {
            lease_kbps,
            addr: src,
            identity: grant.identity,
            sub: grant.sub,
            token_digest: digest,
            token_exp_unix_ms: grant.exp_unix_ms,
            expires_mono_ns,
            expires_unix_ms,
            last_binding_ms: binding_ms,
            bucket,
        });
        if prev_addr.is_some_and(|a| a != src) {
            self.stats.nat_rebind_events.inc();
        }
        if let Some(ev) = self.bindings.as_mut()
            && prev_addr != Some(src)
        {
            if let Some(old) = prev_addr
                && !session.peers.iter().flatten().any(|p| p.addr == old)
            {
                ev.push(BindingEvent::Unbound(sid, old));
            }
            ev.push(BindingEvent::Bound(sid, src));
        }
        let (soft, hard) = (session.soft_kbps, session.hard_kbps);
        self.publish_gauges();
        Self::ack(&sid, expires_unix_ms, soft, hard, src, reply)
    }

    fn ack(
        sid: &[u8; 16],
        expires_unix_ms: i64,
        soft: u32,
        hard: u32,
        src: SocketAddr,
        reply: &mut [u8; REPLY_MAX],
    ) -> Verdict {
        let header = RelayHeader {
            kind: RelayType::LeaseAck,
            flags: 0,
            session_id: *sid,
        };
        let ack = LeaseAck {
            expires_unix_ms: u64::try_from(expires_unix_ms).unwrap_or(0),
            soft_limit_kbps: soft,
            hard_limit_kbps: hard,
        };
        if header.encode(&mut reply[..]).is_err() || ack.encode(&mut reply[20..]).is_err() {
            return Verdict::Drop;
        }
        Verdict::Reply(src, REPLY_MAX)
    }

    /// LEASE_RENEW with no payload (the original layout): from the bound address, extends the
    /// admission up to the cached lease's own `exp`, never beyond.
    fn renew_without_token(
        &mut self,
        now: Now,
        src: SocketAddr,
        sid: &[u8; 16],
        req_len: usize,
        reply: &mut [u8; REPLY_MAX],
    ) -> Verdict {
        let cap_ms = i64::try_from(self.cfg.lease_duration.as_millis()).unwrap_or(i64::MAX);
        let Some(s) = self.sessions.get_mut(sid) else {
            return self.reject(now, src, sid, req_len, RejectReason::Expired, reply);
        };
        let Some(p) = s.peers.iter_mut().flatten().find(|p| p.addr == src) else {
            return self.reject(
                now,
                src,
                sid,
                req_len,
                RejectReason::InvalidSignature,
                reply,
            );
        };
        if p.token_exp_unix_ms <= now.unix_ms {
            return self.reject(now, src, sid, req_len, RejectReason::Expired, reply);
        }
        p.expires_unix_ms = p.token_exp_unix_ms.min(now.unix_ms.saturating_add(cap_ms));
        let ahead_ms = u64::try_from(p.expires_unix_ms - now.unix_ms).unwrap_or(0);
        p.expires_mono_ns = now
            .mono_ns
            .saturating_add(ahead_ms.saturating_mul(1_000_000));
        let exp = p.expires_unix_ms;
        s.last_activity_ns = now.mono_ns;
        let (soft, hard) = (s.soft_kbps, s.hard_kbps);
        Self::ack(sid, exp, soft, hard, src, reply)
    }
}
