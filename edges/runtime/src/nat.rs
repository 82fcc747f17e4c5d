//! Getting through NAT for a direct session: each side learns its server-reflexive address
//! (what a STUN server — the gateway by default — sees), the two exchange it through the
//! gateway, and the host punches: it sends a datagram from its session port to each of the
//! client's addresses, so that its NAT lets the client's handshake in. Works behind NATs with
//! endpoint-independent mapping; behind a symmetric NAT the direct attempt times out and the
//! client falls back to a relay.
//!
//! The reflexive address is learned on a plain socket that is then closed and its port bound
//! again for the session: a NAT that maps by source port alone gives the session the same
//! outside address.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use wavry_rift::wire::stun;

/// Why no reflexive address was learned.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The server name does not resolve or the flag is malformed.
    #[error("STUN server {0:?}: {1}")]
    Server(String, String),
    /// The local socket failed.
    #[error("STUN socket: {0}")]
    Io(#[from] std::io::Error),
    /// No Binding answer arrived.
    #[error("no STUN answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
}

/// The STUN server to ask: `flag` (`host:port`, or `off`), else the gateway URL's host and
/// port (the gateway answers STUN on its own port over UDP).
pub fn stun_server(flag: Option<&str>, gateway_url: &str) -> Result<Option<SocketAddr>, NatError> {
    match flag {
        Some("off") => Ok(None),
        Some(s) => s
            .to_socket_addrs()
            .map_err(|e| NatError::Server(s.to_owned(), e.to_string()))?
            .next()
            .map(Some)
            .ok_or_else(|| NatError::Server(s.to_owned(), "no address".into())),
        None => crate::signal::gateway_addr(gateway_url)
            .map(Some)
            .ok_or_else(|| NatError::Server(gateway_url.to_owned(), "no address".into())),
    }
}

/// Asks `server` what address `socket` has from outside: up to three Binding requests, each
/// waiting twice as long as the last, within `timeout` in all.
pub fn reflexive(
    socket: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, NatError> {
    let end = Instant::now() + timeout;
    let mut wait = timeout / 7;
    let mut buf = [0u8; 576];
    for _ in 0..3 {
        let mut txid = [0u8; 12];
        wavry_rift::rng::Rng::Os.fill(&mut txid);
        socket.send_to(&stun::binding_request(txid), server)?;
        let until = (Instant::now() + wait).min(end);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from == server => {
                    if let Ok(a) = stun::parse_binding_success(&buf[..n], &txid) {
                        return Ok(a);
                    }
                }
                Ok(_) => {}
                Err(e) if crate::signal::retry_read(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        wait *= 2;
    }
    Err(NatError::Timeout(server, timeout))
}

/// Picks the port for a session socket at `local` and learns its reflexive address there:
/// binds `local` (port 0: the system's choice), asks `server`, and closes the socket again.
/// Returns the address to bind the session to (the same port) and the reflexive address, or
/// `None` for it with the reason when the server did not answer.
pub fn learn(
    local: SocketAddr,
    server: SocketAddr,
    timeout: Duration,
) -> Result<(SocketAddr, Result<SocketAddr, NatError>), NatError> {
    let socket = UdpSocket::bind(local)?;
    let bound = SocketAddr::new(local.ip(), socket.local_addr()?.port());
    let found = reflexive(&socket, server, timeout);
    Ok((bound, found))
}

/// Picks the port for a session socket at `local` without asking anyone: binds it (port 0:
/// the system's choice) and closes it again.
pub fn pick_port(local: SocketAddr) -> std::io::Result<SocketAddr> {
    let socket = UdpSocket::bind(local)?;
    Ok(SocketAddr::new(local.ip(), socket.local_addr()?.port()))
}

/// The datagram a host sends to each of a client's addresses to open its NAT towards them: a
/// STUN Binding request, which the client's session drops as not RIFT.
pub fn punch_datagram() -> Vec<u8> {
    let mut txid = [0u8; 12];
    wavry_rift::rng::Rng::Os.fill(&mut txid);
    stun::binding_request(txid)
}

/// `candidates` plus `extra` where it is new, in that order.
pub fn with_candidate(
    mut candidates: Vec<SocketAddr>,
    extra: Option<SocketAddr>,
) -> Vec<SocketAddr> {
    if let Some(a) = extra
        && !candidates.contains(&a)
    {
        candidates.push(a);
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stun_server_defaults_to_the_gateway_and_can_be_turned_off() {
        assert_eq!(
            stun_server(None, "ws://127.0.0.1:3000/ws").unwrap(),
            Some("127.0.0.1:3000".parse().unwrap())
        );
        assert_eq!(
            stun_server(Some("off"), "ws://127.0.0.1:3000/ws").unwrap(),
            None
        );
        assert_eq!(
            stun_server(Some("127.0.0.2:3478"), "ws://127.0.0.1:3000/ws").unwrap(),
            Some("127.0.0.2:3478".parse().unwrap())
        );
        assert!(stun_server(Some("no port"), "ws://127.0.0.1:3000/ws").is_err());
    }

    #[test]
    fn a_silent_server_times_out_and_an_answering_one_reports_the_address() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = silent.local_addr().unwrap();
        let t = Duration::from_millis(150);
        assert!(matches!(reflexive(&s, to, t), Err(NatError::Timeout(..))));

        // A one-shot responder thread: answers the first Binding request it gets.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = server.local_addr().unwrap();
        let answer = std::thread::spawn(move || {
            let mut buf = [0u8; 576];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let reply = stun::answer_binding_request(&buf[..n], from).unwrap();
            server.send_to(&reply, from).unwrap();
        });
        let (bound, found) =
            learn("127.0.0.1:0".parse().unwrap(), at, Duration::from_secs(5)).unwrap();
        answer.join().unwrap();
        assert_eq!(
            found.unwrap(),
            bound,
            "no NAT on loopback: outside = inside"
        );
        assert_ne!(bound.port(), 0);
        // The port is free again for the session.
        UdpSocket::bind(bound).unwrap();
    }

    #[test]
    fn candidates_are_not_repeated() {
        let a: SocketAddr = "10.0.0.2:7000".parse().unwrap();
        let b: SocketAddr = "198.51.100.1:7000".parse().unwrap();
        assert_eq!(with_candidate(vec![a], Some(b)), vec![a, b]);
        assert_eq!(with_candidate(vec![a, b], Some(b)), vec![a, b]);
        assert_eq!(with_candidate(vec![a], None), vec![a]);
    }
}
