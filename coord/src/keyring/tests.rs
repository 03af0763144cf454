use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;
use crate::Error;

const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const KEY: &str = "/config/db/password";
const CANARY: &[u8] = b"canary-hunter2-7f3a";

fn ring(text: &str) -> KeyRing {
    KeyRing::parse(text).unwrap()
}

fn old() -> KeyRing {
    ring(&format!("k1 {K1}"))
}

fn rotated() -> KeyRing {
    ring(&format!("k2 {K2}\nk1 {K1}"))
}

/// The envelope as JSON, to change a field of it as someone with write access to etcd would.
fn edit(
    stored: &[u8],
    change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(stored).unwrap();
    change(value.as_object_mut().unwrap());
    serde_json::to_vec(&value).unwrap()
}

fn secret_error(
    result: crate::Result<zeroize::Zeroizing<Vec<u8>>>,
) -> (String, Option<String>, String) {
    match result {
        Err(Error::Secret {
            key,
            key_id,
            reason,
        }) => (key, key_id, reason),
        other => panic!(
            "expected Error::Secret, got {:?}",
            other.map(|_| "plaintext")
        ),
    }
}

#[test]
fn a_sealed_value_opens_to_the_plaintext_and_shows_nothing_of_it() {
    let ring = old();
    let stored = ring.seal(KEY, CANARY).unwrap();
    assert_eq!(ring.open(KEY, &stored).unwrap().as_slice(), CANARY);
    let text = String::from_utf8(stored.clone()).unwrap();
    assert!(!text.contains("canary"), "{text}");
    assert!(!text.contains(&STANDARD.encode(CANARY)), "{text}");
    assert!(is_sealed(&stored));
    assert_eq!(key_id_of(&stored).as_deref(), Some("k1"));
    assert!(text.contains(ENVELOPE_FORMAT), "{text}");
    // A fresh nonce each time: equal values are not equal on disk.
    assert_ne!(stored, ring.seal(KEY, CANARY).unwrap());
}

#[test]
fn an_envelope_copied_to_another_key_does_not_open_there() {
    let ring = old();
    let stored = ring.seal(KEY, CANARY).unwrap();
    let (key, key_id, reason) = secret_error(ring.open("/config/db/user", &stored));
    assert_eq!(key, "/config/db/user");
    assert_eq!(key_id.as_deref(), Some("k1"));
    assert!(reason.contains("does not open"), "{reason}");
    // Nor under the same name in another prefix.
    assert!(ring.open("/config/other/password", &stored).is_err());
}

#[test]
fn a_changed_envelope_does_not_open() {
    let ring = rotated();
    let stored = ring.seal(KEY, CANARY).unwrap();
    let flip_ct = edit(&stored, |e| {
        let mut ct = STANDARD.decode(e["ct"].as_str().unwrap()).unwrap();
        ct[0] ^= 1;
        e["ct"] = STANDARD.encode(ct).into();
    });
    let truncated = edit(&stored, |e| {
        let ct = STANDARD.decode(e["ct"].as_str().unwrap()).unwrap();
        e["ct"] = STANDARD.encode(&ct[..ct.len() - 1]).into();
    });
    let other_nonce = edit(&stored, |e| e["nonce"] = STANDARD.encode([7u8; 24]).into());
    let short_nonce = edit(&stored, |e| e["nonce"] = STANDARD.encode([7u8; 12]).into());
    // Another key of the ring named instead: the tag was made with k2, not k1.
    let other_kid = edit(&stored, |e| e["kid"] = "k1".into());
    let not_base64 = edit(&stored, |e| e["ct"] = "!!".into());
    for (what, changed) in [
        ("ciphertext bit", flip_ct),
        ("truncated", truncated),
        ("nonce", other_nonce),
        ("short nonce", short_nonce),
        ("key id", other_kid),
        ("not base64", not_base64),
    ] {
        let (key, _, _) = secret_error(ring.open(KEY, &changed));
        assert_eq!(key, KEY, "{what}");
    }
    let later = edit(&stored, |e| e["version"] = 2.into());
    let (_, key_id, reason) = secret_error(ring.open(KEY, &later));
    assert_eq!(key_id.as_deref(), Some("k2"));
    assert!(reason.contains("version 2"), "{reason}");
    // Extra fields are not an envelope of ours.
    let extra = edit(&stored, |e| {
        e.insert("plaintext".into(), "x".into());
    });
    assert!(!is_sealed(&extra));
}

#[test]
fn a_plain_value_where_a_secret_belongs_is_refused_not_passed_through() {
    let (key, key_id, reason) = secret_error(old().open(KEY, b"\"hunter2\""));
    assert_eq!((key.as_str(), key_id), (KEY, None));
    assert!(reason.contains("not sealed"), "{reason}");
    assert!(!reason.contains("hunter2"), "{reason}");
    assert!(!is_sealed(b"\"hunter2\""));
    assert_eq!(key_id_of(b"{\"format\":\"other\"}"), None);
}

