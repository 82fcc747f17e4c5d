//! `wavry-bench e2e`: glass to glass through the real `wavry-server` and `wavry-client`
//! processes on loopback, and the same capture → encode → decode pipeline with the transport
//! replaced by an in-process channel, in the same run, so the transport's own share shows.
//!
//! Glass is the synthetic frame's capture timestamp (stamped into its pixels) to the decoded
//! picture handed to the presenter; both ends read one machine's wall clock. Each round runs
//! both paths; the summary gives the median over rounds and the transport-added latency as the
//! median of same-round differences.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wavry_media::{
    RawFrame, VideoDecoder, VideoEncoder, VideoFormat, VideoSource,
    h264::{EncoderConfig, FfmpegDecoder, X264Encoder},
    stamp,
    synthetic::SyntheticSource,
};
use wavry_rift::identity::IdentityKey;
use wavry_runtime::{Latencies, cpu_seconds};

use crate::child::{Proc, RemoveDir, after, kv};
use crate::spread::Spread;

/// Options of `wavry-bench e2e`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Seconds of stream per path per round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds (each runs both paths).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Frame width.
    #[arg(long, default_value_t = 1280)]
    width: u32,
    /// Frame height.
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Frames per second.
    #[arg(long, default_value_t = 60)]
    fps: u32,
    /// Stream bitrate, kbit/s.
    #[arg(long, default_value_t = 20_000)]
    bitrate_kbps: u32,
    /// Input probes per second from the client (their one-way latency to the host's sink).
    #[arg(long, default_value_t = 250)]
    input_probe_hz: u32,
    /// Packet I/O backend of both processes: auto, uring or portable.
    #[arg(long, default_value = "auto")]
    io: String,
    /// Real-time scheduling of both processes' I/O threads and the host's input thread:
    /// auto, on or off (`--realtime` of the runtimes).
    #[arg(long, default_value = "auto")]
    realtime: String,
    /// Where `wavry-server` and `wavry-client` are (default: beside this executable; build
    /// them with the same profile, e.g. `cargo build --release -p wavry-runtime`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one path measured in one round (milliseconds unless named otherwise).
#[derive(Debug, Default, Clone, serde::Serialize)]
struct PathFigures {
    frames: u64,
    g2g_p50: f64,
    g2g_p99: f64,
    g2g_p999: f64,
    encode_p50: f64,
    transport_p50: f64,
    transport_p99: f64,
    decode_p50: f64,
    /// CPU seconds per second of stream: host (or the encoder thread side) and client.
    host_cpu: f64,
    client_cpu: f64,
    /// Input one-way latency (client send → host sink), RIFT path only.
    input_p50: Option<f64>,
    input_p99: Option<f64>,
    input_p995: Option<f64>,
    input_p999: Option<f64>,
    /// Host → client one-way latency of small messages (audio packets), RIFT path only: the
    /// way back of an input round trip.
    back_p50: Option<f64>,
    back_p99: Option<f64>,
    back_p995: Option<f64>,
}

impl PathFigures {
    /// A bound on the input round trip's p99 (client → host → client): by the union bound,
    /// P(there + back > a + b) <= P(there > a) + P(back > b) = 1 % with a and b the two
    /// directions' p99.5.
    fn round_trip_p99_bound(&self) -> Option<f64> {
        Some(self.input_p995? + self.back_p995?)
    }
}

