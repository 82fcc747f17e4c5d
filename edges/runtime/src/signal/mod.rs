//! Signalling through a gateway's `/ws` for the runtimes: a blocking WebSocket client that
//! binds with the account's session token, and the RIFT offer/answer that brokers a direct
//! session to a host addressed by username or Wavry ID.
//!
//! The exchange (all in the `wavry-signal` envelope): the client sends `OFFER_RIFT` with a
//! RIFT `Hello`; the host answers with one `CANDIDATE` per address it can be reached at
//! (`udp <ip:port>`), then `ANSWER_RIFT` with a `HelloAck` (`accepted` false when its allow
//! list refuses the client). The gateway stamps both with the sender's account Wavry ID,
//! proven by signature at registration, so each side pins the other's RIFT identity to it.
//!
//! The session token authenticates the account: pass it in `WAVRY_SESSION_TOKEN` or a file,
//! not on the command line, where other local users can read it in the process list.

use std::{
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use base64::Engine as _;
use prost::Message as _;
use tungstenite::{Message as WsMessage, WebSocket, client::IntoClientRequest};
use wavry_rift::proto;
use wavry_signal::{Envelope, Message};

mod relay;

pub use relay::{RelayGrant, RelayReport, report_relay, request_relay};

/// Environment gate that allows `ws://` to a gateway that is not on this machine.
pub const INSECURE_SIGNALING_ENV: &str = "WAVRY_ALLOW_INSECURE_SIGNALING";

/// Prefix of a RIFT candidate in a `CANDIDATE` message.
const CANDIDATE_PREFIX: &str = "udp ";

/// Why signalling failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The gateway URL is not usable.
    #[error("gateway URL {url:?}: {why}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// `ws://` to a remote gateway without the gate.
    #[error(
        "ws:// to a gateway on another machine ({0}) would send the session token in clear; \
         reach it through a TLS tunnel or set WAVRY_ALLOW_INSECURE_SIGNALING=1 on a network \
         you trust"
    )]
    Insecure(String),
    /// No TCP connection or WebSocket handshake.
    #[error("connecting to the gateway at {url}: {why}")]
    Connect {
        /// The gateway URL.
        url: String,
        /// The cause.
        why: String,
    },
    /// The WebSocket failed after it was open.
    #[error("gateway connection: {0}")]
    Ws(Box<tungstenite::Error>),
    /// The gateway answered with an error (HTTP-like code and its reason).
    #[error("the gateway refused ({code}): {message}")]
    Refused {
        /// HTTP-like status (401: the token is not valid; 404: the peer is not connected).
        code: u16,
        /// The gateway's reason.
        message: String,
    },
    /// The gateway closed the socket.
    #[error("the gateway closed the connection: {0}")]
    Closed(String),
    /// Nothing arrived in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A message this side cannot use.
    #[error("signalling: {0}")]
    Protocol(String),
    /// The session token could not be read.
    #[error("session token: {0}")]
    Token(String),
}

impl From<tungstenite::Error> for SignalError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                Self::Closed("connection closed".into())
            }
            e => Self::Ws(Box::new(e)),
        }
    }
}

impl From<wavry_signal::SignalError> for SignalError {
    fn from(e: wavry_signal::SignalError) -> Self {
        Self::Protocol(e.to_string())
    }
}

impl SignalError {
    /// True when retrying cannot help (a refused token, a bad URL, a missing gate).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Url { .. }
                | Self::Insecure(_)
                | Self::Token(_)
                | Self::Refused {
                    code: 400 | 401 | 403,
                    ..
                }
        )
    }
}

