//! Authenticated roaming with path validation (issue #15 item 6), host side.
//!
//! A transport packet that authenticates and is newer than any seen, arriving from an address
//! other than the peer's, starts a path check: a sealed PathChallenge with 8 random bytes goes
//! to the new address (at most 3× the bytes received from it, retransmissions included, and
//! at most [`MAX_CHALLENGES`] times); the session moves there when the sealed PathResponse
//! echoing them arrives from that address. Until then everything else still goes to the old
//! address. A replayed packet fails the replay window and a forged one the AEAD before any
//! of this, so neither can move a session. The client accepts the host only at its known
//! address (a host does not roam).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use prost::Message as _;

use super::{Session, Transmit};
use crate::{
    crypto::OVERHEAD,
    proto::{self, control_message::Content as Ctl, message::Content},
    wire::TransportHeader,
};

/// Challenges sent to one address before the check fails.
pub const MAX_CHALLENGES: u32 = 3;
/// A path check that has not succeeded after this long fails.
const PATH_TIMEOUT: Duration = Duration::from_secs(3);
/// Anti-amplification factor towards an unvalidated address.
const AMPLIFICATION: u64 = 3;

/// One path check in progress.
#[derive(Debug)]
struct PathCheck {
    addr: SocketAddr,
    data: u64,
    sends: u32,
    next_send: Instant,
    expires: Instant,
    received: u64,
    sent: u64,
}

/// Roaming state of a session.
#[derive(Debug, Default)]
pub(super) struct PathState {
    check: Option<PathCheck>,
    /// Source of the datagram being processed.
    pub(super) from: Option<SocketAddr>,
}

impl Session {
    /// An authenticated transport packet of `len` bytes came from `from`, not the peer's
    /// address; `newest`: its id is above every id seen before it.
    pub(super) fn on_new_path(&mut self, now: Instant, from: SocketAddr, newest: bool, len: usize) {
        match &mut self.path.check {
            Some(c) if c.addr == from => c.received += len as u64,
            _ if newest => {
                let data = u64::from_le_bytes(self.rng.bytes::<8>());
                self.stats.path_checks_started += 1;
                self.path.check = Some(PathCheck {
                    addr: from,
                    data,
                    sends: 0,
                    next_send: now,
                    expires: now + PATH_TIMEOUT,
                    received: len as u64,
                    sent: 0,
                });
            }
            // Authenticated but reordered behind newer packets: processed, moves nothing.
            _ => {}
        }
    }

    /// Host: a PathResponse; moves the session if it answers the check for the address it
    /// came from.
    pub(super) fn on_path_response(&mut self, r: proto::PathResponse) {
        let from = self.path.from;
        if let Some(c) = self
            .path
            .check
            .take_if(|c| Some(c.addr) == from && c.data == r.data)
        {
            self.remote = c.addr;
            self.stats.migrations += 1;
        }
    }

    /// Client: echoes a PathChallenge (unreliable; the host repeats the challenge).
    pub(super) fn on_path_challenge(&mut self, c: proto::PathChallenge) {
        let msg = proto::Message {
            content: Some(Content::Control(proto::ControlMessage {
                content: Some(Ctl::PathResponse(proto::PathResponse { data: c.data })),
            })),
            reliable_seq: 0,
        };
        let _ = self
            .send
            .queue_message(super::send::Class::Control, &msg, None);
    }

    /// Fails a path check that ran out of challenges or time.
    pub(super) fn path_timeout(&mut self, now: Instant) {
        if self
            .path
            .check
            .take_if(|c| now >= c.expires || (c.sends >= MAX_CHALLENGES && now >= c.next_send))
            .is_some()
        {
            self.stats.path_checks_failed += 1;
        }
    }

    /// When the path check next needs a look (a challenge due within budget, or failure).
    pub(super) fn path_next_timeout(&self) -> Option<Instant> {
        let c = self.path.check.as_ref()?;
        let resend = (c.sends < MAX_CHALLENGES && Self::challenge_fits(c)).then_some(c.next_send);
        let fail = (c.sends >= MAX_CHALLENGES).then_some(c.next_send);
        [Some(c.expires), resend, fail].into_iter().flatten().min()
    }

    fn challenge_fits(c: &PathCheck) -> bool {
        c.sent + Self::CHALLENGE_LEN as u64 <= AMPLIFICATION * c.received
    }

    /// Sealed size of a PathChallenge datagram (fixed64 field: constant).
    const CHALLENGE_LEN: usize = OVERHEAD + 16;

    /// Writes a due PathChallenge to the address under check into `buf`.
    pub(super) fn poll_path_challenge(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let c = self.path.check.as_ref()?;
        if c.sends >= MAX_CHALLENGES || now < c.next_send || !Self::challenge_fits(c) {
            return None;
        }
        let msg = proto::Message {
            content: Some(Content::Control(proto::ControlMessage {
                content: Some(Ctl::PathChallenge(proto::PathChallenge { data: c.data })),
            })),
            reliable_seq: 0,
        };
        let len = msg.encoded_len();
        let at = TransportHeader::LEN;
        msg.encode(&mut buf.get_mut(at..at + len)?).ok()?;
        let alias = self.alias;
        let (_, n) = self.channel.as_mut()?.seal(alias, buf, len).ok()?;
        let pto = self.send.srtt().map_or(Duration::from_millis(200), |r| {
            (2 * r).max(Duration::from_millis(20))
        });
        let c = self.path.check.as_mut()?;
        c.sends += 1;
        c.sent += n as u64;
        c.next_send = now + pto;
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += n as u64;
        Some(Transmit {
            destination: c.addr,
            src_ip: self.local_ip,
            ecn: None,
            len: n,
            segment_size: None,
        })
    }
}
