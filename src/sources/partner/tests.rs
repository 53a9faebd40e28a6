//! Unit tests of reading partner bodies with their manifests.

use super::*;
use crate::config::manifest::BUILTIN;
use crate::sources::test_support::verified;
use serde_json::json;

fn builtin(key: &str) -> Manifest {
    let (_, text) = BUILTIN.iter().find(|(k, _)| *k == key).unwrap();
    Manifest::load(key, text, None).unwrap()
}

fn changes(p: &Push) -> Vec<(&str, bool)> {
    p.changes
        .iter()
        .map(|c| (c.key.as_str(), c.include))
        .collect()
}

fn parse(m: &Manifest, body: Value) -> Result<PartnerRequest, ParseError> {
    let body = serde_json::to_vec(&body).unwrap();
    super::parse(m, &verified(&body), 42)
}

#[test]
fn a_present_false_removes_and_is_not_missing() {
    let m = builtin("segment-audiences");
    let r = parse(
        &m,
        json!({"environmentId": "env1", "contextKind": "user", "batch": [
            {"userId": "u1", "cohortId": "c1", "cohortName": "C", "value": false},
            {"userId": "u2", "cohortId": "c1", "cohortName": "C", "value": true},
            {"userId": 7, "cohortId": "c1", "cohortName": "C", "value": 0},
        ]}),
    )
    .unwrap();
    assert_eq!(r.environment_id, "env1");
    assert_eq!(r.parsed.pushes.len(), 1);
    assert_eq!(
        changes(&r.parsed.pushes[0]),
        vec![("u1", false), ("u2", true), ("7", false)]
    );
    assert!(r.parsed.pushes[0]
        .changes
        .iter()
        .all(|c| c.version.ms() == 42));
}

#[test]
fn empty_string_and_zero_are_values_for_required_fields() {
    let m = builtin("rudderstack");
    // cohortName "" and environmentId 0 are present: no "missing" error.
    let r = parse(
        &m,
        json!({"environmentId": 0, "cohortId": 5, "cohortName": "", "listData": {"add": [{"id": "a"}]}}),
    )
    .unwrap();
    assert_eq!(r.environment_id, "0");
    assert_eq!(r.parsed.pushes[0].cohort_id, "5");
    assert_eq!(r.parsed.pushes[0].cohort_name, None);
}

#[test]
fn missing_membership_value_names_its_pointer() {
    let m = builtin("amplitude");
    let e = parse(
        &m,
        json!({"environmentId": "e", "batch": [{"userId": "u", "cohortId": "c", "cohortName": "n", "value": null}]}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"/batch/0/value\""), "{e}");
}

#[test]
fn array_inclusion_adds_on_match_and_removes_otherwise() {
    let m = builtin("hightouch");
    let body = |action: &str| {
        json!({"environmentId": "e", "cohortId": "c", "cohortName": "n", "action": action,
               "members": [{"integration_distinct_id": "a"}, {"integration_distinct_id": 12}, {"other": 1}]})
    };
    let add = parse(&m, body("add")).unwrap();
    assert_eq!(
        changes(&add.parsed.pushes[0]),
        vec![("a", true), ("12", true)]
    );
    assert_eq!(add.parsed.skipped_without_key, 1);
    let remove = parse(&m, body("remove")).unwrap();
    assert_eq!(
        changes(&remove.parsed.pushes[0]),
        vec![("a", false), ("12", false)]
    );
    // "added" does not match ^add$.
    let other = parse(&m, body("added")).unwrap();
    assert!(other.parsed.pushes[0].changes.iter().all(|c| !c.include));
}

#[test]
fn tealium_as_written_never_removes_and_an_override_fixes_it() {
    let (_, text) = BUILTIN
        .iter()
        .find(|(k, _)| *k == "tealium-synced-segments")
        .unwrap();
    let body = json!({"action": "remove_member", "parameters": {"tealium_project_id": "e",
        "tealium_cohort_id": "c", "tealium_cohort_name": "n", "members": [{"member_id": "m1"}]}});
    let as_written = Manifest::load("tealium-synced-segments", text, None).unwrap();
    assert_eq!(
        changes(&parse(&as_written, body.clone()).unwrap().parsed.pushes[0]),
        vec![("m1", true)]
    );
    let fixed = Manifest::load("tealium-synced-segments", text, Some("^add_member$")).unwrap();
    assert_eq!(
        changes(&parse(&fixed, body).unwrap().parsed.pushes[0]),
        vec![("m1", false)]
    );
}

