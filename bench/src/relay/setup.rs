//! Starting a real `wavry-relay` process and admitting sessions on it with real leases.
//!
//! The bench plays the master: it holds a lease-signing key, gives the relay its public half
//! with `--master-public-key` (the production path when a master is not reachable for the key,
//! no insecure gate), signs one lease per peer for the relay's id, and presents each with the
//! holder's binding signature, exactly as an endpoint would.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use time::OffsetDateTime;
use uuid::Uuid;
use wavry_relay::peer::{Answer, decode_answer, encode_present};
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::{LeaseClaims, LeaseRole, LeaseSigner};
use wavry_rift::wire::PeerRole;

/// Presentations in flight at once during admission.
const WINDOW: usize = 256;
/// Tries per presentation (UDP: a PRESENT or its answer can be lost).
const TRIES: usize = 8;

/// How the relay process is started.
#[derive(Debug, Clone)]
pub(crate) struct RelayOptions {
    /// The `wavry-relay` binary.
    pub(crate) bin: PathBuf,
    /// `--threads`.
    pub(crate) threads: usize,
    /// `--io`.
    pub(crate) io: String,
    /// `--max-sessions`.
    pub(crate) max_sessions: usize,
    /// `--kernel-filter` (bound-peers, prefix, off).
    pub(crate) kernel_filter: &'static str,
    /// Where it runs when not on loopback in this namespace.
    pub(crate) place: Option<NsPlace>,
}

/// A relay started in a network namespace, pinned to some CPUs.
#[derive(Debug, Clone)]
pub(crate) struct NsPlace {
    /// The namespace.
    pub(crate) ns: String,
    /// CPUs for `taskset -c` (for example "1").
    pub(crate) cpus: String,
    /// `--listen` (an unspecified address with the port).
    pub(crate) listen: SocketAddr,
    /// `--public-addr`: where senders send.
    pub(crate) public: SocketAddr,
    /// `--xdp-iface` (used with `--io xdp`).
    pub(crate) xdp_iface: Vec<String>,
    /// Its HTTP port inside the namespace.
    pub(crate) http_port: u16,
}

