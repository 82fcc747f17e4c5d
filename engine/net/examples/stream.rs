//! Streaming demo: a host driver and a client driver on 127.0.0.1, each with its own Ed25519
//! identity (files made by `wavry keygen`; generated when absent), run the mutually
//! authenticated RIFT session over the chosen packet I/O backend. The host streams synthetic
//! 60 fps video at 20 Mbit/s (a 3x keyframe every second); the client verifies every frame's
//! bytes and presses a key every second, which the host must receive. One live line per second
//! and a summary table at the end.
//!
//! ```text
//! cargo run --release -p wavry-net --example stream -- \
//!     --host-key target/demo/host.key --client-key target/demo/client.key \
//!     --seconds 10 --io auto
//! ```
//! `RUST_LOG=info` shows the drivers' own log lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::select;
use wavry_net::{ClientDriver, Config, DriverConfig, HostDriver, IoMode};
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::IdentityKey;
use wavry_rift::proto::{InputMessage, Key, input_message};
use wavry_rift::session::{Endpoint, Event, FrameMeta, Role, SessionConfig, SessionHandle};

const USAGE: &str = "usage: stream [--host-key F.key] [--client-key F.key] [--seconds N] \
                     [--io auto|uring|portable] [--mbps N] [--fps N]";
const WAIT: Duration = Duration::from_secs(10);

struct Args {
    host_key: PathBuf,
    client_key: PathBuf,
    seconds: u64,
    io: IoMode,
    mbps: f64,
    fps: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host_key: PathBuf::from("target/demo/host.key"),
        client_key: PathBuf::from("target/demo/client.key"),
        seconds: 10,
        io: IoMode::from_env().map_err(|e| e.to_string())?,
        mbps: 20.0,
        fps: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--host-key" => a.host_key = val()?.into(),
            "--client-key" => a.client_key = val()?.into(),
            "--seconds" => a.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--io" => a.io = val()?.parse().map_err(|e| format!("--io: {e}"))?,
            "--mbps" => a.mbps = val()?.parse().map_err(|e| format!("--mbps: {e}"))?,
            "--fps" => a.fps = val()?.parse().map_err(|e| format!("--fps: {e}"))?,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if a.seconds == 0 || a.mbps.is_nan() || a.mbps <= 0.0 || a.fps == 0 || a.fps > 1000 {
        return Err(format!(
            "--seconds, --mbps and --fps must be positive\n{USAGE}"
        ));
    }
    Ok(a)
}

/// Loads a `.key` file made by `wavry keygen`, or generates one and writes `<stem>.key` and
/// `<stem>.pub` next to where it was expected.
fn load_or_generate(path: &Path) -> Result<Arc<IdentityKey>, String> {
    if path.exists() {
        return IdentityKey::load(path)
            .map(Arc::new)
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    let key = IdentityKey::generate().map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let (k, _) = key
        .write_files(&path.with_extension(""), false)
        .map_err(|e| e.to_string())?;
    eprintln!("generated {} ({})", k.display(), key.id());
    Ok(Arc::new(key))
}

/// Synthetic frame `id`: the id (8 bytes, big-endian), then bytes derived from it.
fn fill_frame(buf: &mut Vec<u8>, id: u64, len: usize) {
    buf.clear();
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend((8..len.max(8)).map(|j| pattern(id, j)));
}

/// Does this frame hold what [`fill_frame`] wrote?
fn check_frame(data: &[u8]) -> bool {
    let Some((head, body)) = data.split_first_chunk::<8>() else {
        return false;
    };
    let id = u64::from_be_bytes(*head);
    body.iter()
        .enumerate()
        .all(|(j, &b)| b == pattern(id, j + 8))
}

fn pattern(id: u64, j: usize) -> u8 {
    (j as u64)
        .wrapping_mul(0x9e37)
        .wrapping_add(id.wrapping_mul(131)) as u8
        ^ (j >> 9) as u8
}

/// Sizes averaging `mbps` at `fps`: every `fps`-th frame is a keyframe three times the size.
fn frame_len(id: u64, mbps: f64, fps: u32) -> (usize, bool) {
    let per_second = mbps * 1e6 / 8.0;
    let units = f64::from(fps + 2); // one keyframe counts three
    let unit = per_second / units;
    let key = id % u64::from(fps) == 0;
    let len = if key { unit * 3.0 } else { unit };
    ((len as usize).max(1), key)
}

/// The host's encoder stand-in: frames on a 1/fps clock until `stop`.
fn produce(host: &HostDriver, session: SessionHandle, args: &Args, stop: &AtomicBool) {
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.fps));
    let start = Instant::now();
    let mut id = 0u64;
    while !stop.load(Ordering::Acquire) {
        let (len, keyframe) = frame_len(id, args.mbps, args.fps);
        let mut data = host.take_buffer();
        fill_frame(&mut data, id, len);
        let meta = FrameMeta {
            timestamp_us: start.elapsed().as_micros() as u64,
            keyframe,
            ..FrameMeta::default()
        };
        if host.send_frame(session, data, meta, interval).is_err() {
            return;
        }
        id += 1;
        // The frame clock of a 60 fps source.
        let next = start + interval.mul_f64(id as f64);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
}

