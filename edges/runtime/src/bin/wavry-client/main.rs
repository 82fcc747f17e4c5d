//! `wavry-client`: the client runtime. Connects to a `wavry-server` over a mutually
//! authenticated, encrypted RIFT session, decodes the H.264 stream, reads each frame's number
//! and capture time back from its pixels (glass-to-glass from the image itself), presents it
//! (headless here), optionally records the stream, and prints live stats and a summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use crossbeam_channel::select;
use wavry_media::{
    AudioDecoder, Recorder, VideoFormat,
    audio::{OPUS_48K_STEREO_10MS, OpusDecoder},
    record::FileRecorder,
};
use wavry_net::{ClientDriver, IoMode};
use wavry_rift::identity::WavryId;
use wavry_rift::proto::{self, input_message};
use wavry_rift::session::{CloseReason, Event};
use wavry_runtime::{Latencies, fmt_ms, signal};

/// How a session through the gateway reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PathChoice {
    /// Direct first, then a relay.
    Auto,
    /// Direct only.
    Direct,
    /// Through a relay only.
    Relay,
}

mod connect;
mod video;

use video::{ToVideo, VideoEnd, VideoTally};

/// Wavry client: watch (and record) a Wavry host's stream.
#[derive(Parser, Debug)]
#[command(name = "wavry-client", version)]
#[allow(clippy::struct_excessive_bools)]
struct Args {
    /// Host to connect to (host:port as printed by wavry-server). Non-loopback needs
    /// WAVRY_CLIENT_ALLOW_PUBLIC_CONNECT=1.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "host")]
    connect: Option<SocketAddr>,
    /// Reach the host through this signalling gateway (`ws://host:port/ws`) instead of
    /// --connect. ws:// to another machine needs WAVRY_ALLOW_INSECURE_SIGNALING=1.
    #[arg(long, env = "WAVRY_GATEWAY_URL", value_name = "URL", requires = "host")]
    gateway_url: Option<String>,
    /// With --gateway-url: the host's account, by username or Wavry ID.
    #[arg(
        long,
        value_name = "USERNAME|WAVRY_ID",
        requires = "gateway_url",
        allow_hyphen_values = true
    )]
    host: Option<String>,
    #[command(flatten)]
    token: signal::TokenArgs,
    /// With --gateway-url: how to reach the host. auto: directly for --direct-timeout-ms,
    /// then through a relay the gateway brokers; direct: never a relay; relay: only a relay.
    #[arg(long, env = "WAVRY_CONNECT_PATH", value_enum, default_value_t = PathChoice::Auto)]
    path: PathChoice,
    /// With --gateway-url: host:port of a STUN server for learning this side's public address
    /// (told to the host so that it can punch its NAT towards it). Default: the gateway's own
    /// host and port over UDP; `off`: none.
    #[arg(long, env = "WAVRY_STUN", value_name = "HOST:PORT|off")]
    stun: Option<String>,
    /// With --path auto: how long each of the host's direct addresses gets to complete the
    /// handshake before the next one (then a relay), ms.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    direct_timeout_ms: u64,
    /// With --gateway-url: a session that delivers no frame or audio for this long is moved to
    /// another relay (fresh handshake, same stream), ms.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    failover_after_ms: u64,
    /// Name shown to the host.
    #[arg(long, default_value = "wavry-client")]
    name: String,
    /// This client's identity (.key file from `wavry keygen`); ephemeral when absent.
    #[arg(long, value_name = "PATH")]
    key: Option<PathBuf>,
    /// The host's Wavry ID: connect only if the host proves it (recommended).
    #[arg(long, value_name = "WAVRY_ID", allow_hyphen_values = true)]
    host_id: Option<WavryId>,
    /// Ask for an unencrypted session (refused unless WAVRY_ALLOW_INSECURE_NO_ENCRYPT=1).
    #[arg(long)]
    no_encrypt: bool,
    /// Stream to a VR headset (not in this build).
    #[arg(long)]
    vr: bool,
    /// Show the stream in a window on $DISPLAY (X11; the default is headless).
    #[arg(long, conflicts_with = "headless")]
    window: bool,
    /// Decode and measure without showing anything (the default).
    #[arg(long)]
    headless: bool,
    /// Record the received stream.
    #[arg(long, env = "WAVRY_RECORD")]
    record: bool,
    /// Where recordings go.
    #[arg(long, env = "WAVRY_RECORD_DIR", default_value = "recordings")]
    record_dir: PathBuf,
    /// Container of the recording.
    #[arg(long, value_enum, env = "WAVRY_RECORD_FORMAT", default_value_t = wavry_runtime::RecordFormat::Mp4)]
    record_format: wavry_runtime::RecordFormat,
    /// Send this file to the host (repeatable).
    #[arg(long, value_name = "PATH")]
    send_file: Vec<PathBuf>,
    /// Where received files go.
    #[arg(long, env = "WAVRY_FILE_OUT_DIR", default_value = "received-files")]
    file_out_dir: PathBuf,
    /// Largest file accepted from the host, bytes.
    #[arg(long, env = "WAVRY_FILE_MAX_BYTES", default_value_t = 1 << 30)]
    file_max_bytes: u64,
    /// Read `<file_id> pause|resume|cancel|retry` lines from stdin.
    #[arg(long)]
    file_control_stdin: bool,
    /// Packet I/O backend: auto, uring or portable.
    #[arg(long, env = "WAVRY_IO", default_value = "auto")]
    io: IoMode,
    /// Real-time scheduling (SCHED_FIFO) for the packet I/O thread, so it does not wait
    /// behind the decoder: auto (ask; stay at normal priority if refused), on (a
    /// refusal is an error) or off. Needs CAP_SYS_NICE or an rtprio limit.
    #[arg(long, env = "WAVRY_REALTIME", default_value = "auto")]
    realtime: wavry_net::Realtime,
    /// Print a stats line per second.
    #[arg(long)]
    stats: bool,
    /// Stop after this many seconds (default: until Ctrl-C or the host ends the session).
    #[arg(long)]
    seconds: Option<u64>,
    /// Once connected, press and release this key (evdev code) on the host: checks the input
    /// path end to end while there is no window to type into.
    #[arg(long, value_name = "EVDEV_CODE")]
    input_test_key: Option<u32>,
    /// Send this many zero scroll events per second (each stamped with the send time): the
    /// host reports their one-way latency when it ends. For measurements (`wavry-bench e2e`).
    #[arg(long, value_name = "HZ", default_value_t = 0)]
    input_probe_hz: u32,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
}

