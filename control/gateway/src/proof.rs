//! Proof of possession for the public key an account registers: the gateway hands out a
//! challenge sealed with the shared at-rest key (so any gateway of a cluster can check it,
//! no state kept), and registration must carry the key's Ed25519 signature over
//! `"wavry-gateway-register-v1\n{wavry_id}\n{challenge}"`. Without it anyone could claim
//! another's Wavry ID.

use wavry_rift::identity::WavryId;

use crate::totp::TotpKey;

/// Associated data binding sealed challenges to this use.
const AAD: &str = "wavry-gateway-register-challenge-v1";
/// How long a challenge is good for.
pub(crate) const CHALLENGE_TTL_SECS: i64 = 300;

/// A public key given as 64 hex characters or as a 43-character Wavry ID.
pub(crate) fn parse_public_key(k: &str) -> Option<WavryId> {
    let k = k.trim();
    if k.len() == 64 {
        let b: [u8; 32] = hex::decode(k).ok()?.try_into().ok()?;
        return Some(WavryId::from_bytes(b));
    }
    k.parse().ok()
}

/// What the key signs.
pub(crate) fn message(wid: &WavryId, challenge: &str) -> String {
    format!("wavry-gateway-register-v1\n{wid}\n{challenge}")
}

/// A fresh challenge for `wid`, valid [`CHALLENGE_TTL_SECS`] from `now`.
pub(crate) fn new_challenge(key: &TotpKey, wid: &WavryId, now: i64) -> anyhow::Result<String> {
    key.seal(AAD, &format!("{wid}\n{}", now + CHALLENGE_TTL_SECS))
}

/// Whether `challenge` was issued by a gateway of this cluster for `wid`, is unexpired, and
/// `signature_hex` is `wid`'s signature over [`message`].
pub(crate) fn verify(
    key: &TotpKey,
    wid: &WavryId,
    challenge: &str,
    signature_hex: &str,
    now: i64,
) -> bool {
    let Ok(plain) = key.open(AAD, challenge.trim()) else {
        return false;
    };
    let Some((id, exp)) = plain.split_once('\n') else {
        return false;
    };
    id == wid.to_string()
        && exp.parse::<i64>().is_ok_and(|e| e > now)
        && hex::decode(signature_hex.trim()).is_ok_and(|sig| {
            wid.verify(message(wid, challenge.trim()).as_bytes(), &sig)
                .is_ok()
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wavry_rift::identity::IdentityKey;

    #[test]
    fn challenges_prove_possession() {
        let dir = std::env::temp_dir().join(format!("wavry-proof-{}", std::process::id()));
        let key = TotpKey::load(&dir).unwrap();
        let (owner, other) = (
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
        );
        let wid = owner.id();
        assert_eq!(
            parse_public_key(&wid.to_string()),
            Some(wid),
            "Wavry ID form"
        );
        assert_eq!(
            parse_public_key(&hex::encode(wid.as_bytes())),
            Some(wid),
            "hex form"
        );
        let ch = new_challenge(&key, &wid, 1000).unwrap();
        let sig = |k: &IdentityKey| hex::encode(k.sign(message(&wid, &ch).as_bytes()));
        assert!(verify(&key, &wid, &ch, &sig(&owner), 1000));
        assert!(
            !verify(&key, &wid, &ch, &sig(&other), 1000),
            "someone else's signature"
        );
        assert!(
            !verify(&key, &other.id(), &ch, &sig(&other), 1000),
            "another key's challenge"
        );
        assert!(
            !verify(&key, &wid, &ch, &sig(&owner), 1000 + CHALLENGE_TTL_SECS),
            "expired"
        );
        assert!(
            !verify(&key, &wid, "enc:v2:AAAA", &sig(&owner), 1000),
            "forged challenge"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
