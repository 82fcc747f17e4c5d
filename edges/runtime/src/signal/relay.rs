//! Relays through the gateway: asking for a relayed session (`REQUEST_RELAY`), the lease it
//! brokers (`RELAY_CREDENTIALS`), and reporting afterwards how the relay did.

use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use wavry_rift::relay_client::RelayLease;
use wavry_rift::wire::PeerRole;
use wavry_signal::Message;

use super::{Signal, SignalError};

/// A relay lease the gateway brokered (`RELAY_CREDENTIALS`): this side's lease for one relay
/// session and the master's ranked relays to fail over to.
#[derive(Debug, Clone)]
pub struct RelayGrant {
    /// The lease, ready for `Session::client_via_relay` or `HostDriver::add_relay_path`.
    pub lease: RelayLease,
    /// The other peer's username.
    pub peer: String,
    /// Lease expiry, Unix seconds.
    pub expires_at: i64,
    /// The master's ranking (the chosen relay first): ask again with the failed ones excluded.
    pub alternates: Vec<wavry_signal::RankedRelay>,
    /// The relay session id as the control plane writes it (a UUID), for reports.
    pub session: String,
}

impl RelayGrant {
    /// Reads a `RELAY_CREDENTIALS`; `None` for anything else, an error when it is unusable.
    pub fn from_message(m: &Message) -> Option<Result<Self, SignalError>> {
        let Message::RelayCredentials {
            relay_id,
            token,
            addr,
            session_id,
            role,
            peer,
            expires_at,
            alternates,
        } = m
        else {
            return None;
        };
        let Ok(Some(relay_addr)) = addr.to_socket_addrs().map(|mut a| a.next()) else {
            return Some(Err(SignalError::Protocol(format!(
                "relay address {addr:?} does not resolve"
            ))));
        };
        if session_id.is_nil() {
            return Some(Err(SignalError::Protocol("relay session id is nil".into())));
        }
        Some(Ok(Self {
            lease: RelayLease {
                relay_addr,
                relay_id: relay_id.clone(),
                session_id: session_id.into_bytes(),
                role: match role {
                    wavry_signal::Role::Client => PeerRole::Client,
                    wavry_signal::Role::Server => PeerRole::Server,
                },
                token: token.clone(),
            },
            peer: peer.clone(),
            expires_at: *expires_at,
            alternates: alternates.clone(),
            session: session_id.to_string(),
        }))
    }
}

/// Asks the gateway for a relayed session with `peer` (username or Wavry ID), avoiding the
/// relays in `exclude`; the gateway sends the peer its own lease. Waits up to `timeout`.
pub fn request_relay(
    signal: &mut Signal,
    peer: &str,
    exclude: &[String],
    timeout: Duration,
) -> Result<RelayGrant, SignalError> {
    let until = Instant::now() + timeout;
    signal.send(&Message::RequestRelay {
        target: peer.to_owned(),
        region: None,
        role: None,
        probes: Vec::new(),
        exclude: exclude.to_vec(),
    })?;
    loop {
        let Some(m) = signal.recv(until)? else {
            return Err(SignalError::Timeout(timeout));
        };
        if let Some(g) = RelayGrant::from_message(&m) {
            return g;
        }
        if let Message::Error { code, message } = m {
            return Err(SignalError::Refused {
                code: code.unwrap_or(503),
                message,
            });
        }
    }
}

/// How a relayed session went, for the relay's reputation (`POST /v1/relays/report` on the
/// gateway, which passes it on to the master).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayReport {
    /// The relay.
    pub relay_id: String,
    /// The relay session (from the lease).
    pub session_id: String,
    /// False when the relay failed the session (a failover).
    pub success: bool,
    /// Bytes the session carried through it.
    pub bytes_sent: u64,
    /// How long the session ran through it.
    pub duration_secs: u64,
    /// 0..=100.
    pub quality_score: u32,
}

/// Sends `report` to the gateway behind `ws_url` (its HTTP side) as the account of `token`.
pub fn report_relay(ws_url: &str, token: &str, report: &RelayReport) -> Result<(), SignalError> {
    let req = ws_url.into_client_request().map_err(|e| SignalError::Url {
        url: ws_url.to_owned(),
        why: e.to_string(),
    })?;
    let uri = req.uri();
    let host = uri.host().unwrap_or("127.0.0.1");
    let url = format!(
        "http://{host}:{}/v1/relays/report",
        uri.port_u16().unwrap_or(80)
    );
    let failed = |why: String| SignalError::Connect {
        url: url.clone(),
        why,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(e.to_string()))?;
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .json(report)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(SignalError::Refused {
                code: r.status().as_u16(),
                message: r.text().await.unwrap_or_default(),
            })
        }
    })
}
