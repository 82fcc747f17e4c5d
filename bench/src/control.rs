//! `wavry-bench control`: control-plane load against the real `wavry-master` and
//! `wavry-gateway` binaries on loopback (SQLite in a temp dir):
//!
//! 1. lease issuance throughput (`POST /v1/leases`, closed loop, N workers; every request
//!    issues two leases — one per role);
//! 2. lease latency at a fixed open-loop rate (latency from the *scheduled* send time, so a
//!    stalled server is not hidden by coordinated omission);
//! 3. logins/s (argon2id verification included);
//! 4. WebSocket connections held (register + bind N accounts) and the gateway's RSS;
//! 5. message fan-out latency: one sender sends an `OFFER` to every held connection per round.
//!
//! Results are printed as a table and optionally written as JSON. Latencies: hdrhistogram.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use wavry_control_testkit::{Service, TempDir, free_port, sibling_binary};
use wavry_signal::{Envelope, Message};

const SERVICE: &str = "bench-service-token-0123456789abcdefghij";
const RELAY: &str = "bench-relay-token";
const ORIGIN: &str = "http://localhost:1420";
const PASSWORD: &str = "bench password 0123456789";
const UNLIMITED: &str = "1000000000";

/// Options of `wavry-bench control`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// `wavry-master` binary (default: next to this executable; build with
    /// `cargo build --release -p wavry-master -p wavry-gateway -p wavry-bench`).
    #[arg(long)]
    master_bin: Option<PathBuf>,
    /// `wavry-gateway` binary (default: next to this executable).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Seconds per throughput / latency phase.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Concurrent HTTP workers in closed-loop phases.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open-loop lease request rate for the latency phase (requests/s; 2 leases each).
    #[arg(long, default_value_t = 1000)]
    paced_rate: u64,
    /// Accounts used by the login phase.
    #[arg(long, default_value_t = 16)]
    login_accounts: usize,
    /// WebSocket connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    ws_connections: usize,
    /// Fan-out rounds (one message to every held connection per round).
    #[arg(long, default_value_t = 5)]
    fanout_rounds: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Entry point of `wavry-bench control`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = rt.block_on(bench(args))?;
    print_table(&results);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

fn bin(explicit: Option<&PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p.clone()),
        None => sibling_binary(&std::env::current_exe()?, name),
    }
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

