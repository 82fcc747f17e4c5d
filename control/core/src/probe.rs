//! `--probe`: a container health check for images without a shell. The binary GETs its own
//! `/health` on the address it would listen on and exits 0 on 200, 1 otherwise.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

/// Time a probe may take, connection included; below the 3 s that compose gives it.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(2500);

/// Why a probe failed (one line, for stderr).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The runtime or the HTTP client could not be built.
    #[error("cannot start the probe: {0}")]
    Setup(String),
    /// No answer: refused, reset, timed out.
    #[error("GET {url}: {detail}")]
    Request {
        /// The URL asked.
        url: String,
        /// The innermost cause.
        detail: String,
    },
    /// An answer other than 200.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status received.
        status: u16,
    },
}

/// The address to reach a server listening on `listen`: the same one, except that an
/// unspecified IP (`0.0.0.0`, `[::]`) is reached on loopback of the same family.
pub fn probe_target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `http://{probe_target(listen)}/health` within `timeout` (no proxy): `Ok` on 200.
/// Blocks; builds its own single-threaded runtime.
pub fn probe_health(listen: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let url = format!("http://{}/health", probe_target(listen));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProbeError::Setup(e.to_string()))?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| ProbeError::Setup(e.to_string()))?;
    let status = rt
        .block_on(async { client.get(&url).send().await.map(|r| r.status()) })
        .map_err(|e| ProbeError::Request {
            detail: describe(&e),
            url: url.clone(),
        })?;
    if status == reqwest::StatusCode::OK {
        Ok(())
    } else {
        Err(ProbeError::Status {
            url,
            status: status.as_u16(),
        })
    }
}

/// "timed out", or the innermost cause of a request error ("Connection refused (os error
/// 111)"), which is what an operator needs.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let t = |s: &str| probe_target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:3000"), "127.0.0.1:3000");
        assert_eq!(t("[::]:8080"), "[::1]:8080");
        assert_eq!(t("10.0.0.5:9091"), "10.0.0.5:9091");
        assert_eq!(t("127.0.0.1:1"), "127.0.0.1:1");
    }

    /// A one-connection server that reads the request and answers `reply` (`None`: stays
    /// silent until the client gives up).
    fn server(reply: Option<&'static str>) -> SocketAddr {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            match reply {
                Some(r) => {
                    let _ = s.write_all(r.as_bytes());
                }
                // Hold the connection open until the client closes it.
                None => while s.read(&mut buf).is_ok_and(|n| n > 0) {},
            }
        });
        addr
    }

    #[test]
    fn only_200_passes() {
        let ok = server(Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"));
        probe_health(ok, PROBE_TIMEOUT).unwrap();
        let busy = server(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        ));
        let e = probe_health(busy, PROBE_TIMEOUT).unwrap_err().to_string();
        assert_eq!(e, format!("GET http://{busy}/health: HTTP 503"));
        let silent = server(None);
        let e = probe_health(silent, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert_eq!(e, format!("GET http://{silent}/health: timed out"));
    }
}
