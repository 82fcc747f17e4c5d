//! `wavry-relay`: binds the sharded UDP sockets, learns the master's lease key, runs one
//! forwarding thread per shard, serves /health /ready /metrics, registers and heartbeats.

mod cli;
mod http;
mod master;
mod probe;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use wavry_net::xdp::{XdpOptions, XdpPorts};
use wavry_net::{Backend, NetSocket};
use wavry_relay::core::stats::Stats;
use wavry_relay::kernel_filter::{BindingSink, FilterMode, FilterState};
#[cfg(target_os = "linux")]
use wavry_relay::kernel_filter::{BoundPeersFilter, attach_prefix};
use wavry_relay::shell::{Clock, ShardOptions, run_shard};
use wavry_relay::xdp::run_xdp_shard;
use wavry_relay::{CoreConfig, LeaseAuth, RelayCore};
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::LeaseVerifier;

use crate::cli::{Cli, RelayIo};
use crate::http::Shared;

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

fn in_container() -> bool {
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::env::var_os("container").is_some()
}

/// Spec RELAY §8: non-loopback binds need WAVRY_RELAY_ALLOW_PUBLIC_BIND=1, and outside a
/// container WAVRY_RELAY_ALLOW_HOST_PROD_BIND=1 as well.
fn check_bind(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !env_flag("WAVRY_RELAY_ALLOW_PUBLIC_BIND") {
        bail!(
            "refusing to bind {what} on non-loopback {addr}: set WAVRY_RELAY_ALLOW_PUBLIC_BIND=1"
        );
    }
    if !in_container() && !env_flag("WAVRY_RELAY_ALLOW_HOST_PROD_BIND") {
        bail!(
            "refusing to bind {what} on non-loopback {addr} outside a container: also set WAVRY_RELAY_ALLOW_HOST_PROD_BIND=1"
        );
    }
    Ok(())
}

/// Loads the relay key, or creates it (0600) when the file does not exist.
fn load_or_create_key(path: Option<&Path>) -> anyhow::Result<IdentityKey> {
    let Some(path) = path else {
        tracing::warn!("no --key: using an ephemeral relay key (the relay id changes on restart)");
        return IdentityKey::generate().context("generating a relay key");
    };
    if path.exists() {
        return IdentityKey::load(path).with_context(|| format!("loading {}", path.display()));
    }
    let key = IdentityKey::generate().context("generating a relay key")?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, key.seed())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), id = %key.id(), "created relay key");
    Ok(key)
}

/// The relay id: derived from the relay's public key, so the same key means the same id.
fn relay_id_for(key: &IdentityKey) -> String {
    format!("wr-{}", hex::encode(&key.id().as_bytes()[..12]))
}

fn pin_path(key: Option<&Path>) -> Option<PathBuf> {
    key.map(|k| {
        let mut s = k.as_os_str().to_owned();
        s.push(".master-key");
        PathBuf::from(s)
    })
}

/// Binds `threads` sockets and steers the group by session id; falls back to one socket
/// when steering cannot be attached (both legs of a session must meet on one shard).
fn bind_shards(cli: &Cli, threads: usize) -> anyhow::Result<Vec<NetSocket>> {
    let net = wavry_net::Config::default();
    if threads <= 1 {
        return Ok(vec![
            wavry_net::bind(cli.listen, cli.io.socket_mode(), &net)
                .context("binding the relay socket")?,
        ]);
    }
    let mut sockets = wavry_net::bind_sharded(cli.listen, threads, cli.io.socket_mode(), &net)
        .context("binding the relay sockets")?;
    #[cfg(target_os = "linux")]
    let steered =
        wavry_net::steer::steer_by_payload_u32(&sockets, wavry_relay::shell::STEER_OFFSET);
    #[cfg(not(target_os = "linux"))]
    let steered: std::io::Result<()> = Err(std::io::Error::other("Linux only"));
    if let Err(e) = steered {
        tracing::warn!(error = %e, "cannot steer SO_REUSEPORT by session id; forwarding on one thread");
        sockets.truncate(1);
    }
    Ok(sockets)
}

/// What the forwarding threads run on.
enum Paths {
    /// One `wavry-net` socket per shard.
    Sockets(Vec<NetSocket>),
    /// AF_XDP ports on one thread, and the kernel socket of the same port for the rest.
    Xdp(Box<XdpPorts>, std::net::UdpSocket),
}

