//! Picking a member's LaunchDarkly context key out of a member object.

use super::{Change, Version};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// Turns member objects into changes of one direction, counting those without a key.
pub fn collect_changes(
    members: &[Value],
    key_field: &str,
    include: bool,
    version: Version,
    changes: &mut Vec<Change>,
    skipped: &mut u64,
) {
    for m in members {
        match extract_key(m, key_field) {
            Some(key) => changes.push(Change {
                key,
                include,
                version,
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
    id_text(v)
}

/// An id or key: a non-blank string, or a number as its decimal text.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Like [`collect_changes`], for a member array still in its raw JSON text:
/// walks it once and keeps only each member's key, without building a
/// [`Value`] tree per member (the batched-ingest hot path). The keys found,
/// and the members counted as skipped, are exactly [`extract_key`]'s.
/// An error means `raw` is not an array.
pub fn collect_changes_raw(
    raw: &RawValue,
    key_field: &str,
    include: bool,
    version: Version,
    changes: &mut Vec<Change>,
    skipped: &mut u64,
) -> Result<(), serde_json::Error> {
    let path: Vec<&str> = key_field.split('.').collect();
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_seq(Members {
        path: &path,
        include,
        version,
        changes,
        skipped,
    })
}

struct Members<'a, 'p> {
    path: &'p [&'p str],
    include: bool,
    version: Version,
    changes: &'a mut Vec<Change>,
    skipped: &'a mut u64,
}

impl<'de> Visitor<'de> for Members<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of members")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.changes.reserve(n);
        }
        while let Some(key) = seq.next_element_seed(KeyAt(self.path))? {
            match key {
                Some(key) => self.changes.push(Change {
                    key,
                    include: self.include,
                    version: self.version,
                }),
                None => *self.skipped += 1,
            }
        }
        Ok(())
    }
}

/// The key at a dotted path inside one JSON value, as [`extract_key`] reads
/// it from a parsed [`Value`]: fields other than the path's are skipped
/// unparsed; a repeated field counts its last occurrence (as in a `Value` map).
struct KeyAt<'p>(&'p [&'p str]);

impl<'de> DeserializeSeed<'de> for KeyAt<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyAt<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        let mut found = None;
        let Some((first, rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        while let Some(is_first) = map.next_key_seed(FieldIs(first))? {
            match is_first {
                true => {
                    found = if rest.is_empty() {
                        map.next_value_seed(Leaf)?
                    } else {
                        map.next_value_seed(KeyAt(rest))?
                    };
                }
                false => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
}

/// Whether a map key equals the wanted field, compared without copying it.
struct FieldIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for FieldIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(s == self.0)
    }
}

/// The value at the end of the path: a non-blank string or a number is a key.
struct Leaf;

impl<'de> DeserializeSeed<'de> for Leaf {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaf {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member key")
    }

    fn visit_str<E>(self, s: &str) -> Result<Option<String>, E> {
        Ok((!s.trim().is_empty()).then(|| s.to_owned()))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Option<String>, E> {
        Ok(Some(n.to_string()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Option<String>, E> {
        Ok(Some(n.to_string()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Option<String>, E> {
        Ok(serde_json::Number::from_f64(n).map(|n| n.to_string()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V5: Version = match Version::from_ms(5) {
        Some(v) => v,
        None => panic!("5 is a version"),
    };

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

    /// The raw walk finds exactly what `extract_key` finds on parsed values.
    #[test]
    fn raw_walk_matches_extract_key() {
        let members = r#"[
            {"user_id": "u1", "user_properties": {"email": "a@b.c", "n": 7}},
            {"user_id": 42}, {"user_id": -3}, {"user_id": 1.5}, {"user_id": 1e3},
            {"user_id": " "}, {"user_id": null}, {"user_id": true}, {"user_id": [1]},
            {"user_id": {"x": 1}}, {"other": "x"}, "scalar", 17, null, [],
            {"user_id": "first", "user_id": "last"},
            {"user_id": "esc\"aped\u00e9"},
            {"user_properties": {"email": {"deeper": 1}}},
            {"user_properties": [1, 2]}, {"user_properties": "s"}
        ]"#;
        let values: Vec<Value> = serde_json::from_str(members).unwrap();
        let raw: Box<RawValue> = serde_json::from_str(members).unwrap();
        for field in [
            "user_id",
            "user_properties.email",
            "user_properties.n",
            "other",
            "a.b.c",
        ] {
            let (mut want, mut want_skipped) = (Vec::new(), 0);
            collect_changes(&values, field, true, V5, &mut want, &mut want_skipped);
            let (mut got, mut got_skipped) = (Vec::new(), 0);
            collect_changes_raw(&raw, field, true, V5, &mut got, &mut got_skipped).unwrap();
            assert_eq!(got, want, "{field}");
            assert_eq!(got_skipped, want_skipped, "{field}");
        }
        let not_array: Box<RawValue> = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        let (mut got, mut skipped) = (Vec::new(), 0);
        assert!(
            collect_changes_raw(&not_array, "user_id", true, V5, &mut got, &mut skipped).is_err()
        );
    }
}
