//! `wavry-bench stack`: the whole Wavry stack on loopback as real processes — `wavry-master`,
//! `wavry-gateway`, two `wavry-relay`s, a `wavry-server` host and a `wavry-client` — with
//! generated identities, throwaway SQLite databases and two registered accounts. The client
//! finds the host by username through the gateway and streams on each path in turn: direct,
//! then through a brokered relay that is killed half-way (the client fails over to the other
//! relay). Live stats while it runs, then a table per path, a recording, a JSON series and a
//! PNG plot of latency and bitrate over time. Every process it started is stopped on the way
//! out, also on Ctrl-C and on failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use wavry_rift::identity::IdentityKey;

use crate::child::{Proc, after, kv};

/// Options of `wavry-bench stack`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Seconds of streaming on each path.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(4..=3600))]
    seconds: u64,
    /// Packet I/O backend of the host, the client and the relays: auto, uring or portable.
    #[arg(long, default_value = "auto")]
    io: String,
    /// What the host captures: synthetic (a test pattern carrying its capture time), x11 or
    /// pipewire.
    #[arg(long, default_value = "synthetic")]
    source: String,
    /// The host's encoder: auto, libx264, h264-vaapi or h264-nvenc.
    #[arg(long, default_value = "auto")]
    encoder: String,
    /// Stream width, height, frame rate and starting bitrate (kbit/s).
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    #[arg(long, default_value_t = 60)]
    fps: u32,
    #[arg(long, default_value_t = 8000)]
    bitrate_kbps: u32,
    /// Where the recording, the plot, the JSON and the logs go.
    #[arg(long, default_value = "target/demo")]
    out_dir: PathBuf,
    /// Directory holding the binaries (default: this executable's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

const BINARIES: [&str; 5] = [
    "wavry-master",
    "wavry-gateway",
    "wavry-relay",
    "wavry-server",
    "wavry-client",
];
const PASSWORD: &str = "wavry demo password, not a secret";
/// How long a service gets to answer its health check.
const STARTUP: Duration = Duration::from_secs(30);

/// One second of a phase, from the client's and the host's stats lines.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Second {
    /// Seconds since the stack started streaming.
    pub(crate) t: f64,
    pub(crate) path: &'static str,
    pub(crate) fps: f64,
    pub(crate) mbps: f64,
    pub(crate) rtt_ms: Option<f64>,
    pub(crate) fec_repairs: f64,
    pub(crate) drops: f64,
    pub(crate) g2g_p50_ms: Option<f64>,
    pub(crate) g2g_p99_ms: Option<f64>,
    /// Host → client loss the host's feedback reported, percent.
    pub(crate) loss_pct: Option<f64>,
    /// DELTA's target, Mbit/s.
    pub(crate) target_mbps: Option<f64>,
}

/// What one path's phase measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Phase {
    path: &'static str,
    via: String,
    seconds: f64,
    pictures: f64,
    mbytes: f64,
    g2g_p50: f64,
    g2g_p99: f64,
    transport_p99: f64,
    loss_pct: f64,
    fec_repairs: f64,
    dropped: f64,
    out_of_order: f64,
    failovers: f64,
    longest_gap_ms: f64,
    input_p50: Option<f64>,
    input_p99: Option<f64>,
    recording: Option<String>,
}

