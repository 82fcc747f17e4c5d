//! `wavry ping`: an encrypted, mutually authenticated handshake with a host, then echo probes
//! ([`crate::probe`]) timed round trip by round trip.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wavry_net::{ClientDriver, DriverConfig, DriverError, IoMode};
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::WavryId;
use wavry_rift::session::{CloseReason, Event, Role, SessionConfig};

use crate::{SetupError, probe};

/// What to ping and how.
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// The host's address.
    pub server: SocketAddr,
    /// Our identity (.key); ephemeral when `None`.
    pub key: Option<PathBuf>,
    /// Pin the host's Wavry ID; any authenticated host when `None`.
    pub host_id: Option<WavryId>,
    /// Probes to send.
    pub count: u32,
    /// Time between probes.
    pub interval: Duration,
    /// Longest wait for the handshake and for each reply.
    pub timeout: Duration,
    /// Packet I/O backend.
    pub io: IoMode,
}

/// What a ping run measured.
#[derive(Debug, Clone)]
pub struct PingReport {
    /// The host's authenticated identity.
    pub peer: WavryId,
    /// Handshake time (Noise XX, identity proofs, Hello/HelloAck).
    pub connect: Duration,
    /// Probes sent.
    pub sent: u32,
    /// Round-trip times of the probes answered, in order.
    pub rtts: Vec<Duration>,
}

impl PingReport {
    /// (min, mean, p99) of the answered probes, in ms.
    pub fn summary_ms(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self.rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let idx = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        Some((v[0], mean, v[idx]))
    }
}

/// Why a ping failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// Keys or sockets could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Binding the local socket failed.
    #[error("binding a local socket: {0}")]
    Bind(#[from] wavry_net::NetError),
    /// Nothing completed a handshake in time.
    #[error("no answer from {0} within {1:?} (is a wavry-server listening there?)")]
    NoAnswer(SocketAddr, Duration),
    /// The handshake failed or the host refused us.
    #[error("{0} refused the session: {1}")]
    Refused(SocketAddr, String),
    /// The session ended before the probes were done.
    #[error("the session with {0} ended: {1}")]
    Ended(SocketAddr, String),
}

/// Connects, then sends `count` probes, calling `on_reply(seq, rtt)` for each answer.
pub fn ping(
    opts: &PingOptions,
    mut on_reply: impl FnMut(u64, Duration),
) -> Result<PingReport, PingError> {
    let (key, _) = crate::load_identity(opts.key.as_deref())?;
    let policy = opts
        .host_id
        .map_or(PeerPolicy::AnyAuthenticated, PeerPolicy::Pinned);
    let mut cfg = SessionConfig::new(Role::Client, policy);
    cfg.hello.client_name = "wavry ping".into();
    cfg.handshake_timeout = opts.timeout;
    cfg.stats_interval = Duration::ZERO;
    let local = if opts.server.ip().is_loopback() {
        SocketAddr::new(opts.server.ip(), 0)
    } else if opts.server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = wavry_net::bind(local, opts.io, &wavry_net::Config::default())?;
    let started = Instant::now();
    let client = ClientDriver::connect(socket, cfg, key, opts.server, DriverConfig::default())?;
    let result = run(opts, &client, started, &mut on_reply);
    if result.is_ok() {
        let _ = client.close("ping done");
    }
    let _ = client.shutdown();
    result
}

fn run(
    opts: &PingOptions,
    client: &ClientDriver,
    started: Instant,
    on_reply: &mut impl FnMut(u64, Duration),
) -> Result<PingReport, PingError> {
    let deadline = started + opts.timeout;
    let peer = loop {
        match client.events().recv_deadline(deadline) {
            Ok(Event::Connected { peer, .. }) => break peer,
            Ok(Event::Closed(CloseReason::HandshakeTimeout)) | Err(_) => {
                return Err(PingError::NoAnswer(opts.server, opts.timeout));
            }
            Ok(Event::Closed(r)) => return Err(PingError::Refused(opts.server, format!("{r:?}"))),
            Ok(_) => {}
        }
    };
    let mut report = PingReport {
        peer,
        connect: started.elapsed(),
        sent: 0,
        rtts: Vec::with_capacity(opts.count as usize),
    };
    for seq in 0..u64::from(opts.count) {
        if seq > 0 {
            std::thread::sleep(opts.interval);
        }
        let sent = Instant::now();
        client.send_control(probe::new(seq))?;
        report.sent += 1;
        let wait_until = sent + opts.timeout;
        loop {
            match client.events().recv_deadline(wait_until) {
                Ok(Event::Control(m)) if probe::seq(&m) == Some(seq) => {
                    let rtt = sent.elapsed();
                    report.rtts.push(rtt);
                    on_reply(seq, rtt);
                    break;
                }
                Ok(Event::Closed(r)) => {
                    return Err(PingError::Ended(opts.server, format!("{r:?}")));
                }
                Ok(Event::Frame(f)) => client.recycle(f)?,
                Ok(_) => {}
                Err(_) => break, // this probe timed out; the next one goes on
            }
        }
    }
    Ok(report)
}
