//! `wavry-runtime`: what the `wavry-server` and `wavry-client` binaries share — identity keys
//! and peer policy, Ctrl-C handling, the application-level echo probe, input conversion and
//! latency percentiles. The binaries drive `wavry-net`'s host and client drivers and the
//! `wavry-media` edges; nothing here touches packets.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use wavry_media::InputEvent;
use wavry_rift::identity::{IdentityError, IdentityKey};
use wavry_rift::proto::{self, control_message::Content as Ctl, input_message};

pub mod files;
pub mod nat;
pub mod ping;
pub mod signal;

/// Errors while setting a runtime up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A key file could not be read.
    #[error("{path}: {source} (expected a .key file made by `wavry keygen`)")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: IdentityError,
    },
    /// No key could be generated.
    #[error("generating an identity key: {0}")]
    Generate(#[source] IdentityError),
    /// The Ctrl-C handler could not be installed.
    #[error("installing the Ctrl-C handler: {0}")]
    Signal(#[from] ctrlc::Error),
    /// A non-loopback address without the opt-in.
    #[error(
        "{addr} is not a loopback address: set {env}=1 to accept connections from other \
         machines (traffic is always encrypted and both sides authenticated)"
    )]
    PublicBind {
        /// The address asked for.
        addr: SocketAddr,
        /// The environment variable that allows it.
        env: &'static str,
    },
}

/// Loads the identity at `path` (a `.key` from `wavry keygen`), or makes an ephemeral one
/// when no path is given; the flag says which.
pub fn load_identity(path: Option<&Path>) -> Result<(Arc<IdentityKey>, bool), SetupError> {
    match path {
        Some(p) => IdentityKey::load(p)
            .map(|k| (Arc::new(k), false))
            .map_err(|source| SetupError::Key {
                path: p.to_owned(),
                source,
            }),
        None => IdentityKey::generate()
            .map(|k| (Arc::new(k), true))
            .map_err(SetupError::Generate),
    }
}

/// Refuses a non-loopback `addr` unless the environment variable `env` is `1`.
pub fn check_bind(addr: SocketAddr, env: &'static str) -> Result<(), SetupError> {
    if addr.ip().is_loopback() || std::env::var(env).is_ok_and(|v| v == "1") {
        Ok(())
    } else {
        Err(SetupError::PublicBind { addr, env })
    }
}

/// Installs the Ctrl-C / SIGTERM handler: the returned channel yields once per signal.
pub fn stop_signal() -> Result<Receiver<()>, SetupError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })?;
    Ok(rx)
}

/// Logs to stderr at `warn` unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The echo probe: a `LatencyStats` control message whose timing fields are all zero and whose
/// `frame_id` carries a probe sequence number. `wavry-server` sends such a message straight
/// back; `wavry ping` times the round trip. (RIFT's own Ping/Pong are answered and consumed
/// inside the session, so the application never sees them.)
pub mod probe {
    use super::{Ctl, proto};

    /// A probe with sequence number `seq`.
    pub fn new(seq: u64) -> Ctl {
        Ctl::Latency(proto::LatencyStats {
            frame_id: seq,
            ..proto::LatencyStats::default()
        })
    }

    /// The probe's sequence number, if `msg` is a probe.
    pub fn seq(msg: &proto::ControlMessage) -> Option<u64> {
        match &msg.content {
            Some(Ctl::Latency(l))
                if l.capture_us == 0
                    && l.encode_us == 0
                    && l.network_us == 0
                    && l.decode_us == 0
                    && l.render_us == 0
                    && l.total_us == 0 =>
            {
                Some(l.frame_id)
            }
            _ => None,
        }
    }
}

/// The wire form of an input event, stamped with the sender's wall clock (µs).
pub fn input_message(event: &InputEvent, timestamp_us: u64) -> proto::InputMessage {
    use input_message::Event as E;
    let event = match *event {
        InputEvent::Key { code, pressed } => E::Key(proto::Key {
            keycode: code,
            pressed,
        }),
        InputEvent::MouseMove { x, y } => E::MouseMove(proto::MouseMove { x, y }),
        InputEvent::MouseButton { button, pressed } => {
            E::MouseButton(proto::MouseButton { button, pressed })
        }
        InputEvent::Scroll { dx, dy } => E::Scroll(proto::Scroll { dx, dy }),
        InputEvent::GamepadAxis { pad, axis, value } => E::Gamepad(proto::GamepadMessage {
            gamepad_id: pad,
            axes: vec![proto::GamepadAxis { axis, value }],
            ..proto::GamepadMessage::default()
        }),
        InputEvent::GamepadButton {
            pad,
            button,
            pressed,
        } => E::Gamepad(proto::GamepadMessage {
            gamepad_id: pad,
            buttons: vec![proto::GamepadButton { button, pressed }],
            ..proto::GamepadMessage::default()
        }),
    };
    proto::InputMessage {
        timestamp_us,
        event: Some(event),
    }
}

