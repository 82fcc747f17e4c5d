//! `/health`, `/ready` and `/metrics` (Prometheus text via `prometheus-client`) on hyper.
//! Metrics are the shards' counters and histograms summed at scrape time; the only label is
//! `relay_id` (one value; histograms add their fixed `le` bounds), never a peer address or a
//! session.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use wavry_relay::core::stats::{FixedHistogram, Stats};
use wavry_relay::kernel_filter::{FilterMode, FilterState};

/// State the HTTP surface and the master loop share with the shards.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) relay_id: String,
    pub(crate) started: Instant,
    pub(crate) shards: Vec<Arc<Stats>>,
    pub(crate) registered: AtomicBool,
    pub(crate) has_master_key: AtomicBool,
    pub(crate) max_sessions: usize,
    pub(crate) shed_pct: u8,
    /// The forwarding backend: xdp-copy, xdp-zero-copy, uring or portable.
    pub(crate) backend: String,
    /// The kernel filter in force (`--kernel-filter`).
    pub(crate) filter: Arc<FilterState>,
}

impl Shared {
    /// Sessions across shards.
    pub(crate) fn sessions(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.active_sessions.load(Ordering::Relaxed))
            .sum()
    }

    /// Load reported to the master, 0..100.
    pub(crate) fn load_pct(&self) -> f64 {
        (self.sessions() as f64 * 100.0 / self.max_sessions.max(1) as f64).clamp(0.0, 100.0)
    }

    /// Master key known, last heartbeat good, below the load-shed threshold.
    pub(crate) fn ready(&self) -> bool {
        self.has_master_key.load(Ordering::Relaxed)
            && self.registered.load(Ordering::Relaxed)
            && self.load_pct() < f64::from(self.shed_pct)
    }

    /// Counters summed over shards, in a fixed order.
    pub(crate) fn totals(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut total: Vec<(&'static str, &'static str, u64)> = Vec::new();
        for s in &self.shards {
            for (i, (name, help, v)) in s.counters().into_iter().enumerate() {
                match total.get_mut(i) {
                    Some(t) => t.2 += v,
                    None => total.push((name, help, v)),
                }
            }
        }
        total
    }
}

/// Picks one of a shard's counters kept in an atomic.
type PickGauge = fn(&Stats) -> &std::sync::atomic::AtomicU64;

#[derive(Debug)]
struct RelayCollector(Arc<Shared>);

