//! How the client reaches its host: `--connect` directly, or through the gateway to the
//! host's direct addresses first and then a brokered relay; and the failover to another relay
//! when the path goes silent mid-session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crossbeam_channel::select;
use wavry_net::{ClientDriver, DriverConfig};
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::{IdentityKey, WavryId};
use wavry_rift::proto;
use wavry_rift::relay_client::RelayClientConfig;
use wavry_rift::session::{Event, Role, Session, SessionConfig};
use wavry_runtime::{nat, signal};

use super::{Args, PathChoice, describe};

/// A host found through the gateway: where it answered, whom to pin, and the still-open
/// signalling socket (for a relay, if the direct path fails).
struct Brokered {
    sig: signal::Signal,
    host: String,
    candidates: Vec<SocketAddr>,
    pin: Option<WavryId>,
    /// The address direct attempts bind: the port whose public address the host was told.
    local: SocketAddr,
    /// Where this side told the host it can be reached.
    own: Vec<SocketAddr>,
    /// The gateway's URL and the account's token (relay reports).
    url: String,
    token: String,
}

/// Picks the local port for direct attempts and the addresses to tell the host: the local
/// address towards the gateway and, when a STUN server answers, the public one.
fn own_candidates(
    args: &Args,
    url: &str,
) -> anyhow::Result<(SocketAddr, Vec<SocketAddr>, Option<SocketAddr>)> {
    let gateway = signal::gateway_addr(url);
    let any: SocketAddr = match gateway {
        Some(SocketAddr::V6(_)) => "[::]:0".parse()?,
        _ => "0.0.0.0:0".parse()?,
    };
    let stun = nat::stun_server(args.stun.as_deref(), url)?;
    let (local, public) = match stun {
        Some(server) => {
            let (bound, found) = nat::learn(any, server, Duration::from_millis(900))?;
            match found {
                Ok(a) => {
                    println!("wavry-client: public address {a} (STUN {server})");
                    (bound, Some(a))
                }
                Err(e) => {
                    eprintln!("wavry-client: no public address ({e}); a relay covers NATs");
                    (bound, None)
                }
            }
        }
        None => (nat::pick_port(any)?, None),
    };
    let own = nat::with_candidate(signal::host_candidates(local, gateway), public);
    Ok((local, own, public))
}

/// Asks the gateway for `--host`: its candidates and whom to pin (`--host-id` when given, and
/// the gateway must agree; else the host account's Wavry ID as the gateway vouches for it).
fn broker(args: &Args, url: &str) -> anyhow::Result<Brokered> {
    let host = args
        .host
        .as_deref()
        .context("--host is required with --gateway-url")?;
    let token = args.token.token()?;
    let timeout = Duration::from_secs(args.connect_timeout.max(1));
    let mut sig = signal::Signal::connect(url, &token, timeout).context("gateway")?;
    let (local, own, public) = own_candidates(args, url)?;
    let answer = signal::offer(&mut sig, host, &args.name, &own, timeout)
        .with_context(|| format!("asking the gateway for {host}"))?;
    let vouched = answer
        .wavry_id
        .as_deref()
        .map(str::parse::<WavryId>)
        .transpose()
        .context("the gateway's Wavry ID for the host")?;
    let pin = match (args.host_id, vouched) {
        (Some(flag), Some(v)) if flag != v => {
            bail!("--host-id {flag} but the gateway says {host} is {v}: refusing to connect")
        }
        (Some(flag), _) => Some(flag),
        (None, v) => v,
    };
    println!(
        "wavry-client: {host} answered through the gateway at {}",
        answer
            .candidates
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(Brokered {
        sig,
        host: host.to_owned(),
        candidates: signal::order_candidates(answer.candidates, public),
        pin,
        local,
        own,
        url: url.to_owned(),
        token,
    })
}

/// Where a session runs.
pub(super) enum Route {
    Direct(SocketAddr),
    Relay(Box<signal::RelayGrant>),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(a) => write!(f, "{a} (direct)"),
            Self::Relay(g) => write!(f, "relay {} at {}", g.lease.relay_id, g.lease.relay_addr),
        }
    }
}

/// Binds a socket (`local` for a direct route when given, else towards the peer: loopback
/// stays on loopback) and starts the client session.
fn start(
    args: &Args,
    route: &Route,
    cfg: SessionConfig,
    key: &Arc<IdentityKey>,
    local: Option<SocketAddr>,
) -> anyhow::Result<ClientDriver> {
    let to = match route {
        Route::Direct(a) => *a,
        Route::Relay(g) => g.lease.relay_addr,
    };
    let bind = match (to, local) {
        (_, Some(l)) if matches!(route, Route::Direct(_)) => l,
        (a, _) if a.ip().is_loopback() => SocketAddr::new(a.ip(), 0),
        (SocketAddr::V4(_), _) => "0.0.0.0:0".parse()?,
        (SocketAddr::V6(_), _) => "[::]:0".parse()?,
    };
    let socket = wavry_net::bind(bind, args.io, &wavry_net::Config::default())?;
    let driver_cfg = DriverConfig {
        thread_name: "wavry-client-io".into(),
        realtime: args.realtime,
        ..DriverConfig::default()
    };
    Ok(match route {
        Route::Direct(a) => ClientDriver::connect(socket, cfg, key.clone(), *a, driver_cfg)?,
        Route::Relay(g) => {
            let session = Session::client_via_relay(
                Instant::now(),
                wavry_media::wall_clock_us() / 1000,
                cfg,
                key.clone(),
                g.lease.clone(),
                RelayClientConfig::default(),
            )?;
            ClientDriver::spawn(socket, session, driver_cfg)?
        }
    })
}