/// The session token: `--session-token` / `WAVRY_SESSION_TOKEN` (`inline`), else the first
/// line of `file`.
pub fn session_token(inline: Option<&str>, file: Option<&Path>) -> Result<String, SignalError> {
    let token = match (inline, file) {
        (Some(t), _) => t.trim().to_owned(),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| SignalError::Token(format!("reading {}: {e}", p.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        (None, None) => {
            return Err(SignalError::Token(
                "none given: set WAVRY_SESSION_TOKEN or --session-token-file (the token \
                 `/auth/login` returns)"
                    .into(),
            ));
        }
    };
    if token.is_empty() {
        return Err(SignalError::Token("empty".into()));
    }
    Ok(token)
}

/// The account's session token on the command line of a runtime.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenArgs {
    /// The account's gateway session token (from `/auth/login`). Prefer the environment
    /// variable or --session-token-file: a flag is visible to other users in the process list.
    #[arg(
        long,
        env = "WAVRY_SESSION_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub session_token: Option<String>,
    /// Read the session token from the first line of this file.
    #[arg(long, env = "WAVRY_SESSION_TOKEN_FILE", value_name = "PATH")]
    pub session_token_file: Option<std::path::PathBuf>,
}

impl TokenArgs {
    /// The token (see [`session_token`]).
    pub fn token(&self) -> Result<String, SignalError> {
        session_token(
            self.session_token.as_deref(),
            self.session_token_file.as_deref(),
        )
    }

    /// Whether a token was given at all.
    pub fn given(&self) -> bool {
        self.session_token.is_some() || self.session_token_file.is_some()
    }
}

/// A socket bound to the gateway as one account.
#[derive(Debug)]
pub struct Signal {
    ws: WebSocket<TcpStream>,
    /// The account's username (how peers address it).
    pub username: String,
    /// The account's Wavry ID, when it registered a key.
    pub wavry_id: Option<String>,
}

impl Signal {
    /// Connects to `url` (`ws://host:port/ws`) and binds with `token`, all within `timeout`.
    pub fn connect(url: &str, token: &str, timeout: Duration) -> Result<Self, SignalError> {
        let deadline = Instant::now() + timeout;
        let bad = |why: String| SignalError::Url {
            url: url.to_owned(),
            why,
        };
        let mut req = url.into_client_request().map_err(|e| bad(e.to_string()))?;
        req.headers_mut().insert(
            "origin",
            tungstenite::http::HeaderValue::from_static(wavry_signal::NATIVE_ORIGIN),
        );
        let uri = req.uri().clone();
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => {
                return Err(bad(
                    "wss:// is not in this build yet: reach the gateway through a local TLS \
                     tunnel (ws://127.0.0.1:…)"
                        .into(),
                ));
            }
            _ => return Err(bad("expected ws://host:port/ws".into())),
        }
        let connect_err = |why: String| SignalError::Connect {
            url: url.to_owned(),
            why,
        };
        let addrs = resolve(&uri)
            .ok_or_else(|| bad("no host".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        let remote = addrs.iter().find(|a| !a.ip().is_loopback());
        if let Some(a) = remote
            && std::env::var(INSECURE_SIGNALING_ENV).is_ok_and(|v| v == "1")
        {
            eprintln!(
                "warning: signalling with {a} over ws:// ({INSECURE_SIGNALING_ENV}=1): the \
                 session token travels in clear"
            );
        } else if let Some(a) = remote {
            return Err(SignalError::Insecure(a.to_string()));
        }
        let mut last = String::from("no address");
        let mut stream = None;
        for a in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(a, left.max(Duration::from_millis(1))) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let stream = stream.ok_or_else(|| connect_err(last))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))
            .map_err(|e| connect_err(e.to_string()))?;
        let (ws, _) = tungstenite::client::client(req, stream).map_err(|e| match e {
            // The upgrade itself refused (origin, rate limit): say so with its status.
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                SignalError::Refused {
                    code: r.status().as_u16(),
                    message: format!(
                        "WebSocket upgrade refused: {}",
                        r.status().canonical_reason().unwrap_or("")
                    ),
                }
            }
            tungstenite::HandshakeError::Failure(e) => connect_err(e.to_string()),
            tungstenite::HandshakeError::Interrupted(_) => {
                connect_err("handshake timed out".into())
            }
        })?;
        let mut s = Self {
            ws,
            username: String::new(),
            wavry_id: None,
        };
        s.send(&Message::Bind {
            token: token.to_owned(),
        })?;
        match s.recv(deadline)? {
            Some(Message::Bound { username, wavry_id }) => {
                s.username = username;
                s.wavry_id = wavry_id;
                Ok(s)
            }
            Some(Message::Error { code, message }) => Err(SignalError::Refused {
                code: code.unwrap_or(401),
                message,
            }),
            Some(other) => Err(SignalError::Protocol(format!(
                "expected BOUND, got {other:?}"
            ))),
            None => Err(SignalError::Timeout(timeout)),
        }
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Message) -> Result<(), SignalError> {
        self.ws.send(WsMessage::text(Envelope::encode(m)))?;
        Ok(())
    }

    /// The next message, or `None` once `until` passes. A close carries the gateway's reason
    /// (a revoked token, a newer connection of the same account).
    pub fn recv(&mut self, until: Instant) -> Result<Option<Message>, SignalError> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.ws
                .get_mut()
                .set_read_timeout(Some(left))
                .map_err(|e| SignalError::Ws(Box::new(e.into())))?;
            match self.ws.read() {
                Ok(WsMessage::Text(t)) => return Ok(Some(Envelope::decode(&t)?)),
                Ok(WsMessage::Close(frame)) => {
                    return Err(SignalError::Closed(
                        frame.map_or_else(|| "no reason".into(), |f| f.reason.to_string()),
                    ));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if retry_read(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A blocking read that ended without data for a reason worth reading again: its timeout
/// (`WouldBlock` or `TimedOut` by platform) or a signal.
pub(crate) fn retry_read(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// What a host learns from a client's offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The offering account's username (where the answer goes).
    pub from: String,
    /// Its Wavry ID as the gateway vouches for it.
    pub wavry_id: Option<String>,
    /// The name the client gave.
    pub client_name: String,
    /// Where the client said it can be reached (its `CANDIDATE`s before the offer): the host
    /// punches its NAT towards them.
    pub candidates: Vec<SocketAddr>,
}

impl Offer {
    /// Reads an `OFFER_RIFT` as forwarded by the gateway; `None` for anything else.
    pub fn from_message(m: &Message) -> Option<Self> {
        let Message::OfferRift {
            from: Some(from),
            from_wavry_id,
            hello_base64,
            ..
        } = m
        else {
            return None;
        };
        let hello = base64::engine::general_purpose::STANDARD
            .decode(hello_base64)
            .ok()
            .and_then(|b| proto::Hello::decode(b.as_slice()).ok())
            .unwrap_or_default();
        Some(Self {
            from: from.clone(),
            wavry_id: from_wavry_id.clone(),
            client_name: hello.client_name,
            candidates: Vec::new(),
        })
    }
}

/// A forwarded `CANDIDATE`: its sender and address; `None` for anything else (or a candidate
/// that is not `udp <ip:port>`).
pub fn candidate_of(m: &Message) -> Option<(String, SocketAddr)> {
    let Message::Candidate {
        from: Some(from),
        candidate,
        ..
    } = m
    else {
        return None;
    };
    let a = candidate.strip_prefix(CANDIDATE_PREFIX)?.parse().ok()?;
    Some((from.clone(), a))
}

/// The host's answer to `offer`: its candidates, then `ANSWER_RIFT` (`accepted` as given).
pub fn answer(
    signal: &mut Signal,
    offer: &Offer,
    accepted: bool,
    candidates: &[SocketAddr],
) -> Result<(), SignalError> {
    if accepted {
        for c in candidates {
            signal.send(&Message::Candidate {
                target: offer.from.clone(),
                from: None,
                candidate: format!("{CANDIDATE_PREFIX}{c}"),
            })?;
        }
    }
    let ack = proto::HelloAck {
        accepted,
        public_addr: candidates
            .first()
            .filter(|_| accepted)
            .map(ToString::to_string)
            .unwrap_or_default(),
        ..proto::HelloAck::default()
    };
    signal.send(&Message::AnswerRift {
        target: offer.from.clone(),
        from: None,
        from_wavry_id: None,
        ack_base64: base64::engine::general_purpose::STANDARD.encode(ack.encode_to_vec()),
    })
}

/// The host as the client reached it through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The host account's Wavry ID as the gateway vouches for it.
    pub wavry_id: Option<String>,
    /// Where the host said it can be reached, in its order of preference.
    pub candidates: Vec<SocketAddr>,
}

/// Offers a session to `host` (username or Wavry ID), telling it first where this side can be
/// reached (`own`, one `CANDIDATE` each), and waits up to `timeout` for its answer.
pub fn offer(
    signal: &mut Signal,
    host: &str,
    client_name: &str,
    own: &[SocketAddr],
    timeout: Duration,
) -> Result<Answer, SignalError> {
    let until = Instant::now() + timeout;
    for c in own {
        signal.send(&Message::Candidate {
            target: host.to_owned(),
            from: None,
            candidate: format!("{CANDIDATE_PREFIX}{c}"),
        })?;
    }
    let hello = proto::Hello {
        client_name: client_name.to_owned(),
        ..proto::Hello::default()
    };
    signal.send(&Message::OfferRift {
        target: host.to_owned(),
        from: None,
        from_wavry_id: None,
        hello_base64: base64::engine::general_purpose::STANDARD.encode(hello.encode_to_vec()),
    })?;
    let mut candidates = Vec::new();
    loop {
        let Some(m) = signal.recv(until)? else {
            return Err(SignalError::Timeout(timeout));
        };
        match m {
            Message::Candidate { candidate, .. } => {
                if let Some(a) = candidate
                    .strip_prefix(CANDIDATE_PREFIX)
                    .and_then(|a| a.parse().ok())
                {
                    candidates.push(a);
                }
            }
            Message::AnswerRift {
                from_wavry_id,
                ack_base64,
                ..
            } => {
                let ack = base64::engine::general_purpose::STANDARD
                    .decode(&ack_base64)
                    .ok()
                    .and_then(|b| proto::HelloAck::decode(b.as_slice()).ok())
                    .ok_or_else(|| SignalError::Protocol("unreadable ANSWER_RIFT".into()))?;
                if !ack.accepted {
                    return Err(SignalError::Refused {
                        code: 403,
                        message: "the host does not allow this client (its --allow list)".into(),
                    });
                }
                if candidates.is_empty()
                    && let Ok(a) = ack.public_addr.parse()
                {
                    candidates.push(a);
                }
                return Ok(Answer {
                    wavry_id: from_wavry_id,
                    candidates,
                });
            }
            Message::Error { code, message } => {
                return Err(SignalError::Refused {
                    code: code.unwrap_or(400),
                    message,
                });
            }
            _ => {}
        }
    }
}

/// The order to try a peer's `candidates` in from a side whose public address is `own_public`:
/// behind different NATs (the peer offers no address on our public IP) its public addresses
/// first, since its private ones are not reachable from here; behind the same NAT, its
/// private ones first. Stable otherwise.
pub fn order_candidates(
    mut candidates: Vec<SocketAddr>,
    own_public: Option<SocketAddr>,
) -> Vec<SocketAddr> {
    let private = |a: &SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local()
        }
    };
    let same_nat = own_public.is_some_and(|p| candidates.iter().any(|c| c.ip() == p.ip()));
    if !same_nat {
        candidates.sort_by_key(|c| private(c));
    }
    candidates
}

