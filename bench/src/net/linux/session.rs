//! The encrypted RIFT session stream path: a host driver streaming frames to a client driver
//! over one backend, measured like the other paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wavry_net::{ClientDriver, Config, DriverConfig, DriverStats, HostDriver, IoMode};
use wavry_rift::cc::DeltaConfig;
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::IdentityKey;
use wavry_rift::session::{Endpoint, Event, FrameMeta, Role, SessionConfig, SessionHandle};

use super::{Args, Measured, raw};

/// Frame size the host streams (a large P-frame / small keyframe).
const FRAME: usize = 64 << 10;
/// Fixed DELTA rate (min = max = initial): far above what loopback carries here, so the
/// pacer, not congestion control, is the only brake.
const RATE_BPS: u64 = 40_000_000_000;
/// Frame admission: media datagrams queued in the host session before the driver holds
/// the next frame (about eight 64 KiB frames; ~3 ms of stream here, well inside a
/// frame's deadline).
const HIGH_WATER: usize = 512;
const WAIT: Duration = Duration::from_secs(10);
/// Frame interval the producer announces (it sends as fast as the driver admits).
const INTERVAL: Duration = Duration::from_millis(1);
/// The host's playout slack: a frame's deadline is INTERVAL + RTT/2 + this.
const PLAYOUT_SLACK: Duration = Duration::from_millis(3);
/// How long the application threads nap when the host's command queue is full or
/// the client has no frame. At ~9 000 frames/s, parking in the channels woke each
/// thread once per frame, and crossbeam spins and yields before it parks: 5-9 % of
/// the process's CPU went to that (perf), not to the transport. 1 ms is about nine
/// frames here, within what the queues hold (16 commands, ~8 frames of media, a
/// WINDOW of 32). A 300 µs nap woke each application thread about 2 600 times a
/// second, and on two cores each wake-up preempted a driver thread (perf stat: the
/// host driver switched out 4 300 times in 2 s); 1 ms cut the application threads'
/// share of the process's CPU from about 3.5 % to 2 %.
const APP_NAP: Duration = Duration::from_millis(1);
/// Frames the producer may be ahead of what the client finished (delivered or
/// dropped). The fixed rate leaves no congestion control to notice a client that
/// cannot keep up, and an open loop then overran the client's socket by 0-8 % per
/// round: host CPU spent on datagrams never counted. A window closes the loop the
/// way DELTA does over a real path (at most about 1 800 datagrams, 2.2 MB, in flight,
/// far below the 32 MiB receive buffer), while the pacer and GSO batches stay those of
/// a fast stream. 8 frames was too few: the consumer's naps then held the producer
/// back, and the stream ran 25 % slower.
const WINDOW: u64 = 32;
/// The session's default pacer burst (datagrams back to back).
pub(super) const DEFAULT_BURST: usize = 4;
/// A burst of one full GSO batch (54 x 1200 B = 64 800 B <= 65 507 B).
pub(super) const GSO_BURST: usize = 54;

