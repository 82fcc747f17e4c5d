//! `wavry-server`: the host runtime. Captures (a synthetic test pattern by default), encodes
//! H.264 with libx264 and streams it over a mutually authenticated, encrypted RIFT session to
//! each allowed client; applies their input to an input sink; optionally records what it sends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use wavry_media::{
    Recorder, VideoFormat, VideoSource,
    audio::OPUS_48K_STEREO_10MS,
    h264::{self, EncoderConfig, X264Encoder},
    record::FileRecorder,
    synthetic::SyntheticSource,
    x11::X11Source,
};
use wavry_net::{DriverConfig, HostDriver, IoMode};
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::WavryId;
use wavry_rift::session::{Endpoint, HostParams, Role, SessionConfig};

/// Sessions one host serves at once (each gets the same encoded stream).
mod events;
mod gateway;
mod media;

use events::event_loop;
use gateway::Presence;
use media::{audio_loop, media_loop};
use wavry_runtime::signal;

const MAX_CLIENTS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Source {
    /// Moving test pattern carrying frame number and capture time in its pixels.
    Synthetic,
    /// The root window of an X display (--display-id N, else $DISPLAY).
    X11,
    /// A PipeWire video node (a screen cast, camera or other Video/Source): --pipewire-target,
    /// daemon from $PIPEWIRE_REMOTE or $XDG_RUNTIME_DIR (Linux).
    Pipewire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EncoderChoice {
    /// The best available: hardware where usable, else libx264.
    Auto,
    /// Software H.264 (libx264, ultrafast, zerolatency).
    Libx264,
    /// VAAPI H.264 (needs /dev/dri).
    H264Vaapi,
    /// NVENC H.264 (needs an NVIDIA GPU with NVENC).
    H264Nvenc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InputChoice {
    /// XTEST when capturing an X display, else the log.
    Auto,
    /// Inject into the X display through XTEST.
    Xtest,
    /// Log and count events.
    Log,
}

/// What `--record` writes: the stream as sent, or a re-encode of every captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RecordQuality {
    /// Re-encoded from the captured frames at twice the stream's starting bitrate (a second
    /// x264 encode per frame on the capture thread).
    High,
    /// The stream as sent, passed through without re-encoding (follows the congestion
    /// controller's bitrate; no extra CPU).
    Standard,
    /// Re-encoded from the captured frames at a quarter of the stream's starting bitrate.
    Low,
}

/// Wavry host: share this machine's screen (or a synthetic test pattern) with Wavry clients.
#[derive(Parser, Debug)]
#[command(name = "wavry-server", version)]
#[allow(clippy::struct_excessive_bools)]
struct Args {
    /// UDP address to listen on. Non-loopback needs WAVRY_SERVER_ALLOW_PUBLIC_BIND=1.
    #[arg(long, env = "WAVRY_LISTEN_ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// This host's identity (.key file from `wavry keygen`); ephemeral when absent.
    #[arg(long, value_name = "PATH")]
    key: Option<PathBuf>,
    /// Accept this client Wavry ID (repeatable).
    #[arg(long = "allow", value_name = "WAVRY_ID", allow_hyphen_values = true)]
    allow: Vec<WavryId>,
    /// Accept any client that proves its identity (it is still logged).
    #[arg(long, conflicts_with = "allow")]
    allow_any: bool,
    /// Stream width in pixels.
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(320..=8192))]
    width: u32,
    /// Stream height in pixels.
    #[arg(long, default_value_t = 720, value_parser = clap::value_parser!(u32).range(240..=8192))]
    height: u32,
    /// Frames per second.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=240))]
    fps: u32,
    /// Starting video bitrate, kbit/s (DELTA's target takes over once measured).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(100..=500_000))]
    bitrate_kbps: u32,
    /// Longest time between keyframes, ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=10_000))]
    keyframe_interval_ms: u32,
    /// Display to capture.
    #[arg(long, env = "WAVRY_DISPLAY_ID")]
    display_id: Option<u32>,
    /// What to capture.
    #[arg(long, value_enum, default_value_t = Source::Synthetic)]
    source: Source,
    /// With --source pipewire: the node to capture, by node.name or id (default: the first
    /// Video/Source node).
    #[arg(long, env = "WAVRY_PIPEWIRE_TARGET", default_value = "")]
    pipewire_target: String,
    /// Which encoder.
    #[arg(long, value_enum, default_value_t = EncoderChoice::Auto)]
    encoder: EncoderChoice,
    /// Where client input goes: auto (XTEST with --source x11, else a log), xtest or log.
    #[arg(long, value_enum, default_value_t = InputChoice::Auto)]
    input: InputChoice,
    /// Packet I/O backend: auto, uring or portable.
    #[arg(long, env = "WAVRY_IO", default_value = "auto")]
    io: IoMode,
    /// Real-time scheduling (SCHED_FIFO) for the I/O thread and the thread that injects input, so they
    /// do not wait behind the encoder: auto (ask; stay at normal priority if refused), on (a
    /// refusal is an error) or off. Needs CAP_SYS_NICE or an rtprio limit.
    #[arg(long, env = "WAVRY_REALTIME", default_value = "auto")]
    realtime: wavry_net::Realtime,
    /// Audio to send: tone (a 440 Hz test tone), system, microphone, app:<name> or disabled.
    #[arg(long, env = "WAVRY_AUDIO_SOURCE", default_value = "tone")]
    audio_source: String,
    /// Record the stream this host sends.
    #[arg(long, env = "WAVRY_RECORD")]
    record: bool,
    /// Where recordings go.
    #[arg(long, env = "WAVRY_RECORD_DIR", default_value = "recordings")]
    record_dir: PathBuf,
    /// Container of the recording.
    #[arg(long, value_enum, env = "WAVRY_RECORD_FORMAT", default_value_t = wavry_runtime::RecordFormat::Mp4)]
    record_format: wavry_runtime::RecordFormat,
    /// Recording quality: `standard` passes the stream through; `high` and `low` re-encode
    /// every captured frame at 2× or ¼ of --bitrate-kbps.
    #[arg(long, value_enum, env = "WAVRY_RECORD_QUALITY", default_value_t = RecordQuality::Standard)]
    record_quality: RecordQuality,
    /// Send this file to each client (repeatable).
    #[arg(long, value_name = "PATH")]
    send_file: Vec<PathBuf>,
    /// Where received files go.
    #[arg(long, env = "WAVRY_FILE_OUT_DIR", default_value = "received-files")]
    file_out_dir: PathBuf,
    /// Largest file accepted from a client, bytes.
    #[arg(long, env = "WAVRY_FILE_MAX_BYTES", default_value_t = 1 << 30)]
    file_max_bytes: u64,
    /// Share of the video bitrate file transfers may use, percent.
    #[arg(long, env = "WAVRY_FILE_TRANSFER_SHARE_PERCENT", default_value_t = 15, value_parser = clap::value_parser!(u8).range(1..=100))]
    file_transfer_share_percent: u8,
    /// Floor of the file-transfer budget, kbit/s.
    #[arg(long, env = "WAVRY_FILE_TRANSFER_MIN_KBPS", default_value_t = 256)]
    file_transfer_min_kbps: u32,
    /// Ceiling of the file-transfer budget, kbit/s.
    #[arg(long, env = "WAVRY_FILE_TRANSFER_MAX_KBPS", default_value_t = 4096)]
    file_transfer_max_kbps: u32,
    /// Signalling gateway (`ws://host:port/ws`): the host binds there as its account and
    /// answers clients that ask for it by username or Wavry ID. ws:// to another machine
    /// needs WAVRY_ALLOW_INSECURE_SIGNALING=1.
    #[arg(long, env = "WAVRY_GATEWAY_URL", value_name = "URL")]
    gateway_url: Option<String>,
    #[command(flatten)]
    token: signal::TokenArgs,
    /// With --gateway-url: offer clients these addresses (a port forward, a public address;
    /// repeatable) instead of the ones found on this machine. A client that reaches none of
    /// them falls back to a relay.
    #[arg(long, value_name = "IP:PORT", requires = "gateway_url")]
    advertise: Vec<SocketAddr>,
    /// With --gateway-url: host:port of a STUN server for learning the session port's public
    /// address (offered to clients beside the local ones). Default: the gateway's own host
    /// and port over UDP; `off`: none.
    #[arg(
        long,
        env = "WAVRY_STUN",
        value_name = "HOST:PORT|off",
        requires = "gateway_url"
    )]
    stun: Option<String>,
    /// Serve browsers over WebRTC (not in this build).
    #[arg(long, env = "WAVRY_ENABLE_WEBRTC")]
    enable_webrtc: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Print a stats line per second.
    #[arg(long)]
    stats: bool,
}

