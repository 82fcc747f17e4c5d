//! Lease claim checks as a relay applies them: every refusal is a typed error.

use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use wavry_rift::{
    identity::IdentityKey,
    lease::{LeaseClaims, LeaseError, LeaseRole, LeaseSigner, LeaseVerifier},
};

struct Fixture {
    signer: LeaseSigner,
    now: OffsetDateTime,
    sid: Uuid,
}

impl Fixture {
    fn new() -> Self {
        let key = IdentityKey::from_seed([42; 32]).unwrap();
        Self {
            signer: LeaseSigner::new(&key, None).unwrap(),
            now: OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
            sid: Uuid::from_bytes([9; 16]),
        }
    }

    fn claims(&self) -> LeaseClaims {
        LeaseClaims {
            sub: "alice".into(),
            wavry_id: None,
            sid: self.sid,
            role: LeaseRole::Client,
            rid: "relay-1".into(),
            kid: Some(self.signer.key_id().to_owned()),
            jti: Some("t1".into()),
            iat: self.now,
            nbf: self.now - Duration::seconds(5),
            exp: self.now + Duration::seconds(900),
            slimit: Some(50_000),
            hlimit: Some(100_000),
        }
    }

    fn verifier(&self) -> LeaseVerifier {
        LeaseVerifier::new(
            *self.signer.public_key(),
            Some(self.signer.key_id().to_owned()),
            "relay-1",
        )
    }

    fn check(&self, c: &LeaseClaims, at: OffsetDateTime) -> Result<LeaseClaims, LeaseError> {
        let tok = self.signer.issue(c).unwrap();
        self.verifier()
            .verify(&tok, at, self.sid, LeaseRole::Client)
    }
}

#[test]
fn a_good_lease_verifies_with_its_claims() {
    let f = Fixture::new();
    let c = f.claims();
    assert_eq!(f.check(&c, f.now).unwrap(), c);
    // Within the 30 s skew on either side.
    f.check(&c, f.now - Duration::seconds(29)).unwrap();
    f.check(&c, c.exp + Duration::seconds(29)).unwrap();
}

#[test]
fn expired_and_future_leases_are_refused() {
    let f = Fixture::new();
    let c = f.claims();
    assert_eq!(
        f.check(&c, c.exp + Duration::seconds(31)),
        Err(LeaseError::Expired)
    );
    assert_eq!(
        f.check(&c, f.now - Duration::seconds(60)),
        Err(LeaseError::NotYetValid)
    );
    let mut long = f.claims();
    long.exp = f.now + Duration::hours(2);
    assert_eq!(f.check(&long, f.now), Err(LeaseError::TooFarInFuture));
}

#[test]
fn foreign_leases_are_refused() {
    let f = Fixture::new();
    let tok = f.signer.issue(&f.claims()).unwrap();
    let v = f.verifier();
    assert_eq!(
        v.verify(&tok, f.now, Uuid::from_bytes([8; 16]), LeaseRole::Client),
        Err(LeaseError::WrongSession)
    );
    assert_eq!(
        v.verify(&tok, f.now, f.sid, LeaseRole::Server),
        Err(LeaseError::WrongRole)
    );
    let other_relay = LeaseVerifier::new(*f.signer.public_key(), None, "relay-2");
    assert_eq!(
        other_relay.verify(&tok, f.now, f.sid, LeaseRole::Client),
        Err(LeaseError::WrongRelay)
    );
    let other_kid = LeaseVerifier::new(*f.signer.public_key(), Some("k0".into()), "relay-1");
    assert_eq!(
        other_kid.verify(&tok, f.now, f.sid, LeaseRole::Client),
        Err(LeaseError::WrongKeyId)
    );
    // Signed by someone else.
    let mallory = LeaseSigner::new(&IdentityKey::from_seed([7; 32]).unwrap(), None).unwrap();
    let forged = mallory.issue(&f.claims()).unwrap();
    assert_eq!(
        v.verify(&forged, f.now, f.sid, LeaseRole::Client),
        Err(LeaseError::BadSignature)
    );
}

#[test]
fn malformed_tokens_are_typed_errors() {
    let f = Fixture::new();
    let v = f.verifier();
    for bad in [
        "",
        "v4.public.",
        "v4.local.AAAA",
        "not a token",
        &"v4.public.".repeat(1000),
    ] {
        let e = v.verify(bad, f.now, f.sid, LeaseRole::Client).unwrap_err();
        assert!(
            matches!(e, LeaseError::Malformed(_) | LeaseError::BadSignature),
            "{bad:.20}: {e:?}"
        );
    }
    let not_claims = f.signer.sign_raw(b"{\"sub\":\"x\"}", b"", b"").unwrap();
    assert!(matches!(
        v.verify(&not_claims, f.now, f.sid, LeaseRole::Client),
        Err(LeaseError::BadClaims(_))
    ));
    let mut empty_sub = f.claims();
    empty_sub.sub.clear();
    assert!(matches!(
        f.check(&empty_sub, f.now),
        Err(LeaseError::BadClaims(_))
    ));
}
