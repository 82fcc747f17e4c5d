//! Lease issuance: relay ranking and signed lease pairs for services and identities.

use std::time::Instant;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use time::OffsetDateTime;
use uuid::Uuid;
use wavry_rift::{
    identity::WavryId,
    lease::{LeaseClaims, LeaseRole},
};
use wavry_signal::{
    Role,
    broker::{Credentials, LeaseGrant, LeaseRequest, PeerRef},
};

use super::{ApiError, ApiResult, AppState, Issued, St, bad, bearer, parse_json, token_matches};
use crate::{relays, ws};

const MAX_ISSUED: usize = 500_000;
/// Soft / hard bitrate limits placed in leases (kbit/s).
const LEASE_SOFT_KBPS: u32 = 50_000;
const LEASE_HARD_KBPS: u32 = 100_000;

/// Who is asking for a lease.
enum Caller {
    /// A trusted service (gateway) with the service token: body names both gateway subjects
    /// and the service receives both leases (see [`check_service_request`]).
    Service,
    /// A master identity session.
    Identity(String),
}

pub(super) fn valid_sub(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

impl AppState {
    fn is_revoked(&self, p: &PeerRef) -> bool {
        let set = self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.contains(&p.sub) || p.wavry_id.as_ref().is_some_and(|w| set.contains(w))
    }

    /// Ranks relays and issues one lease per peer, each for its own role.
    fn issue(&self, req: &LeaseRequest) -> ApiResult<LeaseGrant> {
        if !valid_sub(&req.requester.sub) || !valid_sub(&req.target.sub) {
            return Err(bad("requester and target must be non-empty names"));
        }
        if req.requester.sub == req.target.sub {
            return Err(bad("cannot request a relay to yourself"));
        }
        if req.probes.len() > wavry_signal::MAX_RELAY_LIST
            || req.exclude.len() > wavry_signal::MAX_RELAY_LIST
        {
            return Err(bad("too many probes or exclusions"));
        }
        if self.is_revoked(&req.requester) || self.is_revoked(&req.target) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "identity revoked"));
        }
        if !self.provisioned {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing key not provisioned",
            ));
        }
        if !self.lease_limiter.check(&req.requester.sub) {
            self.metrics.rate_limited.inc();
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "lease rate limit exceeded",
            ));
        }
        let (ranked, bitrate) = {
            let relays = self
                .relays
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let reps = self
                .reps
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ranked = relays::rank(
                &relays,
                &reps,
                &req.probes,
                req.region.as_deref(),
                &req.exclude,
            );
            let bitrate = ranked
                .first()
                .and_then(|r| relays.get(&r.relay_id))
                .map_or(LEASE_HARD_KBPS, |r| r.max_bitrate_kbps);
            (ranked, bitrate)
        };
        let Some(best) = ranked.first().cloned() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no relay available",
            ));
        };
        let sid = Uuid::new_v4();
        let now = OffsetDateTime::now_utc();
        let exp = now + time::Duration::seconds(self.lease_ttl);
        let requester_role = req.requester_role.unwrap_or(Role::Client);
        let hard = bitrate.min(LEASE_HARD_KBPS);
        let make = |p: &PeerRef, role: Role| -> ApiResult<Credentials> {
            let claims = LeaseClaims {
                sub: p.sub.clone(),
                wavry_id: p.wavry_id.clone(),
                sid,
                role: match role {
                    Role::Client => LeaseRole::Client,
                    Role::Server => LeaseRole::Server,
                },
                rid: best.relay_id.clone(),
                kid: Some(self.signer.key_id().to_owned()),
                jti: Some(Uuid::new_v4().to_string()),
                iat: now,
                nbf: now - time::Duration::seconds(5),
                exp,
                slimit: Some(LEASE_SOFT_KBPS.min(hard)),
                hlimit: Some(hard),
            };
            let token = self.signer.issue(&claims).map_err(|e| {
                tracing::error!(error = %e, "lease signing failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "lease signing failed")
            })?;
            Ok(Credentials {
                sub: p.sub.clone(),
                role,
                token,
            })
        };
        let requester = make(&req.requester, requester_role)?;
        let target = make(&req.target, requester_role.peer())?;
        {
            let mut issued = self
                .issued
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if issued.len() < MAX_ISSUED {
                issued.insert(
                    sid,
                    Issued {
                        relay_id: best.relay_id.clone(),
                        participants: [req.requester.clone(), req.target.clone()],
                        at: Instant::now(),
                    },
                );
            }
        }
        tracing::debug!(session_id = %sid, relay_id = %best.relay_id, "leases issued");
        Ok(LeaseGrant {
            session_id: sid,
            relay_id: best.relay_id.clone(),
            addr: best.addr.clone(),
            expires_at: exp.unix_timestamp(),
            key_id: self.signer.key_id().to_owned(),
            requester,
            target: Some(target),
            ranked,
        })
    }
}

