//! Admin API (behind `ADMIN_PANEL_TOKEN`) and the small `/admin` page.

use std::net::{IpAddr, SocketAddr};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use wavry_control_core::{hash_token, unix_now};

use crate::app::{ApiError, ApiResult, AppState, St, bad, client_ip, parse_json, rfc3339};

fn guard(st: &AppState, peer: SocketAddr, headers: &HeaderMap) -> ApiResult<IpAddr> {
    let ip = client_ip(st, peer, headers);
    if !st
        .auth_limiter
        .check(&format!("admin:{}", st.ip.rate_key(ip)))
    {
        st.count(&st.metrics.rate_limited);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
        ));
    }
    st.admin
        .check(headers)
        .map(|()| ip)
        .map_err(|r| ApiError::new(StatusCode::UNAUTHORIZED, r.message(ip)))
}

async fn audit(
    st: &AppState,
    action: &str,
    target_type: &str,
    target: &str,
    outcome: &str,
    ip: IpAddr,
    details: Option<String>,
) -> ApiResult<()> {
    let entry = wavry_control_core::AuditEntry {
        action,
        target_type,
        target,
        outcome,
        ip,
        details: details.as_deref(),
    };
    wavry_control_core::write_audit(&st.db, entry).await?;
    Ok(())
}

async fn count(st: &AppState, sql: &str, now: Option<i64>) -> ApiResult<i64> {
    let q = sqlx::query(sql);
    let q = if let Some(n) = now { q.bind(n) } else { q };
    Ok(q.fetch_one(&st.db).await?.try_get::<i64, _>(0)?)
}

async fn audit_rows(st: &AppState, limit: i64) -> ApiResult<Vec<Value>> {
    let rows = sqlx::query("SELECT id, action, target_type, target_id, outcome, actor_ip_hash, details, created_at FROM admin_audit_log ORDER BY created_at DESC, id LIMIT $1")
        .bind(limit)
        .fetch_all(&st.db)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<String, _>(0)?, "action": r.try_get::<String, _>(1)?, "target_type": r.try_get::<String, _>(2)?,
                "target_id": r.try_get::<Option<String>, _>(3)?, "outcome": r.try_get::<String, _>(4)?,
                "actor_ip_hash": r.try_get::<String, _>(5)?, "details": r.try_get::<Option<String>, _>(6)?,
                "created_at": rfc3339(r.try_get(7)?),
            }))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// `GET /admin/api/overview`. Sessions are listed by their stored id (`h1:` hash), which
/// `/admin/api/sessions/revoke` accepts as is.
pub(crate) async fn overview(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    guard(&st, peer, &headers)?;
    let now = unix_now();
    let users_total = count(&st, "SELECT COUNT(*) FROM users", None).await?;
    let sessions_total = count(&st, "SELECT COUNT(*) FROM sessions", None).await?;
    let sessions_active = count(
        &st,
        "SELECT COUNT(*) FROM sessions WHERE expires_at > $1",
        Some(now),
    )
    .await?;
    let users = sqlx::query("SELECT id, email, username, display_name, created_at, totp_secret IS NOT NULL FROM users ORDER BY created_at DESC, id LIMIT 20")
        .fetch_all(&st.db)
        .await?;
    let mut recent_users = Vec::new();
    for r in &users {
        recent_users.push(json!({
            "id": r.try_get::<String, _>(0)?, "email": r.try_get::<String, _>(1)?, "username": r.try_get::<String, _>(2)?,
            "display_name": r.try_get::<String, _>(3)?, "created_at": rfc3339(r.try_get(4)?),
            "totp_enabled": r.try_get::<bool, _>(5).or_else(|_| r.try_get::<i64, _>(5).map(|v| v != 0))?,
        }));
    }
    let sessions = sqlx::query("SELECT token_hash, user_id, expires_at, ip_address, created_at FROM sessions ORDER BY created_at DESC, token_hash LIMIT 20").fetch_all(&st.db).await?;
    let mut recent_sessions = Vec::new();
    for r in &sessions {
        recent_sessions.push(json!({
            "id": r.try_get::<String, _>(0)?, "user_id": r.try_get::<String, _>(1)?, "expires_at": rfc3339(r.try_get(2)?),
            "ip_address": r.try_get::<Option<String>, _>(3)?, "created_at": rfc3339(r.try_get(4)?),
        }));
    }
    let bans = sqlx::query("SELECT user_id, reason, banned_at, expires_at FROM user_bans WHERE expires_at IS NULL OR expires_at > $1 ORDER BY banned_at DESC")
        .bind(now)
        .fetch_all(&st.db)
        .await?;
    let mut active_bans = Vec::new();
    for r in &bans {
        active_bans.push(json!({
            "user_id": r.try_get::<String, _>(0)?, "reason": r.try_get::<Option<String>, _>(1)?,
            "banned_at": rfc3339(r.try_get(2)?), "expires_at": r.try_get::<Option<i64>, _>(3)?.map(rfc3339),
        }));
    }
    Ok(Json(json!({
        "users_total": users_total, "sessions_total": sessions_total, "sessions_active": sessions_active,
        "ws_connections": st.hub.connections(),
        "recent_users": recent_users, "recent_sessions": recent_sessions, "active_bans": active_bans,
        "recent_admin_events": audit_rows(&st, 50).await?,
    })))
}

/// `GET /admin/api/audit`: last 200 audit rows.
pub(crate) async fn audit_list(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    guard(&st, peer, &headers)?;
    Ok(Json(Value::Array(audit_rows(&st, 200).await?)))
}

#[derive(Deserialize)]
pub(crate) struct RevokeReq {
    token: String,
}