/// Runs the benchmark.
pub(crate) fn run(a: &Args) -> anyhow::Result<()> {
    wavry_media::init_quiet().context("FFmpeg")?;
    let bins = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .to_owned(),
    };
    for b in ["wavry-server", "wavry-client"] {
        if !bins.join(b).exists() {
            bail!(
                "{} not found: build it first (`cargo build --release -p wavry-runtime`) or \
                 pass --bin-dir",
                bins.join(b).display()
            );
        }
    }
    let dir = std::env::temp_dir().join(format!("wavry-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveDir(dir.clone());
    println!(
        "e2e: {}x{} @ {} fps, {} kbit/s, x264 ultrafast, {} s per path, {} rounds",
        a.width, a.height, a.fps, a.bitrate_kbps, a.seconds, a.rounds
    );
    let mut rounds = Vec::new();
    for r in 1..=a.rounds {
        let rift = rift_round(a, &bins, &dir).with_context(|| format!("round {r}: RIFT"))?;
        print_row(&format!("round {r} RIFT loopback"), &rift);
        let chan = channel_round(a).with_context(|| format!("round {r}: channel"))?;
        print_row(&format!("round {r} in-process"), &chan);
        rounds.push((rift, chan));
    }
    summarize(&rounds);
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "width": a.width, "height": a.height, "fps": a.fps,
            "bitrate_kbps": a.bitrate_kbps, "seconds": a.seconds,
            "rounds": rounds.iter().map(|(r, c)| serde_json::json!({"rift": r, "channel": c}))
                .collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
        println!("e2e: wrote {}", path.display());
    }
    Ok(())
}

fn print_row(name: &str, f: &PathFigures) {
    let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
    println!(
        "{name:<24} frames {:>5}  g2g p50 {:>6.2} p99 {:>6.2} p999 {:>6.2} ms  encode p50 {:>5.2}  \
         transport p50 {:>5.2} p99 {:>5.2}  decode p50 {:>5.2}  cpu host {:.2} client {:.2}  \
         input p50 {} p99 {} p999 {}",
        f.frames,
        f.g2g_p50,
        f.g2g_p99,
        f.g2g_p999,
        f.encode_p50,
        f.transport_p50,
        f.transport_p99,
        f.decode_p50,
        f.host_cpu,
        f.client_cpu,
        opt(f.input_p50),
        opt(f.input_p99),
        opt(f.input_p999),
    );
}

/// Reads one figure of a path.
type Get = fn(&PathFigures) -> f64;
/// Reads one figure of a round from its RIFT and its channel path.
type GetPair = fn(&PathFigures, &PathFigures) -> f64;
/// Reads a figure only the RIFT path has.
type GetRift = fn(&PathFigures) -> Option<f64>;

fn summarize(rounds: &[(PathFigures, PathFigures)]) {
    let med = |f: &dyn Fn(&(PathFigures, PathFigures)) -> f64| {
        Spread::of(rounds.iter().map(f)).map_or_else(
            || "-".into(),
            |s| format!("{:>7.2} [{:.2}..{:.2}]", s.median, s.min, s.max),
        )
    };
    println!("\nmedian over {} rounds [min..max], ms", rounds.len());
    println!(
        "{:<34} {:>22} {:>22}",
        "", "RIFT loopback", "in-process channel"
    );
    let rows: [(&str, Get); 8] = [
        ("glass-to-glass p50", |f| f.g2g_p50),
        ("glass-to-glass p99", |f| f.g2g_p99),
        ("glass-to-glass p999", |f| f.g2g_p999),
        ("encode p50", |f| f.encode_p50),
        ("transport (+queue) p50", |f| f.transport_p50),
        ("transport (+queue) p99", |f| f.transport_p99),
        ("decode p50", |f| f.decode_p50),
        ("CPU-s/s host side", |f| f.host_cpu),
    ];
    for (name, get) in rows {
        println!(
            "{name:<34} {:>22} {:>22}",
            med(&|r| get(&r.0)),
            med(&|r| get(&r.1))
        );
    }
    println!(
        "{:<34} {:>22} {:>22}",
        "CPU-s/s client side",
        med(&|r| r.0.client_cpu),
        med(&|r| r.1.client_cpu)
    );
    // The transport's own share: the transport part (encode done → frame complete at the
    // client) of the RIFT path less that of the channel, per round. The glass-to-glass
    // difference also counts the second process (a decoder competing with the encoder for
    // the same cores), so it is shown beside it, not as the headline.
    let rows: [(&str, GetPair); 4] = [
        ("transport-added p50 (same round)", |r, c| {
            r.transport_p50 - c.transport_p50
        }),
        ("transport-added p99 (same round)", |r, c| {
            r.transport_p99 - c.transport_p99
        }),
        ("g2g difference p50 (same round)", |r, c| {
            r.g2g_p50 - c.g2g_p50
        }),
        ("g2g difference p99 (same round)", |r, c| {
            r.g2g_p99 - c.g2g_p99
        }),
    ];
    for (name, get) in rows {
        println!("{name:<34} {:>22}", med(&|r| get(&r.0, &r.1)));
    }
    let opt = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let rows: [(&str, GetRift); 7] = [
        ("input one-way p50", |f| f.input_p50),
        ("input one-way p99", |f| f.input_p99),
        ("input one-way p999", |f| f.input_p999),
        ("host→client one-way p50", |f| f.back_p50),
        ("host→client one-way p99", |f| f.back_p99),
        (
            "input round trip p99 (bound)",
            PathFigures::round_trip_p99_bound,
        ),
        ("input one-way p99.5", |f| f.input_p995),
    ];
    for (name, get) in rows {
        println!("{name:<34} {:>22}", med(&|r| opt(get(&r.0))));
    }
}