impl Collector for RelayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, v) in self.0.totals() {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        // Monotonic counts the shells copy into atomics, summed over the shards.
        let copied: [(&str, &str, PickGauge); 6] = [
            (
                "recv_buffer_stalls",
                "Receives that found the io_uring buffer ring dry (all shards).",
                |s| &s.recv_buffer_stalls,
            ),
            (
                "socket_dropped_packets",
                "Datagrams the kernel dropped at the relay's sockets: not a relay header (the socket filter) or a full receive queue (all shards).",
                |s| &s.socket_drops,
            ),
            (
                "xdp_redirected_packets",
                "Frames the XDP program sent to the AF_XDP sockets (xdp backend).",
                |s| &s.xdp.redirected,
            ),
            (
                "xdp_passed_packets",
                "Frames the XDP program passed to the kernel: ARP, ICMP, other ports (xdp backend).",
                |s| &s.xdp.passed,
            ),
            (
                "xdp_kernel_rx_dropped_packets",
                "Frames the kernel dropped for want of RX or fill ring room (xdp backend).",
                |s| &s.xdp.kernel_rx_dropped,
            ),
            (
                "xdp_tx_ring_full_packets",
                "Frames to send that found the TX ring full (xdp backend).",
                |s| &s.xdp.tx_ring_full,
            ),
        ];
        for (name, help, pick) in copied {
            let c = ConstCounter::new(
                self.0
                    .shards
                    .iter()
                    .map(|s| pick(s).load(Ordering::Relaxed))
                    .sum::<u64>(),
            );
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let batch = SummedHistogram::of(&self.0.shards, |s| &s.histograms.batch_datagrams, 1.0);
        batch.encode(encoder.encode_descriptor(
            "batch_datagrams",
            "Datagrams handled per receive batch (one receive call, then one send submission).",
            None,
            batch.metric_type(),
        )?)?;
        let latency =
            SummedHistogram::of(&self.0.shards, |s| &s.histograms.forward_latency_ns, 1e9);
        latency.encode(encoder.encode_descriptor(
            "forward_latency_seconds",
            "Per batch: from the receipt of its first datagram to the end of its send submission.",
            None,
            latency.metric_type(),
        )?)?;
        let gauges: [(&str, &str, i64); 7] = [
            (
                "kernel_filter_bound_peers",
                "1 while the kernel drops FORWARDs from unbound (session, address) pairs (the filter in force is in /health), else 0.",
                i64::from(self.0.filter.current() == FilterMode::BoundPeers),
            ),
            (
                "kernel_filter_pairs",
                "(session, address) pairs in the kernel's bound-peers table.",
                i64::try_from(self.0.filter.pairs.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            ),
            (
                "xdp",
                "1 when forwarding on AF_XDP (the backend's name is in /health), else 0.",
                i64::from(self.0.backend.starts_with("xdp")),
            ),
            (
                "xdp_zero_copy",
                "1 when the AF_XDP sockets run in zero-copy mode, 0 in copy mode or off AF_XDP.",
                i64::from(self.0.backend == "xdp-zero-copy"),
            ),
            (
                "active_sessions",
                "Sessions in the table.",
                i64::try_from(self.0.sessions()).unwrap_or(i64::MAX),
            ),
            (
                "uptime_seconds",
                "Seconds since start.",
                i64::try_from(self.0.started.elapsed().as_secs()).unwrap_or(i64::MAX),
            ),
            (
                "shards",
                "Forwarding threads.",
                i64::try_from(self.0.shards.len()).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// Shards' histograms summed at scrape time, in the exposition's units.
#[derive(Debug)]
struct SummedHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, non-cumulative count); the last bound is +Inf (f64::MAX).
    buckets: Vec<(f64, u64)>,
}

impl SummedHistogram {
    /// Sums `pick` over `shards`, dividing values by `unit` (1e9: nanoseconds to seconds).
    fn of(shards: &[Arc<Stats>], pick: fn(&Stats) -> &FixedHistogram, unit: f64) -> Self {
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        let mut sum = 0u64;
        for s in shards {
            let h = pick(s);
            sum = sum.saturating_add(h.sum());
            let bounds = h
                .bounds()
                .iter()
                .map(|&b| b as f64 / unit)
                // prometheus-client writes the f64::MAX bound as +Inf.
                .chain(std::iter::once(f64::MAX));
            for (i, (bound, n)) in bounds.zip(h.counts()).enumerate() {
                match buckets.get_mut(i) {
                    Some(b) => b.1 += n,
                    None => buckets.push((bound, n)),
                }
            }
        }
        Self {
            sum: sum as f64 / unit,
            count: buckets.iter().map(|b| b.1).sum(),
            buckets,
        }
    }
}

impl EncodeMetric for SummedHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The Prometheus registry for `shared`.
pub(crate) fn registry(shared: &Arc<Shared>) -> Registry {
    let mut r = Registry::with_prefix_and_labels(
        "wavry_relay",
        std::iter::once((
            Cow::Borrowed("relay_id"),
            Cow::Owned(shared.relay_id.clone()),
        )),
    );
    r.register_collector(Box::new(RelayCollector(Arc::clone(shared))));
    r
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(req: &Request<Incoming>, shared: &Shared, registry: &Registry) -> Response<String> {
    if req.method() != hyper::Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/health" => {
            let metrics: serde_json::Map<String, serde_json::Value> = shared
                .totals()
                .into_iter()
                .map(|(n, _, v)| (n.to_owned(), json!(v)))
                .collect();
            let body = json!({
                "relay_id": shared.relay_id,
                "status": "ok",
                "ready": shared.ready(),
                "has_master_key": shared.has_master_key.load(Ordering::Relaxed),
                "registered_with_master": shared.registered.load(Ordering::Relaxed),
                "backend": shared.backend,
                "kernel_filter": shared.filter.current().as_str(),
                "active_sessions": shared.sessions(),
                "max_sessions": shared.max_sessions,
                "uptime_secs": shared.started.elapsed().as_secs(),
                "metrics": metrics,
            });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        "/ready" => {
            let ready = shared.ready();
            let body = json!({"relay_id": shared.relay_id, "ready": ready});
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(status, "application/json", body.to_string())
        }
        "/metrics" | "/metrics/prometheus" => {
            let mut text = String::new();
            if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
                return respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    String::new(),
                );
            }
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves the HTTP surface on `listener` until the task is dropped.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let registry = Arc::new(registry(&shared));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = route(&req, &shared, &registry);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_with(shards: Vec<Arc<Stats>>) -> Arc<Shared> {
        Arc::new(Shared {
            relay_id: "wr-test".into(),
            started: Instant::now(),
            shards,
            registered: AtomicBool::new(false),
            backend: "uring".into(),
            filter: Arc::new(FilterState::new(FilterMode::Prefix)),
            has_master_key: AtomicBool::new(false),
            max_sessions: 10,
            shed_pct: 95,
        })
    }

    /// The sample line of `name` (followed by its labels) that contains `with`.
    fn line<'a>(text: &'a str, name: &str, with: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(with))
            .unwrap_or_else(|| panic!("no {name} line with {with} in\n{text}"))
    }

    #[test]
    fn histograms_are_summed_over_shards_and_exposed_cumulatively() {
        let (a, b) = (Arc::new(Stats::default()), Arc::new(Stats::default()));
        a.histograms.batch_datagrams.observe(1);
        a.histograms.batch_datagrams.observe(3);
        b.histograms.batch_datagrams.observe(64);
        b.histograms.batch_datagrams.observe(100_000);
        a.histograms.forward_latency_ns.observe(1_500);
        b.recv_buffer_stalls.store(7, Ordering::Relaxed);
        let shared = shared_with(vec![a, b]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(&shared)).unwrap();
        assert!(
            text.contains("# TYPE wavry_relay_batch_datagrams histogram"),
            "{text}"
        );
        // Cumulative buckets: <=1: 1, <=4: 2, <=64: 3, +Inf: 4.
        for (le, n) in [("1.0", 1), ("4.0", 2), ("64.0", 3), ("+Inf", 4)] {
            let l = line(
                &text,
                "wavry_relay_batch_datagrams_bucket",
                &format!("le=\"{le}\""),
            );
            assert!(l.ends_with(&format!(" {n}")), "{l}");
        }
        assert!(line(&text, "wavry_relay_batch_datagrams_count", "wr-test").ends_with(" 4"));
        assert!(line(&text, "wavry_relay_batch_datagrams_sum", "wr-test").ends_with(" 100068.0"));
        let l = line(
            &text,
            "wavry_relay_forward_latency_seconds_bucket",
            "le=\"0.000002\"",
        );
        assert!(l.ends_with(" 1"), "{l}");
        let l = line(&text, "wavry_relay_recv_buffer_stalls_total", "wr-test");
        assert!(l.ends_with(" 7"), "{l}");
        assert!(text.ends_with("# EOF\n"));
    }
}
