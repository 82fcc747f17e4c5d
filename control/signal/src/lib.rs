//! `wavry-signal`: the one Wavry signalling envelope, spoken by `wavry-master`, `wavry-gateway`
//! and every client on their `/ws` endpoints, plus the small HTTP types the gateway uses to ask
//! the master for relay leases.
//!
//! Wire form (one JSON object per WebSocket text frame), internally tagged, versioned:
//!
//! ```json
//! {"v":1,"type":"BIND","token":"…"}
//! {"v":1,"type":"OFFER_RIFT","target":"alice","hello_base64":"…"}
//! ```
//!
//! Clients address peers with `target` (`target_username` is accepted as an alias for old
//! clients); a value is either an account username or a 43-character Wavry ID. When the server
//! forwards a message it sets `from` to the sender and `target` to the recipient.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `Origin` that Wavry's native clients (`wavry-server`, `wavry-client`) send on the `/ws`
/// upgrade. Servers accept it whatever their browser-origin allow list says: a browser only
/// ever sends the origin of the page it runs, never this scheme, so it opens nothing to web
/// pages, while native clients could send any origin anyway.
pub const NATIVE_ORIGIN: &str = "wavry://native";

/// Envelope version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest WebSocket text frame a server accepts (bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest SDP body (bytes).
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Largest ICE candidate (bytes).
pub const MAX_CANDIDATE_BYTES: usize = 4096;
/// Largest base64 RIFT `Hello` / `HelloAck` (bytes).
pub const MAX_RIFT_BASE64_BYTES: usize = 8192;
/// Largest peer address (`target` / `from`).
pub const MAX_TARGET_BYTES: usize = 128;
/// Largest number of relay probes or exclusions in one request.
pub const MAX_RELAY_LIST: usize = 32;

/// Errors decoding or validating a signalling message.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The text is not a JSON envelope of a known message type.
    #[error("invalid signalling message: {0}")]
    Json(#[from] serde_json::Error),
    /// The envelope names a protocol version this side does not speak.
    #[error("unsupported signalling version {0} (this side speaks {PROTOCOL_VERSION})")]
    Version(u16),
    /// A field is empty or longer than its limit.
    #[error("field `{0}` is empty or too large")]
    Field(&'static str),
}

/// The role a peer takes in a relayed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The viewing side (the one that connects).
    Client,
    /// The hosting side.
    Server,
}

impl Role {
    /// The other role.
    #[must_use]
    pub const fn peer(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

/// A client-side measurement of one relay, used by the master to rank relays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayProbe {
    /// Relay measured.
    pub relay_id: String,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Packet loss, percent (0..100).
    #[serde(default)]
    pub loss_pct: f64,
}

/// One entry of the master's ranked relay list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedRelay {
    /// Relay id.
    pub relay_id: String,
    /// Address peers send to (first advertised endpoint).
    pub addr: String,
    /// Region the relay advertised, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Selection score, 0..100 (higher is better).
    pub score: f64,
}

/// Every message of the signalling protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Message {
    /// C→S, first message: authenticates the socket with a session token.
    Bind {
        /// Session token from the gateway (`/auth/login`) or master (`/v1/auth/login`).
        token: String,
    },
    /// S→C: the socket is bound to this identity.
    Bound {
        /// Name other peers use to reach this one.
        username: String,
        /// Wavry ID of the account, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wavry_id: Option<String>,
    },
    /// Peer→peer: base64 protobuf RIFT `Hello`.
    OfferRift {
        /// Recipient (username or Wavry ID).
        #[serde(alias = "target_username")]
        target: String,
        /// Sender, set by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// Sender's Wavry ID from its account (proven by signature at registration), set by
        /// the server; whatever a client puts here is replaced. The recipient pins the RIFT
        /// identity of the peer to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_wavry_id: Option<String>,
        /// base64 of the `Hello` message.
        hello_base64: String,
    },
    /// Peer→peer: base64 protobuf RIFT `HelloAck`.
    AnswerRift {
        /// Recipient.
        #[serde(alias = "target_username")]
        target: String,
        /// Sender, set by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// Sender's Wavry ID from its account, set by the server (see `OfferRift`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_wavry_id: Option<String>,
        /// base64 of the `HelloAck` message.
        ack_base64: String,
    },
    /// Peer→peer: WebRTC SDP offer.
    Offer {
        /// Recipient.
        #[serde(alias = "target_username")]
        target: String,
        /// Sender, set by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// SDP text.
        sdp: String,
        /// Sender's public address, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_addr: Option<String>,
    },
    /// Peer→peer: WebRTC SDP answer.
    Answer {
        /// Recipient.
        #[serde(alias = "target_username")]
        target: String,
        /// Sender, set by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// SDP text.
        sdp: String,
        /// Sender's public address, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_addr: Option<String>,
    },
    /// Peer→peer: ICE candidate.
    Candidate {
        /// Recipient.
        #[serde(alias = "target_username")]
        target: String,
        /// Sender, set by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// Candidate line.
        candidate: String,
    },
    /// C→S: asks for a relayed session with `target`. The requester gets role `client`
    /// unless `role` says otherwise; the target gets the other role.
    RequestRelay {
        /// The peer to reach.
        #[serde(alias = "target_username")]
        target: String,
        /// Requester's region, used for ranking when no probes are given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// The requester's role (default `client`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        /// RTT / loss measurements of relays, if the client probed them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        probes: Vec<RelayProbe>,
        /// Relays to avoid (for failover after a relay failed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
    },
    /// S→C: a lease for this peer's own role on the chosen relay.
    RelayCredentials {
        /// Relay the lease is for.
        relay_id: String,
        /// PASETO v4.public lease.
        token: String,
        /// Address of the relay.
        addr: String,
        /// Relay session id (same for both peers).
        session_id: Uuid,
        /// Role the lease grants to this peer.
        role: Role,
        /// The other peer of the session.
        peer: String,
        /// Lease expiry, Unix seconds.
        expires_at: i64,
        /// The ranked relay list (failover candidates; ask again with `exclude`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        alternates: Vec<RankedRelay>,
    },
    /// S→C: something went wrong; `code` follows HTTP status meanings.
    Error {
        /// HTTP-like status (400, 401, 403, 404, 429, 503…).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        /// Human-readable reason.
        message: String,
    },
}