/// A running `wavry-relay`; killed and reaped on drop.
pub(crate) struct RelayProcess {
    child: Child,
    /// Its UDP address.
    pub(crate) udp: SocketAddr,
    /// Its relay id (`wr-` + hex of the first 12 bytes of its public key).
    pub(crate) id: String,
    /// The lease signer it trusts.
    pub(crate) signer: LeaseSigner,
    /// Its HTTP address (inside its namespace when it runs in one).
    http: SocketAddr,
    /// Runs in a namespace (its HTTP is not reachable from here).
    in_namespace: bool,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wall clock in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RelayProcess {
    /// Starts the relay and waits (bounded) until its HTTP port answers, which it opens only
    /// after its UDP sockets are bound.
    pub(crate) fn start(opts: &RelayOptions) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "wavry-bench-relay-{}-{}",
            std::process::id(),
            unix_ms()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = TempDir(dir);
        let relay_key = IdentityKey::generate().context("relay key")?;
        let key_path = dir.0.join("relay.key");
        std::fs::write(&key_path, relay_key.seed()).context("writing the relay key")?;
        let id = format!("wr-{}", hex::encode(&relay_key.id().as_bytes()[..12]));
        let master = IdentityKey::generate().context("master key")?;
        let signer = LeaseSigner::new(&master, None).context("lease signer")?;
        let (listen, udp, http) = match &opts.place {
            Some(p) => (
                p.listen,
                p.public,
                SocketAddr::from(([127, 0, 0, 1], p.http_port)),
            ),
            None => {
                let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
                (udp, udp, SocketAddr::from(([127, 0, 0, 1], free_port()?)))
            }
        };
        let mut args: Vec<String> = vec![
            "--listen".into(),
            listen.to_string(),
            "--health-listen".into(),
            http.to_string(),
            // Nothing listens on the discard port: registration fails and retries in the
            // background, which forwarding does not depend on.
            "--master-url".into(),
            "http://127.0.0.1:9".into(),
            "--master-public-key".into(),
            hex::encode(signer.public_key()),
            "--key".into(),
            path_arg(&key_path),
            "--max-sessions".into(),
            opts.max_sessions.to_string(),
            "--max-bitrate-kbps".into(),
            "4000000000".into(),
            // Admission of many sessions from one loopback IP needs generous budgets.
            "--ip-rate-limit-pps".into(),
            "200000".into(),
            "--verify-rate".into(),
            "200000".into(),
            "--verify-rate-per-ip".into(),
            "200000".into(),
            "--idle-timeout".into(),
            "3600".into(),
            "--lease-duration-secs".into(),
            "3600".into(),
            "--threads".into(),
            opts.threads.to_string(),
            "--io".into(),
            opts.io.clone(),
            "--kernel-filter".into(),
            opts.kernel_filter.into(),
            "--log-level".into(),
            "warn".into(),
        ];
        let mut cmd = match &opts.place {
            Some(p) => {
                args.extend(["--public-addr".into(), p.public.to_string()]);
                if !p.xdp_iface.is_empty() {
                    args.extend(["--xdp-iface".into(), p.xdp_iface.join(",")]);
                }
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &p.ns, "taskset", "-c", &p.cpus])
                    .arg(&opts.bin)
                    .env("WAVRY_RELAY_ALLOW_PUBLIC_BIND", "1")
                    .env("WAVRY_RELAY_ALLOW_HOST_PROD_BIND", "1");
                c
            }
            None => Command::new(&opts.bin),
        };
        let ns = opts.place.as_ref().map(|p| p.ns.clone());
        let serving = move || -> bool {
            let connect =
                move || TcpStream::connect_timeout(&http, Duration::from_millis(100)).is_ok();
            match &ns {
                #[cfg(target_os = "linux")]
                Some(ns) => wavry_netns::enter_namespace(ns, connect).unwrap_or(false),
                #[cfg(not(target_os = "linux"))]
                Some(_) => false,
                None => connect(),
            }
        };
        let mut child = cmd
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", opts.bin.display()))?;
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if serving() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("wavry-relay exited with {status} before serving: {err}");
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                bail!("wavry-relay did not open {http} within 20 s");
            }
            // Bounded poll of another process's readiness (there is nothing to wait on).
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its warnings go nowhere from here on (a full pipe must not block it).
        drop(child.stderr.take());
        Ok(Self {
            child,
            udp,
            id,
            signer,
            http,
            in_namespace: opts.place.is_some(),
            _dir: dir,
        })
    }

    /// GET `path` from the relay's HTTP port (loopback topology only); the body.
    pub(crate) fn get(&self, path: &str) -> anyhow::Result<String> {
        if self.in_namespace {
            bail!("the relay's HTTP port is inside its namespace");
        }
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        std::io::Write::write_all(
            &mut s,
            format!("GET {path} HTTP/1.0\r\nHost: relay\r\n\r\n").as_bytes(),
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_owned())
    }

    /// The kernel filter in force, from /health.
    pub(crate) fn kernel_filter(&self) -> anyhow::Result<String> {
        let health: serde_json::Value = serde_json::from_str(&self.get("/health")?)?;
        Ok(health["kernel_filter"]
            .as_str()
            .context("/health has no kernel_filter")?
            .to_owned())
    }

    /// The cumulative buckets of the relay's forwarding-latency histogram (upper bound in
    /// seconds, count), summed over shards.
    pub(crate) fn forward_latency_buckets(&self) -> anyhow::Result<Vec<(f64, u64)>> {
        let text = self.get("/metrics")?;
        let mut out: Vec<(f64, u64)> = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("wavry_relay_forward_latency_seconds_bucket{")
            else {
                continue;
            };
            let Some(le) = rest.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            let count: u64 = line.rsplit(' ').next().context("no value")?.parse()?;
            match out.iter_mut().find(|(b, _)| b.total_cmp(&le).is_eq()) {
                Some((_, c)) => *c += count,
                None => out.push((le, count)),
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(out)
    }

    /// The process id (for /proc).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Signs a lease for `holder` in session `sid`.
    pub(crate) fn lease(
        &self,
        holder: &IdentityKey,
        sid: [u8; 16],
        role: PeerRole,
    ) -> anyhow::Result<String> {
        let now = OffsetDateTime::now_utc();
        let id = holder.id().to_string();
        Ok(self.signer.issue(&LeaseClaims {
            sub: id.clone(),
            wavry_id: Some(id),
            sid: Uuid::from_bytes(sid),
            role: LeaseRole::from(role),
            rid: self.id.clone(),
            kid: Some(self.signer.key_id().to_owned()),
            jti: None,
            iat: now,
            nbf: now,
            exp: now + time::Duration::minutes(50),
            slimit: Some(4_000_000_000),
            hlimit: Some(4_000_000_000),
        })?)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// One peer to admit: which socket presents, for which session, in which role.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Presentation {
    /// Index into the socket list given to [`admit`].
    pub(crate) sock: usize,
    /// Session id.
    pub(crate) sid: [u8; 16],
    /// Role.
    pub(crate) role: PeerRole,
}

/// Presents every peer (windowed, retried; socket `i` presents to `dests[i]`, or to the
/// relay's address where `dests` is shorter) and returns one accepted PRESENT datagram (the
/// junk flood replays it). Fails on any reject or on a peer that never gets an answer.
pub(crate) fn admit(
    relay: &RelayProcess,
    socks: &[UdpSocket],
    dests: &[SocketAddr],
    keys: &[IdentityKey; 2],
    peers: &[Presentation],
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Vec<u8>> {
    for s in socks {
        s.set_nonblocking(true)?;
    }
    let mut captured = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut rx = [0u8; 2048];
    for (w, window) in peers.chunks(WINDOW).enumerate() {
        let tokens = window
            .iter()
            .map(|p| relay.lease(&keys[role_slot(p.role)], p.sid, p.role))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut pending: HashMap<([u8; 16], usize), usize> = window
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.sid, p.sock), i))
            .collect();
        let mut last_ts = 0u64;
        for _ in 0..TRIES {
            if pending.is_empty() {
                break;
            }
            for &i in pending.values() {
                let p = window[i];
                let ts = unix_ms().max(last_ts + 1);
                last_ts = ts;
                let n = encode_present(
                    &mut buf,
                    false,
                    p.sid,
                    p.role,
                    &tokens[i],
                    Some((&keys[role_slot(p.role)], relay.id.as_str(), ts)),
                )?;
                if captured.is_empty() {
                    captured = buf[..n].to_vec();
                }
                socks[p.sock]
                    .send_to(&buf[..n], dests.get(p.sock).copied().unwrap_or(relay.udp))?;
            }
            let end = Instant::now() + Duration::from_millis(300);
            while !pending.is_empty() && Instant::now() < end {
                let mut got = false;
                for (si, s) in socks.iter().enumerate() {
                    match s.recv_from(&mut rx) {
                        Ok((m, _)) => {
                            got = true;
                            let Ok((sid, answer)) = decode_answer(&rx[..m]) else {
                                continue;
                            };
                            match answer {
                                Answer::Ack(_) => {
                                    pending.remove(&(sid, si));
                                }
                                Answer::Reject(r) => bail!("the relay refused a lease: {r:?}"),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if !got {
                    std::thread::yield_now();
                }
            }
        }
        if !pending.is_empty() {
            bail!(
                "{} presentations never answered (window {w})",
                pending.len()
            );
        }
        progress((w + 1) * WINDOW);
    }
    for s in socks {
        s.set_nonblocking(false)?;
    }
    Ok(captured)
}

fn role_slot(role: PeerRole) -> usize {
    match role {
        PeerRole::Client => 0,
        PeerRole::Server => 1,
    }
}

/// A random session id.
pub(crate) fn random_sid() -> [u8; 16] {
    *Uuid::new_v4().as_bytes()
}

/// The relay's resident set size in bytes (`VmRSS` of /proc/<pid>/status).
pub(crate) fn rss_bytes(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS"))
}
