//! `[partner]`: LaunchDarkly's partner endpoint. Loads the manifests (built
//! in, then `manifest_dirs`), maps client-side IDs to destinations, resolves
//! the callers' tokens, and derives one source per integration
//! (`partner-<integrationKey>`) so that the store and the flusher treat
//! partner cohorts like any other.

use super::manifest::{load_configured, Manifest};
use super::raw::{PartnerConfig, SourceConfig};
use super::secret_source::{read_secrets, SecretSource};
use super::validate::{check_rate, check_token_length};
use super::{Destination, Problems, ResolvedAuth, Source};
use super::{Secret, SourceKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The source id of an integration's cohorts in Redis, metrics and segment keys.
pub fn source_id(integration_key: &str) -> String {
    format!("partner-{integration_key}")
}

/// One caller token: any of its secrets is accepted (rotation).
#[derive(Debug, Clone)]
pub struct PartnerToken {
    pub secrets: Vec<Secret>,
    /// `None`: every integration (`["*"]`).
    pub integrations: Option<BTreeSet<String>>,
    /// `None`: no limit.
    pub requests_per_second: Option<f64>,
    /// The client-side IDs this token may write; `None`: every one.
    pub environments: Option<BTreeSet<String>>,
}

impl PartnerToken {
    pub fn allows(&self, integration_key: &str) -> bool {
        self.integrations
            .as_ref()
            .is_none_or(|set| set.contains(integration_key))
    }

    /// Whether the token may write the environment with this client-side ID.
    pub fn allows_environment(&self, client_id: &str) -> bool {
        self.environments
            .as_ref()
            .is_none_or(|set| set.contains(client_id))
    }
}

/// Validated `[partner]` settings.
#[derive(Debug, Clone, Default)]
pub struct PartnerSettings {
    /// Integration key → its request parser.
    pub manifests: BTreeMap<String, Arc<Manifest>>,
    /// Client-side ID → destination names (distinct context kinds).
    pub environments: BTreeMap<String, Vec<String>>,
    pub tokens: Vec<PartnerToken>,
    /// `partner-<integrationKey>` → the derived source (auth is the tokens').
    pub sources: BTreeMap<String, Arc<Source>>,
    /// More distinct cohorts than this in one body is a 400.
    pub max_cohorts_per_request: usize,
}

pub(super) fn validate(
    raw: &PartnerConfig,
    destinations: &BTreeMap<String, Arc<Destination>>,
    sources: &[SourceConfig],
    env: &dyn SecretSource,
    p: &mut Problems,
) -> PartnerSettings {
    let manifests = load_configured(raw, p);

    let mut environments = BTreeMap::new();
    let mut all_destinations = BTreeSet::new();
    for (client_id, names) in &raw.environments {
        let cfg_key = format!("partner.environments.{client_id}");
        if client_id.trim().is_empty() {
            p.add(&cfg_key, "the client-side ID must not be empty");
        }
        let names = names.to_vec();
        if names.is_empty() {
            p.add(&cfg_key, "must name at least one destination");
        }
        let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
        for name in &names {
            match destinations.get(name) {
                None => p.add(
                    &cfg_key,
                    format!("unknown destination {name:?} (define [destinations.{name}])"),
                ),
                Some(d) => {
                    if let Some(other) = kinds.insert(&d.context_kind, name) {
                        p.add(
                            &cfg_key,
                            format!(
                                "destinations {other:?} and {name:?} both have context kind {:?}; \
                                 the body's context kind must pick exactly one",
                                d.context_kind
                            ),
                        );
                    }
                    all_destinations.insert(name.clone());
                }
            }
        }
        environments.insert(client_id.clone(), names);
    }

    let mut tokens = Vec::new();
    for (i, t) in raw.tokens.iter().enumerate() {
        let cfg_key = format!("partner.tokens[{i}]");
        let secrets = read_secrets(
            env,
            p,
            &cfg_key,
            &t.secret_env,
            &t.secret_file,
            "secret_env",
            "secret_file",
        );
        for (j, s) in secrets.iter().enumerate() {
            check_token_length(p, &format!("{cfg_key}.secret[{j}]"), s);
        }
        if let Some(envs) = &t.environments {
            if envs.is_empty() {
                p.add(
                    format!("{cfg_key}.environments"),
                    "must list client-side IDs (or be left out for every environment)",
                );
            }
            for (j, e) in envs.iter().enumerate() {
                if !raw.environments.contains_key(e) {
                    p.add(
                        format!("{cfg_key}.environments[{j}]"),
                        format!("unknown client-side ID {e:?} (not in [partner.environments])"),
                    );
                }
            }
        }
        if t.integrations.is_empty() {
            p.add(
                format!("{cfg_key}.integrations"),
                "must list integration keys, or [\"*\"] for all",
            );
        }
        let all = t.integrations.iter().any(|k| k == "*");
        for (j, k) in t.integrations.iter().enumerate() {
            if k != "*" && !manifests.contains_key(k) {
                p.add(
                    format!("{cfg_key}.integrations[{j}]"),
                    format!(
                        "unknown integration key {k:?}; known: {}",
                        manifests.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        let rps = t
            .requests_per_second
            .filter(|&rps| check_rate(p, &format!("{cfg_key}.requests_per_second"), rps));
        tokens.push(PartnerToken {
            secrets,
            integrations: (!all).then(|| t.integrations.iter().cloned().collect()),
            requests_per_second: rps,
            environments: t.environments.as_ref().map(|e| e.iter().cloned().collect()),
        });
    }
    if !tokens.is_empty() && environments.is_empty() {
        p.add(
            "partner.environments",
            "must map at least one client-side ID to a destination when partner tokens are configured",
        );
    }

    if raw.max_cohorts_per_request == 0 {
        p.add("partner.max_cohorts_per_request", "must be at least 1");
    }

    let mut derived = BTreeMap::new();
    for (key, m) in &manifests {
        let id = source_id(key);
        if let Some(i) = sources.iter().position(|s| s.id == id) {
            p.add(
                format!("sources[{i}].id"),
                format!("{id:?} is reserved for the partner integration {key:?}"),
            );
        }
        derived.insert(
            id.clone(),
            Arc::new(Source {
                id,
                kind: SourceKind::Partner,
                destinations: all_destinations.iter().cloned().collect(),
                key_field: m.member_id_path().to_string(),
                // Never used to verify: partner callers authenticate with `tokens`.
                auth: ResolvedAuth::None,
                // Only the standard-webhooks parser reads it; the partner
                // endpoint picks a destination by the body's context kind.
                context_kinds: Vec::new(),
            }),
        );
    }
    PartnerSettings {
        manifests,
        environments,
        tokens,
        sources: derived,
        max_cohorts_per_request: raw.max_cohorts_per_request,
    }
}