/// `POST /admin/api/sessions/revoke {token}`: a raw session token or its `h1:` id.
pub(crate) async fn revoke(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = guard(&st, peer, &headers)?;
    let req: RevokeReq = parse_json(&body)?;
    let t = req.token.trim();
    let h = if t.starts_with("h1:") && t.len() == 67 {
        t.to_owned()
    } else if wavry_control_core::token_syntax_ok(t) {
        hash_token(t)
    } else {
        return Err(bad("invalid token"));
    };
    let n = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(&h)
        .execute(&st.db)
        .await?
        .rows_affected();
    let kicked = st.kick_session(&h, "session revoked").await;
    audit(
        &st,
        "revoke_session",
        "session",
        &h,
        if n > 0 { "success" } else { "not_found" },
        ip,
        None,
    )
    .await?;
    Ok(Json(
        json!({ "revoked": n > 0, "connections_closed": kicked }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct BanReq {
    user_id: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    duration_hours: Option<u32>,
}

/// `POST /admin/api/ban`: records the ban, deletes the user's sessions and closes their live
/// WebSockets.
pub(crate) async fn ban(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = guard(&st, peer, &headers)?;
    let req: BanReq = parse_json(&body)?;
    let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
        .bind(&req.user_id)
        .fetch_optional(&st.db)
        .await?
        .is_some();
    if !exists {
        audit(&st, "ban_user", "user", &req.user_id, "not_found", ip, None).await?;
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown user"));
    }
    let reason = req
        .reason
        .unwrap_or_else(|| "banned by administrator".into())
        .chars()
        .take(256)
        .collect::<String>();
    let now = unix_now();
    let expires = req.duration_hours.map(|h| now + i64::from(h) * 3600);
    sqlx::query("INSERT INTO user_bans (user_id, reason, banned_at, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET reason = $2, banned_at = $3, expires_at = $4")
        .bind(&req.user_id)
        .bind(&reason)
        .bind(now)
        .bind(expires)
        .execute(&st.db)
        .await?;
    let sessions = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(&req.user_id)
        .execute(&st.db)
        .await?
        .rows_affected();
    let kicked = st
        .kick_user(&req.user_id, &format!("Account suspended: {reason}"))
        .await;
    audit(
        &st,
        "ban_user",
        "user",
        &req.user_id,
        "success",
        ip,
        Some(reason),
    )
    .await?;
    Ok(Json(
        json!({ "success": true, "sessions_revoked": sessions, "connections_closed": kicked }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct UnbanReq {
    user_id: String,
}

/// `POST /admin/api/unban`.
pub(crate) async fn unban(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = guard(&st, peer, &headers)?;
    let req: UnbanReq = parse_json(&body)?;
    let n = sqlx::query("DELETE FROM user_bans WHERE user_id = $1")
        .bind(&req.user_id)
        .execute(&st.db)
        .await?
        .rows_affected();
    audit(
        &st,
        "unban_user",
        "user",
        &req.user_id,
        if n > 0 { "success" } else { "not_found" },
        ip,
        None,
    )
    .await?;
    Ok(Json(json!({ "success": true, "removed": n > 0 })))
}

/// `GET /admin`: a small page; the token is typed by the operator and kept in the tab's
/// `sessionStorage`, data comes from the admin API.
pub(crate) async fn page() -> Response {
    (
        [(header::CONTENT_SECURITY_POLICY, "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"), (header::X_FRAME_OPTIONS, "DENY")],
        Html(ADMIN_HTML),
    )
        .into_response()
}

const ADMIN_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Wavry Gateway Admin</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}code{font-size:12px}</style>
</head><body>
<h1>Wavry Gateway Admin</h1>
<form id="f"><input id="t" type="password" placeholder="ADMIN_PANEL_TOKEN" size="48"> <button>Load</button></form>
<div id="out"></div>
<script>
const $=s=>document.querySelector(s);
const esc=v=>String(v??'').replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const table=(rows,cols)=>'<table><tr>'+cols.map(c=>'<th>'+esc(c)+'</th>').join('')+'</tr>'+rows.map(r=>'<tr>'+cols.map(c=>'<td><code>'+esc(r[c])+'</code></td>').join('')+'</tr>').join('')+'</table>';
async function api(path,body){const t=sessionStorage.getItem('wavry_admin')||'';
 const r=await fetch(path,{method:body?'POST':'GET',headers:{'X-Admin-Token':t,'Content-Type':'application/json'},body:body?JSON.stringify(body):undefined});
 if(!r.ok)throw new Error((await r.json().catch(()=>({}))).error||r.status);return r.json();}
async function load(){try{const o=await api('/admin/api/overview');
 $('#out').innerHTML='<p>users '+o.users_total+' · sessions '+o.sessions_active+'/'+o.sessions_total+' · websockets '+o.ws_connections+'</p>'
 +'<h2>Recent users</h2>'+table(o.recent_users,['id','username','email','created_at','totp_enabled'])
 +'<h2>Recent sessions</h2>'+table(o.recent_sessions,['id','user_id','ip_address','expires_at'])
 +'<h2>Active bans</h2>'+table(o.active_bans,['user_id','reason','banned_at','expires_at'])
 +'<h2>Admin events</h2>'+table(o.recent_admin_events,['created_at','action','target_id','outcome']);}
 catch(e){$('#out').textContent='Error: '+e.message;}}
$('#f').onsubmit=e=>{e.preventDefault();sessionStorage.setItem('wavry_admin',$('#t').value);load();};
if(sessionStorage.getItem('wavry_admin'))load();
</script></body></html>"#;
