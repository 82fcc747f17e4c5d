//! The master's signalling WebSocket: `BIND` with a master identity session token (from
//! `/v1/auth/login`) within 10 s, then forwarding between bound identities (addressed by
//! Wavry ID) and `REQUEST_RELAY`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{Message as WsMsg, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use wavry_control_core::env_u64;
use wavry_signal::{
    Envelope, MAX_MESSAGE_BYTES, Message,
    broker::{Credentials, LeaseGrant, LeaseRequest, PeerRef},
};

use crate::api::AppState;

/// Something to deliver to a connection.
#[derive(Debug)]
pub(crate) enum Out {
    /// A text frame.
    Text(String),
    /// An `ERROR` then close.
    Close(String),
}

struct Peer {
    conn: u64,
    tx: mpsc::Sender<Out>,
}

/// Bound connections by identity, plus connection counters.
#[derive(Default)]
pub(crate) struct Hub {
    peers: Mutex<HashMap<String, Peer>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    next: AtomicU64,
}

impl Hub {
    pub(crate) fn len(&self) -> usize {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn insert(&self, id: &str, conn: u64, tx: mpsc::Sender<Out>) {
        let old = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), Peer { conn, tx });
        if let Some(old) = old {
            let _ = old
                .tx
                .try_send(Out::Close("Session replaced by a newer connection".into()));
        }
    }

    fn remove(&self, id: &str, conn: u64) {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if peers.get(id).is_some_and(|p| p.conn == conn) {
            peers.remove(id);
        }
    }

    /// Whether `id` has a bound socket.
    pub(crate) fn is_bound(&self, id: &str) -> bool {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(id)
    }

    /// Queues a text frame for the bound socket of `id`.
    pub(crate) fn send(&self, id: &str, text: String) -> bool {
        let peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers
            .get(id)
            .is_some_and(|p| p.tx.try_send(Out::Text(text)).is_ok())
    }

    /// Closes the connection of `id`; returns how many were closed.
    pub(crate) fn kick(&self, id: &str, reason: &str) -> usize {
        let peer = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        peer.map_or(0, |p| {
            let _ = p.tx.try_send(Out::Close(reason.to_owned()));
            1
        })
    }
}

struct IpSlot {
    st: Arc<AppState>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self
            .st
            .hub
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// `GET /ws`.
pub(crate) async fn upgrade(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !st.origin.allows(&headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let ip = st.ip.resolve(peer, &headers);
    let max_per_ip = usize::try_from(env_u64("WAVRY_MASTER_WS_MAX_PER_IP", 16)).unwrap_or(16);
    let max_total =
        usize::try_from(env_u64("WAVRY_MASTER_WS_MAX_CONNECTIONS", 4096)).unwrap_or(4096);
    {
        let mut m = st
            .hub
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = m.values().sum();
        if total >= max_total {
            return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
        }
        let n = m.entry(ip).or_default();
        if *n >= max_per_ip {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address",
            )
                .into_response();
        }
        *n += 1;
    }
    let slot = IpSlot { st: st.clone(), ip };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| run(st, socket, ip, slot))
}

async fn close_with(
    sink: &mut futures_util::stream::SplitSink<WebSocket, WsMsg>,
    code: u16,
    msg: &str,
) {
    let _ = sink
        .send(WsMsg::Text(Envelope::error(code, msg).into()))
        .await;
    let _ = sink.send(WsMsg::Close(None)).await;
}

