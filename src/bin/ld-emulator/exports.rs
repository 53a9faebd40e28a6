//! Big-segment exports: `POST …/{segmentKey}/exports` takes a copy of the
//! segment's included keys; `GET …/exports/{id}` reports `in_progress` for
//! the configured number of polls, then `completed` with a `file` link; the
//! file is a CSV in the layout `docs/launchdarkly.md` assumes (one context
//! key per record, one column, no header row; served once a status read
//! has answered `completed`), or a different layout when a
//! test asks for one through `/_emulator/config` (`export_layout`).

use serde_json::{json, Value};
use std::collections::HashMap;

/// The file layouts the emulator can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportLayout {
    /// The assumed layout: one context key per record, no header.
    #[default]
    Keys,
    /// A header row and a second column (`contextKey,contextKind`): a
    /// layout the bridge must refuse.
    TwoColumns,
}

impl ExportLayout {
    pub fn parse(name: &str) -> Option<ExportLayout> {
        match name {
            "keys" => Some(ExportLayout::Keys),
            "two_columns" => Some(ExportLayout::TwoColumns),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExportLayout::Keys => "keys",
            ExportLayout::TwoColumns => "two_columns",
        }
    }
}

/// One export: what the segment held when it started.
#[derive(Debug, Clone)]
pub struct Export {
    pub id: String,
    pub project: String,
    pub environment: String,
    pub segment_key: String,
    pub creation_ms: u64,
    pub keys: Vec<String>,
    /// Status reads still answering `in_progress`.
    pub polls_left: u64,
    /// Whether a status read has answered `completed`: the file is served
    /// from then on.
    pub completed: bool,
}

#[derive(Debug, Default)]
pub struct Exports {
    by_id: HashMap<String, Export>,
    /// How many status reads of a new export answer `in_progress`.
    pub polls: u64,
    /// The layout files are served in.
    pub layout: ExportLayout,
}

impl Exports {
    pub fn start(&mut self, mut export: Export) -> &Export {
        export.polls_left = self.polls;
        let id = export.id.clone();
        self.by_id.entry(id).or_insert(export)
    }

    /// The export, if it belongs to that segment; counts one status read.
    pub fn poll(&mut self, project: &str, environment: &str, key: &str, id: &str) -> Option<Value> {
        let export = self.find_mut(project, environment, key, id)?;
        let done = export.polls_left == 0;
        export.polls_left = export.polls_left.saturating_sub(1);
        export.completed |= done;
        Some(export.to_ld_json(done))
    }

    /// The finished export's file, or `None` while it is still running.
    pub fn file(
        &mut self,
        project: &str,
        environment: &str,
        key: &str,
        id: &str,
    ) -> Option<Option<String>> {
        let layout = self.layout;
        let export = self.find_mut(project, environment, key, id)?;
        Some(export.completed.then(|| render(layout, &export.keys)))
    }

    fn find_mut(&mut self, p: &str, e: &str, k: &str, id: &str) -> Option<&mut Export> {
        self.by_id
            .get_mut(id)
            .filter(|x| x.project == p && x.environment == e && x.segment_key == k)
    }

    pub fn clear(&mut self) {
        self.by_id.clear();
    }
}

impl Export {
    /// The path of the export's status route.
    pub fn href(&self) -> String {
        format!(
            "/api/v2/segments/{}/{}/{}/exports/{}",
            self.project, self.environment, self.segment_key, self.id
        )
    }

    /// LaunchDarkly's `Export` representation.
    pub fn to_ld_json(&self, done: bool) -> Value {
        let size = render(ExportLayout::Keys, &self.keys).len();
        let mut links = json!({"self": {"href": self.href(), "type": "application/json"}});
        if done {
            links["file"] = json!({"href": format!("{}/file", self.href()), "type": "text/csv"});
        }
        json!({
            "id": self.id,
            "segmentKey": self.segment_key,
            "creationTime": self.creation_ms,
            "status": if done { "completed" } else { "in_progress" },
            "sizeBytes": if done { size } else { 0 },
            "size": if done { format!("{size} B") } else { "0 B".to_string() },
            "initiator": {"name": "ld-emulator", "email": "emulator@example.com"},
            "_links": links,
        })
    }
}

/// The file's text: CRLF-terminated CSV records (RFC 4180), a field quoted
/// when it holds a comma, a quote or a line break.
pub fn render(layout: ExportLayout, keys: &[String]) -> String {
    let mut out = String::new();
    if layout == ExportLayout::TwoColumns {
        out.push_str("contextKey,contextKind\r\n");
    }
    for key in keys {
        if key.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&key.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(key);
        }
        if layout == ExportLayout::TwoColumns {
            out.push_str(",user");
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Spec, EMBEDDED_SPEC};

    #[test]
    fn export_validates_and_completes_after_the_configured_polls() {
        let spec = Spec::parse(EMBEDDED_SPEC).unwrap();
        let mut exports = Exports {
            polls: 1,
            ..Exports::default()
        };
        exports.start(Export {
            id: "x".into(),
            project: "p".into(),
            environment: "e".into(),
            segment_key: "k".into(),
            creation_ms: 1,
            keys: vec!["a".into(), "b,c".into()],
            polls_left: 0,
            completed: false,
        });
        let first = exports.poll("p", "e", "k", "x").unwrap();
        assert_eq!(first["status"], "in_progress");
        assert_eq!(spec.validate("Export", &first), Ok(()));
        assert_eq!(exports.file("p", "e", "k", "x"), Some(None));
        let done = exports.poll("p", "e", "k", "x").unwrap();
        assert_eq!(done["status"], "completed");
        assert_eq!(spec.validate("Export", &done), Ok(()));
        assert_eq!(
            exports.file("p", "e", "k", "x"),
            Some(Some("a\r\n\"b,c\"\r\n".to_string()))
        );
        assert!(exports.poll("p", "e", "other", "x").is_none());
    }
}
