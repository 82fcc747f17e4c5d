//! Master integration: fetch (and pin) the lease key, register with the relay's identity
//! signature (and bearer token when configured), heartbeat with load; re-register on 404 or
//! after repeated failures.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use wavry_rift::identity::IdentityKey;

use crate::http::Shared;

/// Consecutive heartbeat failures after which the relay registers again.
const MAX_HEARTBEAT_FAILURES: u32 = 6;

/// What the relay tells the master about itself.
#[derive(Debug, Clone)]
pub(crate) struct Advert {
    pub(crate) relay_id: String,
    pub(crate) endpoint: String,
    pub(crate) region: Option<String>,
    pub(crate) asn: Option<u32>,
    pub(crate) max_sessions: usize,
    pub(crate) max_bitrate_kbps: u32,
}

/// Header carrying the relay's identity proof over the registration body (master proof v2).
const SIGNATURE_HEADER: &str = "x-wavry-relay-signature";

/// The registration request: its exact JSON body and the relay's identity proof, an Ed25519
/// signature (hex) over `"wavry-relay-register-v2\n"` followed by those body bytes. The body
/// carries a fresh one-time nonce and a timestamp, so a captured request cannot be replayed
/// with other endpoints (see control/README.md, "Master HTTP").
pub(crate) fn registration_request(
    a: &Advert,
    key: &IdentityKey,
    unix_secs: i64,
) -> (Vec<u8>, String) {
    let body = json!({
        "relay_id": a.relay_id,
        "endpoints": [a.endpoint],
        "region": a.region,
        "asn": a.asn,
        "max_sessions": a.max_sessions,
        "max_bitrate_kbps": a.max_bitrate_kbps,
        "features": [if a.endpoint.starts_with('[') { "ipv6" } else { "ipv4" }],
        "wavry_id": key.id().to_string(),
        "timestamp": unix_secs,
        "nonce": uuid::Uuid::new_v4().simple().to_string(),
    });
    let body = serde_json::to_vec(&body).expect("a JSON value serialises");
    let mut signed = b"wavry-relay-register-v2\n".to_vec();
    signed.extend_from_slice(&body);
    let signature = hex::encode(key.sign(&signed));
    (body, signature)
}

fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Parses a 64-hex-character public key.
pub(crate) fn parse_key_hex(s: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(s.trim()).context("master public key is not hex")?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("master public key must be 32 bytes, got {}", bytes.len()))
}

/// Fetches the master's lease key and key id from `/.well-known/wavry-id`, retrying with
/// backoff until it answers. With a `pin` file: the first key is written there and a later
/// different key is refused (trust on first use, then pinned).
pub(crate) async fn fetch_master_key(
    http: &reqwest::Client,
    base: &str,
    pin: Option<&Path>,
) -> anyhow::Result<([u8; 32], Option<String>)> {
    let url = format!("{}/.well-known/wavry-id", base.trim_end_matches('/'));
    let mut backoff = Duration::from_secs(1);
    let (key, kid) = loop {
        match http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
        {
            Ok(r) => {
                let v: Value = r.json().await.context("reading /.well-known/wavry-id")?;
                let key = parse_key_hex(v["public_key"].as_str().unwrap_or_default())?;
                break (key, v["key_id"].as_str().map(str::to_owned));
            }
            Err(e) => {
                tracing::warn!(error = %e, url, "master key not available yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    };
    if let Some(pin) = pin {
        match std::fs::read_to_string(pin) {
            Ok(pinned) => {
                if parse_key_hex(&pinned)? != key {
                    bail!(
                        "master key at {url} differs from the key pinned in {} (remove the pin file if the master key was rotated)",
                        pin.display()
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::write(pin, hex::encode(key))
                    .with_context(|| format!("writing {}", pin.display()))?;
                tracing::info!(pin = %pin.display(), "master key pinned");
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", pin.display())),
        }
    }
    Ok((key, kid))
}

/// Registers, then heartbeats forever; re-registers on 404 or after
/// [`MAX_HEARTBEAT_FAILURES`] failures in a row. Updates `shared.registered`.
pub(crate) async fn run(
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
    key: Arc<IdentityKey>,
    advert: Advert,
    shared: Arc<Shared>,
) {
    let base = base.trim_end_matches('/').to_owned();
    let mut backoff = Duration::from_secs(1);
    loop {
        let (body, signature) = registration_request(&advert, &key, unix_secs());
        let mut rb = http
            .post(format!("{base}/v1/relays/register"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body);
        if let Some(b) = &bearer {
            rb = rb.bearer_auth(b);
        }
        let resp = match rb.send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(%status, body = %text, "relay registration refused");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay registration failed");
                None
            }
        };
        let Some(resp) = resp else {
            shared.registered.store(false, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            continue;
        };
        backoff = Duration::from_secs(1);
        shared.registered.store(true, Ordering::Relaxed);
        let interval = Duration::from_millis(
            resp["heartbeat_interval_ms"]
                .as_u64()
                .unwrap_or(5000)
                .max(500),
        );
        let token = resp["heartbeat_token"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| bearer.clone());
        tracing::info!(relay_id = %advert.relay_id, endpoint = %advert.endpoint, "registered with master");
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(interval).await;
            let body = json!({
                "relay_id": advert.relay_id,
                "load_pct": shared.load_pct(),
                "region": advert.region,
                "asn": advert.asn,
                "max_bitrate_kbps": advert.max_bitrate_kbps,
                "endpoints": [advert.endpoint],
            });
            let mut rb = http.post(format!("{base}/v1/relays/heartbeat")).json(&body);
            if let Some(t) = &token {
                rb = rb.bearer_auth(t);
            }
            match rb.send().await {
                Ok(r) if r.status().is_success() => {
                    failures = 0;
                    shared.registered.store(true, Ordering::Relaxed);
                }
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                    tracing::warn!("master forgot this relay; registering again");
                    shared.registered.store(false, Ordering::Relaxed);
                    break;
                }
                other => {
                    failures += 1;
                    shared.registered.store(false, Ordering::Relaxed);
                    tracing::warn!(failures, result = ?other.map(|r| r.status()), "heartbeat failed");
                    if failures >= MAX_HEARTBEAT_FAILURES {
                        shared.registered.store(false, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}