/// Opens AF_XDP on --xdp-iface: the kernel socket first (it fixes the port), then the ports
/// with the program matching that port on the relay's addresses.
fn open_xdp(cli: &Cli) -> anyhow::Result<(XdpPorts, std::net::UdpSocket)> {
    let kernel =
        std::net::UdpSocket::bind(cli.listen).with_context(|| format!("binding {}", cli.listen))?;
    let local = kernel.local_addr().context("local_addr")?;
    let addrs = if local.ip().is_unspecified() {
        let mut all = Vec::new();
        for iface in &cli.xdp_iface {
            all.extend(wavry_net::xdp::interface_addrs(iface)?);
        }
        all
    } else {
        vec![local.ip()]
    };
    let opts = XdpOptions {
        mode: cli.xdp_mode,
        ..XdpOptions::default()
    };
    let ports = XdpPorts::open(&cli.xdp_iface, local.port(), &addrs, &opts)?;
    Ok((ports, kernel))
}

/// Picks the forwarding path from --io: AF_XDP first where asked for or possible.
fn open_paths(cli: &Cli, threads: usize) -> anyhow::Result<Paths> {
    let want_xdp = match cli.io {
        RelayIo::Xdp => true,
        RelayIo::Auto => !cli.xdp_iface.is_empty(),
        RelayIo::Uring | RelayIo::Portable => false,
    };
    if want_xdp {
        match open_xdp(cli) {
            Ok((ports, kernel)) => return Ok(Paths::Xdp(Box::new(ports), kernel)),
            Err(e) if cli.io == RelayIo::Xdp => {
                return Err(e.context("--io xdp: AF_XDP could not start"));
            }
            Err(e) => {
                tracing::warn!("AF_XDP unavailable, forwarding on io_uring instead: {e:#}");
            }
        }
    }
    Ok(Paths::Sockets(bind_shards(cli, threads)?))
}

/// Puts `--kernel-filter` on the forwarding sockets (the AF_XDP path's kernel socket gets
/// `prefix` at most: its shard keeps no kernel table). Returns the state for /health and
/// /metrics and, for `bound-peers`, the table the shards keep in step with their bindings.
/// What cannot be attached is said in one line and the next weaker filter is used: forwarding
/// never depends on it, the core checks every datagram.
#[cfg(target_os = "linux")]
fn kernel_filter(
    cli: &Cli,
    paths: &Paths,
    shards: usize,
) -> (Arc<FilterState>, Option<Arc<BoundPeersFilter>>) {
    use std::os::fd::AsFd;
    let fds: Vec<&dyn AsFd> = match paths {
        Paths::Sockets(s) => s.iter().map(|s| s as &dyn AsFd).collect(),
        Paths::Xdp(_, kernel) => vec![kernel as &dyn AsFd],
    };
    if cli.kernel_filter == FilterMode::Off {
        return (Arc::new(FilterState::new(FilterMode::Off)), None);
    }
    if cli.kernel_filter == FilterMode::BoundPeers && matches!(paths, Paths::Sockets(_)) {
        let state = Arc::new(FilterState::new(FilterMode::BoundPeers));
        let pairs = cli.max_sessions.saturating_add(shards).saturating_mul(2) + 64;
        match BoundPeersFilter::attach(
            &fds,
            u32::try_from(pairs).unwrap_or(u32::MAX),
            Arc::clone(&state),
        ) {
            Ok(f) => return (state, Some(Arc::new(f))),
            Err(e) => tracing::warn!(
                error = %e,
                "the bound-peers kernel filter is unavailable; using the prefix filter"
            ),
        }
    }
    match fds.iter().try_for_each(attach_prefix) {
        Ok(()) => (Arc::new(FilterState::new(FilterMode::Prefix)), None),
        Err(e) => {
            tracing::warn!(error = %e, "cannot attach the junk socket filter; junk is dropped in user space only");
            (Arc::new(FilterState::new(FilterMode::Off)), None)
        }
    }
}

/// Off Linux the forwarding threads check every datagram.
#[cfg(not(target_os = "linux"))]
fn kernel_filter(
    cli: &Cli,
    _paths: &Paths,
    _shards: usize,
) -> (Arc<FilterState>, Option<Arc<NoFilter>>) {
    if cli.kernel_filter != FilterMode::Off {
        tracing::warn!(
            "kernel socket filters need Linux; the forwarding threads check every datagram"
        );
    }
    (Arc::new(FilterState::new(FilterMode::Off)), None)
}

/// Stands in for the bound-peers filter where there is none.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
struct NoFilter;

#[cfg(not(target_os = "linux"))]
impl BindingSink for NoFilter {
    fn apply(&self, _events: &mut dyn Iterator<Item = wavry_relay::BindingEvent>) {}
}

