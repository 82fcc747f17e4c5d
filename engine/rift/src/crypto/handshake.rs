//! Noise_XX_25519_ChaChaPoly_BLAKE2s with mutual Ed25519 identity authentication, as a step
//! function: bytes in, bytes out, no I/O, no clock.
//!
//! ```text
//! initiator (client)                         responder (host)
//!   msg1  -> e                                  (empty payload)
//!   msg2  <- e, ee, s, es   + proof(responder, h after msg1)
//!   msg3  -> s, se          + proof(initiator, h after msg2)
//! ```
//! Each proof is checked against the sender's Noise static key and the local [`PeerPolicy`].
//! Transport keys come from the Noise `Split()`: initiator→responder is the first key.

use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

use super::{AUTH_PAYLOAD_LEN, AuthPayload, CryptoError, PacketKey, SecureChannel};
use crate::{
    identity::{IdentityKey, WavryId},
    rng::{NoiseResolver, Rng},
};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Prologue mixed into every handshake: binds the protocol and version.
pub const PROLOGUE: &[u8] = b"wavry-rift/1";
/// Largest handshake message Wavry produces or accepts (msg2: 32 + 48 + 97 + 16 = 193).
pub const MAX_HANDSHAKE_MSG: usize = 256;

const LABEL_RESPONDER: &[u8] = b"wavry-rift/1 responder identity";
const LABEL_INITIATOR: &[u8] = b"wavry-rift/1 initiator identity";

/// Which identities a handshake accepts from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Any identity that proves possession of its key (the identity is still reported).
    AnyAuthenticated,
    /// Exactly this Wavry ID.
    Pinned(WavryId),
    /// Any of these Wavry IDs.
    AllowList(Vec<WavryId>),
}

impl PeerPolicy {
    /// Whether a peer proving `id` may complete the handshake (signalling asks it first, to
    /// refuse an offer before any datagram is sent).
    pub fn allows(&self, id: &WavryId) -> bool {
        match self {
            Self::AnyAuthenticated => true,
            Self::Pinned(p) => p == id,
            Self::AllowList(l) => l.contains(id),
        }
    }
}

/// Handshake role: the client initiates, the host responds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRole {
    /// Sends msg1 and msg3.
    Initiator,
    /// Sends msg2.
    Responder,
}

/// What the caller must do after [`Handshake::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStep {
    /// Send `out[..n]` to the peer, then wait for its answer.
    Send(usize),
    /// Send `out[..n]` to the peer; the handshake is complete on this side.
    SendAndComplete(usize),
    /// Nothing to send; wait for the peer's next message.
    Wait,
    /// The handshake is complete; call [`Handshake::into_channel`].
    Complete,
}

/// One side of a handshake in progress.
pub struct Handshake {
    noise: snow::HandshakeState,
    identity: Arc<IdentityKey>,
    policy: PeerPolicy,
    role: HandshakeRole,
    local_static: [u8; 32],
    /// Handshake hash at the point the peer's next proof was (or will be) signed.
    transcript: [u8; 32],
    peer: Option<WavryId>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("identity", &self.identity.id())
            .field("policy", &self.policy)
            .field("peer", &self.peer)
            .field("finished", &self.noise.is_handshake_finished())
            .finish_non_exhaustive()
    }
}

pub(crate) fn noise_builder<'a>() -> snow::Builder<'a> {
    // The constant parses; a failure here is a programming error caught by every test.
    snow::Builder::new(NOISE_PARAMS.parse().unwrap_or_else(|_| unreachable!()))
}

impl Handshake {
    /// Starts a handshake with a fresh X25519 static key. Identity is proven with `identity`.
    pub fn new(
        role: HandshakeRole,
        identity: Arc<IdentityKey>,
        policy: PeerPolicy,
    ) -> Result<Self, CryptoError> {
        Self::with_rng(role, identity, policy, Rng::Os)
    }