async fn caller(st: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    let presented = bearer(headers);
    if token_matches(presented, st.service_token.as_ref()) {
        return Ok(Caller::Service);
    }
    if let Some(t) = presented {
        if let Some(id) = st.session_identity(t).await? {
            return Ok(Caller::Identity(id));
        }
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "service token or identity session required",
    ))
}

/// What the service token may request: a pair of leases for two gateway subjects (usernames,
/// never a Wavry ID in `sub`, so a service cannot mint a lease naming a master identity), each
/// with an optional, well-formed Wavry ID. The service receives both leases and delivers each
/// to its holder.
fn check_service_request(req: &LeaseRequest) -> ApiResult<()> {
    for p in [&req.requester, &req.target] {
        if p.sub.trim().parse::<WavryId>().is_ok() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the service token may only name gateway subjects (not Wavry IDs) in sub",
            ));
        }
        if p.wavry_id
            .as_deref()
            .is_some_and(|w| w.parse::<WavryId>().is_err())
        {
            return Err(bad("invalid wavry_id"));
        }
    }
    Ok(())
}

impl AppState {
    /// Issues a lease pair for the master identity `me` towards a Wavry ID bound to `/ws`:
    /// the requester is always `me`, the target's lease goes to the target's socket only,
    /// and the returned grant carries only the caller's lease (HTTP and `/ws` alike).
    /// Counted in the lease metrics.
    pub(crate) fn issue_for_identity(&self, me: &str, req: LeaseRequest) -> ApiResult<LeaseGrant> {
        let r = self.issue_for_identity_uncounted(me, req);
        self.metrics.lease(r.is_ok());
        r
    }

    fn issue_for_identity_uncounted(
        &self,
        me: &str,
        mut req: LeaseRequest,
    ) -> ApiResult<LeaseGrant> {
        let named = match (&req.target.wavry_id, req.target.sub.trim()) {
            (Some(w), s) if !s.is_empty() && s != w.trim() => {
                return Err(bad("target sub and wavry_id disagree"));
            }
            (Some(w), _) => w.trim().to_owned(),
            (None, s) => s.to_owned(),
        };
        let target = named
            .parse::<WavryId>()
            .map_err(|_| bad("target must be a Wavry ID"))?
            .to_string();
        req.requester = PeerRef {
            sub: me.to_owned(),
            wavry_id: Some(me.to_owned()),
        };
        req.target = PeerRef {
            sub: target.clone(),
            wavry_id: Some(target.clone()),
        };
        if target == me {
            return Err(bad("cannot request a relay to yourself"));
        }
        if self.is_revoked(&req.target) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "identity revoked"));
        }
        if !self.hub.is_bound(&target) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "target not connected"));
        }
        let mut grant = self.issue(&req)?;
        if let Some(theirs) = grant.target.take() {
            self.hub
                .send(&target, ws::credentials_message(&grant, &theirs, me));
        }
        Ok(grant)
    }
}

pub(super) async fn leases(
    State(st): State<St>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<LeaseGrant>> {
    let who = caller(&st, &headers).await?;
    let req: LeaseRequest = parse_json(&body)?;
    match who {
        Caller::Identity(id) => st.issue_for_identity(&id, req).map(Json),
        Caller::Service => {
            let r = check_service_request(&req).and_then(|()| st.issue(&req));
            st.metrics.lease(r.is_ok());
            r.map(Json)
        }
    }
}
