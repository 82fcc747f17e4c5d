//! Helpers shared by the backend tests: a loopback socket on exactly the backend asked for,
//! and a bounded channel receive.

use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::Receiver;
use wavry_net::{Backend, BackendKind, Config, IoMode, NetSocket};

/// A loopback socket on `mode`'s backend; an explicit backend that cannot start fails the test
/// (nothing is skipped).
pub(crate) fn socket(mode: IoMode) -> NetSocket {
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let s = wavry_net::bind(lo, mode, &Config::default()).expect("backend must start here");
    let want = match mode {
        IoMode::Uring => BackendKind::Uring,
        _ => BackendKind::Portable,
    };
    assert_eq!(s.kind(), want);
    s
}

/// The next message, or a panic naming `what` at `deadline`.
pub(crate) fn recv<T>(rx: &Receiver<T>, deadline: Instant, what: &str) -> T {
    rx.recv_deadline(deadline)
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}
