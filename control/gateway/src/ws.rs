//! The gateway's signalling WebSocket (`GET /ws`), speaking the `wavry-signal` envelope:
//! `BIND` with a gateway session token within 10 s (enforced by a timer), then forwarding
//! between bound users (addressed by username or Wavry ID) and `REQUEST_RELAY`, brokered
//! through the master so each peer receives a lease for its own role.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
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
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use tokio::sync::mpsc;
use wavry_control_core::{hash_token, unix_now};
use wavry_signal::{
    Envelope, MAX_MESSAGE_BYTES, Message,
    broker::{LeaseGrant, LeaseRequest, PeerRef},
};

use crate::app::{AppState, SessionUser};

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
    user_id: String,
    session_hash: String,
    wavry_id: Option<String>,
    tx: mpsc::Sender<Out>,
}

/// Bound connections by username, plus connection counters.
#[derive(Default)]
pub(crate) struct Hub {
    peers: Mutex<HashMap<String, Peer>>,
    by_wavry_id: Mutex<HashMap<String, String>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    open: AtomicUsize,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// Open sockets (bound or not).
    pub(crate) fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn insert(&self, username: &str, peer: Peer) {
        if let Some(w) = &peer.wavry_id {
            lock(&self.by_wavry_id).insert(w.clone(), username.to_owned());
        }
        if let Some(old) = lock(&self.peers).insert(username.to_owned(), peer) {
            let _ = old
                .tx
                .try_send(Out::Close("Session replaced by a newer connection".into()));
        }
    }

    fn remove(&self, username: &str, conn: u64) {
        let mut peers = lock(&self.peers);
        if peers.get(username).is_some_and(|p| p.conn == conn) {
            if let Some(p) = peers.remove(username) {
                if let Some(w) = p.wavry_id {
                    lock(&self.by_wavry_id).remove(&w);
                }
            }
        }
    }

    /// Username of a connected peer addressed by username or Wavry ID.
    fn resolve(&self, target: &str) -> Option<String> {
        let t = target.trim();
        let lower = t.to_ascii_lowercase();
        if lock(&self.peers).contains_key(&lower) {
            return Some(lower);
        }
        lock(&self.by_wavry_id).get(t).cloned()
    }

    fn info(&self, username: &str) -> Option<(String, Option<String>)> {
        lock(&self.peers)
            .get(username)
            .map(|p| (p.user_id.clone(), p.wavry_id.clone()))
    }

    /// Sends to a user bound on this instance.
    pub(crate) fn send_local(&self, username: &str, text: String) -> bool {
        lock(&self.peers)
            .get(username)
            .is_some_and(|p| p.tx.try_send(Out::Text(text)).is_ok())
    }

    fn kick_where(&self, reason: &str, pred: impl Fn(&Peer) -> bool) -> usize {
        let peers = lock(&self.peers);
        peers
            .values()
            .filter(|p| pred(p))
            .map(|p| usize::from(p.tx.try_send(Out::Close(reason.to_owned())).is_ok()))
            .sum()
    }

    /// Closes the local socket of `username` (bound again elsewhere).
    pub(crate) fn kick_username(&self, username: &str, reason: &str) -> usize {
        lock(&self.peers).get(username).map_or(0, |p| {
            usize::from(p.tx.try_send(Out::Close(reason.to_owned())).is_ok())
        })
    }

    /// Closes every connection of a user (ban, 2FA change).
    pub(crate) fn kick_user(&self, user_id: &str, reason: &str) -> usize {
        self.kick_where(reason, |p| p.user_id == user_id)
    }

    /// Closes connections bound with a session (logout, revoke).
    pub(crate) fn kick_session(&self, session_hash: &str, reason: &str) -> usize {
        self.kick_where(reason, |p| p.session_hash == session_hash)
    }
}

struct Slot {
    st: Arc<AppState>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.st.hub.open.fetch_sub(1, Ordering::Relaxed);
        let mut m = lock(&self.st.hub.per_ip);
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
    {
        let mut m = lock(&st.hub.per_ip);
        if st.hub.open.load(Ordering::Relaxed) >= st.ws_max_total {
            return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
        }
        let n = m.entry(ip).or_default();
        if *n >= st.ws_max_per_ip {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address",
            )
                .into_response();
        }
        *n += 1;
        st.hub.open.fetch_add(1, Ordering::Relaxed);
    }
    let slot = Slot { st: st.clone(), ip };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| run(st, socket, ip, slot))
}

type Sink = SplitSink<WebSocket, WsMsg>;

async fn close_with(sink: &mut Sink, code: u16, msg: &str) {
    let _ = sink
        .send(WsMsg::Text(Envelope::error(code, msg).into()))
        .await;
    let _ = sink.send(WsMsg::Close(None)).await;
}