pub(crate) fn run(a: &Args) -> anyhow::Result<()> {
    let bins = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .to_owned(),
    };
    for b in BINARIES {
        if !bins.join(b).exists() {
            bail!(
                "{} not found: build the stack first (`cargo build --release -p wavry-master \
                 -p wavry-gateway -p wavry-relay -p wavry-runtime`) or pass --bin-dir",
                bins.join(b).display()
            );
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Release))
            .context("installing the Ctrl-C handler")?;
    }
    let out = a.out_dir.clone();
    let run_dir = out.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(run_dir.join("logs"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let stack = Stack {
        bins,
        dir: run_dir.clone(),
        rt,
        http,
    };

    step(
        "starting wavry-master, wavry-gateway and two wavry-relays (throwaway SQLite under target/demo/run)",
    );
    let relay_token = random_token();
    let service_token = random_token();
    let master_port = free_port()?;
    let _master = stack.service(
        "wavry-master",
        master_port,
        &[
            "--listen",
            &format!("127.0.0.1:{master_port}"),
            "--data-dir",
            &run_dir.join("master").display().to_string(),
        ],
        &[
            ("WAVRY_MASTER_RELAY_AUTH_TOKEN", relay_token.as_str()),
            ("WAVRY_MASTER_SERVICE_TOKEN", service_token.as_str()),
        ],
    )?;
    let master_url = format!("http://127.0.0.1:{master_port}");
    let gw_port = free_port()?;
    let _gateway = stack.service(
        "wavry-gateway",
        gw_port,
        &[
            "--listen",
            &format!("127.0.0.1:{gw_port}"),
            "--data-dir",
            &run_dir.join("gateway").display().to_string(),
            "--master-url",
            &master_url,
        ],
        &[("WAVRY_GATEWAY_MASTER_TOKEN", service_token.as_str())],
    )?;
    let gateway = format!("http://127.0.0.1:{gw_port}");
    let ws = format!("ws://127.0.0.1:{gw_port}/ws");
    let mut relays = Vec::new();
    for i in 0..2 {
        let (health, udp) = (free_port()?, free_port()?);
        let p = stack.service(
            "wavry-relay",
            health,
            &[
                "--listen",
                &format!("127.0.0.1:{udp}"),
                "--health-listen",
                &format!("127.0.0.1:{health}"),
                "--master-url",
                &master_url,
                "--master-token",
                &relay_token,
                "--key",
                &run_dir.join(format!("relay{i}.key")).display().to_string(),
                "--io",
                &a.io,
            ],
            &[],
        )?;
        let base = format!("http://127.0.0.1:{health}");
        stack.until_ok(&format!("{base}/ready"), "relay registered with the master")?;
        let h = stack.get_json(&format!("{base}/health"))?;
        let id = h["relay_id"].as_str().unwrap_or_default().to_owned();
        println!("    relay {id} forwarding on 127.0.0.1:{udp}");
        relays.push((p, id));
    }

    step("registering two accounts with fresh identities: demo-host and demo-viewer");
    let host_key = IdentityKey::generate()?;
    let viewer_key = IdentityKey::generate()?;
    let (host_key_path, _) = host_key.write_files(&run_dir.join("host"), true)?;
    let (viewer_key_path, _) = viewer_key.write_files(&run_dir.join("viewer"), true)?;
    let host_token = stack.register(&gateway, "demo-host", &host_key)?;
    let viewer_token = stack.register(&gateway, "demo-viewer", &viewer_key)?;
    let host_token_file = write_secret(&run_dir.join("host.token"), &host_token)?;
    let viewer_token_file = write_secret(&run_dir.join("viewer.token"), &viewer_token)?;
    println!("    demo-host   {}", host_key.id());
    println!("    demo-viewer {}", viewer_key.id());

    let started = Instant::now();
    let mut seconds = Vec::new();
    let mut events = Vec::new();
    let mut phases = Vec::new();
    for path in ["direct", "relay"] {
        if stop.load(Ordering::Acquire) {
            break;
        }
        step(&match path {
            "direct" => format!(
                "path 1/2: direct — the viewer asks the gateway for demo-host and streams straight to it for {} s",
                a.seconds
            ),
            _ => format!(
                "path 2/2: relay — brokered by the gateway and the master; the relay is killed after {} s and the viewer fails over to the other one",
                a.seconds / 2
            ),
        });
        let host = stack.host(a, &host_key_path, &viewer_key, &host_token_file, &ws, path)?;
        let phase = stack.phase(
            a,
            path,
            &viewer_key_path,
            &viewer_token_file,
            &ws,
            &host,
            &mut relays,
            (&started, &mut seconds, &mut events),
            &stop,
        );
        let mut host = host;
        host.signal("-INT");
        let input = host_input_line(&host);
        let _ = host.wait(Duration::from_secs(10));
        let mut phase = phase?;
        if let Some(l) = input {
            phase.input_p50 = after(&l, "p50");
            phase.input_p99 = after(&l, "p99");
        }
        phases.push(phase);
    }
    if phases.is_empty() {
        bail!("stopped before any path ran");
    }
    print_table(&phases);
    let json_path = out.join("stack.json");
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&json!({
            "width": a.width, "height": a.height, "fps": a.fps,
            "bitrate_kbps": a.bitrate_kbps, "source": a.source, "encoder": a.encoder,
            "io": a.io, "phases": phases, "seconds": seconds, "events": events,
        }))?,
    )?;
    let plot = out.join("stack.png");
    crate::plot::latency_and_bitrate(&plot, &seconds, &events)?;
    println!("\nwrote {} and {}", plot.display(), json_path.display());
    for p in &phases {
        if let Some(r) = &p.recording {
            println!("recording of the {} path: {r}", p.path);
        }
    }
    println!("logs of every process: {}", run_dir.join("logs").display());
    if stop.load(Ordering::Acquire) {
        bail!("stopped by Ctrl-C");
    }
    for p in &phases {
        if p.pictures < 1.0 {
            bail!("the {} path delivered no picture", p.path);
        }
        if p.path == "relay" && p.failovers < 1.0 {
            bail!("the relay was killed but the client did not fail over to the other one");
        }
    }
    Ok(())
}