fn main() -> std::process::ExitCode {
    wavry_runtime::init_tracing();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wavry-client: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check_flags(args: &Args) -> anyhow::Result<Option<SocketAddr>> {
    if args.vr {
        bail!("--vr: VR streaming is not in this build");
    }
    if args.no_encrypt {
        if std::env::var("WAVRY_ALLOW_INSECURE_NO_ENCRYPT").is_ok_and(|v| v == "1") {
            eprintln!(
                "wavry-client: --no-encrypt allowed by WAVRY_ALLOW_INSECURE_NO_ENCRYPT=1, but \
                 RIFT in this build has no plaintext mode: the session stays encrypted and \
                 mutually authenticated, so the flag changes nothing"
            );
        } else {
            bail!(
                "--no-encrypt refused: it would send the stream and your input in clear; set \
                 WAVRY_ALLOW_INSECURE_NO_ENCRYPT=1 to acknowledge (this build encrypts anyway)"
            );
        }
    }
    if args.window && std::env::var_os("DISPLAY").is_none() {
        bail!("--window: no display ($DISPLAY is not set); run headless (the default)");
    }
    if args.gateway_url.is_some() {
        return Ok(None);
    }
    if args.path == PathChoice::Relay {
        bail!("--path relay needs --gateway-url (the gateway brokers the relay)");
    }
    let Some(addr) = args.connect else {
        bail!(
            "--connect <host:port> or --gateway-url <url> --host <username|wavry-id> is \
             required (LAN discovery is not in this build yet)"
        );
    };
    wavry_runtime::check_bind(addr, "WAVRY_CLIENT_ALLOW_PUBLIC_CONNECT")?;
    Ok(Some(addr))
}

/// What the client saw.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    /// What the video thread saw.
    video: VideoTally,
    dropped: u64,
    /// Host encode time per frame (from the frame's metadata).
    encode: Latencies,
    /// Capture timestamp + encode time → frame complete here: the host's queue, pacing and
    /// the transport.
    transport: Latencies,
    /// An audio packet's capture timestamp → here: the host-to-client path for small
    /// messages (the way back of an input round trip).
    audio: Latencies,
    bytes: u64,
    audio_packets: u64,
    audio_errors: u64,
    /// Input probes sent (`--input-probe-hz`).
    input_probes: u64,
    /// Decoded audio, samples per channel.
    audio_samples: u64,
    /// Sessions replaced after their path was lost.
    failovers: u64,
    /// When the last frame arrived, and the longest time between two (a failover's outage).
    last_frame_at: Option<Instant>,
    longest_gap: Duration,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let direct = check_flags(args)?;
    let (key, ephemeral) = wavry_runtime::load_identity(args.key.as_deref())?;
    if ephemeral {
        eprintln!(
            "wavry-client: no --key: using an ephemeral identity {}",
            key.id()
        );
    }
    let stop_rx = wavry_runtime::stop_signal()?;
    let Some(mut est) = connect::establish(args, direct, &key, &stop_rx)? else {
        return Ok(());
    };
    let res = est.params.stream_resolution.unwrap_or_default();
    let format = VideoFormat {
        width: res.width,
        height: res.height,
        fps: est.params.fps.max(1),
    };
    println!(
        "wavry-client: stream {}x{} @ {} fps, H.264, decoder ffmpeg-h264, presenter {}",
        format.width,
        format.height,
        format.fps,
        if args.window { "window" } else { "headless" }
    );
    let mut recorder = if args.record {
        std::fs::create_dir_all(&args.record_dir)
            .with_context(|| format!("creating {}", args.record_dir.display()))?;
        let path = args.record_format.path(&args.record_dir, "wavry-client");
        eprintln!("wavry-client: recording to {}", path.display());
        Some(FileRecorder::with_opus(
            &path,
            format,
            OPUS_48K_STEREO_10MS,
        )?)
    } else {
        None
    };
    if let Some(code) = args.input_test_key {
        for pressed in [true, false] {
            est.client.send_input(proto::InputMessage {
                timestamp_us: wavry_media::wall_clock_us(),
                event: Some(input_message::Event::Key(proto::Key {
                    keycode: code,
                    pressed,
                })),
            })?;
        }
        println!("wavry-client: sent a press and release of key {code}");
    }
    let mut tally = Tally::default();
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let failover_after = Duration::from_millis(args.failover_after_ms);
    // What the current path carried since it came up (relay reports).
    let (mut path_since, mut path_bytes) = (Instant::now(), 0u64);
    let outcome = loop {
        let silence = est.can_fail_over().then_some(failover_after);
        match stream(
            args,
            &est.client,
            &stop_rx,
            &mut tally,
            recorder.as_mut(),
            (format.width, format.height),
            deadline,
            silence,
        ) {
            Ok(Ended::PathLost(why)) => {
                let lost = Instant::now();
                eprintln!(
                    "wavry-client: the path via {} is lost ({why}); failing over",
                    est.route
                );
                let (lost_since, lost_bytes) = (path_since, tally.bytes - path_bytes);
                (path_since, path_bytes) = (Instant::now(), tally.bytes);
                match connect::fail_over(args, &mut est, &key, &stop_rx) {
                    Ok(Some(old)) => {
                        tally.failovers += 1;
                        println!(
                            "wavry-client: failed over to {} in {} ms",
                            est.route,
                            lost.elapsed().as_millis()
                        );
                        // After the move, so that reporting never delays it.
                        est.report_relay(&old, false, lost_bytes, lost_since);
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            Ok(Ended::Finished) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    est.report_relay(
        &est.route,
        outcome.is_ok(),
        tally.bytes - path_bytes,
        path_since,
    );
    let client = est.client;
    if outcome.is_ok() {
        let _ = client.close("client finished");
    }
    let _ = client.shutdown();
    if let Some(r) = recorder.as_mut() {
        let s = r.finish()?;
        println!(
            "wavry-client: recorded {} frames and {} audio packets ({:.2} s) to {}",
            s.frames,
            s.audio_packets,
            s.duration_s,
            s.path.display()
        );
    }
    print_summary(&tally);
    outcome
}

fn describe(r: &CloseReason) -> String {
    match r {
        CloseReason::HandshakeFailed(why) => format!("handshake failed: {why}"),
        CloseReason::HandshakeTimeout => "no handshake answer (is a host listening?)".into(),
        CloseReason::Refused => "the host refused the session (busy)".into(),
        CloseReason::Remote(why) => format!("the host ended the session: {why}"),
        CloseReason::IdleTimeout => "the host went silent".into(),
        CloseReason::Local => "closed locally".into(),
        CloseReason::RelayRejected(why) => format!("the relay refused the lease: {why:?}"),
        CloseReason::RelayUnreachable => "the relay did not answer".into(),
        CloseReason::ReliableQueueFull => {
            "the host stopped acknowledging control messages (reliable queue full)".into()
        }
    }
}

/// How [`stream`] ended.
enum Ended {
    /// Time is up, Ctrl-C, the window closed or the host ended the session.
    Finished,
    /// No media for the failover silence, or the path died: fail over.
    PathLost(String),
}

/// Receives the session's stream until it ends, its pictures decoded and presented by the
/// video thread ([`video`]). With `silence`, a session that delivers no frame or audio for
/// that long (or dies of silence) ends as [`Ended::PathLost`].
#[allow(clippy::too_many_arguments)]
fn stream(
    args: &Args,
    client: &ClientDriver,
    stop_rx: &crossbeam_channel::Receiver<()>,
    tally: &mut Tally,
    recorder: Option<&mut FileRecorder>,
    picture_size: (u32, u32),
    deadline: Option<Instant>,
    silence: Option<Duration>,
) -> anyhow::Result<Ended> {
    let recorder = Mutex::new(recorder);
    let sec_g2g = Mutex::new(Latencies::default());
    let shared = video::Shared {
        client,
        recorder: &recorder,
        sec_g2g: &sec_g2g,
    };
    // A few frames of slack: the video thread keeps up at the stream's rate, and a longer
    // queue would only add latency.
    let (to_video, frames) = crossbeam_channel::bounded(4);
    let (done_tx, video_done) = crossbeam_channel::bounded(1);
    let window = args.window.then_some(picture_size);
    let mut video_tally = std::mem::take(&mut tally.video);
    let ended = std::thread::scope(|s| {
        let video = std::thread::Builder::new()
            .name("wavry-video".into())
            .spawn_scoped(s, || {
                let end = video::run(window, &shared, &frames, &mut video_tally);
                let _ = done_tx.send(());
                end
            })
            .context("starting the video thread")?;
        let ended = events(
            args,
            &shared,
            stop_rx,
            tally,
            &to_video,
            &video_done,
            deadline,
            silence,
        );
        // Hangs the video thread up.
        drop(to_video);
        let end = video
            .join()
            .map_err(|_| anyhow::anyhow!("the video thread panicked"))?;
        match (ended, end) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(_), Ok(VideoEnd::WindowClosed)) => {
                println!("wavry-client: window closed");
                Ok(Ended::Finished)
            }
            (Ok(ended), Ok(VideoEnd::Stopped)) => Ok(ended),
        }
    });
    tally.video = video_tally;
    ended
}

/// The event loop of [`stream`]: frames to the video thread; audio, stats, files, input
/// probes and the session's end here.
#[allow(clippy::too_many_arguments)]
fn events(
    args: &Args,
    shared: &video::Shared<'_>,
    stop_rx: &crossbeam_channel::Receiver<()>,
    tally: &mut Tally,
    to_video: &crossbeam_channel::Sender<ToVideo>,
    video_done: &crossbeam_channel::Receiver<()>,
    deadline: Option<Instant>,
    silence: Option<Duration>,
) -> anyhow::Result<Ended> {
    let client = shared.client;
    let mut audio = OpusDecoder::new(OPUS_48K_STEREO_10MS)?;
    // Room for the longest Opus packet (120 ms) of 48 kHz stereo.
    let mut pcm = vec![0i16; 5760 * 2];
    let mut last_media = Instant::now();
    let watch = if silence.is_some() {
        crossbeam_channel::tick(Duration::from_millis(50))
    } else {
        crossbeam_channel::never()
    };
    let mut downloads = wavry_runtime::files::Downloads::new(args.file_out_dir.clone());
    let mut uploads = Vec::new();
    for path in &args.send_file {
        let u = wavry_runtime::files::Upload::start(client, path)?;
        let (name, size) = u.describe();
        println!(
            "wavry-client: offering {name} ({size} bytes) to the host as file {}",
            u.id
        );
        uploads.push(u);
    }
    let mut controls = if args.file_control_stdin {
        wavry_runtime::files::stdin_lines()
    } else {
        crossbeam_channel::never()
    };
    let (mut sec_frames, mut sec_bytes) = (0u64, 0u64);
    let probes = if args.input_probe_hz > 0 {
        crossbeam_channel::tick(Duration::from_secs_f64(
            1.0 / f64::from(args.input_probe_hz),
        ))
    } else {
        crossbeam_channel::never()
    };
    loop {
        let left = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Ok(Ended::Finished);
        }
        select! {
            recv(stop_rx) -> _ => {
                eprintln!("wavry-client: stopping (Goodbye to the host)");
                return Ok(Ended::Finished);
            }
            // The window closed or the video thread failed: `stream` says which.
            recv(video_done) -> _ => return Ok(Ended::Finished),
            recv(watch) -> _ => {
                if let Some(s) = silence
                    && last_media.elapsed() >= s
                {
                    return Ok(Ended::PathLost(format!("no media for {} ms", s.as_millis())));
                }
            }
            recv(probes) -> _ => {
                client.send_input(proto::InputMessage {
                    timestamp_us: wavry_media::wall_clock_us(),
                    event: Some(input_message::Event::Scroll(proto::Scroll { dx: 0.0, dy: 0.0 })),
                })?;
                tally.input_probes += 1;
            }
            recv(controls) -> line => match line {
                Ok(line) => file_control(client, &mut uploads, &line)?,
                // End of input: no more commands, the stream goes on.
                Err(_) => controls = crossbeam_channel::never(),
            },
            recv(client.events()) -> ev => match ev.context("client driver stopped")? {
                Event::Frame(f) => {
                    last_media = Instant::now();
                    if let Some(prev) = tally.last_frame_at.replace(last_media) {
                        tally.longest_gap = tally.longest_gap.max(last_media - prev);
                    }
                    let arrival = wavry_media::wall_clock_us();
                    tally.encode.record_us(u64::from(f.meta.encode_us));
                    tally.transport.record_us(arrival.saturating_sub(
                        f.meta.timestamp_us + u64::from(f.meta.encode_us),
                    ));
                    tally.received += 1;
                    sec_frames += 1;
                    sec_bytes += f.data.len() as u64;
                    tally.bytes += f.data.len() as u64;
                    // Fails only once the video thread has ended: `video_done` says why.
                    let _ = to_video.send(ToVideo::Frame(f));
                }
                Event::Audio { timestamp_us, data } => {
                    last_media = Instant::now();
                    tally.audio_packets += 1;
                    tally
                        .audio
                        .record_us(wavry_media::wall_clock_us().saturating_sub(timestamp_us));
                    if let Some(r) = wavry_runtime::lock(shared.recorder).as_deref_mut() {
                        r.write_audio(&data, timestamp_us)?;
                    }
                    match audio.decode(&data, &mut pcm) {
                        Ok(n) => tally.audio_samples += n as u64,
                        Err(e) => {
                            tracing::debug!("audio decode: {e}");
                            tally.audio_errors += 1;
                        }
                    }
                }
                Event::FrameDropped { .. } => {
                    // The session asked the host for a keyframe; frames until then would
                    // reference the lost one.
                    tally.dropped += 1;
                    let _ = to_video.send(ToVideo::Dropped);
                }
                Event::Stats(p) if args.stats => {
                    let mut sec_g2g = wavry_runtime::lock(shared.sec_g2g);
                    println!(
                        "stats: {sec_frames} fps, {:.2} Mbit/s, rtt {} ms, loss {:.2} %, \
                         fec repairs {}, drops {}, glass-to-glass p50 {} ms p99 {} ms",
                        sec_bytes as f64 * 8.0 / p.period.as_secs_f64().max(1e-3) / 1e6,
                        fmt_ms(p.rtt.map(|r| r.as_secs_f64() * 1e3)),
                        p.loss * 100.0,
                        p.fec_recovered,
                        p.frames_dropped,
                        fmt_ms(sec_g2g.ms(0.5)),
                        fmt_ms(sec_g2g.ms(0.99)),
                    );
                    sec_g2g.reset();
                    (sec_frames, sec_bytes) = (0, 0);
                }
                Event::FileOffered(offer) => {
                    let id = offer.file_id;
                    let resume = downloads.offered(id, &offer)?;
                    client.call(Duration::from_secs(5), move |s, now| {
                        s.accept_file(now, id, resume)
                    })??;
                }
                Event::FileData { file_id, offset, data } => {
                    downloads.data(&file_id, offset, &data)?;
                }
                Event::FileAccepted { file_id, offset } => {
                    if let Some(u) = uploads.iter_mut().find(|u| u.id == file_id) {
                        if offset > 0 {
                            println!(
                                "wavry-client: the host resumes file {file_id} at byte {offset}"
                            );
                        }
                        u.accepted(offset);
                        u.feed(client)?;
                    }
                }
                Event::FileWritable { file_id } => {
                    if let Some(u) = uploads.iter_mut().find(|u| u.id == file_id) {
                        u.feed(client)?;
                    }
                }
                Event::FileDone { file_id, sending: true, result } => {
                    if let Some(u) = uploads.iter_mut().find(|u| u.id == file_id) {
                        u.ended(result.is_ok());
                        let (name, size) = u.describe();
                        match result {
                            Ok(()) => println!(
                                "wavry-client: sent {name} ({size} bytes, SHA-256 verified by the host)"
                            ),
                            Err(e) => eprintln!("wavry-client: sending {name} failed: {e}"),
                        }
                    }
                }
                Event::FileDone { file_id, sending: false, result } => {
                    match downloads.done(&file_id, result) {
                        Some(Ok(path)) => println!(
                            "wavry-client: received {} (SHA-256 verified)",
                            path.display()
                        ),
                        Some(Err(e)) => eprintln!("wavry-client: file transfer failed: {e}"),
                        None => {}
                    }
                }
                Event::Closed(r) => {
                    return match r {
                        CloseReason::Remote(why) => {
                            println!("wavry-client: the host ended the session: {why}");
                            Ok(Ended::Finished)
                        }
                        r @ (CloseReason::IdleTimeout | CloseReason::RelayUnreachable)
                            if silence.is_some() =>
                        {
                            Ok(Ended::PathLost(describe(&r)))
                        }
                        other => Err(anyhow::anyhow!("session ended: {}", describe(&other))),
                    };
                }
                _ => {}
            },
            default(left) => {}
        }
    }
}

/// Applies one `--file-control-stdin` line. A bad line or a refused command is reported and
/// the stream goes on; only a driver failure ends it.
fn file_control(
    client: &ClientDriver,
    uploads: &mut [wavry_runtime::files::Upload],
    line: &str,
) -> anyhow::Result<()> {
    use wavry_runtime::files::{FileControl, parse_control};
    if line.trim().is_empty() {
        return Ok(());
    }
    let (id, cmd) = match parse_control(line) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wavry-client: file control: {e}");
            return Ok(());
        }
    };
    let done = match cmd {
        FileControl::Pause => {
            client.call(Duration::from_secs(5), move |s, now| s.pause_file(now, id))?
        }
        FileControl::Resume => {
            client.call(Duration::from_secs(5), move |s, now| s.resume_file(now, id))?
        }
        FileControl::Cancel => {
            let r = client.call(Duration::from_secs(5), move |s, now| s.cancel_file(now, id))?;
            if r.is_ok() {
                // Ended here and now: a retry may follow before `FileDone` is read.
                if let Some(u) = uploads.iter_mut().find(|u| u.id == id) {
                    u.ended(false);
                }
            }
            r
        }
        FileControl::Retry => {
            let Some(u) = uploads.iter_mut().find(|u| u.id == id) else {
                eprintln!(
                    "wavry-client: file control: no file {id} was sent from here (retry \
                     applies to files this side sends)"
                );
                return Ok(());
            };
            match u.retry(client) {
                None => {
                    eprintln!(
                        "wavry-client: file control: file {id} has not failed; nothing to retry"
                    );
                    return Ok(());
                }
                Some(Err(e)) => {
                    eprintln!("wavry-client: file control: retrying file {id}: {e}");
                    return Ok(());
                }
                Some(Ok(again)) => {
                    let (name, size) = again.describe();
                    println!(
                        "wavry-client: offering {name} ({size} bytes) to the host as file {} \
                         (retry of file {id})",
                        again.id
                    );
                    *u = again;
                    return Ok(());
                }
            }
        }
    };
    match done {
        Ok(()) => println!("wavry-client: file {id}: {}", cmd.done()),
        Err(e) => eprintln!("wavry-client: file control: file {id}: {e}"),
    }
    Ok(())
}