#[derive(Default)]
struct Totals {
    frames: u64,
    bytes: u64,
    bad: u64,
    dropped: u64,
    keys_sent: u64,
    keys_received: u64,
    key_latency_sum: Duration,
    key_latency_max: Duration,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match parse_args().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let host_key = load_or_generate(&args.host_key)?;
    let client_key = load_or_generate(&args.client_key)?;
    let host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
    let client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
    let lo = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let net = Config::default();
    let bind = || wavry_net::bind(lo, args.io, &net).map_err(|e| e.to_string());
    let host = HostDriver::spawn(
        bind()?,
        Endpoint::new(host_cfg, host_key.clone(), 4),
        DriverConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    let client = ClientDriver::connect(
        bind()?,
        client_cfg,
        client_key.clone(),
        host.local_addr(),
        DriverConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "host {} ({}) <- client {} ({}), backend {}",
        host.local_addr(),
        host_key.id(),
        client.local_addr(),
        client_key.id(),
        host.backend()
    );

    let t_connect = Instant::now();
    let deadline = t_connect + WAIT;
    let session = loop {
        match host.events().recv_deadline(deadline) {
            Ok((h, Event::Connected { peer, .. })) if peer == client_key.id() => break h,
            Ok((_, Event::Closed(r))) => return Err(format!("host session closed: {r:?}")),
            Ok(_) => {}
            Err(e) => return Err(format!("no connection: {e}")),
        }
    };
    loop {
        match client.events().recv_deadline(deadline) {
            Ok(Event::Connected { peer, .. }) if peer == host_key.id() => break,
            Ok(Event::Closed(r)) => return Err(format!("client session closed: {r:?}")),
            Ok(_) => {}
            Err(e) => return Err(format!("no connection: {e}")),
        }
    }
    println!(
        "connected in {:.1} ms: Noise XX, mutual Ed25519 identities verified",
        t_connect.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "{:>4} {:>7} {:>9} {:>9} {:>8} {:>6} {:>5} {:>9}",
        "sec", "frames", "Mbit/s", "RTT ms", "FEC rec", "drops", "keys", "key ms"
    );

    let stop = AtomicBool::new(false);
    let mut totals = Totals::default();
    let result = std::thread::scope(|s| {
        let producer = s.spawn(|| produce(&host, session, args, &stop));
        let r = stream_loop(args, &host, &client, session, &mut totals);
        stop.store(true, Ordering::Release);
        let _ = producer.join();
        r
    });
    let backend = host.backend();
    let host_snap = host.snapshot(session, WAIT).ok().flatten();
    let client_snap = client.snapshot(WAIT).ok();
    let client_stats = client.shutdown().map_err(|e| e.to_string())?;
    let host_stats = host.shutdown().map_err(|e| e.to_string())?;
    result?;

    let secs = args.seconds as f64;
    println!();
    println!(
        "summary ({} s, --io {}, backend {backend}):",
        args.seconds, args.io
    );
    let rows: [(&str, String); 11] = [
        ("frames delivered", totals.frames.to_string()),
        ("frames dropped", totals.dropped.to_string()),
        ("frames with wrong bytes", totals.bad.to_string()),
        (
            "video goodput",
            format!("{:.2} Mbit/s", totals.bytes as f64 * 8.0 / secs / 1e6),
        ),
        (
            "wire (host sent)",
            format!(
                "{} datagrams, {:.2} Mbit/s",
                host_stats.datagrams_sent,
                host_stats.bytes_sent as f64 * 8.0 / secs / 1e6
            ),
        ),
        (
            "client received",
            format!("{} datagrams", client_stats.datagrams_received),
        ),
        (
            "smoothed RTT (host)",
            host_snap
                .as_ref()
                .and_then(|s| s.rtt)
                .map_or("-".into(), |r| format!("{:.3} ms", r.as_secs_f64() * 1e3)),
        ),
        (
            "FEC recovered chunks",
            client_snap
                .as_ref()
                .map_or("-".into(), |s| s.stats.fec_recovered.to_string()),
        ),
        (
            "NACKs sent (client)",
            client_snap
                .as_ref()
                .map_or("-".into(), |s| s.stats.nacks_sent.to_string()),
        ),
        (
            "key presses sent/received",
            format!("{}/{}", totals.keys_sent, totals.keys_received),
        ),
        (
            "key press latency",
            if totals.keys_received == 0 {
                "-".into()
            } else {
                format!(
                    "mean {:.3} ms, max {:.3} ms",
                    totals.key_latency_sum.as_secs_f64() * 1e3 / totals.keys_received as f64,
                    totals.key_latency_max.as_secs_f64() * 1e3
                )
            },
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<28} {v}");
    }
    if totals.bad > 0 || totals.frames == 0 || totals.keys_received < totals.keys_sent {
        return Err("stream check failed (see summary)".into());
    }
    Ok(())
}

/// Receives frames and key presses, presses a key each second, prints a line per second.
fn stream_loop(
    args: &Args,
    host: &HostDriver,
    client: &ClientDriver,
    session: SessionHandle,
    totals: &mut Totals,
) -> Result<(), String> {
    let start = Instant::now();
    let mut key_sent_at = None;
    let (mut sec_frames, mut sec_bytes, mut sec_drops, mut sec_keys) = (0u64, 0u64, 0u64, 0u64);
    let mut last_latency = None;
    for second in 1..=args.seconds {
        let tick = start + Duration::from_secs(second);
        if key_sent_at.is_none() {
            let press = InputMessage {
                timestamp_us: start.elapsed().as_micros() as u64,
                event: Some(input_message::Event::Key(Key {
                    keycode: 57, // space
                    pressed: true,
                })),
            };
            client.send_input(press).map_err(|e| e.to_string())?;
            key_sent_at = Some(Instant::now());
            totals.keys_sent += 1;
        }
        loop {
            let left = tick.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            select! {
                recv(client.events()) -> e => match e.map_err(|e| e.to_string())? {
                    Event::Frame(f) => {
                        if !check_frame(&f.data) {
                            totals.bad += 1;
                        }
                        sec_frames += 1;
                        sec_bytes += f.data.len() as u64;
                        client.recycle(f).map_err(|e| e.to_string())?;
                    }
                    Event::FrameDropped { .. } => sec_drops += 1,
                    Event::Closed(r) => return Err(format!("client closed: {r:?}")),
                    _ => {}
                },
                recv(host.events()) -> e => match e.map_err(|e| e.to_string())? {
                    (_, Event::Input(_)) => {
                        if let Some(t) = key_sent_at.take() {
                            let l = t.elapsed();
                            totals.key_latency_sum += l;
                            totals.key_latency_max = totals.key_latency_max.max(l);
                            last_latency = Some(l);
                        }
                        totals.keys_received += 1;
                        sec_keys += 1;
                    }
                    (_, Event::Closed(r)) => return Err(format!("host closed: {r:?}")),
                    _ => {}
                },
                default(left) => {}
            }
        }
        let snap = host.snapshot(session, WAIT).map_err(|e| e.to_string())?;
        let fec = client.snapshot(WAIT).map_or(0, |s| s.stats.fec_recovered);
        let rtt = snap
            .and_then(|s| s.rtt)
            .map_or("-".into(), |r| format!("{:.3}", r.as_secs_f64() * 1e3));
        println!(
            "{:>4} {:>7} {:>9.2} {:>9} {:>8} {:>6} {:>5} {:>9}",
            second,
            sec_frames,
            sec_bytes as f64 * 8.0 / 1e6,
            rtt,
            fec,
            sec_drops,
            sec_keys,
            last_latency.map_or("-".into(), |l| format!("{:.3}", l.as_secs_f64() * 1e3)),
        );
        totals.frames += sec_frames;
        totals.bytes += sec_bytes;
        totals.dropped += sec_drops;
        (sec_frames, sec_bytes, sec_drops, sec_keys) = (0, 0, 0, 0);
    }
    Ok(())
}