fn main() -> std::process::ExitCode {
    wavry_runtime::init_tracing();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wavry-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Says what the flags not yet backed by this build do, and refuses the ones that would
/// silently change what the user asked for.
fn check_flags(args: &Args) -> anyhow::Result<()> {
    if args.enable_webrtc {
        bail!(
            "--enable-webrtc: the WebRTC bridge for browsers is not in this build; \
             run without it to serve Wavry clients"
        );
    }
    if args.gateway_url.is_none() && args.token.given() {
        eprintln!("wavry-server: a session token without --gateway-url is not used");
    }
    if args.display_id.is_some() && args.source == Source::Synthetic {
        eprintln!("wavry-server: --display-id ignored: the synthetic source has one display");
    }
    match args.audio_source.as_str() {
        "tone" | "disabled" => {}
        other => eprintln!(
            "wavry-server: --audio-source {other}: audio capture is not in this build yet; \
             sending no audio (--audio-source tone sends a test tone)"
        ),
    }
    if args.file_transfer_min_kbps > args.file_transfer_max_kbps {
        bail!("--file-transfer-min-kbps must not exceed --file-transfer-max-kbps");
    }
    Ok(())
}

impl RecordQuality {
    /// Bitrate of the recording's own encoder, bit/s; `None` passes the stream through.
    fn reencode_bps(self, stream_kbps: u32) -> Option<u64> {
        let stream = u64::from(stream_kbps) * 1000;
        match self {
            Self::Standard => None,
            Self::High => Some(stream * 2),
            Self::Low => Some((stream / 4).max(100_000)),
        }
    }
}

fn pick_encoder(choice: EncoderChoice) -> anyhow::Result<()> {
    let probed = h264::probe_hardware_encoders();
    let why = |name: &str| {
        probed
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(|| Err("unknown".to_owned()), |(_, r)| r.clone())
    };
    match choice {
        EncoderChoice::Libx264 => Ok(()),
        EncoderChoice::Auto => {
            for (name, r) in &probed {
                if let Err(e) = r {
                    tracing::info!("encoder {name} unavailable: {e}");
                }
            }
            let hw: Vec<_> = ["h264_vaapi", "h264_nvenc"]
                .into_iter()
                .filter_map(|n| why(n).err().map(|e| format!("{n}: {e}")))
                .collect();
            eprintln!(
                "wavry-server: encoder libx264 (software; hardware H.264 unavailable: {})",
                hw.join("; ")
            );
            Ok(())
        }
        EncoderChoice::H264Vaapi | EncoderChoice::H264Nvenc => {
            let name = if choice == EncoderChoice::H264Vaapi {
                "h264_vaapi"
            } else {
                "h264_nvenc"
            };
            match why(name) {
                Err(e) => bail!("--encoder {name}: unavailable here: {e}"),
                Ok(()) => bail!(
                    "--encoder {name}: the device is present but this build drives only \
                     libx264 so far"
                ),
            }
        }
    }
}

/// What the event loop and the media thread share.
#[derive(Debug, Default)]
struct Shared {
    /// Connected sessions the stream goes to.
    sessions: Mutex<Vec<wavry_rift::session::SessionHandle>>,
    /// A keyframe is due (new client, lost frame, recording start).
    keyframe: AtomicBool,
    /// Lowest DELTA target across sessions, bit/s (0: none yet).
    target_bps: AtomicU64,
    /// Lowest DELTA frame rate across sessions (0: none yet).
    target_fps: AtomicU32,
    /// Set when the runtime is ending.
    stop: AtomicBool,
    frames_sent: AtomicU64,
    frames_skipped: AtomicU64,
}

fn run(args: &Args) -> anyhow::Result<()> {
    check_flags(args)?;
    wavry_runtime::check_bind(args.listen, "WAVRY_SERVER_ALLOW_PUBLIC_BIND")?;
    let token = args
        .gateway_url
        .as_ref()
        .map(|_| args.token.token())
        .transpose()?;
    let policy = if args.allow_any {
        PeerPolicy::AnyAuthenticated
    } else if args.allow.is_empty() {
        bail!(
            "no client is allowed: pass --allow <wavry-id> for each client \
             (`wavry show-id --key client.pub`), or --allow-any"
        );
    } else {
        PeerPolicy::AllowList(args.allow.clone())
    };
    let (key, ephemeral) = wavry_runtime::load_identity(args.key.as_deref())?;
    if ephemeral {
        eprintln!(
            "wavry-server: no --key: using an ephemeral identity (clients cannot pin it across \
             restarts; make one with `wavry keygen`)"
        );
    }
    let display = args.display_id.map(|n| format!(":{n}"));
    let source: Box<dyn VideoSource> = match args.source {
        Source::X11 => {
            let s = X11Source::open(display.as_deref(), args.fps)?;
            eprintln!(
                "wavry-server: capturing X display {} at {}x{} (--width/--height follow the screen)",
                display.as_deref().unwrap_or("$DISPLAY"),
                s.format().width,
                s.format().height
            );
            Box::new(s)
        }
        #[cfg(target_os = "linux")]
        Source::Pipewire => {
            use wavry_media::pipewire::{PipeWireSource, PipeWireTarget};
            let target = PipeWireTarget::parse(&args.pipewire_target);
            let s = PipeWireSource::open(&target, None, args.fps).with_context(|| {
                format!("--source pipewire: capturing {target} (set --pipewire-target to a node)")
            })?;
            eprintln!(
                "wavry-server: capturing PipeWire {target} at {}x{} (--width/--height follow \
                 the stream)",
                s.format().width,
                s.format().height
            );
            Box::new(s)
        }
        #[cfg(not(target_os = "linux"))]
        Source::Pipewire => {
            bail!(
                "--source pipewire: PipeWire capture exists on Linux only; use --source synthetic"
            )
        }
        Source::Synthetic => Box::new(SyntheticSource::new(VideoFormat {
            width: args.width & !1,
            height: args.height & !1,
            fps: args.fps,
        })?),
    };
    let format = source.format();
    pick_encoder(args.encoder)?;
    let encoder = X264Encoder::new(EncoderConfig {
        format,
        bitrate_bps: u64::from(args.bitrate_kbps) * 1000,
        keyframe_interval_ms: args.keyframe_interval_ms,
    })?;
    let recorder = if args.record {
        std::fs::create_dir_all(&args.record_dir)
            .with_context(|| format!("creating {}", args.record_dir.display()))?;
        let path = args.record_format.path(&args.record_dir, "wavry-host");
        match args.record_quality.reencode_bps(args.bitrate_kbps) {
            None => eprintln!(
                "wavry-server: recording the stream as sent (no re-encode) to {}",
                path.display()
            ),
            Some(bps) => eprintln!(
                "wavry-server: recording every captured frame re-encoded at {} kbit/s \
                 (--record-quality {}) to {}",
                bps / 1000,
                format!("{:?}", args.record_quality).to_lowercase(),
                path.display()
            ),
        }
        Some(if args.audio_source == "tone" {
            FileRecorder::with_opus(&path, format, OPUS_48K_STEREO_10MS)?
        } else {
            FileRecorder::create(&path, format)?
        })
    } else {
        None
    };
    // The media and audio threads both write to it.
    let recorder = Mutex::new(recorder);
    let rec_encoder = match args.record_quality.reencode_bps(args.bitrate_kbps) {
        Some(bps) if args.record => Some(X264Encoder::new(EncoderConfig {
            format,
            bitrate_bps: bps,
            keyframe_interval_ms: args.keyframe_interval_ms,
        })?),
        _ => None,
    };

    let mut cfg = SessionConfig::new(Role::Host, policy.clone());
    cfg.host = HostParams {
        resolution: (format.width, format.height),
        fps: format.fps,
        initial_bitrate_kbps: args.bitrate_kbps,
        keyframe_interval_ms: args.keyframe_interval_ms,
        ..HostParams::default()
    };
    cfg.files.share_percent = args.file_transfer_share_percent;
    cfg.files.min_kbps = args.file_transfer_min_kbps;
    cfg.files.max_kbps = args.file_transfer_max_kbps;
    cfg.files.max_file_bytes = args.file_max_bytes;
    // Through a gateway, the session port's public address (STUN) is one of the host's
    // candidates: it is learned before the driver binds that same port.
    let (listen, public) = match &args.gateway_url {
        Some(url) if args.advertise.is_empty() => {
            match wavry_runtime::nat::stun_server(args.stun.as_deref(), url)? {
                Some(server) => {
                    let (bound, found) = wavry_runtime::nat::learn(
                        args.listen,
                        server,
                        std::time::Duration::from_millis(900),
                    )
                    .with_context(|| format!("binding {}", args.listen))?;
                    match found {
                        Ok(a) => {
                            println!("wavry-server: public address {a} (STUN {server})");
                            (bound, Some(a))
                        }
                        Err(e) => {
                            eprintln!(
                                "wavry-server: no public address ({e}); clients behind other \
                                 NATs will come through a relay"
                            );
                            (bound, None)
                        }
                    }
                }
                None => (args.listen, None),
            }
        }
        _ => (args.listen, None),
    };
    let socket = wavry_net::bind(listen, args.io, &wavry_net::Config::default())
        .with_context(|| format!("binding {listen}"))?;
    let host = HostDriver::spawn(
        socket,
        Endpoint::new(cfg, key.clone(), MAX_CLIENTS),
        DriverConfig {
            thread_name: "wavry-host-io".into(),
            realtime: args.realtime,
            ..DriverConfig::default()
        },
    )?;
    println!("wavry-server: I/O thread at {}", host.scheduling());
    let stop_rx = wavry_runtime::stop_signal()?;
    // Tests and scripts read this line for the port and the identity to pin.
    println!(
        "wavry-server listening on {} as {} ({}x{} @ {} fps, {} backend)",
        host.local_addr(),
        key.id(),
        format.width,
        format.height,
        format.fps,
        host.backend()
    );

    let presence = match (&args.gateway_url, token) {
        (Some(url), Some(token)) => {
            let p = Presence {
                url: url.clone(),
                token,
                candidates: if args.advertise.is_empty() {
                    wavry_runtime::nat::with_candidate(
                        signal::host_candidates(host.local_addr(), signal::gateway_addr(url)),
                        public,
                    )
                } else {
                    args.advertise.clone()
                },
                policy: policy.clone(),
            };
            let first = p.connect().context("gateway")?;
            Some((p, first))
        }
        _ => None,
    };

    let shared = Arc::new(Shared::default());
    let result = std::thread::scope(|s| {
        if let Some((p, first)) = presence {
            let (shared, host) = (&shared, &host);
            s.spawn(move || p.run(first, shared, host));
        }
        let media = s.spawn(|| media_loop(&host, &shared, source, encoder, rec_encoder, &recorder));
        let audio = (args.audio_source == "tone")
            .then(|| s.spawn(|| audio_loop(&host, &shared, &recorder)));
        let r = event_loop(args, &host, &shared, &stop_rx);
        shared.stop.store(true, Ordering::Release);
        let rec = media
            .join()
            .map_err(|_| anyhow::anyhow!("media thread panicked"))?;
        let aud = audio.map_or(Ok(()), |a| {
            a.join()
                .map_err(|_| anyhow::anyhow!("audio thread panicked"))?
        });
        r.and(rec).and(aud)
    });
    if let Some(mut r) = recorder
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        let s = r.finish()?;
        println!(
            "wavry-server: recorded {} frames and {} audio packets ({:.2} s) to {}",
            s.frames,
            s.audio_packets,
            s.duration_s,
            s.path.display()
        );
    }
    let stats = host.shutdown()?;
    println!(
        "wavry-server: sent {} frames ({} skipped behind a full queue), {} datagrams",
        shared.frames_sent.load(Ordering::Relaxed),
        shared.frames_skipped.load(Ordering::Relaxed),
        stats.datagrams_sent
    );
    result
}

#[cfg(test)]
mod tests {
    use super::RecordQuality;

    #[test]
    fn record_quality_bitrates() {
        assert_eq!(RecordQuality::Standard.reencode_bps(8000), None);
        assert_eq!(RecordQuality::High.reencode_bps(8000), Some(16_000_000));
        assert_eq!(RecordQuality::Low.reencode_bps(8000), Some(2_000_000));
        assert_eq!(RecordQuality::Low.reencode_bps(200), Some(100_000));
    }
}
