//! The real `wavry ping` binary: against a live host on loopback (a host driver answering
//! echo probes the way wavry-server does) it reports RTTs and exits 0; with nothing listening,
//! or against a host that proves another identity than the pinned one, it exits non-zero.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wavry_net::{DriverConfig, HostDriver, IoMode};
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::IdentityKey;
use wavry_rift::proto::control_message::Content as Ctl;
use wavry_rift::session::{Endpoint, Event, Role, SessionConfig};
use wavry_runtime::probe;

fn wavry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wavry"))
        .args(args)
        .output()
        .unwrap()
}

/// A host on 127.0.0.1 echoing probes until dropped.
struct EchoHost {
    host: Option<Arc<HostDriver>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    id: String,
}

impl EchoHost {
    fn start() -> Self {
        let key = Arc::new(IdentityKey::generate().unwrap());
        let id = key.id().to_string();
        let cfg = SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated);
        let socket = wavry_net::bind(
            "127.0.0.1:0".parse().unwrap(),
            IoMode::Auto,
            &wavry_net::Config::default(),
        )
        .unwrap();
        let host = Arc::new(
            HostDriver::spawn(socket, Endpoint::new(cfg, key, 4), DriverConfig::default()).unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (host.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                if let Ok((session, Event::Control(m))) =
                    h.events().recv_timeout(Duration::from_millis(50))
                {
                    if let (Some(_), Some(Ctl::Latency(l))) = (probe::seq(&m), m.content) {
                        h.send_control(session, Ctl::Latency(l)).unwrap();
                    }
                }
            }
        });
        Self {
            host: Some(host),
            stop,
            thread: Some(thread),
            id,
        }
    }

    fn addr(&self) -> String {
        self.host.as_ref().unwrap().local_addr().to_string()
    }
}

impl Drop for EchoHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(h) = self.host.take().and_then(Arc::into_inner) {
            let _ = h.shutdown();
        }
    }
}

#[test]
fn ping_a_live_host_reports_rtts_and_exits_zero() {
    let host = EchoHost::start();
    let out = wavry(&[
        "ping",
        "--server",
        &host.addr(),
        "--host-id",
        &host.id,
        "--count",
        "5",
        "--interval-ms",
        "10",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("reply from").count(), 5, "{stdout}");
    assert!(stdout.contains("5 answered, 0.0 % lost"), "{stdout}");
    assert!(stdout.contains("rtt min/avg/p99 = "), "{stdout}");
    assert!(
        stdout.contains(&host.id),
        "the host's proven identity is shown: {stdout}"
    );
}

#[test]
fn ping_with_nothing_listening_fails() {
    // Bind a socket and drop it: the port is very likely unused for the second it takes.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = wavry(&[
        "ping",
        "--server",
        &format!("127.0.0.1:{port}"),
        "--timeout",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {err}");
    assert!(err.contains("no answer"), "{err}");
}

#[test]
fn ping_refuses_a_host_proving_another_identity() {
    let host = EchoHost::start();
    let other = IdentityKey::generate().unwrap().id().to_string();
    let out = wavry(&[
        "ping",
        "--server",
        &host.addr(),
        "--host-id",
        &other,
        "--timeout",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "must fail: {stdout}");
    assert!(!stdout.contains("reply from"), "{stdout}");
}