/// How waiting for a session's handshake ended.
enum Waited {
    Connected(WavryId, Box<proto::HelloAck>),
    Failed(String),
    Stopped,
}

/// How one connection attempt ended.
enum Attempt {
    Up(ClientDriver, Box<proto::HelloAck>),
    Failed(String),
    Stopped,
}

/// A running session: its driver, the host's parameters, the path it runs on, and (through a
/// gateway) the signalling socket it was brokered on, kept for a failover.
pub(super) struct Established {
    pub(super) client: ClientDriver,
    pub(super) params: Box<proto::HelloAck>,
    pub(super) route: Route,
    brokered: Option<Brokered>,
    cfg: SessionConfig,
    /// Relays that failed this session (excluded from the next request).
    failed_relays: Vec<String>,
}

impl Established {
    /// Whether a lost path can be replaced (the session was brokered by a gateway).
    pub(super) fn can_fail_over(&self) -> bool {
        self.brokered.is_some()
    }
}

fn await_connected(
    client: &ClientDriver,
    stop_rx: &crossbeam_channel::Receiver<()>,
    within: Duration,
) -> anyhow::Result<Waited> {
    let deadline = Instant::now() + within;
    loop {
        select! {
            recv(client.events()) -> ev => match ev.context("client driver stopped")? {
                Event::Connected { peer, params } => return Ok(Waited::Connected(peer, params)),
                Event::Closed(r) => return Ok(Waited::Failed(describe(&r))),
                _ => {}
            },
            recv(stop_rx) -> _ => return Ok(Waited::Stopped),
            default(deadline.saturating_duration_since(Instant::now())) => {
                return Ok(Waited::Failed(format!("no answer within {within:?}")));
            }
        }
    }
}

/// Connects along `route` (a direct one from `local` when given).
#[allow(clippy::too_many_arguments)]
fn try_route(
    args: &Args,
    route: &Route,
    cfg: &SessionConfig,
    key: &Arc<IdentityKey>,
    stop_rx: &crossbeam_channel::Receiver<()>,
    within: Duration,
    local: Option<SocketAddr>,
) -> anyhow::Result<Attempt> {
    let mut cfg = cfg.clone();
    cfg.handshake_timeout = within;
    if matches!(route, Route::Relay(_)) {
        // The relay drops msg1 until the host has presented its own lease, which it does at
        // about the same moment: retry soon (the wait still doubles) instead of after 250 ms.
        cfg.handshake_rto = Duration::from_millis(60);
    }
    let client = start(args, route, cfg, key, local)?;
    match await_connected(&client, stop_rx, within)? {
        Waited::Connected(peer, params) => {
            println!("wavry-client: connected to {peer} via {route}");
            eprintln!("wavry-client: I/O thread at {}", client.scheduling());
            Ok(Attempt::Up(client, params))
        }
        Waited::Failed(why) => {
            let _ = client.shutdown();
            Ok(Attempt::Failed(why))
        }
        Waited::Stopped => {
            let _ = client.shutdown();
            Ok(Attempt::Stopped)
        }
    }
}