/// Removes a directory on drop.
fn rift_round(a: &Args, bins: &Path, dir: &Path) -> anyhow::Result<PathFigures> {
    let host_key = IdentityKey::generate()?;
    let client_key = IdentityKey::generate()?;
    let (host_path, _) = host_key.write_files(&dir.join("host"), true)?;
    let (client_path, _) = client_key.write_files(&dir.join("client"), true)?;
    let client_id = client_key.id().to_string();
    let (w, h, fps, kbps) = (
        a.width.to_string(),
        a.height.to_string(),
        a.fps.to_string(),
        a.bitrate_kbps.to_string(),
    );
    let server = Proc::spawn(
        &bins.join("wavry-server"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--key",
            host_path.to_str().context("path")?,
            "--allow",
            &client_id,
            "--width",
            &w,
            "--height",
            &h,
            "--fps",
            &fps,
            "--bitrate-kbps",
            &kbps,
            "--io",
            &a.io,
            "--realtime",
            &a.realtime,
        ],
    )?;
    let line = server.line_with("listening on", Duration::from_secs(30))?;
    let mut words = line.split_whitespace().skip_while(|w| *w != "on").skip(1);
    let addr = words.next().context("address")?.to_owned();
    let host_id = words.nth(1).context("host id")?.to_owned();
    let (secs, probe) = (a.seconds.to_string(), a.input_probe_hz.to_string());
    let client = Proc::spawn(
        &bins.join("wavry-client"),
        &[
            "--connect",
            &addr,
            "--key",
            client_path.to_str().context("path")?,
            "--host-id",
            &host_id,
            "--seconds",
            &secs,
            "--input-probe-hz",
            &probe,
            "--io",
            &a.io,
            "--realtime",
            &a.realtime,
        ],
    )?;
    let limit = Duration::from_secs(a.seconds + 30);
    client.line_with("connected to", Duration::from_secs(30))?;
    let host_cpu0 = cpu_seconds(&server.pid()).unwrap_or(f64::NAN);
    let client_cpu0 = cpu_seconds(&client.pid()).unwrap_or(f64::NAN);
    let t0 = Instant::now();
    let summary = client.line_with("summary ", limit)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let host_cpu = cpu_seconds(&server.pid()).unwrap_or(f64::NAN) - host_cpu0;
    let client_cpu = kv(&summary, "cpu_s") - client_cpu0;
    // Ctrl-C: the host prints its input latency line and exits.
    let _ = Command::new("kill").args(["-INT", &server.pid()]).status();
    let input = server.line_with("one-way latency", Duration::from_secs(30))?;
    Ok(PathFigures {
        frames: kv(&summary, "pictures") as u64,
        g2g_p50: kv(&summary, "g2g_p50_ms"),
        g2g_p99: kv(&summary, "g2g_p99_ms"),
        g2g_p999: kv(&summary, "g2g_p999_ms"),
        encode_p50: kv(&summary, "encode_p50_ms"),
        transport_p50: kv(&summary, "transport_p50_ms"),
        transport_p99: kv(&summary, "transport_p99_ms"),
        decode_p50: kv(&summary, "decode_p50_ms"),
        host_cpu: host_cpu / elapsed,
        client_cpu: client_cpu / elapsed,
        input_p50: after(&input, "p50"),
        input_p99: after(&input, "p99"),
        input_p995: after(&input, "p99.5"),
        input_p999: after(&input, "p999"),
        back_p50: Some(kv(&summary, "audio_p50_ms")),
        back_p99: Some(kv(&summary, "audio_p99_ms")),
        back_p995: Some(kv(&summary, "audio_p995_ms")),
    })
}

