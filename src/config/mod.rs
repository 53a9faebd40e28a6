//! Typed settings: one TOML file plus `COHORT_BRIDGE_*` environment overrides.
//!
//! The TOML shape is a public interface (docs/design.md, "Configuration"): keys
//! may be added, never renamed. Loading happens in two steps:
//! 1. [`RawConfig`] (`raw.rs`) is deserialized with figment (unknown keys are
//!    errors, so a typo is caught and named instead of silently ignored);
//! 2. [`Settings::from_raw`] (`validate.rs`) validates it, reads every secret
//!    from the environment or a file ([`SecretSource`], `secret_source.rs`),
//!    and reports *all* problems at once ([`ConfigError`], `error.rs`), each
//!    naming the offending key (`sources[1].destinations[0]: …`).
//!
//! The rest, one idea a file: the validated types ([`Settings`],
//! [`Source`], [`ResolvedAuth`], …, `settings.rs`); a source's `auth`
//! resolved (`auth.rs`); `[partner]` (`partner.rs`) and the manifests it
//! loads ([`manifest`]); the kinds of sender, one row each ([`SourceKind`],
//! `kinds.rs`). This module imports nothing above it: `sources`, `verify`
//! and the rest build on these types.
//!
//! Secrets only ever live in [`Secret`], whose `Debug` prints `[redacted]`.

mod auth;
mod error;
mod kinds;
pub mod manifest;
mod partner;
mod raw;
mod secret;
mod secret_source;
mod settings;
mod validate;

pub use error::ConfigError;
use error::Problems;
pub(crate) use kinds::for_each_source_kind;
pub use kinds::{AnswerStyle, SourceKind};
pub use partner::{source_id as partner_source_id, PartnerSettings, PartnerToken};
pub use raw::{
    AuthConfig, DestinationConfig, FlushConfig, LaunchDarklyConfig, Mode, OneOrMany, PartnerConfig,
    PartnerTokenConfig, RawConfig, RedisConfig, ServerConfig, SourceConfig,
};
pub use secret::Secret;
pub use secret_source::{MapSecrets, ProcessEnv, SecretSource};
pub use settings::{Destination, ResolvedAuth, SegmentBatches, Settings, Source};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use std::path::Path;

/// Environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "COHORT_BRIDGE_CONFIG";
/// Prefix of environment overrides: `COHORT_BRIDGE_REDIS__URL` sets `redis.url`.
/// Only names with a `__` (a `<section>__<key>` path) are overrides: every
/// top-level key is a section, so `COHORT_BRIDGE_OPERATOR_TOKEN` stays free
/// to hold a secret that `*_env` settings name.
pub const ENV_PREFIX: &str = "COHORT_BRIDGE_";

/// Reads the file, applies environment overrides and validates everything.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::single(
            "config",
            format!("file {} does not exist", path.display()),
        ));
    }
    let figment = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::file(path))
        .merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__")
                .ignore(&["config", "log", "log_format"]),
        );
    let raw: RawConfig = figment.extract().map_err(ConfigError::from_figment)?;
    Settings::from_raw(raw, &ProcessEnv)
}

/// Parses settings from TOML text alone: no environment overrides, secrets
/// from `env`. Used by tests; `check-config` loads exactly as `serve` does
/// ([`load`]: the file, the environment overrides, every secret) and then
/// prints the warnings and a summary instead of serving.
pub fn from_toml_str(text: &str, env: &dyn SecretSource) -> Result<Settings, ConfigError> {
    let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::string(text))
        .extract()
        .map_err(ConfigError::from_figment)?;
    Settings::from_raw(raw, env)
}

#[cfg(test)]
mod tests;