#[test]
fn add_and_remove_arrays_adds_first() {
    let m = builtin("heap-inbound");
    let r = parse(
        &m,
        json!({"parameters": {"environment_id": "e"}, "heap": {"data": {"segment": {"id": 99, "name": "S"},
            "add": [{"id": "a"}, {"id": "b"}], "remove": [{"id": "b"}]}}}),
    )
    .unwrap();
    assert_eq!(
        changes(&r.parsed.pushes[0]),
        vec![("a", true), ("b", true), ("b", false)]
    );
    assert_eq!(r.parsed.pushes[0].cohort_id, "99");
    // One array alone is enough.
    let only_remove = parse(
        &m,
        json!({"parameters": {"environment_id": "e"}, "heap": {"data": {"segment": {"id": 1, "name": "S"},
            "remove": [{"id": "b"}]}}}),
    )
    .unwrap();
    assert_eq!(changes(&only_remove.parsed.pushes[0]), vec![("b", false)]);
    let neither = parse(
        &m,
        json!({"parameters": {"environment_id": "e"}, "heap": {"data": {"segment": {"id": 1, "name": "S"}}}}),
    )
    .unwrap_err();
    assert!(neither.to_string().contains("/heap/data/add"), "{neither}");
}

#[test]
fn per_member_cohort_overrides_make_several_pushes() {
    let m = builtin("amplitude");
    let r = parse(
        &m,
        json!({"environmentId": "e", "batch": [
            {"userId": "u1", "cohortId": "A", "cohortName": "Alpha", "cohortUrl": "https://x/A", "value": true},
            {"userId": "u2", "cohortId": "B", "cohortName": "Beta", "value": true},
            {"userId": "u3", "cohortId": "A", "cohortName": "Alpha", "value": false},
        ]}),
    )
    .unwrap();
    let p = &r.parsed.pushes;
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].cohort_id.as_str(), p[0].cohort_name.as_deref()),
        ("A", Some("Alpha"))
    );
    assert_eq!(changes(&p[0]), vec![("u1", true), ("u3", false)]);
    assert_eq!(
        (p[1].cohort_id.as_str(), p[1].cohort_name.as_deref()),
        ("B", Some("Beta"))
    );
    assert_eq!(changes(&p[1]), vec![("u2", true)]);
    assert_eq!(r.context_kind, "user");
}

#[test]
fn missing_required_paths_are_named() {
    let m = builtin("rudderstack");
    for (body, pointer) in [
        (
            json!({"cohortId": "c", "cohortName": "n", "listData": {"add": []}}),
            "/environmentId",
        ),
        (
            json!({"environmentId": "e", "cohortName": "n", "listData": {"add": []}}),
            "/cohortId",
        ),
        (
            json!({"environmentId": "e", "cohortId": "c", "cohortId2": 1}),
            "/cohortName",
        ),
    ] {
        let e = parse(&m, body).unwrap_err();
        assert!(
            e.to_string().contains(&format!("{pointer:?}")),
            "{pointer}: {e}"
        );
    }
    let seg = builtin("segment-audiences");
    let e = parse(&seg, json!({"environmentId": "e", "batch": []})).unwrap_err();
    assert!(e.to_string().contains("\"/batch/0/cohortId\""), "{e}");
}

#[test]
fn wrong_types_and_garbage_are_errors_not_panics() {
    for (key, _) in BUILTIN {
        let m = builtin(key);
        for body in [
            json!(null),
            json!([]),
            json!("x"),
            json!({"environmentId": {"a": 1}}),
            json!({"batch": "nope", "environmentId": "e"}),
        ] {
            assert!(parse(&m, body).is_err(), "{key}");
        }
        assert!(super::parse(&m, &verified(b"{not json"), 1).is_err());
        assert!(super::parse(&m, &verified(b""), 1).is_err());
    }
}

/// Names the built-in manifests point at, so random bodies often reach deep paths.
const NAMES: &[&str] = &[
    "environmentId",
    "environment_id",
    "contextKind",
    "context_kind",
    "batch",
    "userId",
    "user_id",
    "value",
    "cohortId",
    "cohort_id",
    "cohortName",
    "cohort_name",
    "cohortUrl",
    "listData",
    "included",
    "add",
    "remove",
    "action",
    "members",
    "parameters",
    "heap",
    "data",
    "segment",
    "id",
    "name",
    "customer_config",
    "fields",
    "0",
    "member_id",
    "integration_distinct_id",
    "mixpanel_distinct_id",
    "tealium_project_id",
    "integration_project_id",
    "mixpanel_project_id",
    "tealium_cohort_id",
    "integration_cohort_id",
    "mixpanel_cohort_id",
    "tealium_cohort_name",
    "integration_cohort_name",
    "mixpanel_cohort_name",
];

fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec!["", "add", "remove_member", "add_members", "x", "true"])
            .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(NAMES.to_vec()), inner, 0..6)
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
        ]
    })
}

proptest::proptest! {
    /// Bad input of any shape is an error or a parse, never a panic.
    #[test]
    fn any_body_parses_or_errs_without_panicking(body in any_json()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        for (key, text) in BUILTIN {
            let m = Manifest::load(key, text, None).unwrap();
            if let Ok(r) = super::parse(&m, &verified(&bytes), 1) {
                proptest::prop_assert!(!r.parsed.pushes.is_empty());
                for p in &r.parsed.pushes {
                    proptest::prop_assert!(!p.cohort_id.trim().is_empty());
                    proptest::prop_assert!(p.changes.iter().all(|c| !c.key.trim().is_empty()));
                }
            }
        }
    }
}
