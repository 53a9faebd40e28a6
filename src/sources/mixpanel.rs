//! Mixpanel cohort sync (custom webhook).
//!
//! `{"action": "members" | "add_members" | "remove_members", "parameters":
//! {"mixpanel_cohort_id", "mixpanel_cohort_name", "mixpanel_session_id",
//! "page_info": {"page_count", "total_pages"}, "members": [{...}]}}`.
//!
//! - `add_members` / `remove_members`: the listed members enter / leave.
//! - `members`: **replace** the cohort with the union of the session's pages.
//!   Each page is a [`Snapshot`] page: its members are added at once, and
//!   once every page of the session has arrived the store removes the members
//!   that were in no page (see `store::snapshot`).
//!
//! Mixpanel sends no time of its own, so the version is the arrival time; the
//! delivery id is `mixpanel_session_id:cohort:action:page_count` (the cohort
//! too, in case one session id ever spans several cohorts). The answer to
//! Mixpanel is its own envelope (`http::webhooks`), on success and on errors.

use super::member_key::id_text;
use super::{collect_changes, ParseError, Delivery, Push, Snapshot, Version};
use crate::config::Source;
use crate::verify::Verified;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Body {
    action: Option<Value>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    mixpanel_cohort_id: Option<Value>,
    mixpanel_cohort_name: Option<Value>,
    mixpanel_session_id: Option<Value>,
    page_info: Option<PageInfo>,
    members: Option<Value>,
}

#[derive(Deserialize)]
struct PageInfo {
    page_count: Option<Value>,
    total_pages: Option<Value>,
}

/// The three actions Mixpanel sends.
pub const ACTIONS: [&str; 3] = ["members", "add_members", "remove_members"];

/// The `action` of a body, if it is one of [`ACTIONS`]: echoed in the
/// envelope even when the request is refused.
pub fn action_of(body: &[u8]) -> Option<&'static str> {
    // Borrowed and compared as raw text: other fields are skipped without
    // being built, so this costs no allocation per element.
    #[derive(Deserialize)]
    struct Action<'a> {
        #[serde(borrow)]
        action: Option<&'a serde_json::value::RawValue>,
    }
    let a: Action<'_> = serde_json::from_slice(body).ok()?;
    let raw = a.action?.get();
    ACTIONS
        .iter()
        .copied()
        .find(|x| raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) == Some(*x))
}

fn page_number(v: &Option<Value>, field: &str) -> Result<Option<u32>, ParseError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
            .map(|n| Some(n as u32))
            .ok_or_else(|| {
                ParseError::wrong_type(format!("parameters.page_info.{field}"), "a positive integer")
            }),
    }
}

