//! The PASETO standard's v4.public vectors (4-S-1..4-S-3 must verify and re-sign byte for
//! byte; every 4-F-* must fail) through Wavry's lease signer and verifier.

use wavry_rift::{
    identity::IdentityKey,
    lease::{LeaseSigner, verify_raw},
};

fn vectors() -> Vec<serde_json::Value> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/paseto-v4.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["tests"].as_array().unwrap().clone()
}

fn s<'a>(t: &'a serde_json::Value, k: &str) -> &'a str {
    t[k].as_str().unwrap_or("")
}

fn key32(hex_str: &str) -> [u8; 32] {
    hex::decode(hex_str).unwrap()[..32].try_into().unwrap()
}

#[test]
fn v4_public_success_vectors_verify_and_resign_identically() {
    let mut seen = 0;
    for t in vectors()
        .iter()
        .filter(|t| s(t, "name").starts_with("4-S-"))
    {
        let pk = key32(s(t, "public-key"));
        let payload = verify_raw(
            &pk,
            s(t, "token"),
            s(t, "footer").as_bytes(),
            s(t, "implicit-assertion").as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", s(t, "name")));
        assert_eq!(payload, s(t, "payload").as_bytes(), "{}", s(t, "name"));
        let signer = LeaseSigner::new(
            &IdentityKey::from_seed(key32(s(t, "secret-key-seed"))).unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(signer.public_key(), &pk);
        let token = signer
            .sign_raw(
                s(t, "payload").as_bytes(),
                s(t, "footer").as_bytes(),
                s(t, "implicit-assertion").as_bytes(),
            )
            .unwrap();
        assert_eq!(token, s(t, "token"), "{}", s(t, "name"));
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn v4_failure_vectors_are_refused() {
    let pk = key32(s(&vectors()[0], "key")); // any key: none of these may verify
    let real_pk = key32(s(
        vectors().iter().find(|t| s(t, "name") == "4-S-1").unwrap(),
        "public-key",
    ));
    let mut seen = 0;
    for t in vectors()
        .iter()
        .filter(|t| s(t, "name").starts_with("4-F-"))
    {
        for key in [&pk, &real_pk] {
            let r = verify_raw(
                key,
                s(t, "token"),
                s(t, "footer").as_bytes(),
                s(t, "implicit-assertion").as_bytes(),
            );
            assert!(r.is_err(), "{} verified", s(t, "name"));
        }
        seen += 1;
    }
    assert!(seen >= 3);
}

#[test]
fn wrong_footer_or_assertion_is_refused() {
    let t = vectors()
        .into_iter()
        .find(|t| s(t, "name") == "4-S-3")
        .unwrap();
    let pk = key32(s(&t, "public-key"));
    assert!(verify_raw(&pk, s(&t, "token"), s(&t, "footer").as_bytes(), b"{}").is_err());
    assert!(
        verify_raw(
            &pk,
            s(&t, "token"),
            b"x",
            s(&t, "implicit-assertion").as_bytes()
        )
        .is_err()
    );
}
