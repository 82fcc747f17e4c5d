//! Progressive attempt throttling for secrets that can be guessed (passwords, TOTP codes),
//! kept in `login_failures` so every gateway sharing the database sees the same counts.
//!
//! An attempt is reserved with a compare-and-set *before* the slow check, so parallel
//! requests cannot get more guesses than allowed; it stays counted when the guess was wrong
//! and is handed back (or the key cleared) only by the actor it belongs to: a correct
//! password refunds its own IP reservation (it never resets the IP's count) and clears the
//! account's count. Nothing locks: after the free attempts ([`FREE_ATTEMPTS`] per account,
//! more per address where many users may share one) the next attempt must wait a delay that
//! doubles per attempt up to [`MAX_DELAY_SECS`]; counts are forgotten after
//! [`FORGET_AFTER_SECS`] without attempts.

use sqlx::Row;
use wavry_control_core::Pool;

/// Attempts allowed without any delay, per account.
pub(crate) const FREE_ATTEMPTS: i64 = 5;
/// Attempts allowed without any delay, per client address (`WAVRY_LOGIN_IP_FREE_ATTEMPTS`):
/// several users behind one NAT log in at once, and in-flight attempts count.
pub(crate) const IP_FREE_ATTEMPTS: i64 = 20;
/// Delay before the first attempt past the free ones.
pub(crate) const FIRST_DELAY_SECS: i64 = 30;
/// Longest delay between attempts.
pub(crate) const MAX_DELAY_SECS: i64 = 15 * 60;
/// A key with no attempt for this long starts again from zero.
pub(crate) const FORGET_AFTER_SECS: i64 = 3600;
/// Compare-and-set retries before a contended reservation is refused.
const CAS_TRIES: usize = 16;

/// Seconds to wait after the last attempt once `count` attempts were counted, `free` of them
/// without delay.
pub(crate) fn delay_after(count: i64, free: i64) -> i64 {
    if count < free {
        return 0;
    }
    let doublings = u32::try_from((count - free).clamp(0, 16)).unwrap_or(16);
    FIRST_DELAY_SECS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_DELAY_SECS)
}

/// Outcome of [`reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// The attempt is counted; go on with the check.
    Granted,
    /// Too early: retry after this many seconds.
    Throttled(i64),
}

/// Counts one attempt for `key` if it is allowed now (atomically with the check), `free`
/// attempts being allowed without delay.
pub(crate) async fn reserve(
    db: &Pool,
    key: &str,
    free: i64,
    now: i64,
) -> Result<Reservation, sqlx::Error> {
    for _ in 0..CAS_TRIES {
        let row =
            sqlx::query("SELECT count, last_failure FROM login_failures WHERE identifier = $1")
                .bind(key)
                .fetch_optional(db)
                .await?;
        let Some(row) = row else {
            let n = sqlx::query(
                "INSERT INTO login_failures (identifier, count, last_failure) VALUES ($1, 1, $2) ON CONFLICT (identifier) DO NOTHING",
            )
            .bind(key)
            .bind(now)
            .execute(db)
            .await?
            .rows_affected();
            if n == 1 {
                return Ok(Reservation::Granted);
            }
            continue;
        };
        let (count, last): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let effective = if now - last >= FORGET_AFTER_SECS {
            0
        } else {
            count
        };
        let wait = last + delay_after(effective, free) - now;
        if effective >= free && wait > 0 {
            return Ok(Reservation::Throttled(wait));
        }
        let n = sqlx::query(
            "UPDATE login_failures SET count = $1, last_failure = $2 WHERE identifier = $3 AND count = $4 AND last_failure = $5",
        )
        .bind(effective + 1)
        .bind(now)
        .bind(key)
        .bind(count)
        .bind(last)
        .execute(db)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(Reservation::Granted);
        }
    }
    // Heavy contention on one key: refuse rather than let the attempt through uncounted.
    Ok(Reservation::Throttled(1))
}

/// Hands back one reserved attempt (the check was not made, or it succeeded).
pub(crate) async fn refund(db: &Pool, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE login_failures SET count = CASE WHEN count > 0 THEN count - 1 ELSE 0 END WHERE identifier = $1",
    )
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets every attempt for `key` (the owner proved the secret).
pub(crate) async fn clear(db: &Pool, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE identifier = $1")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        assert_eq!(delay_after(0, FREE_ATTEMPTS), 0);
        assert_eq!(delay_after(FREE_ATTEMPTS - 1, FREE_ATTEMPTS), 0);
        assert_eq!(delay_after(FREE_ATTEMPTS, FREE_ATTEMPTS), FIRST_DELAY_SECS);
        assert_eq!(
            delay_after(FREE_ATTEMPTS + 1, FREE_ATTEMPTS),
            2 * FIRST_DELAY_SECS
        );
        assert_eq!(delay_after(1000, FREE_ATTEMPTS), MAX_DELAY_SECS);
        assert_eq!(delay_after(IP_FREE_ATTEMPTS - 1, IP_FREE_ATTEMPTS), 0);
    }
}