/// Streams `--seconds` of 64 KiB frames over loopback and counts, from the drivers'
/// own counters, the datagrams the host sent and the client received (data, parity
/// and feedback) within the window; CPU is the whole process (both drivers and both
/// application threads). The host driver's thread is pinned to `--sender-cpu` and the
/// client's to `--receiver-cpu`, like the baseline's sender and receiver; the
/// application threads are not. `--size` does not apply: the session's MTU is 1200 B.
pub(super) fn measure(args: &Args, mode: IoMode, burst: usize) -> anyhow::Result<Measured> {
    let host_key = Arc::new(IdentityKey::from_seed([0x48; 32])?);
    let client_key = Arc::new(IdentityKey::from_seed([0x43; 32])?);
    let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
    host_cfg.cc = DeltaConfig {
        min_bps: RATE_BPS,
        max_bps: RATE_BPS,
        initial_bps: RATE_BPS,
        ..DeltaConfig::default()
    };
    host_cfg.pacer_burst = burst;
    // Deadlines in proportion to the stream: thousands of frames a second on a
    // microsecond RTT, so a frame is useless a few milliseconds after it was queued
    // (the default 15 ms slack is sized for 60 fps over the internet). This keeps the
    // frames held for NACKs (about 40) within the driver's spare buffers.
    host_cfg.playout_slack = PLAYOUT_SLACK;
    let client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
    let lo = "127.0.0.1:0".parse()?;
    let net = Config {
        uring_buffers: args.uring_buffers,
        ..Config::default()
    };
    let host = HostDriver::spawn(
        wavry_net::bind(lo, mode, &net)?,
        Endpoint::new(host_cfg, host_key, 1),
        DriverConfig {
            command_capacity: 16,
            media_high_water: Some(HIGH_WATER),
            thread_name: "bench-host".into(),
            ..DriverConfig::default()
        },
    )?;
    let client = ClientDriver::connect(
        wavry_net::bind(lo, mode, &net)?,
        client_cfg,
        client_key,
        host.local_addr(),
        DriverConfig {
            thread_name: "bench-client".into(),
            ..DriverConfig::default()
        },
    )?;
    let deadline = Instant::now() + WAIT;
    let session = loop {
        match host
            .events()
            .recv_deadline(deadline)
            .context("host Connected")?
        {
            (h, Event::Connected { .. }) => break h,
            (_, Event::Closed(r)) => anyhow::bail!("host session closed: {r:?}"),
            _ => {}
        }
    };
    loop {
        match client
            .events()
            .recv_deadline(deadline)
            .context("client Connected")?
        {
            Event::Connected { .. } => break,
            Event::Closed(r) => anyhow::bail!("client session closed: {r:?}"),
            _ => {}
        }
    }
    // The drivers' I/O threads sit where the baseline's sender and receiver do.
    for (thread, cpu) in [
        ("bench-host", args.sender_cpu),
        ("bench-client", args.receiver_cpu),
    ] {
        match raw::pin_threads_named(thread, cpu) {
            Ok(1) => {}
            Ok(n) => eprintln!("warning: {n} threads named {thread} pinned to CPU {cpu}"),
            Err(e) => eprintln!(
                "warning: cannot pin {thread} to CPU {cpu} ({e}); figures will swing more"
            ),
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let finished = AtomicU64::new(0);
    let dur = Duration::from_secs_f64(args.seconds);
    let (h0, c0) = (counters(&host, session)?, client.snapshot(WAIT)?.driver);
    let cpu0 = raw::process_cpu_time();
    let transport0 = raw::threads_cpu_time(&["bench-host", "bench-client"]);
    let t0 = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let producer = s.spawn(|| produce(&host, session, &finished, &stop));
        let consumer = s.spawn(|| consume(&client, &finished, &stop));
        // The measurement window itself: nothing to synchronise with, the streams run.
        std::thread::sleep(dur.saturating_sub(t0.elapsed()));
        stop.store(true, Ordering::Release);
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
        consumer
            .join()
            .map_err(|_| anyhow::anyhow!("consumer panicked"))??;
        Ok(())
    })?;
    let (h1, c1) = (counters(&host, session)?, client.snapshot(WAIT)?.driver);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = raw::process_cpu_time().saturating_sub(cpu0);
    let transport =
        raw::threads_cpu_time(&["bench-host", "bench-client"]).saturating_sub(transport0);
    client.shutdown()?;
    host.shutdown()?;
    Ok(Measured {
        sent: h1.datagrams_sent - h0.datagrams_sent,
        received: c1.datagrams_received - c0.datagrams_received,
        bytes: c1.bytes_received - c0.bytes_received,
        secs,
        cpu_secs: cpu.as_secs_f64(),
        transport_cpu_secs: Some(transport.as_secs_f64()),
        sends: Some(h1.transmits - h0.transmits),
    })
}

fn counters(host: &HostDriver, session: SessionHandle) -> anyhow::Result<DriverStats> {
    Ok(host
        .snapshot(session, WAIT)?
        .context("host session vanished")?
        .driver)
}

/// Sends frames as fast as the host driver admits them and the client finishes them:
/// its media high-water mark holds frames while the pacer catches up, its bounded
/// command queue fills, and at most WINDOW frames are ahead of `finished`; this
/// thread then naps for APP_NAP instead of parking (see APP_NAP).
fn produce(
    host: &HostDriver,
    session: SessionHandle,
    finished: &AtomicU64,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    // Capture timestamps in µs: the client's deadline buffer reads them.
    let epoch = Instant::now();
    let mut n = 0u64;
    let mut spare = None;
    while !stop.load(Ordering::Acquire) {
        if n >= finished.load(Ordering::Acquire) + WINDOW {
            std::thread::sleep(APP_NAP);
            continue;
        }
        // Like an encoder writing its output over a returned buffer (no zeroing):
        // the frame is the bytes the buffer held, its first eight the frame number.
        let mut data = spare
            .take()
            .unwrap_or_else(|| host.take_frame_buffer(FRAME));
        data[..8].copy_from_slice(&n.to_le_bytes());
        let meta = FrameMeta {
            timestamp_us: epoch.elapsed().as_micros() as u64,
            ..FrameMeta::default()
        };
        match host.try_send_frame(session, data, meta, INTERVAL)? {
            None => n += 1,
            Some(back) => {
                spare = Some(back);
                std::thread::sleep(APP_NAP);
            }
        }
        while host.events().try_recv().is_ok() {}
    }
    Ok(())
}

/// Takes the client's events, recycles every frame and counts the frames finished
/// (delivered or dropped) into `finished`; naps for APP_NAP when there are none.
fn consume(client: &ClientDriver, finished: &AtomicU64, stop: &AtomicBool) -> anyhow::Result<()> {
    while !stop.load(Ordering::Acquire) {
        match client.events().try_recv() {
            Ok(Event::Frame(f)) => {
                client.recycle(f)?;
                finished.fetch_add(1, Ordering::Release);
            }
            Ok(Event::FrameDropped { .. }) => {
                finished.fetch_add(1, Ordering::Release);
            }
            Ok(Event::Closed(r)) => anyhow::bail!("client closed while streaming: {r:?}"),
            Ok(_) => {}
            Err(_) => std::thread::sleep(APP_NAP),
        }
    }
    Ok(())
}