/// Converts a client's input message into the sinks' event; `None` for an empty message.
pub fn input_event(msg: &proto::InputMessage) -> Option<InputEvent> {
    Some(match msg.event.as_ref()? {
        input_message::Event::Key(k) => InputEvent::Key {
            code: k.keycode,
            pressed: k.pressed,
        },
        input_message::Event::MouseMove(m) => InputEvent::MouseMove { x: m.x, y: m.y },
        input_message::Event::MouseButton(b) => InputEvent::MouseButton {
            button: b.button,
            pressed: b.pressed,
        },
        input_message::Event::Scroll(s) => InputEvent::Scroll { dx: s.dx, dy: s.dy },
        input_message::Event::Gamepad(g) => {
            let pad = g.gamepad_id;
            if let Some(a) = g.axes.first() {
                InputEvent::GamepadAxis {
                    pad,
                    axis: a.axis,
                    value: a.value,
                }
            } else {
                let b = g.buttons.first()?;
                InputEvent::GamepadButton {
                    pad,
                    button: b.button,
                    pressed: b.pressed,
                }
            }
        }
    })
}

/// Latency samples in microseconds with percentiles in milliseconds.
#[derive(Debug)]
pub struct Latencies(hdrhistogram::Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(
            hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        )
    }
}

impl Latencies {
    /// Adds one sample (clamped into the histogram's range).
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Forgets every sample (a per-interval window starts again).
    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// Samples so far.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1) in milliseconds; `None` without samples.
    pub fn ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1e3)
    }

    /// Smallest sample in milliseconds.
    pub fn min_ms(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.min() as f64 / 1e3)
    }

    /// Mean in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.mean() / 1e3)
    }
}

/// CPU time (user + system, all threads) a process has used, seconds, from `/proc/<pid>/stat`
/// (`"self"` for this process); `None` where there is no procfs or the process is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses: utime and stime
    // are the 14th and 15th fields of the line, the 12th and 13th after ')'.
    let mut rest = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    // USER_HZ: 100 on every Linux ABI.
    Some((utime + stime) as f64 / 100.0)
}

/// Container of a runtime's recording (`--record-format`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RecordFormat {
    /// MP4 (ISO BMFF).
    #[default]
    Mp4,
    /// Matroska.
    Mkv,
}

impl RecordFormat {
    /// The recording's path in `dir` for `role` (`wavry-host`, `wavry-client`), named by the
    /// Unix second it starts.
    pub fn path(self, dir: &Path, role: &str) -> PathBuf {
        let ext = match self {
            RecordFormat::Mp4 => "mp4",
            RecordFormat::Mkv => "mkv",
        };
        dir.join(format!(
            "{role}-{}.{ext}",
            wavry_media::wall_clock_us() / 1_000_000
        ))
    }
}

/// Locks `m`, taking the data of a poisoned lock (a panicked thread ends the runtime anyway).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Formats an optional millisecond figure for a stats line.
pub fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_events_survive_the_wire_form() {
        let events = [
            InputEvent::Key {
                code: 30,
                pressed: true,
            },
            InputEvent::MouseMove { x: 0.25, y: 0.75 },
            InputEvent::MouseButton {
                button: 3,
                pressed: false,
            },
            InputEvent::Scroll { dx: 0.0, dy: -2.0 },
            InputEvent::GamepadAxis {
                pad: 1,
                axis: 2,
                value: -0.5,
            },
            InputEvent::GamepadButton {
                pad: 0,
                button: 4,
                pressed: true,
            },
        ];
        for e in events {
            let m = input_message(&e, 99);
            assert_eq!(m.timestamp_us, 99);
            assert_eq!(input_event(&m), Some(e));
        }
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let before = cpu_seconds("self").unwrap();
        // Work worth many 10 ms ticks, even in an optimised build.
        let mut x = 0u64;
        for i in 0..200_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_seconds("self").unwrap() > before);
        assert_eq!(cpu_seconds("0"), None);
    }

    #[test]
    fn probes_are_recognised_and_latency_reports_are_not() {
        let p = proto::ControlMessage {
            content: Some(probe::new(7)),
        };
        assert_eq!(probe::seq(&p), Some(7));
        let report = proto::ControlMessage {
            content: Some(Ctl::Latency(proto::LatencyStats {
                frame_id: 7,
                total_us: 900,
                ..Default::default()
            })),
        };
        assert_eq!(probe::seq(&report), None);
    }

    #[test]
    fn public_bind_needs_the_opt_in() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(check_bind(lo, "WAVRY_TEST_NEVER_SET_ALLOW").is_ok());
        assert!(check_bind(any, "WAVRY_TEST_NEVER_SET_ALLOW").is_err());
    }

    #[test]
    fn key_input_converts() {
        let m = proto::InputMessage {
            timestamp_us: 1,
            event: Some(input_message::Event::Key(proto::Key {
                keycode: 57,
                pressed: true,
            })),
        };
        assert_eq!(
            input_event(&m),
            Some(InputEvent::Key {
                code: 57,
                pressed: true
            })
        );
        assert_eq!(
            input_event(&proto::InputMessage {
                timestamp_us: 1,
                event: None
            }),
            None
        );
    }
}