async fn bind(
    st: &AppState,
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    ip: IpAddr,
) -> Option<SessionUser> {
    // BIND must arrive within this time (default 10 s), enforced by a timer.
    let bind_timeout = Duration::from_secs(
        wavry_control_core::env_u64("WAVRY_WS_BIND_TIMEOUT_SECS", 10).clamp(1, 60),
    );
    let first = tokio::time::timeout(bind_timeout, stream.next()).await;
    let token = match first {
        Ok(Some(Ok(WsMsg::Text(t)))) => match Envelope::decode(&t) {
            Ok(Message::Bind { token }) => token,
            Ok(_) => {
                close_with(sink, 401, "first message must be BIND").await;
                return None;
            }
            Err(e) => {
                close_with(sink, 400, &e.to_string()).await;
                return None;
            }
        },
        Err(_) => {
            close_with(sink, 408, "BIND timeout").await;
            return None;
        }
        Ok(Some(Ok(WsMsg::Binary(_)))) => {
            close_with(sink, 400, "binary frames are not supported").await;
            return None;
        }
        _ => return None,
    };
    if !st
        .bind_limiter
        .check(&format!("bind:{}", st.ip.rate_key(ip)))
    {
        close_with(sink, 429, "too many bind attempts").await;
        return None;
    }
    match st.session_user(&token).await {
        Ok(Some(u)) => Some(u),
        Ok(None) => {
            tracing::info!(token = %hash_token(&token), "WS bind refused");
            close_with(sink, 401, "invalid or expired session token").await;
            None
        }
        Err(_) => {
            close_with(sink, 500, "internal error").await;
            None
        }
    }
}

async fn run(st: Arc<AppState>, socket: WebSocket, ip: IpAddr, _slot: Slot) {
    let (mut sink, mut stream) = socket.split();
    let Some(user) = bind(&st, &mut sink, &mut stream, ip).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Out>(256);
    let conn = st.hub.next.fetch_add(1, Ordering::Relaxed);
    let wavry_id = user.wavry_id();
    st.hub.insert(
        &user.username,
        Peer {
            conn,
            user_id: user.user_id.clone(),
            session_hash: user.token_hash.clone(),
            wavry_id: wavry_id.clone(),
            tx,
        },
    );
    // A ban, logout or revocation committed between the token check in `bind` and the insert
    // above found no socket to close: check the session again now that it can be reached (a
    // later one closes it through the hub).
    match st.session_user_by_hash(user.token_hash.clone()).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            st.hub.remove(&user.username, conn);
            return close_with(&mut sink, 401, "invalid or expired session token").await;
        }
        Err(_) => {
            st.hub.remove(&user.username, conn);
            return close_with(&mut sink, 500, "internal error").await;
        }
    }
    let bound = Envelope::encode(&Message::Bound {
        username: user.username.clone(),
        wavry_id,
    });
    if let Some(b) = &st.bus {
        b.present(
            &user.username,
            &user.user_id,
            user.wavry_id().as_deref(),
            conn,
        )
        .await;
    }
    if sink.send(WsMsg::Text(bound.into())).await.is_ok() {
        serve_bound(&st, &user, &mut sink, &mut stream, &mut rx).await;
    }
    st.hub.remove(&user.username, conn);
    if let Some(b) = &st.bus {
        b.absent(&user.username, conn).await;
    }
}

async fn serve_bound(
    st: &AppState,
    user: &SessionUser,
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    rx: &mut mpsc::Receiver<Out>,
) {
    let per_minute = u32::try_from(wavry_control_core::env_u64(
        "WAVRY_WS_MESSAGES_PER_MINUTE",
        600,
    ))
    .unwrap_or(600);
    let mut window = (Instant::now(), 0u32);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(t)) => {
                    if sink.send(WsMsg::Text(t.into())).await.is_err() { return; }
                }
                Some(Out::Close(reason)) => return close_with(sink, 409, &reason).await,
                None => return,
            },
            msg = stream.next() => match msg {
                Some(Ok(WsMsg::Text(t))) => {
                    if window.0.elapsed() >= Duration::from_secs(60) { window = (Instant::now(), 0); }
                    window.1 += 1;
                    if window.1 > per_minute {
                        return close_with(sink, 429, "message rate limit exceeded").await;
                    }
                    match handle(st, user, &t).await {
                        Ok(Some(reply)) => { if sink.send(WsMsg::Text(reply.into())).await.is_err() { return; } }
                        Ok(None) => {}
                        Err(fatal) => return close_with(sink, 400, &fatal).await,
                    }
                }
                Some(Ok(WsMsg::Binary(_))) => return close_with(sink, 400, "binary frames are not supported").await,
                Some(Ok(WsMsg::Ping(_) | WsMsg::Pong(_))) => {}
                Some(Ok(WsMsg::Close(_)) | Err(_)) | None => return,
            },
        }
    }
}

