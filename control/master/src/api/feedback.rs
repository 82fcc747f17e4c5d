//! Relay feedback from session participants, feeding relay reputation.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use wavry_control_core::unix_now;
use wavry_rift::identity::WavryId;

use super::{ApiError, ApiResult, St, bad, bearer, parse_json, token_matches};

#[derive(Deserialize)]
struct FeedbackReq {
    session_id: Uuid,
    relay_id: String,
    quality_score: u32,
    #[serde(default)]
    issues: Vec<String>,
    /// Ed25519 signature (hex) by a participant's Wavry ID over
    /// `"wavry-feedback-v1\n{session_id}\n{relay_id}\n{quality_score}"`.
    #[serde(default)]
    signature: Option<String>,
    /// With the service token: which participant reports.
    #[serde(default)]
    reporter: Option<String>,
}

pub(super) async fn feedback(
    State(st): State<St>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: FeedbackReq = parse_json(&body)?;
    if req.quality_score > 100 || req.issues.len() > 16 || req.issues.iter().any(|i| i.len() > 64) {
        return Err(bad("quality_score must be 0..100, at most 16 short issues"));
    }
    let issued = st
        .issued
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&req.session_id)
        .cloned();
    let Some(issued) = issued.filter(|i| i.relay_id == req.relay_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such relay session issued by this master",
        ));
    };
    let reporter = if token_matches(bearer(&headers), st.service_token.as_ref()) {
        let r = req.reporter.clone().unwrap_or_default();
        if !issued.participants.iter().any(|p| p.sub == r) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "reporter did not take part in this session",
            ));
        }
        r
    } else {
        let sig = req
            .signature
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "signed feedback required"))?;
        let msg = format!(
            "wavry-feedback-v1\n{}\n{}\n{}",
            req.session_id, req.relay_id, req.quality_score
        );
        issued
            .participants
            .iter()
            .find(|p| {
                p.wavry_id
                    .as_deref()
                    .and_then(|w| w.parse::<WavryId>().ok())
                    .is_some_and(|w| w.verify(msg.as_bytes(), &sig).is_ok())
            })
            .map(|p| p.sub.clone())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "feedback signature does not match a participant",
                )
            })?
    };
    let success = req.quality_score > 50;
    let inserted = sqlx::query(
        "INSERT INTO relay_feedback (session_id, reporter, relay_id, quality, success, issues, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id, reporter) DO NOTHING",
    )
    .bind(req.session_id.to_string())
    .bind(&reporter)
    .bind(&req.relay_id)
    .bind(i64::from(req.quality_score))
    .bind(i64::from(success))
    .bind(req.issues.join(","))
    .bind(unix_now())
    .execute(&st.db)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "feedback already recorded for this session",
        ));
    }
    sqlx::query(
        "INSERT INTO relay_reputation (relay_id, success, failure, quality_sum, samples, updated_at) VALUES ($1, $2, $3, $4, 1, $5) \
         ON CONFLICT (relay_id) DO UPDATE SET success = relay_reputation.success + $2, failure = relay_reputation.failure + $3, \
         quality_sum = relay_reputation.quality_sum + $4, samples = relay_reputation.samples + 1, updated_at = $5",
    )
    .bind(&req.relay_id)
    .bind(i64::from(success))
    .bind(i64::from(!success))
    .bind(f64::from(req.quality_score))
    .bind(unix_now())
    .execute(&st.db)
    .await?;
    let mut reps = st
        .reps
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let r = reps.entry(req.relay_id.clone()).or_default();
    r.success += i64::from(success);
    r.failure += i64::from(!success);
    r.quality_sum += f64::from(req.quality_score);
    r.samples += 1;
    Ok(Json(json!({ "accepted": true })))
}
