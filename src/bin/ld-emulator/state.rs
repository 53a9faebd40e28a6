//! The emulated LaunchDarkly data: segments per project/environment with
//! their big-segment membership, and the optional set of known projects.
//! Also renders segments in LaunchDarkly's `UserSegment` shape and in the
//! flatter shape the control API reports.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Identifies a segment: project, environment, key.
pub type SegmentId = (String, String, String);

#[derive(Debug, Clone)]
pub struct Segment {
    pub project: String,
    pub environment: String,
    /// What the create request chose: key, name, description, tags, kind.
    pub spec: SegmentSpec,
    pub generation: u64,
    pub creation_date: u64,
    pub last_modified_date: u64,
    pub version: u64,
    pub included: BTreeSet<String>,
    pub excluded: BTreeSet<String>,
}

/// A validated `SegmentBody`, read without Rust types mirroring the bridge's.
#[derive(Debug, Clone)]
pub struct SegmentSpec {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub unbounded: bool,
    pub unbounded_context_kind: Option<String>,
}

impl SegmentSpec {
    /// Reads a body that already passed schema validation as `SegmentBody`.
    pub fn from_validated(body: &Value) -> SegmentSpec {
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
        let unbounded = body
            .get("unbounded")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        SegmentSpec {
            key: text("key").unwrap_or_default(),
            name: text("name").unwrap_or_default(),
            description: text("description"),
            tags: body
                .get("tags")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            unbounded,
            // LaunchDarkly defaults a big segment's context kind to "user".
            unbounded_context_kind: text("unboundedContextKind")
                .or_else(|| unbounded.then(|| "user".to_string())),
        }
    }
}

/// Membership edits from a validated `SegmentUserState` body.
#[derive(Debug, Default)]
pub struct MembershipChange {
    pub included_add: Vec<String>,
    pub included_remove: Vec<String>,
    pub excluded_add: Vec<String>,
    pub excluded_remove: Vec<String>,
}

