//! Loading the manifests a configuration uses: the built-in ones, then every
//! synced-segment manifest in `partner.manifest_dirs` (a file replaces the
//! built-in manifest of its integration key), each checked by
//! [`Manifest::load`] with its `partner.array_inclusion_matchers` override.

use super::{Manifest, BUILTIN};
use crate::config::partner::source_id;
use crate::config::raw::PartnerConfig;
use crate::config::validate::check_id;
use crate::config::Problems;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a manifest's text came from, to name it in errors.
struct Origin {
    key: String,
    text: String,
    /// The config key and file to blame.
    blame: (String, Option<PathBuf>),
}

/// Integration key → its loaded manifest; every problem is added to `p`,
/// naming the config key and the file.
pub(in crate::config) fn load_configured(
    raw: &PartnerConfig,
    p: &mut Problems,
) -> BTreeMap<String, Arc<Manifest>> {
    let mut texts: BTreeMap<String, Origin> = BTreeMap::new();
    for (key, text) in BUILTIN {
        texts.insert(
            key.to_string(),
            Origin {
                key: key.to_string(),
                text: text.to_string(),
                blame: (format!("partner.array_inclusion_matchers.{key}"), None),
            },
        );
    }
    for (i, dir) in raw.manifest_dirs.iter().enumerate() {
        let cfg_key = format!("partner.manifest_dirs[{i}]");
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                p.add(&cfg_key, format!("cannot read directory {dir}: {e}"));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for file in files {
            let shown = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    p.add(&cfg_key, format!("cannot read {shown}: {e}"));
                    continue;
                }
            };
            let doc: serde_json::Value = match serde_json::from_str(&text) {
                Ok(d) => d,
                Err(e) => {
                    p.add(&cfg_key, format!("{shown} is not valid JSON: {e}"));
                    continue;
                }
            };
            if doc.pointer("/capabilities/syncedSegment").is_none() {
                // Not a synced-segment manifest (a schema, another capability): not ours.
                continue;
            }
            let key = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let before = p.0.len();
            check_id(p, &format!("{cfg_key} ({shown})"), &source_id(&key));
            if p.0.len() != before {
                continue;
            }
            texts.insert(
                key.clone(),
                Origin {
                    key,
                    text,
                    blame: (cfg_key.clone(), Some(file.clone())),
                },
            );
        }
    }
    for key in raw.array_inclusion_matchers.keys() {
        if !texts.contains_key(key) {
            p.add(
                format!("partner.array_inclusion_matchers.{key}"),
                format!("unknown integration key {key:?}"),
            );
        }
    }
    let mut manifests = BTreeMap::new();
    for o in texts.into_values() {
        let matcher = raw.array_inclusion_matchers.get(&o.key).map(String::as_str);
        match Manifest::load(&o.key, &o.text, matcher) {
            Ok(m) => {
                manifests.insert(o.key, Arc::new(m));
            }
            Err(e) => {
                let (cfg_key, file) = o.blame;
                let msg = match file {
                    Some(f) => format!("manifest {}: {e}", f.display()),
                    None => format!("manifest {}: {e}", o.key),
                };
                p.add(cfg_key, msg);
            }
        }
    }

    manifests
}