impl Message {
    /// The `target` of a peer-addressed message.
    pub fn target(&self) -> Option<&str> {
        match self {
            Self::OfferRift { target, .. }
            | Self::AnswerRift { target, .. }
            | Self::Offer { target, .. }
            | Self::Answer { target, .. }
            | Self::Candidate { target, .. }
            | Self::RequestRelay { target, .. } => Some(target),
            _ => None,
        }
    }

    /// Rewrites a forwarded message for its recipient: `from` = sender, `target` = recipient,
    /// and on RIFT offers and answers `from_wavry_id` = the sender account's Wavry ID (what a
    /// client wrote there is never passed on). Returns `false` for message types that are not
    /// forwarded between peers.
    pub fn address_for_forwarding(
        &mut self,
        sender: &str,
        sender_wavry_id: Option<&str>,
        recipient: &str,
    ) -> bool {
        if let Self::OfferRift { from_wavry_id, .. } | Self::AnswerRift { from_wavry_id, .. } = self
        {
            *from_wavry_id = sender_wavry_id.map(str::to_owned);
        }
        match self {
            Self::OfferRift { target, from, .. }
            | Self::AnswerRift { target, from, .. }
            | Self::Offer { target, from, .. }
            | Self::Answer { target, from, .. }
            | Self::Candidate { target, from, .. } => {
                recipient.clone_into(target);
                *from = Some(sender.to_owned());
                true
            }
            _ => false,
        }
    }

