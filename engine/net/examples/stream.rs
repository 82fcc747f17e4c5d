//! Streaming demo: a host driver and a client driver on 127.0.0.1, each with its own Ed25519
//! identity (files made by `wavry keygen`; generated when absent), run the mutually
//! authenticated RIFT session over the chosen packet I/O backend. The host streams synthetic
//! 60 fps video at 20 Mbit/s (a 3x keyframe every second); the client verifies every frame's
//! bytes and presses a key every second, which the host must receive. Beside the video the
//! client uploads a generated file to the host (in-band transfer within its bitrate share,
//! SHA-256 checked by the session, compared byte for byte in memory; the runtimes' disk side
//! lives in `wavry-runtime`) and syncs its clipboard. One live line per
//! second and a summary table at the end.
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
use wavry_rift::transfer::{Resume, sha256};

const USAGE: &str = "usage: stream [--host-key F.key] [--client-key F.key] [--seconds N] \
                     [--io auto|uring|portable] [--mbps N] [--fps N] [--file-bytes N]";
const CLIPBOARD: &str = "copied on the client, pasted on the host";
const WAIT: Duration = Duration::from_secs(10);

struct Args {
    host_key: PathBuf,
    client_key: PathBuf,
    seconds: u64,
    io: IoMode,
    mbps: f64,
    fps: u32,
    /// Size of the file the client uploads beside the video (0: none).
    file_bytes: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host_key: PathBuf::from("target/demo/host.key"),
        client_key: PathBuf::from("target/demo/client.key"),
        seconds: 10,
        io: IoMode::from_env().map_err(|e| e.to_string())?,
        mbps: 20.0,
        fps: 60,
        file_bytes: 2_000_000,
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
            "--file-bytes" => {
                a.file_bytes = val()?.parse().map_err(|e| format!("--file-bytes: {e}"))?;
            }
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

/// The client's upload to the host, both ends of it, in memory.
struct Upload {
    data: Vec<u8>,
    id: u64,
    /// Next byte the client hands its session.
    pos: usize,
    /// What the host received, at the offsets the session gave.
    sink: Option<Vec<u8>>,
    received: u64,
    started: Instant,
    finished: Option<Duration>,
    saved: Option<Result<(), String>>,
}

/// Bytes handed to the session per `write_file` call.
const UPLOAD_BLOCK: usize = 256 * 1024;

impl Upload {
    /// Generates `len` bytes and offers them to the host as `upload.bin`.
    fn start(client: &ClientDriver, len: u64) -> Result<Self, String> {
        let data: Vec<u8> = (0..len).map(|i| pattern(i >> 16, i as usize)).collect();
        let (size, sha) = (data.len() as u64, sha256(&data));
        let id = client
            .call(WAIT, move |s, now| {
                s.send_file(now, "upload.bin", size, sha)
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Self {
            data,
            id,
            pos: 0,
            sink: None,
            received: 0,
            started: Instant::now(),
            finished: None,
            saved: None,
        })
    }

    /// Hands the client's session file bytes until its window is full.
    fn feed(&mut self, client: &ClientDriver) -> Result<(), String> {
        while self.pos < self.data.len() {
            let end = (self.pos + UPLOAD_BLOCK).min(self.data.len());
            let bytes = self.data[self.pos..end].to_vec();
            let (id, n) = (self.id, end - self.pos);
            let took = client
                .call(WAIT, move |s, now| s.write_file(now, id, &bytes))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            self.pos += took;
            if took < n {
                break;
            }
        }
        Ok(())
    }

    fn percent(&self) -> f64 {
        self.received as f64 * 100.0 / self.data.len().max(1) as f64
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
    clipboard: bool,
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
        "{:>4} {:>7} {:>9} {:>9} {:>8} {:>6} {:>5} {:>9} {:>6}",
        "sec", "frames", "Mbit/s", "RTT ms", "FEC rec", "drops", "keys", "key ms", "file"
    );

    let stop = AtomicBool::new(false);
    let mut totals = Totals::default();
    let mut upload = if args.file_bytes > 0 {
        Some(Upload::start(&client, args.file_bytes)?)
    } else {
        None
    };
    client
        .call(WAIT, |s, now| s.send_clipboard(now, CLIPBOARD))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let result = std::thread::scope(|s| {
        let producer = s.spawn(|| produce(&host, session, args, &stop));
        let r = stream_loop(args, &host, &client, session, &mut totals, upload.as_mut());
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
    let rows: [(&str, String); 14] = [
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
            "media expired unsent (host)",
            host_snap
                .as_ref()
                .map_or("-".into(), |s| s.stats.media_expired.to_string()),
        ),
        (
            "file upload (client → host)",
            upload_summary(upload.as_ref()),
        ),
        (
            "clipboard (client → host)",
            if totals.clipboard {
                "synced"
            } else {
                "not received"
            }
            .into(),
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
    let upload_failed = upload
        .as_ref()
        .is_some_and(|u| matches!(u.saved, Some(Err(_))));
    if totals.bad > 0
        || totals.frames == 0
        || totals.keys_received < totals.keys_sent
        || upload_failed
        || !totals.clipboard
    {
        return Err("stream check failed (see summary)".into());
    }
    Ok(())
}

fn upload_summary(upload: Option<&Upload>) -> String {
    let Some(u) = upload else {
        return "-".into();
    };
    match (&u.saved, u.finished) {
        (Some(Ok(())), Some(t)) => format!(
            "{:.2} MB in {:.1} s ({:.2} Mbit/s, its share of DELTA's target), SHA-256 verified, bytes identical",
            u.data.len() as f64 / 1e6,
            t.as_secs_f64(),
            u.data.len() as f64 * 8.0 / t.as_secs_f64().max(1e-3) / 1e6,
        ),
        (Some(Err(e)), _) => format!("FAILED: {e}"),
        _ => format!("{:.0} % when the stream ended", u.percent()),
    }
}

/// Receives frames and key presses, presses a key each second, prints a line per second.
fn stream_loop(
    args: &Args,
    host: &HostDriver,
    client: &ClientDriver,
    session: SessionHandle,
    totals: &mut Totals,
    mut upload: Option<&mut Upload>,
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
                    Event::FileAccepted { .. } | Event::FileWritable { .. } => {
                        if let Some(u) = upload.as_deref_mut() {
                            u.feed(client)?;
                        }
                    }
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
                    (_, Event::Clipboard(text)) => totals.clipboard = text == CLIPBOARD,
                    (h, Event::FileOffered(offer)) => {
                        let Some(u) = upload.as_deref_mut() else { continue };
                        u.sink = Some(Vec::with_capacity(u.data.len()));
                        let id = offer.file_id;
                        host.call(h, WAIT, move |s, now| s.accept_file(now, id, Resume::Start))
                            .map_err(|e| e.to_string())?
                            .map_err(|e| e.to_string())?;
                    }
                    (_, Event::FileData { offset, data, .. }) => {
                        if let Some(sink) = upload.as_deref_mut().and_then(|u| {
                            u.received += data.len() as u64;
                            u.sink.as_mut()
                        }) {
                            let at = usize::try_from(offset).map_err(|e| e.to_string())?;
                            if sink.len() < at + data.len() {
                                sink.resize(at + data.len(), 0);
                            }
                            sink[at..at + data.len()].copy_from_slice(&data);
                        }
                    }
                    (_, Event::FileDone { result, sending: false, .. }) => {
                        if let Some(u) = upload.as_deref_mut() {
                            u.finished = Some(u.started.elapsed());
                            let sink = u.sink.take();
                            u.saved = Some(match (result, sink) {
                                (Ok(()), Some(got)) if got == u.data => Ok(()),
                                (Ok(()), Some(_)) => Err("bytes differ".into()),
                                (Err(e), _) => Err(e.to_string()),
                                (r, None) => Err(format!("never offered ({r:?})")),
                            });
                        }
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
            "{:>4} {:>7} {:>9.2} {:>9} {:>8} {:>6} {:>5} {:>9} {:>6}",
            second,
            sec_frames,
            sec_bytes as f64 * 8.0 / 1e6,
            rtt,
            fec,
            sec_drops,
            sec_keys,
            last_latency.map_or("-".into(), |l| format!("{:.3}", l.as_secs_f64() * 1e3)),
            upload
                .as_deref()
                .map_or("-".into(), |u| format!("{:.0}%", u.percent())),
        );
        totals.frames += sec_frames;
        totals.bytes += sec_bytes;
        totals.dropped += sec_drops;
        (sec_frames, sec_bytes, sec_drops, sec_keys) = (0, 0, 0, 0);
    }
    Ok(())
}
