//! Where secrets come from ([`SecretSource`]: the process environment, or a
//! map in tests) and how a setting's `*_env` / `*_file` names become
//! [`Secret`]s, each problem named by its key.

use super::raw::OneOrMany;
use super::{Problems, Secret};
use std::collections::HashMap;

/// Where secrets come from: the process environment in production, a map in tests.
pub trait SecretSource {
    fn var(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Reads secrets from the process environment.
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Reads secrets from a fixed map (tests, replay with explicit values).
#[derive(Default)]
pub struct MapSecrets(pub HashMap<String, String>);

impl SecretSource for MapSecrets {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

pub(super) fn read_env(
    env: &dyn SecretSource,
    p: &mut Problems,
    key: &str,
    name: &str,
) -> Option<Secret> {
    match env.var(name) {
        Some(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
        Some(_) => {
            p.add(key, format!("environment variable {name} is empty"));
            None
        }
        None => {
            p.add(key, format!("environment variable {name} is not set"));
            None
        }
    }
}

pub(super) fn read_file(
    env: &dyn SecretSource,
    p: &mut Problems,
    key: &str,
    path: &str,
) -> Option<Secret> {
    check_file_mode(p, key, path);
    match env.file(path) {
        Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
        Ok(_) => {
            p.add(key, format!("file {path} is empty"));
            None
        }
        Err(e) => {
            p.add(key, format!("cannot read file {path}: {e}"));
            None
        }
    }
}

/// Reads every secret named by `*_env` and `*_file`; at least one must exist.
pub(super) fn read_secrets(
    env: &dyn SecretSource,
    p: &mut Problems,
    key: &str,
    names: &Option<OneOrMany>,
    files: &Option<OneOrMany>,
    env_field: &str,
    file_field: &str,
) -> Vec<Secret> {
    let mut out = Vec::new();
    for n in names.as_ref().map(OneOrMany::to_vec).unwrap_or_default() {
        if let Some(s) = read_env(env, p, &format!("{key}.{env_field}"), &n) {
            out.push(s);
        }
    }
    for f in files.as_ref().map(OneOrMany::to_vec).unwrap_or_default() {
        if let Some(s) = read_file(env, p, &format!("{key}.{file_field}"), &f) {
            out.push(s);
        }
    }
    if names.is_none() && files.is_none() {
        p.add(
            format!("{key}.{env_field}"),
            format!("is required (or {file_field})"),
        );
    }
    out
}

/// Warns when a secret file is readable by its group or by others.
fn check_file_mode(p: &mut Problems, key: &str, path: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                p.warn(
                    key,
                    format!(
                        "secret file {path} is accessible by group or others (mode {:o}); chmod 600 it",
                        mode & 0o777
                    ),
                );
            }
        }
    }
}