fn print_summary(t: &Tally) {
    // One key=value line for scripts and tests.
    println!(
        "summary received={} pictures={} decoded={} unreadable={} mismatched={} out_of_order={} \
         decode_errors={} dropped={} skipped_until_keyframe={} first_frame={} last_frame={} \
         g2g_p50_ms={} g2g_p99_ms={} g2g_p999_ms={} encode_p50_ms={} encode_p99_ms={} \
         transport_p50_ms={} transport_p99_ms={} transport_p999_ms={} decode_p50_ms={} \
         decode_p99_ms={} present_p99_ms={} mbytes={:.2} audio_packets={} audio_errors={} \
         audio_ms={} audio_p50_ms={} audio_p99_ms={} audio_p995_ms={} input_probes={} \
         window_input={} window_keys={} failovers={} longest_frame_gap_ms={} cpu_s={}",
        t.received,
        t.video.pictures,
        t.video.decoded,
        t.video.unreadable,
        t.video.mismatched,
        t.video.out_of_order,
        t.video.decode_errors,
        t.dropped,
        t.video.skipped_until_keyframe,
        t.video.first.map_or_else(|| "-".into(), |f| f.to_string()),
        t.video.last.map_or_else(|| "-".into(), |f| f.to_string()),
        fmt_ms(t.video.g2g.ms(0.5)),
        fmt_ms(t.video.g2g.ms(0.99)),
        fmt_ms(t.video.g2g.ms(0.999)),
        fmt_ms(t.encode.ms(0.5)),
        fmt_ms(t.encode.ms(0.99)),
        fmt_ms(t.transport.ms(0.5)),
        fmt_ms(t.transport.ms(0.99)),
        fmt_ms(t.transport.ms(0.999)),
        fmt_ms(t.video.decode.ms(0.5)),
        fmt_ms(t.video.decode.ms(0.99)),
        fmt_ms(t.video.present.ms(0.99)),
        t.bytes as f64 / 1e6,
        t.audio_packets,
        t.audio_errors,
        t.audio_samples / 48,
        fmt_ms(t.audio.ms(0.5)),
        fmt_ms(t.audio.ms(0.99)),
        fmt_ms(t.audio.ms(0.995)),
        t.input_probes,
        t.video.window_input,
        t.video.window_keys,
        t.failovers,
        t.longest_gap.as_millis(),
        wavry_runtime::cpu_seconds("self").map_or_else(|| "-".into(), |c| format!("{c:.2}")),
    );
}