/// The processes and the HTTP client of one run.
struct Stack {
    bins: PathBuf,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Stack {
    /// Starts a service with its log in `logs/<name>-<port>.log` and waits for `/health`.
    fn service(
        &self,
        name: &str,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let log = std::fs::File::create(self.dir.join(format!("logs/{name}-{port}.log")))?;
        let mut c = Command::new(self.bins.join(name));
        c.args(args)
            .envs(env.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log);
        let p = Proc::spawn_logged(c)?;
        self.until_ok(&format!("http://127.0.0.1:{port}/health"), name)?;
        Ok(p)
    }

    /// Polls `url` until it answers 2xx (bounded by [`STARTUP`]).
    fn until_ok(&self, url: &str, what: &str) -> anyhow::Result<()> {
        let end = Instant::now() + STARTUP;
        self.rt.block_on(async {
            loop {
                if let Ok(r) = self.http.get(url).send().await
                    && r.status().is_success()
                {
                    return Ok(());
                }
                if Instant::now() >= end {
                    bail!(
                        "{what} not ready within {STARTUP:?} ({url}); see {}",
                        self.dir.join("logs").display()
                    );
                }
                // Poll interval of a bounded readiness wait.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    fn get_json(&self, url: &str) -> anyhow::Result<Value> {
        self.rt
            .block_on(async { Ok(self.http.get(url).send().await?.json().await?) })
    }

    fn post(&self, url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.rt.block_on(async {
            let r = self.http.post(url).json(body).send().await?;
            let code = r.status().as_u16();
            Ok((code, r.json().await.unwrap_or(Value::Null)))
        })
    }

    /// Registers `name` with `key` (proven by signing the gateway's challenge); the session
    /// token.
    fn register(&self, gateway: &str, name: &str, key: &IdentityKey) -> anyhow::Result<String> {
        let pk = hex::encode(key.id().as_bytes());
        let (code, ch) = self.post(
            &format!("{gateway}/auth/register/challenge"),
            &json!({"public_key": pk}),
        )?;
        if code != 200 {
            bail!("registration challenge for {name}: {code} {ch}");
        }
        let message = ch["message"].as_str().context("challenge message")?;
        let sig = hex::encode(key.sign(message.as_bytes()));
        let (code, body) = self.post(
            &format!("{gateway}/auth/register"),
            &json!({"email": format!("{name}@demo.wavry.invalid"), "password": PASSWORD,
                    "display_name": name, "username": name, "public_key": pk,
                    "challenge": ch["challenge"], "signature": sig}),
        )?;
        if code != 201 {
            bail!("registering {name}: {code} {body}");
        }
        Ok(body["token"]
            .as_str()
            .context("registration returned no token")?
            .to_owned())
    }

    /// A `wavry-server` bound to the gateway as demo-host, letting only the viewer in.
    fn host(
        &self,
        a: &Args,
        key: &Path,
        viewer: &IdentityKey,
        token_file: &Path,
        ws: &str,
        path: &str,
    ) -> anyhow::Result<Proc> {
        let log = std::fs::File::create(self.dir.join(format!("logs/wavry-server-{path}.log")))?;
        let mut c = Command::new(self.bins.join("wavry-server"));
        c.arg("--key")
            .arg(key)
            .args(["--allow", &viewer.id().to_string(), "--stats"])
            .args([
                "--source",
                &a.source,
                "--encoder",
                &a.encoder,
                "--io",
                &a.io,
            ])
            .args([
                "--width",
                &a.width.to_string(),
                "--height",
                &a.height.to_string(),
            ])
            .args(["--fps", &a.fps.to_string()])
            .args(["--bitrate-kbps", &a.bitrate_kbps.to_string()])
            .args(["--gateway-url", ws, "--session-token-file"])
            .arg(token_file)
            .stderr(log);
        let host = Proc::spawn_cmd(c)?;
        host.line_with("reachable through the gateway", STARTUP)?;
        Ok(host)
    }

    /// Streams one path: the client's live stats are printed (and the host's interleaved
    /// into the same seconds); on the relay path the relay in use is killed half-way.
    #[allow(clippy::too_many_arguments)]
    fn phase(
        &self,
        a: &Args,
        path: &'static str,
        key: &Path,
        token_file: &Path,
        ws: &str,
        host: &Proc,
        relays: &mut Vec<(Proc, String)>,
        (started, series, events): (&Instant, &mut Vec<Second>, &mut Vec<(f64, String)>),
        stop: &AtomicBool,
    ) -> anyhow::Result<Phase> {
        let log = std::fs::File::create(self.dir.join(format!("logs/wavry-client-{path}.log")))?;
        let rec_dir = self.dir.parent().unwrap_or(&self.dir).join("recordings");
        let mut c = Command::new(self.bins.join("wavry-client"));
        c.args(["--gateway-url", ws, "--host", "demo-host", "--path", path])
            .arg("--key")
            .arg(key)
            .arg("--session-token-file")
            .arg(token_file)
            .args([
                "--seconds",
                &a.seconds.to_string(),
                "--stats",
                "--io",
                &a.io,
            ])
            .args(["--input-probe-hz", "20", "--record", "--record-dir"])
            .arg(&rec_dir)
            .stderr(log);
        let mut client = Proc::spawn_cmd(c)?;
        let begun = Instant::now();
        let kill_at = begun + Duration::from_secs(a.seconds / 2);
        let mut via = String::new();
        let mut killed = false;
        let (mut summary, mut recording) = (None, None);
        let (mut loss_sum, mut loss_n) = (0.0, 0u32);
        let mut pending_host: Option<(f64, f64)> = None;
        let limit = begun + Duration::from_secs(a.seconds + 60);
        loop {
            if stop.load(Ordering::Acquire) {
                client.signal("-INT");
            }
            // Host stats (loss and DELTA's target) for the second being printed.
            while let Ok(Some(l)) = host.next_line(Instant::now()) {
                if let Some(rest) = l.strip_prefix("stats: ") {
                    let loss = after(rest, "loss").unwrap_or(f64::NAN);
                    let target = after(rest, "target").unwrap_or(f64::NAN);
                    pending_host = Some((loss, target));
                    if loss.is_finite() {
                        loss_sum += loss;
                        loss_n += 1;
                    }
                }
            }
            if path == "relay"
                && !killed
                && !via.is_empty()
                && Instant::now() >= kill_at
                && let Some(i) = relays.iter().position(|(_, id)| via.contains(id.as_str()))
            {
                let (mut dead, id) = relays.remove(i);
                let _ = dead.kill();
                killed = true;
                events.push((started.elapsed().as_secs_f64(), "relay killed".into()));
                println!("    [{path}] killed relay {id} (the process, SIGKILL)");
            }
            let line = match client.next_line(Instant::now() + Duration::from_millis(100)) {
                Ok(Some(l)) => l,
                Ok(None) if Instant::now() < limit => continue,
                Ok(None) => bail!("the client ran past its time"),
                Err(_) => break,
            };
            if line.contains("connected to") || line.contains("failed over to") {
                if line.contains("failed over to") {
                    events.push((started.elapsed().as_secs_f64(), "failed over".into()));
                }
                let r = route_of(&line);
                if !via.ends_with(&r) {
                    if !via.is_empty() {
                        via.push_str(" → ");
                    }
                    via.push_str(&r);
                }
                println!("    [{path}] {}", line.trim_start_matches("wavry-client: "));
            } else if let Some(rest) = line.strip_prefix("stats: ") {
                let (loss, target) = pending_host.take().unwrap_or((f64::NAN, f64::NAN));
                println!(
                    "    [{path}] {rest}, host→client loss {}, target {} Mbit/s",
                    if loss.is_finite() {
                        format!("{loss:.2} %")
                    } else {
                        "-".into()
                    },
                    if target.is_finite() {
                        format!("{target:.2}")
                    } else {
                        "-".into()
                    },
                );
                series.push(parse_second(
                    started.elapsed().as_secs_f64(),
                    path,
                    rest,
                    loss,
                    target,
                ));
            } else if line.starts_with("summary ") {
                summary = Some(line);
            } else if line.contains("recorded ") {
                recording = line.rsplit(" to ").next().map(str::to_owned);
                println!("    [{path}] {}", line.trim_start_matches("wavry-client: "));
            } else if line.contains("the path via") {
                println!("    [{path}] {}", line.trim_start_matches("wavry-client: "));
            }
        }
        let status = client.wait(Duration::from_secs(10))?;
        let Some(s) = summary else {
            bail!(
                "the client on the {path} path ended ({status}) without a summary; see {}",
                self.dir
                    .join(format!("logs/wavry-client-{path}.log"))
                    .display()
            );
        };
        Ok(Phase {
            path,
            via,
            seconds: begun.elapsed().as_secs_f64(),
            pictures: kv(&s, "pictures"),
            mbytes: kv(&s, "mbytes"),
            g2g_p50: kv(&s, "g2g_p50_ms"),
            g2g_p99: kv(&s, "g2g_p99_ms"),
            transport_p99: kv(&s, "transport_p99_ms"),
            loss_pct: if loss_n > 0 {
                loss_sum / f64::from(loss_n)
            } else {
                f64::NAN
            },
            fec_repairs: series
                .iter()
                .filter(|x| x.path == path)
                .map(|x| x.fec_repairs)
                .sum(),
            dropped: kv(&s, "dropped"),
            out_of_order: kv(&s, "out_of_order"),
            failovers: kv(&s, "failovers"),
            longest_gap_ms: kv(&s, "longest_frame_gap_ms"),
            input_p50: None,
            input_p99: None,
            recording,
        })
    }
}

/// The route in a "connected to … via ROUTE" or "failed over to ROUTE in N ms" line.
fn route_of(line: &str) -> String {
    let r = line
        .split_once(" via ")
        .or_else(|| line.split_once("failed over to "))
        .map_or("", |(_, r)| r);
    r.split(" in ").next().unwrap_or(r).to_owned()
}

/// The host's input-latency line, printed as it exits.
fn host_input_line(host: &Proc) -> Option<String> {
    let end = Instant::now() + Duration::from_secs(10);
    while let Ok(Some(l)) = host.next_line(end) {
        if l.contains("one-way latency") {
            return Some(l);
        }
    }
    None
}

/// One client stats line ("60 fps, 7.9 Mbit/s, rtt 0.2 ms, loss 0.00 %, fec repairs 0,
/// drops 0, glass-to-glass p50 6.1 ms p99 8.0 ms") with the host's loss and target.
fn parse_second(t: f64, path: &'static str, rest: &str, loss: f64, target: f64) -> Second {
    let num = |label: &str| after(rest, label);
    let finite = |v: f64| v.is_finite().then_some(v);
    Second {
        t,
        path,
        fps: rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        mbps: rest
            .split(", ")
            .nth(1)
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0),
        rtt_ms: num("rtt"),
        fec_repairs: num("repairs").unwrap_or(0.0),
        drops: num("drops").unwrap_or(0.0),
        g2g_p50_ms: num("p50"),
        g2g_p99_ms: num("p99"),
        loss_pct: finite(loss),
        target_mbps: finite(target),
    }
}

fn print_table(phases: &[Phase]) {
    let ms = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "-".into()
        }
    };
    let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
    println!(
        "\n{:<7} {:>6} {:>8} {:>9} {:>9} {:>10} {:>7} {:>5} {:>6} {:>9} {:>9} {:>10}  via",
        "path",
        "fps",
        "Mbit/s",
        "g2g p50",
        "g2g p99",
        "transp p99",
        "loss %",
        "FEC",
        "drops",
        "input p50",
        "input p99",
        "failover"
    );
    for p in phases {
        let secs = p.seconds.max(1e-3);
        println!(
            "{:<7} {:>6.1} {:>8.2} {:>9} {:>9} {:>10} {:>7} {:>5} {:>6} {:>9} {:>9} {:>10}  {}",
            p.path,
            p.pictures / secs,
            p.mbytes * 8.0 / secs,
            ms(p.g2g_p50),
            ms(p.g2g_p99),
            ms(p.transport_p99),
            ms(p.loss_pct),
            p.fec_repairs,
            p.dropped,
            opt(p.input_p50),
            opt(p.input_p99),
            if p.failovers > 0.0 {
                format!("{} ({} ms)", p.failovers, p.longest_gap_ms)
            } else {
                "-".into()
            },
            p.via
        );
    }
    println!(
        "(latencies in ms; g2g: capture to decoded picture; input: client send to host \
         injection, one way; failover: count and the longest gap between frames)"
    );
}

fn step(what: &str) {
    println!("==> {what}");
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// 64 hex characters from two random UUIDs (service bearer tokens of this run).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Writes a token readable by this user only.
fn write_secret(path: &Path, token: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(path)?;
    writeln!(f, "{token}")?;
    Ok(path.to_owned())
}