/// Checks --cpus against the CPUs this process may run on, so a wrong list fails at start
/// with the allowed ones named rather than in a forwarding thread.
#[cfg(target_os = "linux")]
fn check_cpus(cpus: &[usize]) -> anyhow::Result<()> {
    use nix::sched::{CpuSet, sched_getaffinity};
    if cpus.is_empty() {
        return Ok(());
    }
    let allowed =
        sched_getaffinity(nix::unistd::Pid::from_raw(0)).context("reading this process's CPUs")?;
    let list: Vec<String> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    for &c in cpus {
        if !allowed.is_set(c).unwrap_or(false) {
            bail!(
                "--cpus: CPU {c} is not one this process may run on (allowed: {})",
                list.join(",")
            );
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn check_cpus(cpus: &[usize]) -> anyhow::Result<()> {
    if !cpus.is_empty() {
        bail!("--cpus: pinning threads needs Linux");
    }
    Ok(())
}

/// Pins the calling thread to `cpu` when --cpus gave one.
fn pin_to(cpu: Option<usize>) -> std::io::Result<()> {
    match cpu {
        #[cfg(target_os = "linux")]
        Some(cpu) => wavry_netns::pin(0, &[cpu]),
        _ => Ok(()),
    }
}

/// Waits for SIGINT or (on Unix) SIGTERM, which `docker stop` sends.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.probe {
        // No logging, no gates, nothing bound: the exit status and one stderr line are all.
        if let Err(e) = probe::probe(cli.health_listen) {
            eprintln!("wavry-relay --probe: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    check_bind(cli.listen, "--listen")?;
    check_bind(cli.health_listen, "--health-listen")?;
    let insecure = cli.allow_insecure_dev && env_flag("WAVRY_ALLOW_INSECURE_RELAY");
    if cli.allow_insecure_dev && !insecure {
        bail!("--allow-insecure-dev also needs WAVRY_ALLOW_INSECURE_RELAY=1");
    }
    let key = Arc::new(load_or_create_key(cli.key.as_deref())?);
    let relay_id = relay_id_for(&key);
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .clamp(1, 256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(cli, key, relay_id, threads, insecure))
}

#[allow(clippy::too_many_lines)]
async fn run(
    cli: Cli,
    key: Arc<IdentityKey>,
    relay_id: String,
    threads: usize,
    insecure: bool,
) -> anyhow::Result<()> {
    check_cpus(&cli.cpus)?;
    let paths = open_paths(&cli, threads)?;
    let (bound, shards, backend) = match &paths {
        Paths::Sockets(s) => (
            s[0].local_addr().context("local_addr")?,
            s.len(),
            s[0].kind().to_string(),
        ),
        Paths::Xdp(ports, kernel) => (
            kernel.local_addr().context("local_addr")?,
            1,
            format!("xdp-{}", ports.mode()),
        ),
    };
    let advertised = cli.public_addr.unwrap_or(bound);
    if advertised.ip().is_unspecified() || advertised.port() == 0 {
        bail!(
            "the advertised address {advertised} is not reachable: pass --public-addr when --listen is an unspecified address"
        );
    }
    let (filter, bound_peers) = kernel_filter(&cli, &paths, shards);
    let stats: Vec<Arc<Stats>> = (0..shards).map(|_| Arc::new(Stats::default())).collect();
    let shed_pct = cli.load_shed_threshold_pct.clamp(50, 100);
    let shared = Arc::new(Shared {
        relay_id: relay_id.clone(),
        started: Instant::now(),
        shards: stats.clone(),
        registered: AtomicBool::new(false),
        has_master_key: AtomicBool::new(false),
        max_sessions: cli.max_sessions,
        shed_pct,
        backend: backend.clone(),
        filter: Arc::clone(&filter),
    });
    let listener = tokio::net::TcpListener::bind(cli.health_listen)
        .await
        .with_context(|| format!("binding {}", cli.health_listen))?;
    tracing::info!(
        relay_id,
        udp = %bound,
        advertised = %advertised,
        http = %listener.local_addr()?,
        shards,
        backend,
        kernel_filter = filter.current().as_str(),
        xdp_ifaces = %cli.xdp_iface.join(","),
        "wavry-relay starting"
    );
    let http_task = tokio::spawn(http::serve(listener, Arc::clone(&shared)));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let auth = if insecure {
        tracing::warn!("INSECURE DEV MODE: leases are not verified and addresses are not signed");
        LeaseAuth::InsecureDev
    } else {
        let (pk, kid) = match &cli.master_public_key {
            Some(hex) => (master::parse_key_hex(hex)?, None),
            None => {
                let pin = pin_path(cli.key.as_deref());
                master::fetch_master_key(&http, &cli.master_url, pin.as_deref()).await?
            }
        };
        LeaseAuth::Verify(LeaseVerifier::new(pk, kid, relay_id.clone()))
    };
    shared.has_master_key.store(true, Ordering::Relaxed);

    let stop = Arc::new(AtomicBool::new(false));
    let clock = Clock::new();
    let opts = ShardOptions {
        cleanup_interval: Duration::from_secs(cli.cleanup_interval_secs.max(1)),
        poll: Duration::from_millis(100),
    };
    let per_shard = cli.max_sessions.div_ceil(shards).max(1);
    let make_core = |st: Arc<Stats>| {
        let mut cfg = CoreConfig::new(relay_id.clone());
        cfg.max_sessions = per_shard;
        cfg.load_shed_pct = shed_pct;
        cfg.idle_timeout = Duration::from_secs(cli.idle_timeout.max(1));
        cfg.lease_duration = Duration::from_secs(cli.lease_duration_secs.clamp(60, 3600));
        cfg.max_bitrate_kbps = cli.max_bitrate_kbps;
        cfg.ip_rate_pps = f64::from(cli.ip_rate_limit_pps.max(1));
        cfg.verify_global_per_s = f64::from(cli.verify_rate.max(1)) / shards as f64;
        cfg.verify_per_ip_per_s = f64::from(cli.verify_rate_per_ip.max(1));
        cfg.reject_per_ip_per_s = f64::from(cli.reject_rate_per_ip.max(1));
        RelayCore::new(cfg, auth.clone(), st, clock.now().mono_ns)
    };
    // A shard that stops receiving would leave its sessions dead while the relay looks
    // healthy: exit so the supervisor restarts the whole relay.
    let fail = |i: usize, e: &std::io::Error| {
        tracing::error!(shard = i, error = %e, "shard failed; exiting");
        std::process::exit(70);
    };
    let mut handles = Vec::new();
    match paths {
        Paths::Sockets(mut sockets) => {
            for (i, (mut socket, st)) in sockets.drain(..).zip(stats).enumerate() {
                let mut core = make_core(st);
                let stop = Arc::clone(&stop);
                let cpu = (!cli.cpus.is_empty()).then(|| cli.cpus[i % cli.cpus.len()]);
                let sink = bound_peers.clone();
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("relay-shard-{i}"))
                        .spawn(move || {
                            let r = pin_to(cpu).and_then(|()| {
                                let sink = sink.as_deref().map(|s| s as &dyn BindingSink);
                                run_shard(&mut socket, &mut core, clock, opts, &stop, sink)
                            });
                            if let Err(e) = &r {
                                fail(i, e);
                            }
                            r
                        })
                        .context("spawning a shard thread")?,
                );
            }
        }
        Paths::Xdp(mut ports, kernel) => {
            let st = stats.into_iter().next().context("one shard")?;
            let mut core = make_core(st);
            let stop = Arc::clone(&stop);
            let cpu = cli.cpus.first().copied();
            handles.push(
                std::thread::Builder::new()
                    .name("relay-xdp".into())
                    .spawn(move || {
                        let r = pin_to(cpu).and_then(|()| {
                            run_xdp_shard(&mut ports, &kernel, &mut core, clock, opts, &stop)
                        });
                        if let Err(e) = &r {
                            fail(0, e);
                        }
                        r
                    })
                    .context("spawning the XDP thread")?,
            );
        }
    }

    let advert = master::Advert {
        relay_id: relay_id.clone(),
        endpoint: advertised.to_string(),
        region: cli.region.clone(),
        asn: cli.asn,
        max_sessions: cli.max_sessions,
        max_bitrate_kbps: cli.max_bitrate_kbps,
    };
    let master_task = tokio::spawn(master::run(
        http,
        cli.master_url.clone(),
        cli.master_token.clone(),
        Arc::clone(&key),
        advert,
        Arc::clone(&shared),
    ));
    let log_shared = Arc::clone(&shared);
    let log_every = Duration::from_secs(cli.stats_log_interval_secs.max(5));
    let log_task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(log_every).await;
            let t = log_shared.totals();
            let get = |n: &str| t.iter().find(|(k, ..)| *k == n).map_or(0, |x| x.2);
            tracing::info!(
                sessions = log_shared.sessions(),
                rx = get("packets_rx"),
                forwarded = get("packets_forwarded"),
                dropped = get("dropped_packets"),
                rejects = get("rejects_sent"),
                "relay stats"
            );
        }
    });

    shutdown_signal().await?;
    tracing::info!("shutting down");
    stop.store(true, Ordering::Relaxed);
    master_task.abort();
    log_task.abort();
    http_task.abort();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "shard ended with an error"),
            Err(_) => tracing::warn!("shard panicked"),
        }
    }
    Ok(())
}