fn summary(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

struct Stack {
    _dir: TempDir,
    master: Service,
    gateway: Service,
    http: reqwest::Client,
}

async fn start(args: &Args) -> anyhow::Result<Stack> {
    let dir = TempDir::new("bench-control")?;
    let (mport, gport) = (free_port()?, free_port()?);
    let menv = [
        ("WAVRY_MASTER_RELAY_AUTH_TOKEN", RELAY),
        ("WAVRY_MASTER_SERVICE_TOKEN", SERVICE),
        ("WAVRY_MASTER_LEASE_RATE_LIMIT", UNLIMITED),
        ("RUST_LOG", "warn"),
    ];
    let master = Service::spawn(
        &bin(args.master_bin.as_ref(), "wavry-master")?,
        mport,
        &[
            "--listen".into(),
            format!("127.0.0.1:{mport}"),
            "--data-dir".into(),
            dir.path().join("m").display().to_string(),
        ],
        &menv.map(|(k, v)| (k.to_string(), v.to_string())),
        Duration::from_secs(30),
    )
    .await?;
    let genv = [
        ("WAVRY_GATEWAY_MASTER_TOKEN", SERVICE),
        ("WAVRY_AUTH_RATE_LIMIT", UNLIMITED),
        ("WAVRY_LOGIN_IP_FREE_ATTEMPTS", UNLIMITED),
        ("WAVRY_GLOBAL_RATE_LIMIT", UNLIMITED),
        ("WAVRY_WS_BIND_RATE_LIMIT", UNLIMITED),
        ("WAVRY_WS_MAX_PER_IP", UNLIMITED),
        ("WAVRY_WS_MAX_CONNECTIONS", UNLIMITED),
        ("WAVRY_WS_MESSAGES_PER_MINUTE", UNLIMITED),
        ("RUST_LOG", "warn"),
    ];
    let gateway = Service::spawn(
        &bin(args.gateway_bin.as_ref(), "wavry-gateway")?,
        gport,
        &[
            "--listen".into(),
            format!("127.0.0.1:{gport}"),
            "--data-dir".into(),
            dir.path().join("g").display().to_string(),
            "--master-url".into(),
            master.base.clone(),
        ],
        &genv.map(|(k, v)| (k.to_string(), v.to_string())),
        Duration::from_secs(30),
    )
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    for (i, region) in ["eu-west", "eu-central", "us-east"].iter().enumerate() {
        let r = http
            .post(format!("{}/v1/relays/register", master.base))
            .bearer_auth(RELAY)
            .json(&json!({"relay_id": format!("bench-relay-{i}"), "endpoints": [format!("127.0.0.{}:4000", i + 1)], "region": region, "asn": i}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("relay registration failed: {}", r.status());
        }
    }
    Ok(Stack {
        _dir: dir,
        master,
        gateway,
        http,
    })
}

async fn lease_once(http: &reqwest::Client, url: &str, worker: usize) -> bool {
    let body = json!({"requester": {"sub": format!("bench-client-{worker}")}, "target": {"sub": format!("bench-host-{worker}")}, "region": "eu-west"});
    match http.post(url).bearer_auth(SERVICE).json(&body).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// Closed loop: `concurrency` workers for `duration`.
async fn lease_throughput(s: &Stack, args: &Args) -> Value {
    let url = format!("{}/v1/leases", s.master.base);
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let start = Instant::now();
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (http, url, failures) = (s.http.clone(), url.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            while Instant::now() < deadline {
                let t = Instant::now();
                if lease_once(&http, &url, w).await {
                    let _ = h.record(elapsed_us(t));
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            h
        }));
    }
    let mut h = hist();
    for t in tasks {
        if let Ok(x) = t.await {
            let _ = h.add(&x);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut out = summary(&h);
    out["requests_per_sec"] = json!(h.len() as f64 / secs);
    out["leases_per_sec"] = json!(2.0 * h.len() as f64 / secs);
    out["failures"] = json!(failures.load(Ordering::Relaxed));
    out["concurrency"] = json!(args.concurrency);
    out
}

/// Open loop at `paced_rate` requests/s; latency counted from the scheduled time.
async fn lease_paced(s: &Stack, args: &Args) -> Value {
    let url = format!("{}/v1/leases", s.master.base);
    let total = args.paced_rate * args.duration_secs;
    let interval = Duration::from_secs_f64(1.0 / args.paced_rate.max(1) as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let h = Arc::new(Mutex::new(hist()));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        let at = start + interval.mul_f64(i as f64);
        let (http, url, h, failures) = (s.http.clone(), url.clone(), h.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            // Load-generator pacing: wait for this request's scheduled send time.
            tokio::time::sleep_until(at).await;
            let ok = lease_once(&http, &url, usize::try_from(i % 1024).unwrap_or(0)).await;
            let us = u64::try_from(at.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            if ok {
                let _ = h
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .record(us);
            } else {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let h = h
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut out = summary(&h);
    out["target_requests_per_sec"] = json!(args.paced_rate);
    out["target_leases_per_sec"] = json!(2 * args.paced_rate);
    out["failures"] = json!(failures.load(Ordering::Relaxed));
    out
}

async fn register(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<String> {
    // Registration proves possession of the key: sign the gateway's challenge.
    let key = wavry_rift::identity::IdentityKey::generate()?;
    let pk = hex::encode(key.id().as_bytes());
    let ch: Value = http
        .post(format!("{base}/auth/register/challenge"))
        .json(&json!({"public_key": pk}))
        .send()
        .await?
        .json()
        .await?;
    let message = ch["message"].as_str().context("no challenge message")?;
    let sig = hex::encode(key.sign(message.as_bytes()));
    let body = json!({"email": format!("{name}@bench.example"), "password": PASSWORD, "display_name": name, "username": name, "public_key": pk, "challenge": ch["challenge"], "signature": sig});
    let r = http
        .post(format!("{base}/auth/register"))
        .json(&body)
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("register {name}: {}", r.status());
    }
    let v: Value = r.json().await?;
    v["token"].as_str().map(str::to_owned).context("no token")
}

async fn register_many(
    s: &Stack,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let results = futures_util::stream::iter(names.into_iter().map(|name| {
        let http = s.http.clone();
        let base = s.gateway.base.clone();
        async move { register(&http, &base, &name).await.map(|t| (name, t)) }
    }))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>()
    .await;
    results.into_iter().collect()
}

async fn logins(s: &Stack, args: &Args) -> anyhow::Result<Value> {
    let accounts = register_many(s, "login", args.login_accounts, 8).await?;
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency.min(64) {
        let (http, base, name) = (
            s.http.clone(),
            s.gateway.base.clone(),
            accounts[w % accounts.len()].0.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut fails = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let body = json!({"email": format!("{name}@bench.example"), "password": PASSWORD});
                match http
                    .post(format!("{base}/auth/login"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let _ = h.record(elapsed_us(t));
                    }
                    _ => fails += 1,
                }
            }
            (h, fails)
        }));
    }
    let mut h = hist();
    let mut fails = 0;
    for t in tasks {
        if let Ok((x, f)) = t.await {
            let _ = h.add(&x);
            fails += f;
        }
    }
    let mut out = summary(&h);
    out["logins_per_sec"] = json!(h.len() as f64 / start.elapsed().as_secs_f64());
    out["failures"] = json!(fails);
    Ok(out)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_bound(port: u16, token: &str) -> anyhow::Result<Ws> {
    let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request()?;
    req.headers_mut().insert("origin", ORIGIN.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    ws.send(tungstenite::Message::Text(
        Envelope::encode(&Message::Bind {
            token: token.into(),
        })
        .into(),
    ))
    .await?;
    match ws.next().await {
        Some(Ok(tungstenite::Message::Text(t)))
            if matches!(Envelope::decode(&t), Ok(Message::Bound { .. })) =>
        {
            Ok(ws)
        }
        other => bail!("bind failed: {other:?}"),
    }
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn websockets(s: &Stack, args: &Args) -> anyhow::Result<Value> {
    let n = args.ws_connections;
    let rss_before = rss_kib(s.gateway.pid());
    let reg_start = Instant::now();
    let accounts = register_many(s, "ws", n + 1, 16).await?;
    let register_secs = reg_start.elapsed().as_secs_f64();
    let open_start = Instant::now();
    let port = s.gateway.port;
    let opened: Vec<anyhow::Result<(String, Ws)>> = futures_util::stream::iter(
        accounts[1..]
            .iter()
            .cloned()
            .map(
                |(name, token)| async move { open_bound(port, &token).await.map(|ws| (name, ws)) },
            ),
    )
    .buffer_unordered(64)
    .collect()
    .await;
    let conns: Vec<(String, Ws)> = opened.into_iter().collect::<anyhow::Result<_>>()?;
    let open_secs = open_start.elapsed().as_secs_f64();
    let health: Value = s
        .http
        .get(format!("{}/health", s.gateway.base))
        .send()
        .await?
        .json()
        .await?;
    let rss = rss_kib(s.gateway.pid());

    // Fan-out: receivers record latency from the send instant carried in the SDP field.
    let base = Instant::now();
    let h = Arc::new(Mutex::new(hist()));
    let received = Arc::new(AtomicU64::new(0));
    let expected = (n * args.fanout_rounds) as u64;
    let done = Arc::new(tokio::sync::Notify::new());
    let mut names = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for (name, mut ws) in conns {
        names.push(name);
        let (h, received, done) = (h.clone(), received.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let tungstenite::Message::Text(t) = msg {
                    if let Ok(Message::Offer { sdp, .. }) = Envelope::decode(&t) {
                        let sent: u64 = sdp.parse().unwrap_or(0);
                        let now = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = h
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .record(now.saturating_sub(sent).max(1));
                        if received.fetch_add(1, Ordering::Relaxed) + 1 == expected {
                            done.notify_one();
                        }
                    }
                }
            }
        }));
    }
    let mut sender = open_bound(port, &accounts[0].1).await?;
    let fan_start = Instant::now();
    for _ in 0..args.fanout_rounds {
        for name in &names {
            let sent = u64::try_from(base.elapsed().as_micros()).unwrap_or(0);
            let m = Message::Offer {
                target: name.clone(),
                from: None,
                sdp: sent.to_string(),
                public_addr: None,
            };
            sender
                .feed(tungstenite::Message::Text(Envelope::encode(&m).into()))
                .await?;
        }
        sender.flush().await?;
    }
    let complete = tokio::time::timeout(Duration::from_secs(60), done.notified())
        .await
        .is_ok()
        || received.load(Ordering::Relaxed) == expected;
    let fan_secs = fan_start.elapsed().as_secs_f64();
    for r in &readers {
        r.abort();
    }
    let h = h
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut fan = summary(&h);
    fan["messages"] = json!(received.load(Ordering::Relaxed));
    fan["expected"] = json!(expected);
    fan["complete"] = json!(complete);
    fan["messages_per_sec"] = json!(received.load(Ordering::Relaxed) as f64 / fan_secs);
    Ok(json!({
        "connections_held": health["active_ws_connections"],
        "requested": n,
        "register_secs": register_secs,
        "open_and_bind_secs": open_secs,
        "gateway_rss_kib": rss,
        "gateway_rss_kib_before_ws_phase": rss_before,
        "fanout": fan,
    }))
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    let s = start(args).await?;
    eprintln!(
        "services up: master {} gateway {}",
        s.master.base, s.gateway.base
    );
    // Warm-up (connections, allocator).
    for i in 0..200 {
        lease_once(&s.http, &format!("{}/v1/leases", s.master.base), i).await;
    }
    eprintln!(
        "phase 1/4: lease throughput ({} s, {} workers)",
        args.duration_secs, args.concurrency
    );
    let throughput = lease_throughput(&s, args).await;
    eprintln!("phase 2/4: lease latency at {} req/s", args.paced_rate);
    let paced = lease_paced(&s, args).await;
    eprintln!("phase 3/4: logins");
    let logins = logins(&s, args).await?;
    eprintln!(
        "phase 4/4: {} WebSocket connections + fan-out",
        args.ws_connections
    );
    let ws = websockets(&s, args).await?;
    Ok(json!({
        "machine": { "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get) },
        "lease_throughput": throughput,
        "lease_paced": paced,
        "logins": logins,
        "websockets": ws,
    }))
}

fn num(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| v.to_string(), |x| format!("{x:.1}"))
}

fn print_table(results: &Value) {
    let thr = &results["lease_throughput"];
    let paced = &results["lease_paced"];
    let login = &results["logins"];
    let ws = &results["websockets"];
    println!("| metric | value | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!(
        "| lease issuance, closed loop ({} workers) | {} leases/s ({} req/s) | {} | {} |",
        thr["concurrency"],
        num(&thr["leases_per_sec"]),
        num(&thr["requests_per_sec"]),
        num(&thr["p50_ms"]),
        num(&thr["p99_ms"])
    );
    println!(
        "| lease latency, open loop {} req/s ({} leases/s) | {} ok, {} failed | {} | {} |",
        paced["target_requests_per_sec"],
        paced["target_leases_per_sec"],
        paced["count"],
        paced["failures"],
        num(&paced["p50_ms"]),
        num(&paced["p99_ms"])
    );
    println!(
        "| logins (argon2id) | {} logins/s | {} | {} |",
        num(&login["logins_per_sec"]),
        num(&login["p50_ms"]),
        num(&login["p99_ms"])
    );
    println!(
        "| WebSocket connections held | {} (gateway RSS {} KiB, {} KiB before; open+bind {} s) | | |",
        ws["connections_held"],
        ws["gateway_rss_kib"],
        ws["gateway_rss_kib_before_ws_phase"],
        num(&ws["open_and_bind_secs"])
    );
    let fan = &ws["fanout"];
    println!(
        "| WS fan-out (1 sender → {} sockets) | {} msgs/s, {}/{} delivered | {} | {} |",
        ws["requested"],
        num(&fan["messages_per_sec"]),
        fan["messages"],
        fan["expected"],
        num(&fan["p50_ms"]),
        num(&fan["p99_ms"])
    );
}
