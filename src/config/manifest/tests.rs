//! Unit tests of loading manifests.

use super::*;
use serde_json::json;

#[test]
fn every_builtin_loads() {
    for (key, text) in BUILTIN {
        let m = Manifest::load(key, text, None).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(m.key, *key);
        assert!(!m.member_id_path().is_empty());
    }
    assert_eq!(BUILTIN.len(), 12);
}

#[test]
fn invalid_manifests_are_refused() {
    let rp = |parser: Value| {
        json!({"name": "x", "capabilities": {"syncedSegment": {"requestParser": parser}}})
            .to_string()
    };
    let base = json!({"environmentIdPath": "/e", "cohortIdPath": "/c", "cohortNamePath": "/n",
                      "memberArrayParser": {"memberIdPath": "/id"}});
    // No mode at all.
    assert!(Manifest::load("x", &rp(base.clone()), None).is_err());
    // Unknown field.
    let mut b = base.clone();
    b["memberArrayPath"] = json!("/m");
    b["memberArrayParser"]["booleanMembershipPath"] = json!("/v");
    assert!(Manifest::load("x", &rp(b.clone()), None).is_ok());
    b["surprise"] = json!(1);
    assert!(Manifest::load("x", &rp(b), None).is_err());
    // Not a pointer.
    let mut b = base.clone();
    b["addMemberArrayPath"] = json!("add");
    b["removeMemberArrayPath"] = json!("/remove");
    assert!(Manifest::load("x", &rp(b), None)
        .unwrap_err()
        .contains("addMemberArrayPath"));
    // Bad regex.
    let mut b = base;
    b["memberArrayPath"] = json!("/m");
    b["arrayInclusion"] = json!({"path": "/a", "matcher": "(("});
    assert!(Manifest::load("x", &rp(b), None).is_err());
    // No syncedSegment capability.
    assert!(Manifest::load("x", r#"{"name": "census"}"#, None).is_err());
    assert!(Manifest::load("x", "not json", None).is_err());
}
