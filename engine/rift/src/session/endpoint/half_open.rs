//! What a host endpoint keeps for a handshake before the client has proven its address: a
//! half-open handshake (Noise responder state and the cached msg2, no `Session`), the stateless
//! cookie jar used under load, and the anti-amplification budget (QUIC's 3x rule).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use ring::hmac;

use crate::{crypto::Handshake, rng::Rng, wire::Cookie};

/// How long a cookie is accepted after it was made.
const COOKIE_LIFETIME_S: u32 = 30;
/// How often the cookie secret changes (the previous one stays valid for one more period).
const COOKIE_ROTATION: Duration = Duration::from_secs(120);

/// A handshake the host answered with msg2 and is waiting to see msg3 for.
#[derive(Debug)]
pub(super) struct HalfOpen {
    /// Noise responder after msg2.
    pub(super) hs: Box<Handshake>,
    /// The RIFT msg2 datagram (no relay header), re-sent on timer or duplicate msg1.
    pub(super) msg2: Box<[u8]>,
    /// The session's random generator, forked when the handshake started.
    pub(super) rng: Rng,
    /// Local IP the client's first message arrived at.
    pub(super) local_ip: Option<IpAddr>,
    /// Bytes received from the client's address for this handshake.
    pub(super) received: u64,
    /// Bytes sent to it (retransmissions included).
    pub(super) sent: u64,
    /// The client repeated msg1 with a valid cookie: no amplification limit.
    pub(super) validated: bool,
    /// Dropped at this instant if msg3 has not arrived.
    pub(super) expires: Instant,
    /// Latest instant `expires` may be pushed to while the client keeps sending.
    pub(super) expires_max: Instant,
    pub(super) next_retx: Instant,
    pub(super) rto: Duration,
    /// A msg2 is waiting in the endpoint's transmit queue.
    pub(super) queued: bool,
    /// A msg2 was due but the budget was short: send it when more bytes arrive.
    pub(super) owed: bool,
}

impl HalfOpen {
    /// The handshake's next timer (retransmission or expiry).
    pub(super) fn next_timeout(&self) -> Instant {
        self.next_retx.min(self.expires)
    }

    /// May `len` more bytes go to this client under the amplification limit `factor`?
    pub(super) fn may_send(&self, len: usize, factor: u64) -> bool {
        self.validated || self.sent + len as u64 <= factor.saturating_mul(self.received)
    }
}

/// The host's cookie secrets: HMAC-SHA256 keys from the endpoint's generator, rotated.
#[derive(Debug)]
pub(super) struct CookieJar {
    current: hmac::Key,
    previous: hmac::Key,
    rotate_at: Instant,
    /// Zero of the cookies' coarse clock.
    base: Instant,
}

impl CookieJar {
    pub(super) fn new(now: Instant, rng: &mut Rng) -> Self {
        Self {
            current: hmac::Key::new(hmac::HMAC_SHA256, &rng.bytes::<32>()),
            previous: hmac::Key::new(hmac::HMAC_SHA256, &rng.bytes::<32>()),
            rotate_at: now + COOKIE_ROTATION,
            base: now,
        }
    }

    /// Rotates the secret when its period is over.
    pub(super) fn rotate(&mut self, now: Instant, rng: &mut Rng) {
        if now < self.rotate_at {
            return;
        }
        let fresh = hmac::Key::new(hmac::HMAC_SHA256, &rng.bytes::<32>());
        self.previous = std::mem::replace(&mut self.current, fresh);
        if now >= self.rotate_at + COOKIE_ROTATION {
            // Idle for more than a period: the old secret is too old to keep.
            self.previous = hmac::Key::new(hmac::HMAC_SHA256, &rng.bytes::<32>());
        }
        self.rotate_at = now + COOKIE_ROTATION;
    }

    fn clock(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.base).as_secs()).unwrap_or(u32::MAX)
    }

    /// A cookie for `from` and `handshake_id`, now.
    pub(super) fn make(&self, now: Instant, from: SocketAddr, handshake_id: u128) -> Cookie {
        let timestamp = self.clock(now);
        let t = hmac::sign(
            &self.current,
            &Cookie::mac_input(from, handshake_id, timestamp),
        );
        let mut tag = [0u8; 32];
        tag.copy_from_slice(t.as_ref());
        Cookie { timestamp, tag }
    }

    /// Is `cookie` one this host made for `from` and `handshake_id`, recently?
    pub(super) fn check(
        &self,
        now: Instant,
        from: SocketAddr,
        handshake_id: u128,
        cookie: &Cookie,
    ) -> bool {
        let clock = self.clock(now);
        if cookie.timestamp > clock || clock - cookie.timestamp > COOKIE_LIFETIME_S {
            return false;
        }
        let input = Cookie::mac_input(from, handshake_id, cookie.timestamp);
        hmac::verify(&self.current, &input, &cookie.tag).is_ok()
            || hmac::verify(&self.previous, &input, &cookie.tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_bind_address_id_and_time_and_survive_one_rotation() {
        let t0 = Instant::now();
        let mut rng = Rng::new(Some(3));
        let mut jar = CookieJar::new(t0, &mut rng);
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let c = jar.make(t0, a, 42);
        assert!(jar.check(t0, a, 42, &c));
        assert!(!jar.check(t0, "10.0.0.1:5001".parse().unwrap(), 42, &c));
        assert!(!jar.check(t0, "10.0.0.2:5000".parse().unwrap(), 42, &c));
        assert!(!jar.check(t0, a, 43, &c));
        let mut forged = c;
        forged.tag[0] ^= 1;
        assert!(!jar.check(t0, a, 42, &forged));
        let mut later = c;
        later.timestamp += 1;
        assert!(!jar.check(t0 + Duration::from_secs(1), a, 42, &later));
        // Expired after its lifetime.
        assert!(!jar.check(t0 + Duration::from_secs(31), a, 42, &c));
        // One rotation keeps it valid; a second one does not.
        let r1 = t0 + COOKIE_ROTATION;
        jar.rotate(r1, &mut rng);
        let c1 = jar.make(r1, a, 42);
        let at = r1 + Duration::from_secs(20);
        jar.rotate(r1 + COOKIE_ROTATION, &mut rng);
        assert!(jar.check(at, a, 42, &c1));
        jar.rotate(r1 + COOKIE_ROTATION * 2, &mut rng);
        assert!(!jar.check(at, a, 42, &c1));
    }
}
