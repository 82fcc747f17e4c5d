//! Loopback demo: a host and a client, each with its own Ed25519 identity, run the mutually
//! authenticated Noise XX handshake over real UDP sockets on 127.0.0.1, then exchange
//! encrypted 1200-byte datagrams (ping-pong) and report round-trip times. Finally an
//! impostor client is refused by the host's pinned-identity policy.
//!
//! The sans-IO core does all protocol work; this file is only the socket loop around it.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use wavry_rift::{
    crypto::{CryptoError, Handshake, HandshakeRole, HandshakeStep, PeerPolicy, SecureChannel},
    identity::{IdentityKey, WavryId},
    wire::{HandshakeHeader, Header},
};

const ALIAS: u32 = 1;
const TIMEOUT: Duration = Duration::from_secs(5);

struct Args {
    host_key: Option<PathBuf>,
    client_key: Option<PathBuf>,
    packets: usize,
    size: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host_key: None,
        client_key: None,
        packets: 10_000,
        size: 1200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--host-key" => a.host_key = Some(val()?.into()),
            "--client-key" => a.client_key = Some(val()?.into()),
            "--packets" => a.packets = val()?.parse().map_err(|e| format!("--packets: {e}"))?,
            "--size" => a.size = val()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--help" | "-h" => {
                return Err("usage: loopback [--host-key F.key] [--client-key F.key] [--packets N] [--size BYTES]".into());
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.size == 0 || a.size > 1400 {
        return Err("--size must be 1..=1400".into());
    }
    Ok(a)
}

fn load_or_generate(path: Option<&PathBuf>) -> Result<Arc<IdentityKey>, String> {
    match path {
        Some(p) => IdentityKey::load(p)
            .map(Arc::new)
            .map_err(|e| e.to_string()),
        None => IdentityKey::generate()
            .map(Arc::new)
            .map_err(|e| e.to_string()),
    }
}

/// Sends a handshake message in a RIFT handshake header (packet id = step number).
fn send_hs(
    sock: &UdpSocket,
    to: SocketAddr,
    hs_id: u128,
    step: u64,
    msg: &[u8],
) -> std::io::Result<()> {
    let mut buf = [0u8; 512];
    let n = HandshakeHeader {
        session_id: hs_id,
        packet_id: step,
    }
    .encode(&mut buf)
    .map_err(std::io::Error::other)?;
    buf[n..n + msg.len()].copy_from_slice(msg);
    sock.send_to(&buf[..n + msg.len()], to).map(|_| ())
}