/// Handles one message: `Ok(Some(reply))` to answer, `Err` to close with an error.
async fn handle(st: &AppState, me: &SessionUser, text: &str) -> Result<Option<String>, String> {
    let mut msg = match Envelope::decode(text) {
        Ok(m) => m,
        Err(wavry_signal::SignalError::Field(f)) => {
            return Ok(Some(Envelope::error(
                400,
                format!("field `{f}` is empty or too large"),
            )));
        }
        Err(e) => return Err(e.to_string()),
    };
    let Some(target_raw) = msg.target().map(str::to_owned) else {
        return match msg {
            Message::Bind { .. } => Err("already bound".into()),
            _ => Ok(Some(Envelope::error(
                400,
                "message type not accepted from clients",
            ))),
        };
    };
    // Local sockets first, then (Postgres clusters) sockets bound on other instances.
    let (target, remote) = if let Some(t) = st.hub.resolve(&target_raw) {
        (t, None)
    } else if let Some(p) = match &st.bus {
        Some(b) => b.lookup(&target_raw).await,
        None => None,
    } {
        (p.username.clone(), Some(p))
    } else {
        return Ok(Some(Envelope::error(404, "target not connected")));
    };
    if target == me.username {
        return Ok(Some(Envelope::error(400, "cannot address yourself")));
    }
    if let Message::RequestRelay {
        region,
        role,
        probes,
        exclude,
        ..
    } = &mut msg
    {
        let req = LeaseRequest {
            requester: PeerRef {
                sub: me.username.clone(),
                wavry_id: me.wavry_id(),
            },
            target: PeerRef {
                sub: target.clone(),
                wavry_id: remote.as_ref().map_or_else(
                    || st.hub.info(&target).and_then(|i| i.1),
                    |r| r.wavry_id.clone(),
                ),
            },
            requester_role: *role,
            region: region.take(),
            probes: std::mem::take(probes),
            exclude: std::mem::take(exclude),
        };
        let target_id = remote.as_ref().map_or_else(
            || st.hub.info(&target).map(|i| i.0).unwrap_or_default(),
            |r| r.user_id.clone(),
        );
        return Ok(Some(
            broker(st, me, &target, &target_id, remote.is_some(), req).await,
        ));
    }
    msg.address_for_forwarding(&me.username, me.wavry_id().as_deref(), &target);
    if st
        .deliver(&target, Envelope::encode(&msg), remote.is_some())
        .await
    {
        Ok(None)
    } else {
        Ok(Some(Envelope::error(404, "target not connected")))
    }
}

/// Asks the master for leases, records the session, delivers the target's credentials and
/// returns the requester's.
async fn broker(
    st: &AppState,
    me: &SessionUser,
    target: &str,
    target_id: &str,
    remote: bool,
    req: LeaseRequest,
) -> String {
    let Some(token) = &st.master_token else {
        return Envelope::error(503, "relay brokering not configured");
    };
    let resp = st
        .http
        .post(format!("{}/v1/leases", st.master_url))
        .bearer_auth(token)
        .json(&req)
        .send()
        .await;
    let grant: LeaseGrant = match resp {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "master lease response unreadable");
                return Envelope::error(502, "master response unreadable");
            }
        },
        Ok(r) => {
            let code = r.status().as_u16();
            let msg = r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "relay unavailable".into());
            return Envelope::error(code, msg);
        }
        Err(e) => {
            tracing::warn!(error = %e, "master unreachable");
            return Envelope::error(503, "master unreachable");
        }
    };
    let Some(theirs) = grant.target.clone() else {
        tracing::error!("master grant without the target's lease");
        return Envelope::error(502, "master response incomplete");
    };
    if let Err(e) = sqlx::query("INSERT INTO relay_sessions (session_id, relay_id, requester_id, target_id, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(grant.session_id.to_string())
        .bind(&grant.relay_id)
        .bind(&me.user_id)
        .bind(target_id)
        .bind(unix_now())
        .execute(&st.db)
        .await
    {
        tracing::error!(error = %e, "recording relay session failed");
        return Envelope::error(500, "internal error");
    }
    st.count(&st.metrics.relay_sessions);
    let creds = |c: &wavry_signal::broker::Credentials, peer: &str| {
        Envelope::encode(&Message::RelayCredentials {
            relay_id: grant.relay_id.clone(),
            token: c.token.clone(),
            addr: grant.addr.clone(),
            session_id: grant.session_id,
            role: c.role,
            peer: peer.to_owned(),
            expires_at: grant.expires_at,
            alternates: grant.ranked.clone(),
        })
    };
    st.deliver(target, creds(&theirs, &me.username), remote)
        .await;
    creds(&grant.requester, target)
}