    /// Checks field sizes against this crate's limits.
    pub fn validate(&self) -> Result<(), SignalError> {
        fn field(name: &'static str, v: &str, max: usize) -> Result<(), SignalError> {
            if v.is_empty() || v.len() > max {
                Err(SignalError::Field(name))
            } else {
                Ok(())
            }
        }
        if let Some(t) = self.target() {
            field("target", t, MAX_TARGET_BYTES)?;
        }
        match self {
            Self::Bind { token } => field("token", token, 512),
            Self::OfferRift { hello_base64, .. } => {
                field("hello_base64", hello_base64, MAX_RIFT_BASE64_BYTES)
            }
            // An empty HelloAck (every field at its default) is a refusal: empty is valid.
            Self::AnswerRift { ack_base64, .. } if ack_base64.len() > MAX_RIFT_BASE64_BYTES => {
                Err(SignalError::Field("ack_base64"))
            }
            Self::Offer { sdp, .. } | Self::Answer { sdp, .. } => field("sdp", sdp, MAX_SDP_BYTES),
            Self::Candidate { candidate, .. } => field("candidate", candidate, MAX_CANDIDATE_BYTES),
            Self::RequestRelay {
                probes,
                exclude,
                region,
                ..
            } => {
                if probes.len() > MAX_RELAY_LIST {
                    return Err(SignalError::Field("probes"));
                }
                if exclude.len() > MAX_RELAY_LIST {
                    return Err(SignalError::Field("exclude"));
                }
                if let Some(r) = region {
                    field("region", r, 64)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A versioned envelope: `{"v": 1, "type": …, …fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u16,
    /// The message.
    #[serde(flatten)]
    pub msg: Message,
}

impl Envelope {
    /// Wraps a message in the current version.
    pub const fn new(msg: Message) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            msg,
        }
    }

    /// Parses, checks the version and validates field limits.
    pub fn decode(text: &str) -> Result<Message, SignalError> {
        #[derive(Deserialize)]
        struct Version {
            v: u16,
        }
        let v: Version = serde_json::from_str(text)?;
        if v.v != PROTOCOL_VERSION {
            return Err(SignalError::Version(v.v));
        }
        let env: Self = serde_json::from_str(text)?;
        env.msg.validate()?;
        Ok(env.msg)
    }

    /// Serialises a message in the current version.
    pub fn encode(msg: &Message) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            v: u16,
            #[serde(flatten)]
            msg: &'a Message,
        }
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(&Out {
            v: PROTOCOL_VERSION,
            msg,
        })
        .unwrap_or_default()
    }

    /// Shorthand for an `ERROR` message.
    pub fn error(code: u16, message: impl Into<String>) -> String {
        Self::encode(&Message::Error {
            code: Some(code),
            message: message.into(),
        })
    }
}

/// HTTP types of the master's lease broker (`POST /v1/leases`).
pub mod broker {
    use super::{RankedRelay, RelayProbe, Role};
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    /// One side of a requested session.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PeerRef {
        /// Name placed in the lease `sub` (username or Wavry ID).
        pub sub: String,
        /// Wavry ID of the peer, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub wavry_id: Option<String>,
    }

    /// Request body of `POST /v1/leases`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct LeaseRequest {
        /// The peer asking (ignored and replaced by the session identity when a master
        /// session token authenticates the call).
        pub requester: PeerRef,
        /// The peer to reach. With a master session token: a Wavry ID (in `sub` or `wavry_id`)
        /// bound to the master's `/ws`, which receives its own lease there.
        pub target: PeerRef,
        /// Requester's role (default `client`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub requester_role: Option<Role>,
        /// Requester's region.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub region: Option<String>,
        /// Relay measurements.
        #[serde(default)]
        pub probes: Vec<RelayProbe>,
        /// Relays not to choose.
        #[serde(default)]
        pub exclude: Vec<String>,
    }

    /// One peer's lease.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Credentials {
        /// Lease holder (`sub`).
        pub sub: String,
        /// Role granted.
        pub role: Role,
        /// PASETO v4.public token.
        pub token: String,
    }

    /// Response of `POST /v1/leases`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct LeaseGrant {
        /// Relay session id.
        pub session_id: Uuid,
        /// Chosen relay.
        pub relay_id: String,
        /// Its address.
        pub addr: String,
        /// Lease expiry (Unix seconds).
        pub expires_at: i64,
        /// Master key id that signed the leases.
        pub key_id: String,
        /// The requester's lease.
        pub requester: Credentials,
        /// The target's lease: only for the service token (a broker that delivers each lease to
        /// its holder). Identity callers never receive it; the target gets it on its socket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub target: Option<Credentials>,
        /// Ranked candidates, best first (the chosen relay is first).
        pub ranked: Vec<RankedRelay>,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_version_and_alias() {
        let m = Message::OfferRift {
            target: "bob".into(),
            from: None,
            from_wavry_id: None,
            hello_base64: "AAAA".into(),
        };
        let s = Envelope::encode(&m);
        assert!(
            s.contains(r#""v":1"#) && s.contains(r#""type":"OFFER_RIFT""#),
            "{s}"
        );
        assert_eq!(Envelope::decode(&s).unwrap(), m);
        let old = r#"{"v":1,"type":"CANDIDATE","target_username":"bob","candidate":"c"}"#;
        assert_eq!(Envelope::decode(old).unwrap().target(), Some("bob"));
    }

    #[test]
    fn refuses_other_versions_oversize_and_garbage() {
        assert!(matches!(
            Envelope::decode(r#"{"v":2,"type":"BIND","token":"x"}"#),
            Err(SignalError::Version(2))
        ));
        assert!(Envelope::decode(r#"{"type":"BIND","token":"x"}"#).is_err());
        assert!(Envelope::decode("not json").is_err());
        let big = Message::Candidate {
            target: "b".into(),
            from: None,
            candidate: "x".repeat(5000),
        };
        assert!(matches!(
            Envelope::decode(&Envelope::encode(&big)),
            Err(SignalError::Field("candidate"))
        ));
    }

    #[test]
    fn forwarding_rewrites_addresses() {
        let mut m = Message::Candidate {
            target: "bob".into(),
            from: Some("forged".into()),
            candidate: "c".into(),
        };
        assert!(m.address_for_forwarding("alice", None, "bob"));
        assert_eq!(
            m,
            Message::Candidate {
                target: "bob".into(),
                from: Some("alice".into()),
                candidate: "c".into()
            }
        );
        assert!(!Message::Bind { token: "t".into() }.address_for_forwarding("a", None, "b"));
    }

    #[test]
    fn forwarding_sets_the_senders_wavry_id_and_drops_a_claimed_one() {
        let mut m = Message::AnswerRift {
            target: "bob".into(),
            from: Some("mallory".into()),
            from_wavry_id: Some("claimed-by-the-client".into()),
            ack_base64: "AAAA".into(),
        };
        assert!(m.address_for_forwarding("alice", None, "bob"));
        assert!(matches!(
            &m,
            Message::AnswerRift { from: Some(f), from_wavry_id: None, .. } if f == "alice"
        ));
        assert!(m.address_for_forwarding("alice", Some("wavry-id-of-alice"), "bob"));
        assert!(matches!(
            &m,
            Message::AnswerRift { from_wavry_id: Some(w), .. } if w == "wavry-id-of-alice"
        ));
    }
}
