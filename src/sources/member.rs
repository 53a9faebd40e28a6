//! Picking a member's LaunchDarkly context key out of a member object.

use super::Change;
use serde_json::Value;

/// Turns member objects into changes of one direction, counting those without a key.
pub fn collect_changes(
    members: &[Value],
    key_field: &str,
    include: bool,
    version_ms: i64,
    changes: &mut Vec<Change>,
    skipped: &mut u64,
) {
    for m in members {
        match extract_key(m, key_field) {
            Some(key) => changes.push(Change {
                key,
                include,
                version_ms,
            }),
            None => *skipped += 1,
        }
    }
}

/// Follows a dotted path (`user_id`, `user_properties.email`) into a member
/// object. Strings (non-blank) and numbers are keys; anything else is "no key".
pub fn extract_key(member: &Value, path: &str) -> Option<String> {
    let mut v = member;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let m = json!({"user_id": "u1", "n": 42, "user_properties": {"email": "a@b.c", "blank": " "}, "nil": null});
        assert_eq!(extract_key(&m, "user_id").as_deref(), Some("u1"));
        assert_eq!(extract_key(&m, "n").as_deref(), Some("42"));
        assert_eq!(
            extract_key(&m, "user_properties.email").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(extract_key(&m, "user_properties.blank"), None);
        assert_eq!(extract_key(&m, "nil"), None);
        assert_eq!(extract_key(&m, "missing.deeper"), None);
        assert_eq!(extract_key(&json!("scalar"), "user_id"), None);
    }
}
