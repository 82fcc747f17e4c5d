//! Backend selection: `--io` parsing, the `auto` probe and its one-line downgrade, the typed
//! error for an explicit `uring` that cannot start, and the `WAVRY_IO_DISABLE_URING` switch.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use wavry_net::{Backend, BackendKind, Config, IoMode, NetError};

/// Counts WARN events and keeps their text.
#[derive(Default)]
struct Warnings {
    count: AtomicUsize,
    text: Mutex<String>,
}

struct Text<'a>(&'a mut String);

impl Visit for Text<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Subscriber for &'static Warnings {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            self.count.fetch_add(1, Ordering::SeqCst);
            let mut t = self.text.lock().expect("lock");
            event.record(&mut Text(&mut t));
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

#[test]
fn io_mode_parses_flag_values() {
    assert_eq!("auto".parse::<IoMode>().expect("auto"), IoMode::Auto);
    assert_eq!("URING".parse::<IoMode>().expect("uring"), IoMode::Uring);
    assert_eq!(
        " portable ".parse::<IoMode>().expect("portable"),
        IoMode::Portable
    );
    assert!(matches!(
        "epoll".parse::<IoMode>(),
        Err(NetError::InvalidIoMode(s)) if s == "epoll"
    ));
    for m in [IoMode::Auto, IoMode::Uring, IoMode::Portable] {
        assert_eq!(m.to_string().parse::<IoMode>().expect("roundtrip"), m);
    }
}

#[test]
fn auto_downgrades_with_one_warning_saying_why() {
    let w: &'static Warnings = Box::leak(Box::default());
    let cfg = Config {
        disable_uring: true,
        ..Config::default()
    };
    let s = tracing::subscriber::with_default(w, || {
        wavry_net::bind(loopback(), IoMode::Auto, &cfg).expect("auto bind")
    });
    assert_eq!(s.kind(), BackendKind::Portable);
    assert_eq!(w.count.load(Ordering::SeqCst), 1, "exactly one warn line");
    let text = w.text.lock().expect("lock").clone();
    assert!(text.contains("disabled by Config::disable_uring"), "{text}");
}

#[test]
fn explicit_uring_that_cannot_start_is_an_error() {
    let cfg = Config {
        disable_uring: true,
        ..Config::default()
    };
    let r = wavry_net::bind(loopback(), IoMode::Uring, &cfg);
    assert!(
        matches!(r, Err(NetError::UringUnavailable { ref reason }) if reason.contains("disabled")),
        "{r:?}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn auto_picks_uring_here_without_warning() {
    let w: &'static Warnings = Box::leak(Box::default());
    let s = tracing::subscriber::with_default(w, || {
        wavry_net::bind(loopback(), IoMode::Auto, &Config::default()).expect("auto bind")
    });
    assert_eq!(
        s.kind(),
        BackendKind::Uring,
        "io_uring works on this machine"
    );
    assert_eq!(w.count.load(Ordering::SeqCst), 0);
    wavry_net::probe_uring(&Config::default()).expect("probe passes");
}

/// Runs `child_checks_env_switches` in a child process with the environment switches set (a
/// test must not mutate its own process environment while other tests run).
#[test]
fn env_switches_force_portable_and_select_mode() {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", "child_checks_env_switches", "--nocapture"])
        .env("WAVRY_NET_TEST_CHILD", "1")
        .env(wavry_net::DISABLE_URING_ENV, "1")
        .env(IoMode::ENV, "uring")
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    assert!(stdout.contains("CHILD-OK"), "child did not run: {stdout}");
}

/// Child half of `env_switches_force_portable_and_select_mode`; a no-op in the parent process.
#[test]
fn child_checks_env_switches() {
    if std::env::var_os("WAVRY_NET_TEST_CHILD").is_none() {
        return;
    }
    let mode = IoMode::from_env().expect("WAVRY_IO parses");
    assert_eq!(mode, IoMode::Uring);
    let r = wavry_net::probe_uring(&Config::default());
    assert!(
        matches!(r, Err(NetError::UringUnavailable { ref reason })
            if reason == "probe failed: disabled by WAVRY_IO_DISABLE_URING"),
        "{r:?}"
    );
    let s = wavry_net::bind(loopback(), IoMode::Auto, &Config::default()).expect("auto");
    assert_eq!(s.kind(), BackendKind::Portable);
    assert!(matches!(
        wavry_net::bind(loopback(), mode, &Config::default()),
        Err(NetError::UringUnavailable { .. })
    ));
    println!("CHILD-OK");
}