/// Receives the next handshake datagram, returning (from, header, payload length in buf[30..]).
fn recv_hs(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> Result<(SocketAddr, HandshakeHeader, usize), String> {
    loop {
        let (n, from) = sock
            .recv_from(buf)
            .map_err(|e| format!("waiting for handshake: {e}"))?;
        if let Ok(Header::Handshake(h)) = Header::decode(&buf[..n]) {
            return Ok((from, h, n));
        }
    }
}

fn host(
    sock: &UdpSocket,
    key: Arc<IdentityKey>,
    policy: PeerPolicy,
) -> Result<(SecureChannel, SocketAddr), CryptoError> {
    let mut hs = Handshake::new(HandshakeRole::Responder, key, policy)?;
    let mut buf = [0u8; 2048];
    let mut out = [0u8; 512];
    let (from, h, n) = recv_hs(sock, &mut buf).map_err(CryptoError::Noise)?;
    let HandshakeStep::Send(m) = hs.step(Some(&buf[30..n]), &mut out)? else {
        return Err(CryptoError::OutOfOrder("expected to answer msg1"));
    };
    send_hs(sock, from, h.session_id, 2, &out[..m])
        .map_err(|e| CryptoError::Noise(e.to_string()))?;
    let (_, _, n) = recv_hs(sock, &mut buf).map_err(CryptoError::Noise)?;
    hs.step(Some(&buf[30..n]), &mut out)?;
    Ok((hs.into_channel()?, from))
}

fn client(
    sock: &UdpSocket,
    host: SocketAddr,
    key: Arc<IdentityKey>,
    policy: PeerPolicy,
) -> Result<SecureChannel, CryptoError> {
    let mut hs = Handshake::new(HandshakeRole::Initiator, key, policy)?;
    let hs_id = u128::from(std::process::id()) << 32 | 0x5741;
    let mut buf = [0u8; 2048];
    let mut out = [0u8; 512];
    let HandshakeStep::Send(m) = hs.step(None, &mut out)? else {
        unreachable!()
    };
    send_hs(sock, host, hs_id, 1, &out[..m]).map_err(|e| CryptoError::Noise(e.to_string()))?;
    let (_, _, n) = recv_hs(sock, &mut buf).map_err(CryptoError::Noise)?;
    let HandshakeStep::SendAndComplete(m) = hs.step(Some(&buf[30..n]), &mut out)? else {
        return Err(CryptoError::OutOfOrder("expected to finish after msg2"));
    };
    send_hs(sock, host, hs_id, 3, &out[..m]).map_err(|e| CryptoError::Noise(e.to_string()))?;
    hs.into_channel()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if let Err(e) = run() {
        eprintln!("loopback demo failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let host_key = load_or_generate(args.host_key.as_ref())?;
    let client_key = load_or_generate(args.client_key.as_ref())?;
    let (host_id, client_id): (WavryId, WavryId) = (host_key.id(), client_key.id());
    println!("host   Wavry ID {host_id}");
    println!("client Wavry ID {client_id}");

    let host_sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    host_sock
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let host_addr = host_sock.local_addr().map_err(|e| e.to_string())?;
    let packets = args.packets;

    // Host: pins the client's identity, then echoes every datagram back re-sealed.
    let hk = host_key.clone();
    let host_thread = std::thread::spawn(move || -> Result<(), String> {
        let t = Instant::now();
        let (mut ch, peer) =
            host(&host_sock, hk, PeerPolicy::Pinned(client_id)).map_err(|e| e.to_string())?;
        println!(
            "host:   handshake complete in {:?}, peer {} at {peer}",
            t.elapsed(),
            ch.peer()
        );
        let mut buf = [0u8; 2048];
        for _ in 0..packets {
            let (n, _) = host_sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
            let len = ch
                .open(&mut buf[..n])
                .map_err(|e| e.to_string())?
                .payload
                .len();
            let (_, m) = ch.seal(ALIAS, &mut buf, len).map_err(|e| e.to_string())?;
            host_sock
                .send_to(&buf[..m], peer)
                .map_err(|e| e.to_string())?;
        }
        // Second handshake: an impostor; must be refused.
        match host(&host_sock, host_key, PeerPolicy::Pinned(client_id)) {
            Err(CryptoError::PeerRejected(id)) => {
                println!("host:   refused impostor {id}: not the pinned client identity");
                Ok(())
            }
            other => Err(format!(
                "impostor was not refused: {:?}",
                other.map(|c| c.0.peer())
            )),
        }
    });

    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut ch = client(&sock, host_addr, client_key, PeerPolicy::Pinned(host_id))
        .map_err(|e| e.to_string())?;
    println!(
        "client: handshake complete in {:?}, peer {}",
        t.elapsed(),
        ch.peer()
    );

    let mut buf = [0u8; 2048];
    let mut rtts = Vec::with_capacity(packets);
    let start = Instant::now();
    for i in 0..packets {
        buf[18..18 + args.size].fill(i as u8);
        let (_, n) = ch
            .seal(ALIAS, &mut buf, args.size)
            .map_err(|e| e.to_string())?;
        let sent = Instant::now();
        sock.send_to(&buf[..n], host_addr)
            .map_err(|e| e.to_string())?;
        let (m, _) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let payload = ch.open(&mut buf[..m]).map_err(|e| e.to_string())?.payload;
        if payload.len() != args.size || payload.iter().any(|&b| b != i as u8) {
            return Err(format!("echo {i} came back altered"));
        }
        rtts.push(sent.elapsed());
    }
    let total = start.elapsed();
    rtts.sort_unstable();
    println!();
    println!("| encrypted ping-pong over loopback | value |");
    println!("|---|---|");
    println!(
        "| datagrams each way | {packets} × {} B payload (+34 B header and tag) |",
        args.size
    );
    println!(
        "| round trips / s | {:.0} |",
        packets as f64 / total.as_secs_f64()
    );
    println!("| RTT p50 | {:?} |", percentile(&rtts, 0.50));
    println!("| RTT p99 | {:?} |", percentile(&rtts, 0.99));
    println!("| RTT max | {:?} |", rtts[rtts.len() - 1]);
    println!();

    // The impostor: a valid identity, but not the one the host pinned.
    let mallory = Arc::new(IdentityKey::generate().map_err(|e| e.to_string())?);
    let sock2 = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock2
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    // The client side completes (it authenticated the host); the host refuses after msg3.
    client(&sock2, host_addr, mallory, PeerPolicy::Pinned(host_id)).map_err(|e| e.to_string())?;
    host_thread
        .join()
        .map_err(|_| "host thread panicked".to_owned())??;
    println!("demo complete: mutual authentication, encrypted round trips, impostor refused");
    Ok(())
}