/// Establishes the session: `--connect` directly; through the gateway direct to the host's
/// candidates first (`--path auto`, bounded by `--direct-timeout-ms`), then through a relay
/// the gateway brokers. `None` when stopped first.
pub(super) fn establish(
    args: &Args,
    direct: Option<SocketAddr>,
    key: &Arc<IdentityKey>,
    stop_rx: &crossbeam_channel::Receiver<()>,
) -> anyhow::Result<Option<Established>> {
    let connect_timeout = Duration::from_secs(args.connect_timeout.max(1));
    let mut brokered = match (direct, &args.gateway_url) {
        (Some(_), _) => None,
        (None, Some(url)) => Some(broker(args, url)?),
        (None, None) => bail!("nothing to connect to"),
    };
    let pin = brokered.as_ref().map_or(args.host_id, |b| b.pin);
    let policy = match pin {
        Some(id) => PeerPolicy::Pinned(id),
        None => {
            eprintln!(
                "wavry-client: no --host-id: accepting any host that proves an identity \
                 (pin it with --host-id for protection against impostors)"
            );
            PeerPolicy::AnyAuthenticated
        }
    };
    let mut cfg = SessionConfig::new(Role::Client, policy);
    cfg.hello.client_name.clone_from(&args.name);
    cfg.files.max_file_bytes = args.file_max_bytes;
    let up = |client, params, route, brokered, cfg| {
        Ok(Some(Established {
            client,
            params,
            route,
            brokered,
            cfg,
            failed_relays: Vec::new(),
        }))
    };
    let Some(b) = brokered.as_mut() else {
        let addr = direct.context("nothing to connect to")?;
        let route = Route::Direct(addr);
        return match try_route(args, &route, &cfg, key, stop_rx, connect_timeout, None)? {
            Attempt::Up(client, params) => up(client, params, route, None, cfg),
            Attempt::Stopped => Ok(None),
            Attempt::Failed(why) => bail!("could not connect to {addr}: {why}"),
        };
    };
    let mut failures = Vec::new();
    if args.path != PathChoice::Relay {
        let within = match args.path {
            PathChoice::Direct => connect_timeout,
            _ => Duration::from_millis(args.direct_timeout_ms.max(100)),
        };
        for &addr in &b.candidates {
            let route = Route::Direct(addr);
            match try_route(args, &route, &cfg, key, stop_rx, within, Some(b.local))? {
                Attempt::Up(client, params) => return up(client, params, route, brokered, cfg),
                Attempt::Stopped => return Ok(None),
                Attempt::Failed(why) => {
                    eprintln!("wavry-client: direct to {addr} failed: {why}");
                    failures.push(format!("direct {addr}: {why}"));
                }
            }
        }
        if args.path == PathChoice::Direct {
            bail!(
                "could not reach {} directly ({}); --path auto falls back to a relay",
                b.host,
                if failures.is_empty() {
                    "it offered no address".to_owned()
                } else {
                    failures.join("; ")
                }
            );
        }
    }
    println!("wavry-client: asking the gateway for a relay to {}", b.host);
    let grant = signal::request_relay(&mut b.sig, &b.host, &[], connect_timeout)
        .with_context(|| format!("asking the gateway for a relay to {}", b.host))?;
    let route = Route::Relay(Box::new(grant));
    match try_route(args, &route, &cfg, key, stop_rx, connect_timeout, None)? {
        Attempt::Up(client, params) => up(client, params, route, brokered, cfg),
        Attempt::Stopped => Ok(None),
        Attempt::Failed(why) => {
            failures.push(format!("{route}: {why}"));
            bail!("could not reach {}: {}", b.host, failures.join("; "))
        }
    }
}

impl Established {
    /// Reports how the relay this session ran through did (best effort, a line either way):
    /// `bytes` carried over `since`.
    pub(super) fn report_relay(&self, route: &Route, success: bool, bytes: u64, since: Instant) {
        let (Route::Relay(g), Some(b)) = (route, &self.brokered) else {
            return;
        };
        let report = signal::RelayReport {
            relay_id: g.lease.relay_id.clone(),
            session_id: g.session.clone(),
            success,
            bytes_sent: bytes,
            duration_secs: since.elapsed().as_secs(),
            quality_score: if success { 100 } else { 0 },
        };
        match signal::report_relay(&b.url, &b.token, &report) {
            Ok(()) => println!(
                "wavry-client: reported relay {} ({}) to the gateway",
                report.relay_id,
                if success { "worked" } else { "failed" }
            ),
            Err(e) => eprintln!("wavry-client: relay report not delivered: {e}"),
        }
    }
}

/// Replaces a session whose path went silent with one through another relay: the host is
/// offered the session again (its consent to a relay lease follows an answered offer), the
/// gateway brokers a relay other than those that failed, and a fresh handshake runs through
/// it. Returns the route given up, `None` when stopped first; an error when no relay is left
/// or none connects.
pub(super) fn fail_over(
    args: &Args,
    est: &mut Established,
    key: &Arc<IdentityKey>,
    stop_rx: &crossbeam_channel::Receiver<()>,
) -> anyhow::Result<Option<Route>> {
    let connect_timeout = Duration::from_secs(args.connect_timeout.max(1));
    if let Route::Relay(g) = &est.route {
        est.failed_relays.push(g.lease.relay_id.clone());
    }
    let b = est
        .brokered
        .as_mut()
        .context("the session was not brokered by a gateway: nothing to fail over to")?;
    signal::offer(&mut b.sig, &b.host, &args.name, &b.own, connect_timeout)
        .with_context(|| format!("offering the session to {} again", b.host))?;
    let grant = signal::request_relay(&mut b.sig, &b.host, &est.failed_relays, connect_timeout)
        .with_context(|| {
            format!(
                "asking the gateway for a relay to {} other than {}",
                b.host,
                est.failed_relays.join(", ")
            )
        })?;
    let route = Route::Relay(Box::new(grant));
    match try_route(args, &route, &est.cfg, key, stop_rx, connect_timeout, None)? {
        Attempt::Up(client, params) => {
            let old = std::mem::replace(&mut est.client, client);
            let _ = old.shutdown();
            est.params = params;
            Ok(Some(std::mem::replace(&mut est.route, route)))
        }
        Attempt::Stopped => Ok(None),
        Attempt::Failed(why) => bail!("failing over to {route}: {why}"),
    }
}
