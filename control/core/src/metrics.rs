//! Serving a `prometheus-client` registry. The conventions every Wavry service follows
//! (control/README.md, "Metrics"): one registry per process whose metric names start with
//! `wavry_<service>_`, counters registered without a suffix (the encoder appends `_total`), no
//! per-user, per-peer or per-session labels, gauges sampled at scrape time, OpenMetrics text
//! at `/metrics`.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use prometheus_client::registry::Registry;

/// `Content-Type` of the OpenMetrics text that `prometheus-client` writes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `registry` encoded as OpenMetrics text (ending in `# EOF`), or 500 if encoding fails.
pub fn openmetrics_response(registry: &Registry) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(error = %e, "metrics encoding failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response()
}