#[test]
fn rotation_reads_old_values_and_seals_new_ones_with_the_newest_key() {
    let sealed_before = old().seal(KEY, CANARY).unwrap();
    let new = rotated();
    assert_eq!(new.newest(), "k2");
    assert_eq!(new.open(KEY, &sealed_before).unwrap().as_slice(), CANARY);
    let sealed_after = new.seal(KEY, CANARY).unwrap();
    assert_eq!(key_id_of(&sealed_after).as_deref(), Some("k2"));
    // A process that has only the old key cannot read the new value, and says which key it
    // lacks.
    let (_, key_id, reason) = secret_error(old().open(KEY, &sealed_after));
    assert_eq!(key_id.as_deref(), Some("k2"));
    assert!(
        reason.contains("no key `k2`") && reason.contains("k1"),
        "{reason}"
    );
    // Only the new key: old values no longer open.
    let only_new = ring(&format!("k2 {K2}"));
    assert!(only_new.open(KEY, &sealed_before).is_err());
}

#[test]
fn the_same_id_with_another_key_does_not_open() {
    let stored = old().seal(KEY, CANARY).unwrap();
    let impostor = ring(&format!("k1 {K2}"));
    let (_, key_id, _) = secret_error(impostor.open(KEY, &stored));
    assert_eq!(key_id.as_deref(), Some("k1"));
}

#[test]
fn no_error_or_debug_output_shows_key_material_or_plaintext() {
    let ring = rotated();
    let debug = format!("{ring:?}");
    assert!(debug.contains("k2") && debug.contains("k1"), "{debug}");
    assert!(!debug.contains(K1) && !debug.contains(K2), "{debug}");
    let stored = ring.seal(KEY, CANARY).unwrap();
    let errors = [
        ring.open("/elsewhere", &stored).unwrap_err(),
        old().open(KEY, &stored).unwrap_err(),
        KeyRing::parse(&format!("k1 {K1} extra")).unwrap_err(),
        KeyRing::parse(&format!("k1 {}", &K1[..20])).unwrap_err(),
        KeyRing::parse(&format!("k1 {}", STANDARD.encode([1u8; 31]))).unwrap_err(),
    ];
    for error in errors {
        let text = error.to_string();
        assert!(!text.contains("canary"), "{text}");
        assert!(!text.contains(K1) && !text.contains(&K1[..20]), "{text}");
        assert!(!text.contains(K2), "{text}");
    }
}

#[test]
fn a_malformed_key_ring_is_refused_naming_the_line() {
    let refused = |text: &str| match KeyRing::parse(text) {
        Err(Error::InvalidArgument { field, reason }) => {
            assert_eq!(field, "secret_keys");
            reason
        }
        other => panic!("expected InvalidArgument for {text:?}, got {other:?}"),
    };
    assert!(refused("").contains("no key"));
    assert!(refused("# only a comment\n\n").contains("no key"));
    assert!(refused(&format!("k1 {K1}\nk2")).contains("line 2"));
    assert!(refused("k1 not-base64").contains("not base64"));
    assert!(refused(&format!("k1 {}", STANDARD.encode([1u8; 16]))).contains("16 bytes"));
    assert!(refused(&format!("k1 {}", STANDARD.encode([1u8; 33]))).contains("33 bytes"));
    assert!(refused(&format!("k1 {K1}; k1 {K2}")).contains("twice"));
    assert!(refused(&format!("k/1 {K1}")).contains("A-Z a-z 0-9"));
    // Comments, blank lines and `;` between keys are fine.
    let ring = ring(&format!("# keys\n\nk2 {K2} ; k1 {K1}\n"));
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
}

#[test]
fn a_key_file_must_be_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.keys");
    std::fs::write(&path, format!("k2 {K2}\nk1 {K1}\n")).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let error = KeyFile::new(&path).key_ring().unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{mode:o}: {error}");
        assert!(!error.contains(K1), "{error}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ring = KeyFile::new(&path).key_ring().unwrap();
    assert_eq!(ring.newest(), "k2");
    let missing = KeyFile::new(dir.path().join("none"))
        .key_ring()
        .unwrap_err();
    assert!(
        missing.to_string().contains("cannot read key file"),
        "{missing}"
    );
    // A malformed file is named, its keys are not.
    std::fs::write(&path, format!("k1 {}", &K1[..10])).unwrap();
    let malformed = KeyFile::new(&path).key_ring().unwrap_err().to_string();
    assert!(
        malformed.contains("secret.keys") && malformed.contains("line 1"),
        "{malformed}"
    );
}

#[test]
fn keys_from_an_environment_variable() {
    // A name no other test uses: the environment is shared by the test threads.
    let var = "COORD_TEST_KEYRING_ENV_7F3A";
    assert!(
        KeyEnv::new(var)
            .key_ring()
            .unwrap_err()
            .to_string()
            .contains("not set")
    );
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var(var, format!("k2 {K2};k1 {K1}")) };
    let ring = KeyEnv::new(var).key_ring().unwrap();
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
    unsafe { std::env::remove_var(var) };
}

#[test]
fn a_key_line_in_the_wrong_order_never_shows_the_key() {
    // `BASE64 ID`: the key stands where the id belongs.
    let error = KeyRing::parse(&format!("{K1} k1")).unwrap_err().to_string();
    assert!(!error.contains(K1) && !error.contains(&K1[..20]), "{error}");
    assert!(
        error.contains("line 1") && error.contains("come first"),
        "{error}"
    );
}

#[test]
fn a_key_file_reached_through_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.keys");
    std::fs::write(&real, format!("k1 {K1}\n")).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link.keys");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let error = KeyFile::new(&link).key_ring().unwrap_err().to_string();
    assert!(error.contains("cannot read key file"), "{error}");
    assert!(KeyFile::new(&real).key_ring().is_ok());
}