pub fn parse(source: &Source, verified: &Verified<'_>, now: Version) -> Result<Delivery, ParseError> {
    let body: Body = serde_json::from_slice(verified.body()).map_err(ParseError::json)?;
    let action = match body.action.as_ref().and_then(Value::as_str) {
        Some(a) if ACTIONS.contains(&a) => a,
        _ => {
            return Err(ParseError::Unsupported(format!(
                "action must be one of {}",
                ACTIONS.join(", ")
            )))
        }
    };
    let params = body
        .parameters
        .ok_or_else(|| ParseError::missing("parameters"))?;
    let cohort_id = params
        .mixpanel_cohort_id
        .as_ref()
        .and_then(id_text)
        .ok_or_else(|| ParseError::missing_or_not("parameters.mixpanel_cohort_id", "an id"))?;
    let cohort_name = match params.mixpanel_cohort_name {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ParseError::wrong_type(
                "parameters.mixpanel_cohort_name",
                "a string",
            ))
        }
    };
    let session =
        match params.mixpanel_session_id {
            None | Some(Value::Null) => None,
            Some(v) => Some(id_text(&v).ok_or_else(|| {
                ParseError::wrong_type("parameters.mixpanel_session_id", "a string")
            })?),
        };
    let (page, total) = match &params.page_info {
        None => (None, None),
        Some(pi) => (
            page_number(&pi.page_count, "page_count")?,
            page_number(&pi.total_pages, "total_pages")?,
        ),
    };
    let (page, total) = (page.unwrap_or(1), total.unwrap_or(1));
    if page > total {
        return Err(ParseError::Inconsistent(format!(
            "parameters.page_info.page_count {page} exceeds total_pages {total}"
        )));
    }
    let members = match params.members {
        Some(Value::Array(m)) => m,
        _ => {
            return Err(ParseError::missing_or_not(
                "parameters.members",
                "an array",
            ))
        }
    };
    let include = action != "remove_members";
    let mut changes = Vec::with_capacity(members.len());
    let mut skipped = 0;
    collect_changes(
        &members,
        &source.key_field,
        include,
        now,
        &mut changes,
        &mut skipped,
    );
    let snapshot = if action == "members" {
        let session = session.clone().ok_or_else(|| {
            ParseError::Inconsistent(
                "parameters.mixpanel_session_id is required for action \"members\" (pages of one replace share it)"
                    .into(),
            )
        })?;
        Some(Snapshot {
            session,
            page,
            total_pages: total,
            version: now,
            armed_only: false,
        })
    } else {
        None
    };
    let delivery_id = session.map(|s| format!("{s}:{cohort_id}:{action}:{page}"));
    Ok(Delivery::one(
        Push {
            cohort_id,
            cohort_name,
            delivery_id,
            changes,
            snapshot,
        },
        skipped,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::test_support::{source, verified};
    use crate::config::SourceKind;
    use crate::sources::Change;
    use serde_json::json;

    const V99: Version = match Version::from_ms(99) {
        Some(v) => v,
        None => panic!("99 is a version"),
    };

    fn body(action: &str, page: u32, pages: u32, members: &[&str]) -> Value {
        json!({"action": action, "parameters": {
            "mixpanel_project_id": "3141", "mixpanel_cohort_name": "Churned", "mixpanel_cohort_id": 4242,
            "mixpanel_cohort_description": "", "mixpanel_session_id": "sess-1",
            "page_info": {"total_pages": pages, "page_count": page},
            "members": members.iter().map(|m| json!({"mixpanel_distinct_id": m, "email": format!("{m}@example.com"), "first_name": "A"})).collect::<Vec<_>>(),
        }})
    }

    fn run(key_field: &str, b: &Value) -> Result<Delivery, ParseError> {
        let bytes = serde_json::to_vec(b).unwrap();
        parse(
            &source(SourceKind::Mixpanel, key_field),
            &verified(&bytes),
            V99,
        )
    }

    #[test]
    fn actions_become_changes() {
        let c = |k: &str, include| Change {
            key: k.into(),
            include,
            version: V99,
        };
        let p = run("mixpanel_distinct_id", &body("members", 2, 3, &["a", "b"])).unwrap();
        let push = &p.pushes[0];
        assert_eq!(push.cohort_id, "4242");
        assert_eq!(push.cohort_name.as_deref(), Some("Churned"));
        assert_eq!(push.delivery_id.as_deref(), Some("sess-1:4242:members:2"));
        assert_eq!(push.changes, vec![c("a", true), c("b", true)]);
        assert_eq!(
            push.snapshot,
            Some(Snapshot {
                session: "sess-1".into(),
                page: 2,
                total_pages: 3,
                version: V99,
                armed_only: false,
            })
        );
        let p = run("email", &body("add_members", 1, 1, &["a"])).unwrap();
        assert_eq!(p.pushes[0].changes, vec![c("a@example.com", true)]);
        assert_eq!(p.pushes[0].snapshot, None);
        let p = run(
            "mixpanel_distinct_id",
            &body("remove_members", 1, 1, &["a"]),
        )
        .unwrap();
        assert_eq!(p.pushes[0].changes, vec![c("a", false)]);
        assert_eq!(
            p.pushes[0].delivery_id.as_deref(),
            Some("sess-1:4242:remove_members:1")
        );
        let p = run("last_name", &body("add_members", 1, 1, &["a"])).unwrap();
        assert_eq!(p.skipped_without_key, 1);
    }

    #[test]
    fn action_is_echoed_only_when_known() {
        assert_eq!(
            action_of(br#"{"action":"add_members"}"#),
            Some("add_members")
        );
        assert_eq!(action_of(br#"{"action":"<script>"}"#), None);
        assert_eq!(action_of(b"nope"), None);
    }

    #[test]
    fn wrong_shapes_are_errors_naming_the_field() {
        let mut no_session = body("members", 1, 1, &["a"]);
        no_session["parameters"]
            .as_object_mut()
            .unwrap()
            .remove("mixpanel_session_id");
        let mut no_members = body("add_members", 1, 1, &[]);
        no_members["parameters"]["members"] = json!({});
        let mut bad_page = body("members", 1, 1, &[]);
        bad_page["parameters"]["page_info"]["page_count"] = json!(0);
        for (b, needle) in [
            (
                json!({"action": "delete_all", "parameters": {}}),
                "action must be one of",
            ),
            (json!({"action": "members"}), "parameters is missing"),
            (body("members", 3, 2, &["a"]), "exceeds total_pages"),
            (no_session, "mixpanel_session_id is required"),
            (no_members, "parameters.members"),
            (bad_page, "page_count must be a positive integer"),
            (json!([1, 2]), "JSON"),
        ] {
            let err = run("mixpanel_distinct_id", &b).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }
}
