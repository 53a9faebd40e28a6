//! Configuration errors: [`ConfigError`], what loading returns, and
//! [`Problems`], what validation collects on the way (every problem, each
//! naming its key, so one run reports them all).

use std::fmt;

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<(String, String)>,
}

impl ConfigError {
    pub fn single(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![(key.into(), message.into())],
        }
    }

    pub(super) fn from_figment(err: figment::Error) -> Self {
        let problems = err
            .into_iter()
            .map(|e| {
                let key = if e.path.is_empty() {
                    "config".to_string()
                } else {
                    e.path.join(".")
                };
                (key, e.kind.to_string())
            })
            .collect();
        ConfigError { problems }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for (key, msg) in &self.problems {
            writeln!(f, "  {key}: {msg}")?;
        }
        Ok(())
    }
}

/// Errors (`.0`) and warnings (`.1`), each naming its key.
#[derive(Default)]
pub(super) struct Problems(
    pub(super) Vec<(String, String)>,
    pub(super) Vec<(String, String)>,
);

impl Problems {
    pub(super) fn add(&mut self, key: impl Into<String>, msg: impl Into<String>) {
        self.0.push((key.into(), msg.into()));
    }
    pub(super) fn warn(&mut self, key: impl Into<String>, msg: impl Into<String>) {
        self.1.push((key.into(), msg.into()));
    }
}