impl MembershipChange {
    pub fn from_validated(body: &Value) -> MembershipChange {
        let list = |part: &str, op: &str| -> Vec<String> {
            body.get(part)
                .and_then(|p| p.get(op))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        MembershipChange {
            included_add: list("included", "add"),
            included_remove: list("included", "remove"),
            excluded_add: list("excluded", "add"),
            excluded_remove: list("excluded", "remove"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SegmentsError {
    UnknownProject(String),
    UnknownEnvironment(String, String),
    NotFound,
    /// The key already exists in that project/environment.
    Conflict(String),
    NotUnbounded,
    /// A context key configured as one LaunchDarkly refuses (`reject_keys`).
    InvalidKey(String),
}

#[derive(Debug, Default)]
pub struct Segments {
    by_id: HashMap<SegmentId, Segment>,
    /// `None`: every project/environment exists. `Some`: only these do.
    pub projects: Option<BTreeMap<String, BTreeSet<String>>>,
    /// Context keys a membership update is refused for (400, the whole
    /// request), so tests can plant poison members.
    pub reject_keys: BTreeSet<String>,
}

impl Segments {
    /// 404s for undeclared projects/environments once any are declared.
    pub fn check_env(&self, project: &str, environment: &str) -> Result<(), SegmentsError> {
        let Some(projects) = &self.projects else {
            return Ok(());
        };
        match projects.get(project) {
            None => Err(SegmentsError::UnknownProject(project.to_string())),
            Some(envs) if !envs.contains(environment) => Err(SegmentsError::UnknownEnvironment(
                project.to_string(),
                environment.to_string(),
            )),
            Some(_) => Ok(()),
        }
    }

    pub fn create(
        &mut self,
        project: &str,
        environment: &str,
        new: SegmentSpec,
        now_ms: u64,
    ) -> Result<&Segment, SegmentsError> {
        self.check_env(project, environment)?;
        let id = (
            project.to_string(),
            environment.to_string(),
            new.key.clone(),
        );
        if self.by_id.contains_key(&id) {
            return Err(SegmentsError::Conflict(new.key));
        }
        let segment = Segment {
            project: project.to_string(),
            environment: environment.to_string(),
            spec: new,
            generation: 1,
            creation_date: now_ms,
            last_modified_date: now_ms,
            version: 1,
            included: BTreeSet::new(),
            excluded: BTreeSet::new(),
        };
        Ok(self.by_id.entry(id).or_insert(segment))
    }

    /// Removes a segment; whether it existed.
    pub fn delete(&mut self, project: &str, environment: &str, key: &str) -> bool {
        self.by_id
            .remove(&(
                project.to_string(),
                environment.to_string(),
                key.to_string(),
            ))
            .is_some()
    }

    pub fn get(
        &self,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<&Segment, SegmentsError> {
        self.check_env(project, environment)?;
        self.by_id
            .get(&(
                project.to_string(),
                environment.to_string(),
                key.to_string(),
            ))
            .ok_or(SegmentsError::NotFound)
    }

    /// Applies adds before removes, included then excluded: a key both added
    /// and removed in one request ends up absent.
    pub fn update_membership(
        &mut self,
        project: &str,
        environment: &str,
        key: &str,
        change: MembershipChange,
        now_ms: u64,
    ) -> Result<(), SegmentsError> {
        self.check_env(project, environment)?;
        let bad = change
            .included_add
            .iter()
            .chain(&change.included_remove)
            .chain(&change.excluded_add)
            .chain(&change.excluded_remove)
            .find(|k| self.reject_keys.contains(*k))
            .cloned();
        let segment = self.segment_mut(project, environment, key)?;
        if !segment.spec.unbounded {
            return Err(SegmentsError::NotUnbounded);
        }
        if let Some(bad) = bad {
            return Err(SegmentsError::InvalidKey(bad));
        }
        segment.included.extend(change.included_add);
        for k in &change.included_remove {
            segment.included.remove(k);
        }
        segment.excluded.extend(change.excluded_add);
        for k in &change.excluded_remove {
            segment.excluded.remove(k);
        }
        segment.last_modified_date = now_ms;
        Ok(())
    }

    fn segment_mut(&mut self, p: &str, e: &str, k: &str) -> Result<&mut Segment, SegmentsError> {
        self.by_id
            .get_mut(&(p.to_string(), e.to_string(), k.to_string()))
            .ok_or(SegmentsError::NotFound)
    }

    /// One environment's segments ordered by key, as the listing pages them.
    pub fn list(&self, project: &str, environment: &str) -> Result<Vec<&Segment>, SegmentsError> {
        self.check_env(project, environment)?;
        let mut found: Vec<&Segment> = self
            .by_id
            .values()
            .filter(|s| s.project == project && s.environment == environment)
            .collect();
        found.sort_by(|a, b| a.spec.key.cmp(&b.spec.key));
        Ok(found)
    }

    /// Renames a segment (a `PATCH`): a new version, as LaunchDarkly counts them.
    pub fn rename(
        &mut self,
        project: &str,
        environment: &str,
        key: &str,
        name: &str,
        now_ms: u64,
    ) -> Result<&Segment, SegmentsError> {
        self.check_env(project, environment)?;
        let segment = self.segment_mut(project, environment, key)?;
        segment.spec.name = name.to_string();
        segment.version += 1;
        segment.last_modified_date = now_ms;
        Ok(segment)
    }

    /// Changes a segment's included members behind every client's back (the
    /// control API's drift): no version, no rejected keys, no big-segment check.
    pub fn drift(
        &mut self,
        project: &str,
        environment: &str,
        key: &str,
        add: Vec<String>,
        remove: &[String],
    ) -> Result<(), SegmentsError> {
        let segment = self.segment_mut(project, environment, key)?;
        segment.included.extend(add);
        for k in remove {
            segment.included.remove(k);
        }
        Ok(())
    }

    /// All segments, ordered by project, environment, key.
    pub fn all(&self) -> Vec<&Segment> {
        let mut all: Vec<&Segment> = self.by_id.values().collect();
        all.sort_by(|a, b| {
            (&a.project, &a.environment, &a.spec.key).cmp(&(
                &b.project,
                &b.environment,
                &b.spec.key,
            ))
        });
        all
    }

    pub fn clear_segments(&mut self) {
        self.by_id.clear();
    }
}

impl Segment {
    /// LaunchDarkly's `UserSegment` representation.
    pub fn to_ld_json(&self) -> Value {
        let href = format!(
            "/api/v2/segments/{}/{}/{}",
            self.project, self.environment, self.spec.key
        );
        let mut v = json!({
            "key": self.spec.key,
            "name": self.spec.name,
            "tags": self.spec.tags,
            "creationDate": self.creation_date,
            "lastModifiedDate": self.last_modified_date,
            "version": self.version,
            "deleted": false,
            "generation": self.generation,
            "rules": [],
            "unbounded": self.spec.unbounded,
            "_links": {"self": {"href": href, "type": "application/json"}},
        });
        if let Some(d) = &self.spec.description {
            v["description"] = json!(d);
        }
        if self.spec.unbounded {
            // Big segments report counts, not member lists.
            v["included"] = json!([]);
            v["excluded"] = json!([]);
            v["unboundedContextKind"] = json!(self.spec.unbounded_context_kind);
            v["_unboundedMetadata"] = json!({
                "envId": self.environment,
                "segmentId": self.spec.key,
                "version": self.version,
                "includedCount": self.included.len(),
                "excludedCount": self.excluded.len(),
                "lastModified": self.last_modified_date,
                "deleted": false,
            });
        } else {
            v["included"] = json!(self.included);
            v["excluded"] = json!(self.excluded);
        }
        v
    }

    /// The control API's flat view, with full sorted member lists.
    pub fn to_state_json(&self) -> Value {
        json!({
            "project": self.project,
            "environment": self.environment,
            "key": self.spec.key,
            "name": self.spec.name,
            "description": self.spec.description,
            "tags": self.spec.tags,
            "unbounded": self.spec.unbounded,
            "unboundedContextKind": self.spec.unbounded_context_kind,
            "generation": self.generation,
            "creationDate": self.creation_date,
            "lastModifiedDate": self.last_modified_date,
            "included": self.included,
            "excluded": self.excluded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Spec, EMBEDDED_SPEC};

    fn big(key: &str) -> SegmentSpec {
        SegmentSpec::from_validated(&json!({"key": key, "name": "N", "unbounded": true}))
    }

    #[test]
    fn rendered_segment_validates_as_user_segment() {
        let spec = Spec::parse(EMBEDDED_SPEC).unwrap();
        let mut segments = Segments::default();
        let seg = segments.create("p", "e", big("k"), 1).unwrap().clone();
        assert_eq!(seg.spec.unbounded_context_kind.as_deref(), Some("user"));
        assert_eq!(spec.validate("UserSegment", &seg.to_ld_json()), Ok(()));
        let small =
            SegmentSpec::from_validated(&json!({"key": "s", "name": "S", "description": "d"}));
        let seg = segments.create("p", "e", small, 1).unwrap().clone();
        assert_eq!(spec.validate("UserSegment", &seg.to_ld_json()), Ok(()));
    }

    #[test]
    fn membership_adds_before_removes_and_projects_gate() {
        let mut segments = Segments::default();
        segments.create("p", "e", big("k"), 1).unwrap();
        assert_eq!(
            segments.create("p", "e", big("k"), 1).unwrap_err(),
            SegmentsError::Conflict("k".into())
        );
        let change = MembershipChange::from_validated(
            &json!({"included": {"add": ["a", "b"], "remove": ["b"]}, "excluded": {"add": ["x"]}}),
        );
        segments
            .update_membership("p", "e", "k", change, 2)
            .unwrap();
        let seg = segments.get("p", "e", "k").unwrap();
        assert_eq!(seg.included.iter().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(seg.excluded.len(), 1);
        segments.projects = Some(BTreeMap::from([("p".into(), BTreeSet::from(["e".into()]))]));
        assert!(segments.get("p", "e", "k").is_ok());
        assert!(matches!(
            segments.get("p", "x", "k"),
            Err(SegmentsError::UnknownEnvironment(..))
        ));
        assert!(matches!(
            segments.get("q", "e", "k"),
            Err(SegmentsError::UnknownProject(_))
        ));
    }
}