/// Addresses a host listening on `local` can be reached at: `local` itself unless it is the
/// unspecified address, else the address this machine would use towards `towards` (its
/// outbound interface; no packet is sent), with the same port, and loopback when `towards`
/// is on this machine too (a remote peer would only knock on its own loopback).
pub fn host_candidates(local: SocketAddr, towards: Option<SocketAddr>) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let mut out = Vec::new();
    if let Some(t) = towards {
        let bind: SocketAddr = if t.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        if let Ok(s) = UdpSocket::bind(bind)
            && s.connect(t).is_ok()
            && let Ok(a) = s.local_addr()
        {
            out.push(SocketAddr::new(a.ip(), local.port()));
        }
    }
    let loopback: SocketAddr = if local.is_ipv4() {
        ([127, 0, 0, 1], local.port()).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, local.port()).into()
    };
    if !out.contains(&loopback) && towards.is_none_or(|t| t.ip().is_loopback()) {
        out.push(loopback);
    }
    out
}

/// The gateway's socket address from its URL, for [`host_candidates`].
pub fn gateway_addr(url: &str) -> Option<SocketAddr> {
    let req = url.into_client_request().ok()?;
    resolve(req.uri())?.ok()?.into_iter().next()
}

/// The addresses of a `ws://` URI's host (port 80 unless given); `None` without a host.
fn resolve(uri: &tungstenite::http::Uri) -> Option<std::io::Result<Vec<SocketAddr>>> {
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    Some((host, port).to_socket_addrs().map(Iterator::collect))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_environment_or_a_file_never_empty() {
        assert_eq!(session_token(Some(" t0k "), None).unwrap(), "t0k");
        let dir = std::env::temp_dir().join(format!("wavry-signal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "abc\nignored\n").unwrap();
        assert_eq!(session_token(None, Some(&f)).unwrap(), "abc");
        std::fs::write(&f, "\n").unwrap();
        assert!(session_token(None, Some(&f)).is_err());
        assert!(session_token(None, None).is_err());
        assert!(session_token(None, Some(&dir.join("missing"))).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        let short = Duration::from_millis(200);
        for (url, permanent) in [
            ("http://127.0.0.1:1/ws", true),
            ("wss://127.0.0.1:1/ws", true),
            ("not a url", true),
            ("ws://192.0.2.1:9/ws", true),
        ] {
            let e = Signal::connect(url, "t", short).unwrap_err();
            assert_eq!(e.is_permanent(), permanent, "{url}: {e}");
        }
        assert!(matches!(
            Signal::connect("ws://192.0.2.1:9/ws", "t", short).unwrap_err(),
            SignalError::Insecure(_)
        ));
    }

    #[test]
    fn a_host_on_the_unspecified_address_offers_its_outbound_and_loopback_addresses() {
        let port = 4433;
        let local: SocketAddr = ([127, 0, 0, 1], port).into();
        assert_eq!(host_candidates(local, None), vec![local]);
        let any: SocketAddr = ([0, 0, 0, 0], port).into();
        let c = host_candidates(any, Some(([127, 0, 0, 1], 3000).into()));
        assert_eq!(c, vec![local]);
    }

    #[test]
    fn public_candidates_come_first_unless_both_sides_share_a_nat() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let offered = vec![a("10.1.0.2:7000"), a("100.127.1.1:7000")];
        assert_eq!(
            order_candidates(offered.clone(), Some(a("100.127.2.1:5000"))),
            vec![a("100.127.1.1:7000"), a("10.1.0.2:7000")]
        );
        // Same public IP: the same NAT, so the LAN address is the way.
        let same = vec![a("10.1.0.2:7000"), a("100.127.1.1:7000")];
        assert_eq!(
            order_candidates(same.clone(), Some(a("100.127.1.1:5000"))),
            same
        );
        // No own public address known: nothing to go by but the order given... except that
        // private addresses of another network are still the least likely.
        assert_eq!(
            order_candidates(offered, None),
            vec![a("100.127.1.1:7000"), a("10.1.0.2:7000")]
        );
        // Loopback is only offered to a gateway on this machine.
        let any = a("0.0.0.0:7000");
        assert!(host_candidates(any, Some(a("127.0.0.1:3000"))).contains(&a("127.0.0.1:7000")));
        assert!(
            !host_candidates(any, Some(a("100.127.1.254:3000"))).contains(&a("127.0.0.1:7000"))
        );
    }

    #[test]
    fn offers_and_answers_round_trip_through_their_messages() {
        let hello = proto::Hello {
            client_name: "laptop".into(),
            ..proto::Hello::default()
        };
        let m = Message::OfferRift {
            target: "host".into(),
            from: Some("alice".into()),
            from_wavry_id: Some("id".into()),
            hello_base64: base64::engine::general_purpose::STANDARD.encode(hello.encode_to_vec()),
        };
        assert_eq!(
            Offer::from_message(&m),
            Some(Offer {
                from: "alice".into(),
                wavry_id: Some("id".into()),
                client_name: "laptop".into(),
                candidates: Vec::new(),
            })
        );
        let c = Message::Candidate {
            target: "host".into(),
            from: Some("alice".into()),
            candidate: "udp 198.51.100.1:7000".into(),
        };
        assert_eq!(
            candidate_of(&c),
            Some(("alice".into(), "198.51.100.1:7000".parse().unwrap()))
        );
        let sdp = Message::Candidate {
            target: "host".into(),
            from: Some("alice".into()),
            candidate: "candidate:1 1 udp 2130706431 10.0.0.2 7000 typ host".into(),
        };
        assert_eq!(candidate_of(&sdp), None);
        assert_eq!(
            Offer::from_message(&Message::Bind { token: "t".into() }),
            None
        );
    }
}