/// One encoded frame crossing the channel.
struct Encoded {
    data: Vec<u8>,
    capture_us: u64,
    encode_us: u64,
}

/// The same pipeline with a bounded in-process channel where the transport was: the encoder
/// thread paces frames like the host, the decoder thread reads the stamp like the client.
fn channel_round(a: &Args) -> anyhow::Result<PathFigures> {
    let format = VideoFormat {
        width: a.width,
        height: a.height,
        fps: a.fps,
    };
    let mut source = SyntheticSource::new(format)?;
    let mut encoder = X264Encoder::new(EncoderConfig {
        format,
        bitrate_bps: u64::from(a.bitrate_kbps) * 1000,
        keyframe_interval_ms: 1000,
    })?;
    let mut decoder = FfmpegDecoder::h264()?;
    let (tx, rx) = crossbeam_channel::bounded::<Encoded>(8);
    let frames = u64::from(a.fps) * a.seconds;
    let interval = Duration::from_secs_f64(1.0 / f64::from(a.fps.max(1)));
    let cpu0 = cpu_seconds("self").unwrap_or(f64::NAN);
    let t0 = Instant::now();
    let (g2g, encode, transport, decode, pictures) = std::thread::scope(|s| {
        let producer = s.spawn(move || -> anyhow::Result<()> {
            let mut raw = RawFrame::new(format.width, format.height);
            let mut next = Instant::now();
            for _ in 0..frames {
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                next += interval;
                source.capture(&mut raw)?;
                let t = Instant::now();
                let mut data = Vec::new();
                if let Some(info) = encoder.encode(&raw, &mut data)? {
                    let encode_us = t.elapsed().as_micros() as u64;
                    let e = Encoded {
                        data,
                        capture_us: info.capture_us,
                        encode_us,
                    };
                    if tx.send(e).is_err() {
                        break;
                    }
                }
            }
            Ok(())
        });
        let mut picture = RawFrame::new(2, 2);
        let (mut g2g, mut encode, mut transport, mut decode) = (
            Latencies::default(),
            Latencies::default(),
            Latencies::default(),
            Latencies::default(),
        );
        let mut pictures = 0u64;
        for e in rx {
            let arrival = wavry_media::wall_clock_us();
            encode.record_us(e.encode_us);
            transport.record_us(arrival.saturating_sub(e.capture_us + e.encode_us));
            let t = Instant::now();
            if decoder.decode(&e.data, e.capture_us, &mut picture)? {
                decode.record_us(t.elapsed().as_micros() as u64);
                if let Some(st) = stamp::read(&picture) {
                    g2g.record_us(wavry_media::wall_clock_us().saturating_sub(st.capture_us));
                    pictures += 1;
                }
            }
        }
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("encoder thread panicked"))??;
        anyhow::Ok((g2g, encode, transport, decode, pictures))
    })?;
    let cpu = cpu_seconds("self").unwrap_or(f64::NAN) - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let ms = |l: &Latencies, q| l.ms(q).unwrap_or(f64::NAN);
    Ok(PathFigures {
        frames: pictures,
        g2g_p50: ms(&g2g, 0.5),
        g2g_p99: ms(&g2g, 0.99),
        g2g_p999: ms(&g2g, 0.999),
        encode_p50: ms(&encode, 0.5),
        transport_p50: ms(&transport, 0.5),
        transport_p99: ms(&transport, 0.99),
        decode_p50: ms(&decode, 0.5),
        // One process runs both sides here: all of it is counted once, on the host side.
        host_cpu: cpu / elapsed,
        client_cpu: 0.0,
        input_p50: None,
        input_p99: None,
        input_p995: None,
        input_p999: None,
        back_p50: None,
        back_p99: None,
        back_p995: None,
    })
}
