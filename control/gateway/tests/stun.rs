//! The gateway's STUN responder, against a real `wavry-gateway` process on loopback: Binding
//! requests are answered with the asker's address, everything else is ignored, `off` binds
//! nothing, a public address needs the bind gate, and one address gets a bounded number of
//! answers however many requests it sends.

#![allow(clippy::unwrap_used)]

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::Stdio,
    time::Duration,
};

use wavry_control_testkit::{Service, TempDir, free_port};
use wavry_rift::wire::stun::{TransactionId, binding_request, is_stun, parse_binding_success};

/// How long a test waits for an answer that should come, and for one that should not.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
const SILENCE_WAIT: Duration = Duration::from_millis(300);

fn gateway_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wavry-gateway"))
}

fn base_args(dir: &TempDir, port: u16) -> Vec<String> {
    vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.path().display().to_string(),
        // No master is needed here.
        "--master-url".into(),
        format!("http://127.0.0.1:{}", free_port().unwrap()),
    ]
}

/// A gateway on a free loopback port with `extra` flags.
async fn gateway(extra: &[String]) -> (Service, TempDir) {
    let dir = TempDir::new("gw-stun").unwrap();
    let port = free_port().unwrap();
    let mut args = base_args(&dir, port);
    args.extend_from_slice(extra);
    let svc = Service::spawn(gateway_bin(), port, &args, &[], Duration::from_secs(30))
        .await
        .expect("gateway starts");
    (svc, dir)
}

fn client(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind(format!("{ip}:0")).unwrap();
    s.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    s
}

fn txid(n: u32) -> TransactionId {
    let mut t = [0x5a; 12];
    t[8..].copy_from_slice(&n.to_be_bytes());
    t
}

/// Sends a Binding request and returns the reflexive address in the answer.
fn ask(sock: &UdpSocket, server: SocketAddr, n: u32) -> SocketAddr {
    sock.send_to(&binding_request(txid(n)), server).unwrap();
    let mut buf = [0u8; 1500];
    let (len, src) = sock.recv_from(&mut buf).expect("a STUN answer");
    assert_eq!(src, server);
    assert!(is_stun(&buf[..len]));
    parse_binding_success(&buf[..len], &txid(n)).unwrap()
}

/// Receives nothing for [`SILENCE_WAIT`].
fn assert_silence(sock: &UdpSocket) {
    sock.set_read_timeout(Some(SILENCE_WAIT)).unwrap();
    let mut buf = [0u8; 1500];
    let got = sock.recv_from(&mut buf);
    assert!(got.is_err(), "unexpected answer: {got:?}");
    sock.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
}

/// Value of a counter in the gateway's OpenMetrics text.
async fn counter(svc: &Service, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics/prometheus", svc.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

fn server(svc: &Service) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], svc.port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_answers_binding_on_the_http_port_and_ignores_the_rest() {
    let (gw, _dir) = gateway(&[]).await;
    let sock = client("127.0.0.1");
    assert_eq!(ask(&sock, server(&gw), 1), sock.local_addr().unwrap());

    // Not STUN (a RIFT-looking datagram, short junk), and STUN that is not a Binding request
    // (the answer just received, sent back): no answer to any of them.
    let mut rift = [0u8; 30];
    rift[..4].copy_from_slice(b"RI\x00\x01");
    let mut answer = [0u8; 1500];
    sock.send_to(&binding_request(txid(2)), server(&gw))
        .unwrap();
    let (len, _) = sock.recv_from(&mut answer).unwrap();
    for junk in [&rift[..], b"\x00\x01", &answer[..len]] {
        sock.send_to(junk, server(&gw)).unwrap();
    }
    assert_silence(&sock);
    // Still answering; the first datagram back is the answer to this request.
    assert_eq!(ask(&sock, server(&gw), 3), sock.local_addr().unwrap());

    assert_eq!(counter(&gw, "wavry_gateway_stun_answered").await, 3);
    assert_eq!(counter(&gw, "wavry_gateway_stun_ignored").await, 3);
    assert_eq!(counter(&gw, "wavry_gateway_stun_rate_limited").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_listen_moves_or_turns_off() {
    // Off: the HTTP port's UDP twin stays free.
    let (gw, _dir) = gateway(&["--stun-listen".into(), "off".into()]).await;
    let twin = UdpSocket::bind(server(&gw)).expect("UDP port free with --stun-listen off");
    drop(twin);

    // Elsewhere: answered there, and the HTTP port's UDP twin stays free.
    let stun_port = free_port().unwrap();
    let (gw, _dir) = gateway(&["--stun-listen".into(), format!("127.0.0.1:{stun_port}")]).await;
    let sock = client("127.0.0.1");
    let at = SocketAddr::from(([127, 0, 0, 1], stun_port));
    assert_eq!(ask(&sock, at, 1), sock.local_addr().unwrap());
    drop(UdpSocket::bind(server(&gw)).expect("HTTP port's UDP twin free"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_public_listen_needs_the_bind_gate() {
    let dir = TempDir::new("gw-stun-gate").unwrap();
    let port = free_port().unwrap();
    let mut args = base_args(&dir, port);
    args.extend(["--stun-listen".into(), format!("0.0.0.0:{port}")]);
    let child = tokio::process::Command::new(gateway_bin())
        .args(&args)
        .env_remove("WAVRY_ALLOW_PUBLIC_BIND")
        .env_remove("WAVRY_GATEWAY_ALLOW_HOST_PROD_BIND")
        .env_remove("WAVRY_GATEWAY_STUN_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the gateway refuses to start instead of running")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing to listen on non-loopback 0.0.0.0:{port}"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_burst_from_one_address_is_rate_limited() {
    const BURST: u32 = 200;
    let (gw, _dir) = gateway(&[]).await;
    let sock = client("127.0.0.1");
    for n in 0..BURST {
        sock.send_to(&binding_request(txid(n)), server(&gw))
            .unwrap();
    }
    // Count answers until the line goes quiet (bounded: at most one per request).
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut answers = 0u32;
    while answers < BURST && sock.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    // 20 per second per address; the burst takes milliseconds, one window at most two.
    assert!(
        (1..=25).contains(&answers),
        "{answers} answers to a burst of {BURST}"
    );
    assert_eq!(
        counter(&gw, "wavry_gateway_stun_answered").await,
        u64::from(answers)
    );
    let limited = counter(&gw, "wavry_gateway_stun_rate_limited").await;
    assert!(
        limited + u64::from(answers) <= u64::from(BURST) && limited >= 100,
        "{limited} rate limited, {answers} answered"
    );

    // Another address has its own budget (Linux routes all of 127/8 to loopback).
    if cfg!(target_os = "linux") {
        let other = client("127.0.0.2");
        assert_eq!(ask(&other, server(&gw), 1), other.local_addr().unwrap());
    }
}
