//! The host's event loop: sessions coming and going, DELTA targets, input, files, keyframe
//! requests.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::select;
use wavry_media::{InputSink, input::LoggingInputSink, x11::XTestSink};
use wavry_net::HostDriver;
use wavry_rift::proto::control_message::Content as Ctl;
use wavry_rift::relay_client::RelayEvent;
use wavry_rift::session::Event;
use wavry_runtime::files::{HostSession, Upload};
use wavry_runtime::probe;

use super::{Args, InputChoice, Shared, Source};
use wavry_runtime::lock;

pub(super) fn event_loop(
    args: &Args,
    host: &HostDriver,
    shared: &Shared,
    stop_rx: &crossbeam_channel::Receiver<()>,
) -> anyhow::Result<()> {
    // Input is injected on this thread: it preempts the encoder like the I/O thread does.
    let scheduling = wavry_net::priority::raise_current_thread(args.realtime)?;
    println!("wavry-server: input thread at {scheduling}");
    let mut sink: Box<dyn InputSink> = match (args.input, args.source) {
        (InputChoice::Xtest, _) | (InputChoice::Auto, Source::X11) => {
            let display = args.display_id.map(|n| format!(":{n}"));
            Box::new(XTestSink::open(display.as_deref())?)
        }
        _ => Box::new(LoggingInputSink::default()),
    };
    eprintln!("wavry-server: input sink {}", sink.name());
    let mut injected = 0u64;
    // Client send time (its wall clock; the same clock on one machine) → handed to the sink.
    let mut input_latency = wavry_runtime::Latencies::default();
    let mut downloads = wavry_runtime::files::Downloads::new(args.file_out_dir.clone());
    let mut uploads: Vec<(wavry_rift::session::SessionHandle, Upload)> = Vec::new();
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut targets: HashMap<wavry_rift::session::SessionHandle, (u64, u32)> = HashMap::new();
    // Each live session's authenticated client.
    let mut peers: HashMap<wavry_rift::session::SessionHandle, wavry_rift::identity::WavryId> =
        HashMap::new();
    loop {
        let left = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            break;
        }
        select! {
            recv(stop_rx) -> _ => {
                eprintln!("wavry-server: stopping (Goodbye to every client)");
                break;
            }
            recv(host.relay_events()) -> ev => {
                let (sid, ev) = ev.context("host driver stopped")?;
                let sid = format!("{:032x}", u128::from_be_bytes(sid));
                match ev {
                    RelayEvent::Admitted(_) => println!("wavry-server: relay admitted session {sid}"),
                    RelayEvent::Rejected(why) => {
                        eprintln!("wavry-server: relay refused session {sid}: {why:?}");
                    }
                    RelayEvent::GaveUp => eprintln!("wavry-server: relay for session {sid} does not answer"),
                    RelayEvent::LeaseEnding { .. } => {
                        eprintln!("wavry-server: relay lease of session {sid} is ending");
                    }
                }
            }
            recv(host.events()) -> ev => {
                let (h, ev) = ev.context("host driver stopped")?;
                match ev {
                    Event::Connected { peer, .. } => {
                        println!("wavry-server: client {peer} connected");
                        // A client that reconnects (a failover to another relay, a new
                        // address) replaces its old session, which would otherwise hold the
                        // stream's bitrate down until it timed out.
                        for (&old, _) in peers.iter().filter(|&(&o, &p)| p == peer && o != h) {
                            println!("wavry-server: closing the older session of {peer}");
                            lock(&shared.sessions).retain(|&s| s != old);
                            let _ = host.close(old, "superseded by a new session of this client");
                        }
                        peers.insert(h, peer);
                        for path in &args.send_file {
                            let u = Upload::start(&HostSession(host, h), path)?;
                            let (name, size) = u.describe();
                            println!("wavry-server: offering {name} ({size} bytes) to {peer}");
                            uploads.push((h, u));
                        }
                        lock(&shared.sessions).push(h);
                        shared.keyframe.store(true, Ordering::Release);
                    }
                    Event::Closed(reason) => {
                        peers.remove(&h);
                        lock(&shared.sessions).retain(|&s| s != h);
                        uploads.retain(|(s, _)| *s != h);
                        if targets.remove(&h).is_some() {
                            publish_target(shared, &targets);
                        }
                        println!("wavry-server: session closed: {reason:?}");
                    }
                    Event::KeyframeRequested { .. } => {
                        shared.keyframe.store(true, Ordering::Release);
                    }
                    Event::TargetBitrate { bps, fps } => {
                        targets.insert(h, (bps, fps));
                        publish_target(shared, &targets);
                    }
                    Event::Input(msg) => {
                        if let Some(e) = wavry_runtime::input_event(&msg) {
                            sink.inject(&e)?;
                            injected += 1;
                            if msg.timestamp_us > 0 {
                                input_latency.record_us(
                                    wavry_media::wall_clock_us().saturating_sub(msg.timestamp_us),
                                );
                            }
                        }
                    }
                    Event::Control(msg) if probe::seq(&msg).is_some() => {
                        if let Some(Ctl::Latency(l)) = msg.content {
                            let _ = host.send_control(h, Ctl::Latency(l));
                        }
                    }
                    Event::FileOffered(offer) => {
                        let id = offer.file_id;
                        match downloads.offered((h, id), &offer) {
                            Ok(resume) => {
                                host.call(h, Duration::from_secs(5), move |s, now| {
                                    s.accept_file(now, id, resume)
                                })??;
                            }
                            Err(e) => {
                                eprintln!("wavry-server: cannot receive {}: {e}", offer.name);
                                host.call(h, Duration::from_secs(5), move |s, now| {
                                    s.refuse_file(now, id, "the host cannot store it")
                                })??;
                            }
                        }
                    }
                    Event::FileData { file_id, offset, data } => {
                        downloads.data(&(h, file_id), offset, &data)?;
                    }
                    Event::FileAccepted { file_id, offset } => {
                        if let Some((_, u)) =
                            uploads.iter_mut().find(|(s, u)| *s == h && u.id == file_id)
                        {
                            u.accepted(offset);
                            u.feed(&HostSession(host, h))?;
                        }
                    }
                    Event::FileWritable { file_id } => {
                        if let Some((_, u)) =
                            uploads.iter_mut().find(|(s, u)| *s == h && u.id == file_id)
                        {
                            u.feed(&HostSession(host, h))?;
                        }
                    }
                    Event::FileDone { file_id, sending: true, result } => {
                        if let Some(i) = uploads.iter().position(|(s, u)| *s == h && u.id == file_id) {
                            let (_, u) = uploads.swap_remove(i);
                            let (name, size) = u.describe();
                            match result {
                                Ok(()) => println!(
                                    "wavry-server: sent {name} ({size} bytes, SHA-256 verified by the client)"
                                ),
                                Err(e) => eprintln!("wavry-server: sending {name} failed: {e}"),
                            }
                        }
                    }
                    Event::FileDone { file_id, sending: false, result } => {
                        match downloads.done(&(h, file_id), result) {
                            Some(Ok(path)) => println!(
                                "wavry-server: received {} (SHA-256 verified)",
                                path.display()
                            ),
                            Some(Err(e)) => eprintln!("wavry-server: file transfer failed: {e}"),
                            None => {}
                        }
                    }
                    Event::Frame(f) => {
                        let _ = host.recycle(h, f);
                    }
                    Event::Stats(p) if args.stats => {
                        println!(
                            "stats: rtt {} ms, loss {:.2} %, target {:.2} Mbit/s, sent {:.2} Mbit/s",
                            wavry_runtime::fmt_ms(p.rtt.map(|r| r.as_secs_f64() * 1e3)),
                            p.loss * 100.0,
                            p.target_bps as f64 / 1e6,
                            p.send_bps as f64 / 1e6,
                        );
                    }
                    _ => {}
                }
            }
            default(left) => {}
        }
    }
    println!(
        "wavry-server: injected {injected} input events through {}; one-way latency \
         p50 {} ms p99 {} ms p99.5 {} ms p999 {} ms; cpu_s={}",
        sink.name(),
        wavry_runtime::fmt_ms(input_latency.ms(0.5)),
        wavry_runtime::fmt_ms(input_latency.ms(0.99)),
        wavry_runtime::fmt_ms(input_latency.ms(0.995)),
        wavry_runtime::fmt_ms(input_latency.ms(0.999)),
        wavry_runtime::cpu_seconds("self").map_or_else(|| "-".into(), |c| format!("{c:.2}")),
    );
    Ok(())
}

fn publish_target(
    shared: &Shared,
    targets: &HashMap<wavry_rift::session::SessionHandle, (u64, u32)>,
) {
    let bps = targets.values().map(|t| t.0).min().unwrap_or(0);
    let fps = targets.values().map(|t| t.1).min().unwrap_or(0);
    shared.target_bps.store(bps, Ordering::Release);
    shared.target_fps.store(fps, Ordering::Release);
}