    /// [`Self::new`] with the static and ephemeral keys drawn from `rng` (through snow's
    /// resolver), so a seeded run produces the same handshake bytes every time.
    pub fn with_rng(
        role: HandshakeRole,
        identity: Arc<IdentityKey>,
        policy: PeerPolicy,
        rng: Rng,
    ) -> Result<Self, CryptoError> {
        let builder = match rng {
            Rng::Os => noise_builder(),
            seeded @ Rng::Seeded(_) => snow::Builder::with_resolver(
                NOISE_PARAMS.parse().unwrap_or_else(|_| unreachable!()),
                Box::new(NoiseResolver::new(seeded)),
            ),
        };
        let mut keypair = builder.generate_keypair()?;
        let noise = builder
            .local_private_key(&keypair.private)
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| match role {
                HandshakeRole::Initiator => b.build_initiator(),
                HandshakeRole::Responder => b.build_responder(),
            });
        // The static private key now lives only inside snow's state (which zeroizes it).
        keypair.private.zeroize();
        let noise = noise?;
        let mut local_static = [0u8; 32];
        local_static.copy_from_slice(&keypair.public);
        Ok(Self {
            noise,
            identity,
            policy,
            role,
            local_static,
            transcript: [0; 32],
            peer: None,
        })
    }

    /// This side's role.
    pub fn role(&self) -> HandshakeRole {
        self.role
    }

    /// The peer's authenticated identity, once its proof has been verified.
    pub fn peer(&self) -> Option<WavryId> {
        self.peer
    }

    /// True once all three messages have been processed on this side.
    pub fn is_complete(&self) -> bool {
        self.noise.is_handshake_finished()
    }

    fn hash(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        h.copy_from_slice(&self.noise.get_handshake_hash()[..32]);
        h
    }

    /// Writes this side's next handshake message into `out` (at least
    /// [`MAX_HANDSHAKE_MSG`] bytes) and returns its length. Call only when it is this side's
    /// turn (initiator first; see [`Self::step`] for the driven form).
    pub fn write_message(&mut self, out: &mut [u8]) -> Result<usize, CryptoError> {
        if !self.noise.is_my_turn() || self.noise.is_handshake_finished() {
            return Err(CryptoError::OutOfOrder(
                "write_message when it is not our turn",
            ));
        }
        let mut payload = [0u8; AUTH_PAYLOAD_LEN];
        let label = match self.role {
            // msg1 carries nothing: it is not yet encrypted.
            HandshakeRole::Initiator if self.peer.is_none() => None,
            HandshakeRole::Initiator => Some(LABEL_INITIATOR),
            HandshakeRole::Responder => Some(LABEL_RESPONDER),
        };
        let payload_len = match label {
            None => 0,
            Some(label) => {
                AuthPayload::create(&self.identity, label, &self.transcript, &self.local_static)
                    .encode(&mut payload)?
            }
        };
        let n = self.noise.write_message(&payload[..payload_len], out)?;
        // The peer's proof (if still to come) is signed over the hash as it stands now.
        self.transcript = self.hash();
        Ok(n)
    }

    /// Processes the peer's next handshake message. Verifies the peer's identity proof
    /// (messages 2 and 3) against the transcript, its Noise static key and the policy.
    pub fn read_message(&mut self, msg: &[u8]) -> Result<(), CryptoError> {
        if self.noise.is_my_turn() || self.noise.is_handshake_finished() {
            return Err(CryptoError::OutOfOrder("read_message when it is our turn"));
        }
        if msg.len() > MAX_HANDSHAKE_MSG {
            // Unauthenticated input, like a message that does not decrypt.
            return Err(CryptoError::Noise("handshake message too large".into()));
        }
        let mut payload = [0u8; MAX_HANDSHAKE_MSG];
        let n = self.noise.read_message(msg, &mut payload)?;
        let expects_proof = match self.role {
            HandshakeRole::Initiator => true, // msg2
            HandshakeRole::Responder => self.noise.is_handshake_finished(), // msg3
        };
        if expects_proof {
            let proof = AuthPayload::decode(&payload[..n])?;
            let label = match self.role {
                HandshakeRole::Initiator => LABEL_RESPONDER,
                HandshakeRole::Responder => LABEL_INITIATOR,
            };
            let remote_static = self
                .noise
                .get_remote_static()
                .ok_or(CryptoError::BadAuthPayload("peer static key missing"))?;
            proof.verify(label, &self.transcript, remote_static)?;
            if !self.policy.allows(&proof.identity) {
                return Err(CryptoError::PeerRejected(proof.identity));
            }
            self.peer = Some(proof.identity);
        } else if n != 0 {
            return Err(CryptoError::BadAuthPayload("msg1 must carry no payload"));
        }
        self.transcript = self.hash();
        Ok(())
    }

    /// Drives the handshake: processes `incoming` (if any), then writes this side's next
    /// message into `out` when it is its turn. The initiator calls `step(None, out)` first.
    pub fn step(
        &mut self,
        incoming: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<HandshakeStep, CryptoError> {
        if let Some(msg) = incoming {
            self.read_message(msg)?;
        }
        if self.noise.is_handshake_finished() {
            return Ok(HandshakeStep::Complete);
        }
        if !self.noise.is_my_turn() {
            return Ok(HandshakeStep::Wait);
        }
        let n = self.write_message(out)?;
        Ok(if self.noise.is_handshake_finished() {
            HandshakeStep::SendAndComplete(n)
        } else {
            HandshakeStep::Send(n)
        })
    }

    /// Finishes the handshake: derives the two direction keys from the Noise split and returns
    /// the secure channel for the transport phase.
    pub fn into_channel(mut self) -> Result<SecureChannel, CryptoError> {
        if !self.noise.is_handshake_finished() {
            return Err(CryptoError::OutOfOrder(
                "into_channel before the handshake finished",
            ));
        }
        let peer = self
            .peer
            .ok_or(CryptoError::OutOfOrder("peer not authenticated"))?;
        let hash = self.hash();
        let (i2r, r2i) = self.noise.dangerously_get_raw_split();
        let (i2r, r2i) = (Zeroizing::new(i2r), Zeroizing::new(r2i));
        let (tx, rx) = match self.role {
            HandshakeRole::Initiator => (&i2r, &r2i),
            HandshakeRole::Responder => (&r2i, &i2r),
        };
        let mut ch = SecureChannel::new(PacketKey::new(tx), PacketKey::new(rx), peer, hash);
        ch.set_chain(super::initial_chain(&i2r, &r2i, &hash));
        Ok(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexd(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn json() -> serde_json::Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/noise-xx-25519-chachapoly-blake2s.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    /// The cacophony vector for our exact protocol name: same params string, same ciphertexts,
    /// same handshake hash, and the Noise split keys used through *our* PacketKey (our nonce
    /// layout equals Noise's) reproduce the transport messages.
    #[test]
    fn cacophony_vector_through_our_params_and_packet_key() {
        let v = &json()["vectors"][0];
        assert_eq!(v["protocol_name"], NOISE_PARAMS);
        let s = |k: &str| hexd(v[k].as_str().unwrap());
        let (is, ie, ip) = (s("init_static"), s("init_ephemeral"), s("init_prologue"));
        let (rs, re, rp) = (s("resp_static"), s("resp_ephemeral"), s("resp_prologue"));
        let mut init = noise_builder()
            .local_private_key(&is)
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(&ie)
            .prologue(&ip)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut resp = noise_builder()
            .local_private_key(&rs)
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(&re)
            .prologue(&rp)
            .unwrap()
            .build_responder()
            .unwrap();
        let msgs = v["messages"].as_array().unwrap();
        let mut buf = [0u8; 1024];
        let mut pt = [0u8; 1024];
        for (i, m) in msgs.iter().take(3).enumerate() {
            let payload = hexd(m["payload"].as_str().unwrap());
            let expect = hexd(m["ciphertext"].as_str().unwrap());
            let (w, r) = if i % 2 == 0 {
                (&mut init, &mut resp)
            } else {
                (&mut resp, &mut init)
            };
            let n = w.write_message(&payload, &mut buf).unwrap();
            assert_eq!(&buf[..n], &expect[..], "handshake message {i}");
            let p = r.read_message(&buf[..n], &mut pt).unwrap();
            assert_eq!(&pt[..p], &payload[..]);
        }
        assert_eq!(init.get_handshake_hash(), &s("handshake_hash")[..]);
        let (i2r, r2i) = init.dangerously_get_raw_split();
        let (k_i2r, k_r2i) = (PacketKey::new(&i2r), PacketKey::new(&r2i));
        // After XX the responder speaks next; each direction counts its own nonces from 0.
        let mut nonces = [0u64, 0u64];
        for (i, m) in msgs.iter().enumerate().skip(3) {
            let payload = hexd(m["payload"].as_str().unwrap());
            let expect = hexd(m["ciphertext"].as_str().unwrap());
            let dir = (i - 3) % 2; // 0: responder→initiator, 1: initiator→responder
            let key = if dir == 0 { &k_r2i } else { &k_i2r };
            buf[..payload.len()].copy_from_slice(&payload);
            let n = key.seal(nonces[dir], &[], &mut buf, payload.len()).unwrap();
            assert_eq!(&buf[..n], &expect[..], "transport message {i}");
            nonces[dir] += 1;
        }
    }

    fn pair(
        ip: PeerPolicy,
        rp: PeerPolicy,
    ) -> (Handshake, Handshake, Arc<IdentityKey>, Arc<IdentityKey>) {
        let ik = Arc::new(IdentityKey::generate().unwrap());
        let rk = Arc::new(IdentityKey::generate().unwrap());
        let i = Handshake::new(HandshakeRole::Initiator, ik.clone(), ip).unwrap();
        let r = Handshake::new(HandshakeRole::Responder, rk.clone(), rp).unwrap();
        (i, r, ik, rk)
    }

    #[test]
    fn step_function_completes_and_channels_interoperate() {
        let (mut i, mut r, ik, rk) =
            pair(PeerPolicy::AnyAuthenticated, PeerPolicy::AnyAuthenticated);
        let mut b1 = [0u8; MAX_HANDSHAKE_MSG];
        let mut b2 = [0u8; MAX_HANDSHAKE_MSG];
        let HandshakeStep::Send(n1) = i.step(None, &mut b1).unwrap() else {
            panic!()
        };
        assert_eq!(n1, 32);
        let HandshakeStep::Send(n2) = r.step(Some(&b1[..n1]), &mut b2).unwrap() else {
            panic!()
        };
        assert_eq!(n2, 32 + 48 + AUTH_PAYLOAD_LEN + 16);
        let HandshakeStep::SendAndComplete(n3) = i.step(Some(&b2[..n2]), &mut b1).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.step(Some(&b1[..n3]), &mut b2).unwrap(),
            HandshakeStep::Complete
        );
        assert_eq!(i.peer(), Some(rk.id()));
        assert_eq!(r.peer(), Some(ik.id()));
        let mut ci = i.into_channel().unwrap();
        let mut cr = r.into_channel().unwrap();
        assert_eq!(ci.handshake_hash(), cr.handshake_hash());
        let mut d = [0u8; 128];
        d[18..23].copy_from_slice(b"hello");
        let n = ci.seal(7, &mut d, 5).unwrap().1;
        let o = cr.open(&mut d[..n]).unwrap();
        assert_eq!(o.payload, b"hello");
    }

    #[test]
    fn wrong_pinned_identity_is_rejected_on_both_sides() {
        let stranger = IdentityKey::generate().unwrap().id();
        // Client pins a host ID that the responder does not hold.
        let (mut i, mut r, _, rk) =
            pair(PeerPolicy::Pinned(stranger), PeerPolicy::AnyAuthenticated);
        let mut b1 = [0u8; MAX_HANDSHAKE_MSG];
        let mut b2 = [0u8; MAX_HANDSHAKE_MSG];
        let HandshakeStep::Send(n1) = i.step(None, &mut b1).unwrap() else {
            panic!()
        };
        let HandshakeStep::Send(n2) = r.step(Some(&b1[..n1]), &mut b2).unwrap() else {
            panic!()
        };
        assert_eq!(
            i.step(Some(&b2[..n2]), &mut b1),
            Err(CryptoError::PeerRejected(rk.id()))
        );
        // Host allow-list that does not contain the client.
        let (mut i, mut r, ik, _) = pair(
            PeerPolicy::AnyAuthenticated,
            PeerPolicy::AllowList(vec![stranger]),
        );
        let HandshakeStep::Send(n1) = i.step(None, &mut b1).unwrap() else {
            panic!()
        };
        let HandshakeStep::Send(n2) = r.step(Some(&b1[..n1]), &mut b2).unwrap() else {
            panic!()
        };
        let HandshakeStep::SendAndComplete(n3) = i.step(Some(&b2[..n2]), &mut b1).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.step(Some(&b1[..n3]), &mut b2),
            Err(CryptoError::PeerRejected(ik.id()))
        );
    }

    /// A plain `snow` responder (no Wavry code) that signs its proof by hand interoperates with
    /// our initiator, so the framing is standard Noise XX with payloads.
    #[test]
    fn interoperates_with_plain_snow_peer() {
        let ik = Arc::new(IdentityKey::generate().unwrap());
        let rk = IdentityKey::generate().unwrap();
        let mut ours = Handshake::new(
            HandshakeRole::Initiator,
            ik.clone(),
            PeerPolicy::Pinned(rk.id()),
        )
        .unwrap();
        let b = snow::Builder::new(NOISE_PARAMS.parse().unwrap());
        let kp = b.generate_keypair().unwrap();
        let mut plain = b
            .local_private_key(&kp.private)
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut m = [0u8; 512];
        let mut p = [0u8; 512];
        let HandshakeStep::Send(n) = ours.step(None, &mut m).unwrap() else {
            panic!()
        };
        assert_eq!(plain.read_message(&m[..n], &mut p).unwrap(), 0);
        let h1 = plain.get_handshake_hash().to_vec();
        let mut proof = [0u8; AUTH_PAYLOAD_LEN];
        AuthPayload::create(&rk, LABEL_RESPONDER, &h1, &kp.public)
            .encode(&mut proof)
            .unwrap();
        let n = plain.write_message(&proof, &mut m).unwrap();
        let h2 = plain.get_handshake_hash().to_vec();
        let HandshakeStep::SendAndComplete(n3) = ours.step(Some(&m[..n]), &mut p).unwrap() else {
            panic!()
        };
        let mut got = [0u8; 512];
        let k = plain.read_message(&p[..n3], &mut got).unwrap();
        let their_proof = AuthPayload::decode(&got[..k]).unwrap();
        assert_eq!(their_proof.identity, ik.id());
        their_proof
            .verify(LABEL_INITIATOR, &h2, plain.get_remote_static().unwrap())
            .unwrap();
        assert_eq!(ours.peer(), Some(rk.id()));
    }

    /// A man in the middle that replays the genuine host's proof under its own Noise key fails:
    /// the proof is bound to the static key and transcript.
    #[test]
    fn replayed_proof_under_other_static_key_fails() {
        let ik = Arc::new(IdentityKey::generate().unwrap());
        let rk = IdentityKey::generate().unwrap();
        let mut client =
            Handshake::new(HandshakeRole::Initiator, ik, PeerPolicy::Pinned(rk.id())).unwrap();
        let b = noise_builder();
        let kp = b.generate_keypair().unwrap();
        let mut mitm = b
            .local_private_key(&kp.private)
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut m = [0u8; 512];
        let mut p = [0u8; 512];
        let HandshakeStep::Send(n) = client.step(None, &mut m).unwrap() else {
            panic!()
        };
        mitm.read_message(&m[..n], &mut p).unwrap();
        // Proof signed by the real host for a different transcript and static key.
        let mut proof = [0u8; AUTH_PAYLOAD_LEN];
        AuthPayload::create(&rk, LABEL_RESPONDER, &[0u8; 32], &[1u8; 32])
            .encode(&mut proof)
            .unwrap();
        let n = mitm.write_message(&proof, &mut m).unwrap();
        assert_eq!(
            client.step(Some(&m[..n]), &mut p),
            Err(CryptoError::BadAuthSignature(rk.id()))
        );
    }

    #[test]
    fn garbage_and_out_of_order_messages_are_typed_errors() {
        let (mut i, mut r, _, _) = pair(PeerPolicy::AnyAuthenticated, PeerPolicy::AnyAuthenticated);
        let mut b = [0u8; MAX_HANDSHAKE_MSG];
        assert!(matches!(
            r.write_message(&mut b),
            Err(CryptoError::OutOfOrder(_))
        ));
        assert!(matches!(
            i.read_message(&[0u8; 32]),
            Err(CryptoError::OutOfOrder(_))
        ));
        assert!(r.read_message(&[0u8; 5]).is_err());
        assert!(r.read_message(&[0u8; 1000]).is_err());
    }
}
