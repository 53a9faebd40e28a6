//! A deliberately small JSON validator over the OpenAPI schema objects in
//! LaunchDarkly's published spec (vendored at
//! `reference/launchdarkly-openapi-segments.json`).
//!
//! The emulator checks request bodies against these schemas, never against
//! Rust types shared with the bridge: if the bridge's client got a field name
//! or type wrong, a shared type would make the same mistake and pass.
//!
//! Supported keywords: `$ref` (into `#/components/schemas`), `type`
//! (object, array, string, boolean, integer, number), `required`,
//! `properties`, `items`, `enum` and `additionalProperties`. Object schemas
//! are closed unless they declare `additionalProperties`, because
//! LaunchDarkly rejects unknown fields.

use serde_json::{Map, Value};

/// The spec compiled into the binary; `--schema` can replace it.
pub const EMBEDDED_SPEC: &str =
    include_str!("../../../reference/launchdarkly-openapi-segments.json");

/// Parsed OpenAPI document with lookup of named component schemas.
#[derive(Debug)]
pub struct Spec {
    schemas: Map<String, Value>,
}

impl Spec {
    /// Parses an OpenAPI document and checks that the schemas the emulator
    /// needs are present, so a bad `--schema` file fails at startup.
    pub fn parse(text: &str) -> anyhow::Result<Spec> {
        let doc: Value = serde_json::from_str(text)?;
        let schemas = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("spec has no components.schemas object"))?;
        let spec = Spec { schemas };
        for name in ["SegmentBody", "SegmentUserState", "SegmentUserList"] {
            if spec.schemas.get(name).is_none() {
                anyhow::bail!("spec lacks components.schemas.{name}");
            }
        }
        Ok(spec)
    }

    /// Validates `value` against the named component schema. On failure
    /// returns every problem found, each prefixed by its JSON path
    /// (e.g. `included.add[2]: expected string, got number`).
    pub fn validate(&self, schema_name: &str, value: &Value) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        match self.schemas.get(schema_name) {
            Some(schema) => self.check(schema, value, "", &mut errors, 0),
            None => errors.push(format!("no schema named {schema_name}")),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> Result<&'a Value, String> {
        match schema.get("$ref").and_then(Value::as_str) {
            None => Ok(schema),
            Some(reference) => reference
                .strip_prefix("#/components/schemas/")
                .and_then(|name| self.schemas.get(name))
                .ok_or_else(|| format!("unresolvable $ref {reference}")),
        }
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        errors: &mut Vec<String>,
        depth: u32,
    ) {
        // The spec has no recursive schemas on the request side, but guard
        // against a hostile --schema file anyway.
        if depth > 64 {
            errors.push(format!("{}schema nesting too deep", prefix(path)));
            return;
        }
        let schema = match self.resolve(schema) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{}{e}", prefix(path)));
                return;
            }
        };
        if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            if !type_matches(expected, value) {
                errors.push(format!(
                    "{}expected {expected}, got {}",
                    prefix(path),
                    type_name(value)
                ));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                errors.push(format!(
                    "{}value {value} is not one of {}",
                    prefix(path),
                    Value::from(allowed.clone())
                ));
            }
        }
        match value {
            Value::Object(fields) => self.check_object(schema, fields, path, errors, depth),
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(
                            item_schema,
                            item,
                            &format!("{path}[{i}]"),
                            errors,
                            depth + 1,
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        fields: &Map<String, Value>,
        path: &str,
        errors: &mut Vec<String>,
        depth: u32,
    ) {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    errors.push(format!("{}missing required field \"{name}\"", prefix(path)));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (name, field) in fields {
            let child = join(path, name);
            if let Some(prop) = properties.and_then(|p| p.get(name)) {
                self.check(prop, field, &child, errors, depth + 1);
                continue;
            }
            match additional {
                // Closed by default: LaunchDarkly rejects unknown fields.
                None | Some(Value::Bool(false)) => {
                    errors.push(format!("{}unknown field \"{name}\"", prefix(path)));
                }
                Some(Value::Bool(true)) => {}
                Some(extra) => self.check(extra, field, &child, errors, depth + 1),
            }
        }
    }
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        // Unknown type keywords are not ours to enforce.
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Spec {
        Spec::parse(EMBEDDED_SPEC).expect("embedded spec parses")
    }

    #[test]
    fn valid_segment_user_state_passes() {
        let body =
            json!({"included": {"add": ["a", "b"], "remove": ["c"]}, "excluded": {"add": []}});
        assert_eq!(spec().validate("SegmentUserState", &body), Ok(()));
        assert_eq!(spec().validate("SegmentUserState", &json!({})), Ok(()));
    }

    #[test]
    fn valid_segment_body_passes() {
        let body = json!({"key": "k", "name": "n", "description": "d", "tags": ["t"],
                          "unbounded": true, "unboundedContextKind": "user"});
        assert_eq!(spec().validate("SegmentBody", &body), Ok(()));
    }

    #[test]
    fn unknown_field_is_named() {
        let errors = spec()
            .validate("SegmentUserState", &json!({"include": {"add": ["a"]}}))
            .unwrap_err();
        assert_eq!(errors, vec!["unknown field \"include\"".to_string()]);
        let nested = spec()
            .validate("SegmentUserState", &json!({"included": {"adds": ["a"]}}))
            .unwrap_err();
        assert_eq!(nested, vec!["included: unknown field \"adds\"".to_string()]);
    }

    #[test]
    fn wrong_type_in_array_names_the_index() {
        let errors = spec()
            .validate(
                "SegmentUserState",
                &json!({"included": {"add": ["a", "b", 3]}}),
            )
            .unwrap_err();
        assert_eq!(
            errors,
            vec!["included.add[2]: expected string, got number".to_string()]
        );
    }

    #[test]
    fn missing_required_key_is_reported() {
        let errors = spec()
            .validate("SegmentBody", &json!({"name": "n"}))
            .unwrap_err();
        assert_eq!(errors, vec!["missing required field \"key\"".to_string()]);
    }

    #[test]
    fn wrong_top_level_type_is_reported() {
        let errors = spec().validate("SegmentBody", &json!([1])).unwrap_err();
        assert_eq!(errors, vec!["expected object, got array".to_string()]);
        let errors = spec()
            .validate(
                "SegmentBody",
                &json!({"key": "k", "name": "n", "unbounded": "yes"}),
            )
            .unwrap_err();
        assert_eq!(
            errors,
            vec!["unbounded: expected boolean, got string".to_string()]
        );
    }

    #[test]
    fn additional_properties_schema_is_applied() {
        // UserSegment._links is an open map of Link objects.
        let ok = json!({"key": "k", "name": "n", "tags": [], "creationDate": 1, "lastModifiedDate": 1,
                        "version": 1, "deleted": false, "generation": 1, "rules": [],
                        "_links": {"self": {"href": "/x", "type": "application/json"}}});
        assert_eq!(spec().validate("UserSegment", &ok), Ok(()));
        let mut bad = ok.clone();
        bad["_links"]["self"]["href"] = json!(5);
        assert_eq!(
            spec().validate("UserSegment", &bad).unwrap_err(),
            vec!["_links.self.href: expected string, got number".to_string()]
        );
    }
}
