use super::*;

fn link() -> LinkId {
    LinkId::parse("production:amp:c1").unwrap()
}

fn rec(at: i64, d: &str, runs: &str, n: &str, keys: &str, o: &str) -> String {
    format!(r#"{at} {{"d":"{d}","r":{runs},"n":{n},"k":{keys},"o":"{o}"}}"#)
}

fn b36(v: i64) -> String {
    let mut s = String::new();
    let mut m = v;
    loop {
        let r = (m % 36) as u32;
        s.insert(0, std::char::from_digit(r, 36).unwrap());
        m /= 36;
        if m == 0 {
            return s;
        }
    }
}

fn outcomes(e: &MemberExplanation) -> Vec<(String, String)> {
    e.changes
        .iter()
        .map(|c| (c.kind.clone(), c.outcome.clone()))
        .collect()
}

#[test]
fn a_flip_a_stale_change_and_a_duplicate_tell_their_story() {
    // Newest first, as LRANGE gives them.
    let raw = Raw {
        value: Some(format!("{}!00o", b36(3000))),
        slot: Some(0),
        history: vec![
            rec(
                40,
                "m3",
                r#"[["3000","0"]]"#,
                "[0,0,0,0,0,1]",
                r#"["u1"]"#,
                "d",
            ),
            rec(
                30,
                "m0",
                r#"[["500","1"]]"#,
                "[0,1,0,0,0,0]",
                r#"["u1"]"#,
                "s",
            ),
            rec(
                20,
                "m3",
                r#"[["3000","0"]]"#,
                "[1,0,0,0,0,0]",
                r#"["u1"]"#,
                "a",
            ),
            rec(
                10,
                "m1",
                r#"[["1000","1"]]"#,
                "[1,0,0,0,0,0]",
                r#"["u1","u2"]"#,
                "a",
            ),
        ],
        ..Raw::default()
    };
    let e = explain(&link(), "u1", raw);
    assert!(e.known);
    assert_eq!(e.launchdarkly_per_bridge.as_deref(), Some("out"));
    let push = |o: &str| ("push".to_string(), o.to_string());
    assert_eq!(
        outcomes(&e),
        vec![
            push("duplicate"),
            push("stale"),
            push("written"),
            push("written")
        ]
    );
    assert_eq!(e.changes[3].delivery_id.as_deref(), Some("m1"));
    assert_eq!(e.changes[3].change.as_deref(), Some("in"));
    assert!(e.summary.contains("desired out"), "{}", e.summary);
}

#[test]
fn a_change_replaced_while_pending_is_superseded_and_a_flip_back_cancelled() {
    let raw = Raw {
        value: Some(format!("{}!00", b36(2000))),
        slot: Some(0),
        history: vec![
            rec(
                20,
                "",
                r#"[["2000","0"]]"#,
                "[1,0,0,1,1,0]",
                r#"["u1"]"#,
                "c",
            ),
            rec(
                10,
                "",
                r#"[["1000","1"]]"#,
                "[1,0,0,0,0,0]",
                r#"["u1"]"#,
                "a",
            ),
        ],
        ..Raw::default()
    };
    let e = explain(&link(), "u1", raw);
    let o: Vec<&str> = e.changes.iter().map(|c| c.outcome.as_str()).collect();
    assert_eq!(o, ["cancelled", "superseded"]);
    assert_eq!(e.changes[0].delivery_id, None);
}

#[test]
fn a_change_whose_write_was_in_flight_when_replaced_is_written() {
    // u1 in at 10, written (204) at 15, then out at 20 while that write's
    // acknowledgement had not reached Redis yet ('p': replaced pending).
    let write = serde_json::json!({
        "at_ms": 15, "operation": "update_membership", "segment": "s",
        "adds": 1, "removes": 0, "add_keys": ["u1"], "remove_keys": [],
        "status": "204", "request_id": "emu-1", "message": null
    });
    let raw = Raw {
        value: Some(format!("{}!10o", b36(2000))),
        slot: Some(0),
        history: vec![
            rec(
                20,
                "",
                r#"[["2000","0"]]"#,
                "[1,0,0,1,0,0]",
                r#"["u1"]"#,
                "p",
            ),
            rec(
                10,
                "",
                r#"[["1000","1"]]"#,
                "[1,0,0,0,0,0]",
                r#"["u1"]"#,
                "a",
            ),
        ],
        audit: vec![write.to_string()],
        ..Raw::default()
    };
    let e = explain(&link(), "u1", raw);
    let pushes: Vec<&str> = e
        .changes
        .iter()
        .filter(|c| c.kind == "push")
        .map(|c| c.outcome.as_str())
        .collect();
    assert_eq!(pushes, ["accepted", "written"], "{:#?}", e.changes);
}

#[test]
fn a_pending_change_says_when_its_flush_is_due_and_truncated_records_match_by_version() {
    let raw = Raw {
        value: Some(format!("{}!11", b36(1000))),
        slot: Some(0),
        dirty: true,
        due_ms: Some(99),
        history: vec![rec(
            10,
            "big",
            r#"[["1000","1"]]"#,
            "[500,0,0,0,0,0]",
            r#"["x"]"#,
            "a",
        )],
        ..Raw::default()
    };
    let e = explain(&link(), "u1", raw);
    assert_eq!(e.flush_due_at_ms, Some(99));
    assert_eq!(e.changes.len(), 1);
    assert_eq!(e.changes[0].outcome, "accepted");
    assert!(!e.changes[0].listed);
    assert!(e.summary.contains("due at 99"), "{}", e.summary);
}

#[test]
fn dead_letters_and_unknown_members_are_explained() {
    let raw = Raw {
        value: Some(format!("{}!01d", b36(1000))),
        slot: Some(0),
        dead: Some("50 Invalid context key".into()),
        history: vec![rec(
            10,
            "m1",
            r#"[["1000","1"]]"#,
            "[1,0,0,0,0,0]",
            r#"["bad"]"#,
            "a",
        )],
        ..Raw::default()
    };
    let e = explain(&link(), "bad", raw);
    assert_eq!(e.launchdarkly_per_bridge.as_deref(), Some("dead_lettered"));
    assert_eq!(
        e.dead_letter.as_ref().unwrap().reason,
        "Invalid context key"
    );
    let o: Vec<&str> = e.changes.iter().map(|c| c.outcome.as_str()).collect();
    assert_eq!(o, ["dead_lettered", "dead_lettered"]);
    assert!(e.summary.contains("Invalid context key"), "{}", e.summary);

    let e = explain(
        &link(),
        "nobody",
        Raw {
            slot: Some(0),
            ..Raw::default()
        },
    );
    assert!(!e.known);
    assert!(
        e.summary.starts_with("unknown to the bridge"),
        "{}",
        e.summary
    );
    assert!(e.changes.is_empty());
}