async fn run(st: Arc<AppState>, socket: WebSocket, ip: IpAddr, _slot: IpSlot) {
    let (mut sink, mut stream) = socket.split();
    // BIND must arrive within this time (default 10 s), enforced by a timer.
    let bind_timeout = Duration::from_secs(
        wavry_control_core::env_u64("WAVRY_MASTER_WS_BIND_TIMEOUT_SECS", 10).clamp(1, 60),
    );
    let first = tokio::time::timeout(bind_timeout, stream.next()).await;
    let token = match first {
        Ok(Some(Ok(WsMsg::Text(t)))) => match Envelope::decode(&t) {
            Ok(Message::Bind { token }) => token,
            _ => return close_with(&mut sink, 400, "first message must be BIND").await,
        },
        Err(_) => return close_with(&mut sink, 408, "BIND timeout").await,
        _ => return,
    };
    if !st
        .bind_limiter
        .check(&format!("bind:{}", st.ip.rate_key(ip)))
    {
        st.metrics.rate_limited.inc();
        return close_with(&mut sink, 429, "too many bind attempts").await;
    }
    let id = match st.session_identity(&token).await {
        Ok(Some(id)) => id,
        Ok(None) => return close_with(&mut sink, 401, "invalid or expired session token").await,
        Err(_) => return close_with(&mut sink, 500, "internal error").await,
    };
    let (tx, mut rx) = mpsc::channel::<Out>(256);
    let conn = st.hub.next.fetch_add(1, Ordering::Relaxed);
    st.hub.insert(&id, conn, tx);
    let bound = Envelope::encode(&Message::Bound {
        username: id.clone(),
        wavry_id: Some(id.clone()),
    });
    if sink.send(WsMsg::Text(bound.into())).await.is_err() {
        st.hub.remove(&id, conn);
        return;
    }
    let per_minute =
        u32::try_from(env_u64("WAVRY_MASTER_WS_MESSAGES_PER_MINUTE", 600)).unwrap_or(600);
    let mut window = (Instant::now(), 0u32);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(t)) => {
                    if sink.send(WsMsg::Text(t.into())).await.is_err() { break; }
                }
                Some(Out::Close(reason)) => { close_with(&mut sink, 409, &reason).await; break; }
                None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(WsMsg::Text(t))) => {
                    if window.0.elapsed() >= Duration::from_secs(60) { window = (Instant::now(), 0); }
                    window.1 += 1;
                    if window.1 > per_minute {
                        close_with(&mut sink, 429, "message rate limit exceeded").await;
                        break;
                    }
                    match handle(&st, &id, &t) {
                        Ok(Some(reply)) => { if sink.send(WsMsg::Text(reply.into())).await.is_err() { break; } }
                        Ok(None) => {}
                        Err(fatal) => { close_with(&mut sink, 400, &fatal).await; break; }
                    }
                }
                Some(Ok(WsMsg::Binary(_))) => { close_with(&mut sink, 400, "binary frames are not supported").await; break; }
                Some(Ok(WsMsg::Ping(_) | WsMsg::Pong(_))) => {}
                Some(Ok(WsMsg::Close(_)) | Err(_)) | None => break,
            },
        }
    }
    st.hub.remove(&id, conn);
}

/// Handles one message: `Ok(Some(reply))` to answer, `Err` to close with an error.
fn handle(st: &AppState, me: &str, text: &str) -> Result<Option<String>, String> {
    let mut msg = Envelope::decode(text).map_err(|e| e.to_string())?;
    match &mut msg {
        Message::Bind { .. } => Err("already bound".into()),
        Message::RequestRelay {
            target,
            region,
            role,
            probes,
            exclude,
        } => {
            let target = target.clone();
            let req = LeaseRequest {
                requester: PeerRef {
                    sub: me.to_owned(),
                    wavry_id: Some(me.to_owned()),
                },
                target: PeerRef {
                    sub: target.clone(),
                    wavry_id: None,
                },
                requester_role: *role,
                region: region.take(),
                probes: std::mem::take(probes),
                exclude: std::mem::take(exclude),
            };
            match st.issue_for_identity(me, req) {
                Ok(g) => Ok(Some(credentials_message(&g, &g.requester, &target))),
                Err(e) => Ok(Some(Envelope::error(e.status().as_u16(), e.message()))),
            }
        }
        m => {
            let Some(target) = m.target().map(str::to_owned) else {
                return Ok(Some(Envelope::error(
                    400,
                    "message type not accepted from clients",
                )));
            };
            m.address_for_forwarding(me, Some(me), &target);
            if st.hub.send(&target, Envelope::encode(m)) {
                Ok(None)
            } else {
                Ok(Some(Envelope::error(404, "target not connected")))
            }
        }
    }
}

/// `RELAY_CREDENTIALS` carrying one peer's lease of a grant.
pub(crate) fn credentials_message(g: &LeaseGrant, c: &Credentials, peer: &str) -> String {
    Envelope::encode(&Message::RelayCredentials {
        relay_id: g.relay_id.clone(),
        token: c.token.clone(),
        addr: g.addr.clone(),
        session_id: g.session_id,
        role: c.role,
        peer: peer.to_owned(),
        expires_at: g.expires_at,
        alternates: g.ranked.clone(),
    })
}
