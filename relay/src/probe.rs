//! `--probe`: a container health check for the distroless image (no shell, no curl). GETs
//! `/health` on --health-listen (loopback when it is an unspecified address) with the
//! `reqwest` client the relay already uses for the master; exit 0 on 200, else 1 with one
//! line on stderr.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};

/// Time a probe may take, connection included; below the 3 s that compose gives it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(2500);

/// The address that reaches a server listening on `listen` (unspecified → loopback).
fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// "timed out", or the innermost cause of a request error.
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

/// GETs `/health` on `health_listen`: `Ok` on 200; the error is one line.
pub(crate) fn probe(health_listen: SocketAddr) -> anyhow::Result<()> {
    let url = format!("http://{}/health", target(health_listen));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build()
        .context("HTTP client")?;
    let status = match rt.block_on(async { client.get(&url).send().await.map(|r| r.status()) }) {
        Ok(s) => s,
        Err(e) => bail!("GET {url}: {}", describe(&e)),
    };
    if status != reqwest::StatusCode::OK {
        bail!("GET {url}: HTTP {}", status.as_u16());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let t = |s: &str| target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:9091"), "127.0.0.1:9091");
        assert_eq!(t("[::]:9091"), "[::1]:9091");
        assert_eq!(t("10.1.2.3:9091"), "10.1.2.3:9091");
    }
}
