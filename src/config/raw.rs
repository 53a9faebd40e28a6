//! The configuration file's shape, exactly as operators write it.
//!
//! Every struct denies unknown fields so that a misspelt key is an error that
//! names it. Defaults live here, next to the field they belong to.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole file, before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: ServerConfig,
    pub redis: RedisConfig,
    pub launchdarkly: LaunchDarklyConfig,
    pub flush: FlushConfig,
    pub destinations: BTreeMap<String, DestinationConfig>,
    pub sources: Vec<SourceConfig>,
    pub partner: PartnerConfig,
    pub ingest: IngestConfig,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free one.
    pub listen: String,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Seconds a graceful shutdown waits for requests and flushes in flight.
    pub shutdown_grace_seconds: u64,
    /// Environment variable holding the operator API token (unset: operator API off).
    pub operator_token_env: Option<String>,
    /// A request body must arrive within this many ms, else 408.
    pub body_read_timeout_ms: u64,
    /// A change whose version is more than this far ahead of the bridge's
    /// clock makes its push a 400 (a far-future version would pin a member).
    pub max_future_skew_seconds: u64,
    /// Member keys longer than this (bytes), or holding a control character,
    /// are skipped and counted as `skipped_invalid_key`.
    pub max_key_bytes: usize,
    /// Serve `/metrics` only on this address (unset: on `listen`).
    pub metrics_listen: Option<String>,
    /// HTTP worker threads, each with its own Redis connection for small
    /// pushes; 0: one per CPU core (actix-web's default).
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace_seconds: 30,
            operator_token_env: None,
            body_read_timeout_ms: 10_000,
            max_future_skew_seconds: 300,
            max_key_bytes: 1024,
            metrics_listen: None,
            workers: 0,
        }
    }
}

/// `[redis]`: the system of record.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// The Redis endpoint; with `cluster = true`, a seed node of the cluster.
    pub url: String,
    /// `url` is a Redis Cluster node: discover the cluster from it and route
    /// each command to the primary of its slot.
    pub cluster: bool,
    /// More seed nodes of the cluster (`cluster = true` only), tried when
    /// `url` does not answer.
    pub cluster_urls: Vec<String>,
    /// Prefix of every key; the hash tag of a partition is `{<prefix>:<p>}`.
    pub key_prefix: String,
    /// Number of partitions P. Fixed for the life of a deployment's data.
    pub partitions: u16,
    /// How long a delivery id is remembered for de-duplication.
    pub dedupe_ttl_seconds: u64,
    /// How long removed members stay as tombstones so late, older events are recognised.
    pub tombstone_retention_seconds: u64,
    /// Milliseconds a Redis command may take before the push is answered 503.
    pub response_timeout_ms: u64,
    /// Milliseconds to wait for a (re)connection.
    pub connect_timeout_ms: u64,
    /// Refuse readiness when `maxmemory-policy` can evict keys (`allkeys-*`, `volatile-*`).
    pub refuse_evicting_policy: bool,
    /// How long the pages of an unfinished full snapshot (Mixpanel `members`)
    /// are kept waiting for the session's other pages; renewed by each page.
    pub snapshot_ttl_seconds: u64,
}

/// Passwords in the URLs are redacted.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::validate::redact_url;
        let seeds: Vec<String> = self.cluster_urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("cluster", &self.cluster)
            .field("cluster_urls", &seeds)
            .field("key_prefix", &self.key_prefix)
            .field("partitions", &self.partitions)
            .field("dedupe_ttl_seconds", &self.dedupe_ttl_seconds)
            .field(
                "tombstone_retention_seconds",
                &self.tombstone_retention_seconds,
            )
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("refuse_evicting_policy", &self.refuse_evicting_policy)
            .field("snapshot_ttl_seconds", &self.snapshot_ttl_seconds)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            cluster_urls: Vec::new(),
            key_prefix: "cb".into(),
            partitions: 64,
            dedupe_ttl_seconds: 24 * 3600,
            tombstone_retention_seconds: 7 * 24 * 3600,
            response_timeout_ms: 2000,
            connect_timeout_ms: 1000,
            refuse_evicting_policy: true,
            snapshot_ttl_seconds: 24 * 3600,
        }
    }
}

/// `[launchdarkly]`: where and how fast the bridge writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchDarklyConfig {
    pub base_url: String,
    /// The environment variable holding the REST access token.
    pub api_token_env: String,
    /// Alternatively, a file holding the token (Docker/Kubernetes secrets).
    pub api_token_file: Option<String>,
    pub api_version: String,
    /// Requests per second for the whole deployment, retries included.
    pub requests_per_second: f64,
    /// Keys (adds and removes together) in one membership request.
    pub max_keys_per_request: usize,
    pub request_timeout_ms: u64,
    /// First retry delay; doubles per attempt up to `backoff_max_ms`, fully jittered.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a link blocked by 401/403/404 waits before it is tried again.
    pub blocked_retry_ms: u64,
    /// Wait after a 429 whose reset time is missing or already past.
    pub rate_limited_fallback_ms: u64,
    /// Longest pause any 429 (or a shared pause read from Redis) can impose.
    pub max_pause_seconds: u64,
    /// `live` (default) writes to LaunchDarkly; `shadow` runs everything but
    /// sends nothing, recording each write it would have made in the audit
    /// trail. A destination may override it (`[destinations.<name>] mode`).
    pub mode: Mode,
}

/// Whether the flusher writes a destination's links to LaunchDarkly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every write is sent.
    #[default]
    Live,
    /// Nothing is sent to LaunchDarkly (no creation, write, read or export):
    /// each write the flusher would have made is audited as `shadowed`, and
    /// the changes stay pending in Redis until the destination goes live.
    Shadow,
}

impl Mode {
    /// `live` or `shadow`, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Shadow => "shadow",
        }
    }
}

impl Default for LaunchDarklyConfig {
    fn default() -> Self {
        Self {
            base_url: "https://app.launchdarkly.com".into(),
            api_token_env: "LD_API_TOKEN".into(),
            api_token_file: None,
            api_version: "20240415".into(),
            requests_per_second: 5.0,
            max_keys_per_request: 1000,
            request_timeout_ms: 10_000,
            backoff_base_ms: 250,
            backoff_max_ms: 30_000,
            blocked_retry_ms: 60_000,
            rate_limited_fallback_ms: 1_000,
            max_pause_seconds: 900,
            mode: Mode::Live,
        }
    }
}

/// `[flush]`: when and how the flusher works.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlushConfig {
    /// Longest a change waits before its link's flush is due.
    pub max_delay_ms: u64,
    /// Links flushed concurrently by one replica (the rate limit still
    /// applies); absent: derived from the rate ([`crate::config::Settings::flush_concurrency`]).
    pub concurrency: Option<usize>,
    /// Partition lease time to live; must exceed the request timeout by a margin.
    pub lease_ttl_ms: Option<u64>,
    /// How often the flusher looks for due work when nothing wakes it.
    pub poll_interval_ms: u64,
    /// How often tombstones past retention are swept.
    pub sweep_interval_seconds: u64,
    /// Rewrite every link in full this often (drift repair); 0 = never.
    /// Checked at each sweep, so the sweep interval is its granularity.
    pub resync_interval_seconds: u64,
    /// Reconcile every link with LaunchDarkly's export this often (drift
    /// found and repaired, see the `reconcile` module); 0 = never.
    pub reconcile_interval_seconds: u64,
    /// Audit entries kept per link (newest first; one per LaunchDarkly
    /// write); 0 = no audit trail.
    pub audit_entries_per_link: usize,
    /// Push records kept per cohort for `why` (newest first; one per push,
    /// never one per member); 0 = no change history.
    pub history_entries_per_cohort: usize,
    /// Member keys (with each one's outcome) listed per push record; the
    /// counts are always complete.
    pub history_keys_per_entry: usize,
    /// Push records older than this are dropped (and a cohort's whole
    /// history once it has had no push for this long).
    pub history_max_age_seconds: u64,
    /// Shadow mode: how long a shadow link waits between two audited
    /// would-be writes (its changes stay pending, so each pass would
    /// otherwise re-record the same backlog every `max_delay_ms`).
    pub shadow_interval_ms: u64,
    /// Share of this replica's LaunchDarkly rate spent between reconciles
    /// reading random members back (sampled verification, see
    /// `reconcile::sample`); 0 = off. Only when no write waits for a token.
    pub verify_share: f64,
}

impl Default for FlushConfig {
    fn default() -> Self {
        Self {
            max_delay_ms: 1000,
            concurrency: None,
            lease_ttl_ms: None,
            poll_interval_ms: 100,
            sweep_interval_seconds: 3600,
            resync_interval_seconds: 0,
            reconcile_interval_seconds: 0,
            audit_entries_per_link: 1000,
            history_entries_per_cohort: 50,
            history_keys_per_entry: 64,
            history_max_age_seconds: 86_400,
            shadow_interval_ms: 60_000,
            verify_share: 0.05,
        }
    }
}

/// `[destinations.<name>]`: one LaunchDarkly project/environment/context kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub project: String,
    pub environment: String,
    #[serde(default = "default_context_kind")]
    pub context_kind: String,
    /// Template of the segment key: `{source}`, `{cohort_id}`, `{cohort_name}`.
    pub segment_key: Option<String>,
    /// Template of the segment name (default: the cohort's name).
    pub segment_name: Option<String>,
    pub tags: Option<Vec<String>>,
    /// On a 409 at creation, adopt a segment of that key even if it does not
    /// carry this link's ownership mark (one made by hand). Default false.
    #[serde(default)]
    pub adopt_existing_segments: bool,
    /// `live` or `shadow` for this destination only (default: `launchdarkly.mode`).
    #[serde(default)]
    pub mode: Option<Mode>,
}

fn default_context_kind() -> String {
    "user".into()
}

/// One value or a list of values (`secret_env = "A"` or `["A", "B"]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `[[sources]]`: one configured sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Used in the URL: `POST /v1/webhooks/<id>`.
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Dotted path, inside each member object, of the LaunchDarkly context key.
    pub key_field: Option<String>,
    pub auth: AuthConfig,
    /// Required to accept `scheme = "none"`.
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

/// How a source authenticates. `secret_env` names environment variables;
/// `secret_file` names files. Every listed secret is accepted (rotation).
/// (Here as in every section, an absent `Option` field is `None`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub scheme: String,
    pub header: Option<String>,
    pub secret_env: Option<OneOrMany>,
    pub secret_file: Option<OneOrMany>,
    pub username_env: Option<String>,
    pub password_env: Option<OneOrMany>,
    pub password_file: Option<OneOrMany>,
    pub tolerance_seconds: Option<u64>,
    /// `segment-signature` only: `"signed"` (default) or `"first-event"`.
    pub batches: Option<String>,
}

/// `[partner]`: LaunchDarkly's partner endpoint,
/// `POST /api/v2/segment-targets/{integrationKey}` (see `config::manifest`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartnerConfig {
    /// Directories whose `*.json` integration-framework manifests with a
    /// `syncedSegment` capability are loaded at startup (file stem =
    /// integration key; overrides a built-in manifest of the same key).
    pub manifest_dirs: Vec<String>,
    /// LaunchDarkly client-side ID (the body's `environmentId`) → destination
    /// name, or several destinations of different context kinds (the body's
    /// context kind picks one).
    pub environments: BTreeMap<String, OneOrMany>,
    /// The tokens callers send as `Authorization: <token>`.
    pub tokens: Vec<PartnerTokenConfig>,
    /// Integration key → regex replacing its manifest's `arrayInclusion.matcher`
    /// (tealium's matches both actions as written, so it never removes).
    pub array_inclusion_matchers: BTreeMap<String, String>,
    /// More distinct cohorts than this in one body is a 400.
    pub max_cohorts_per_request: usize,
}

impl Default for PartnerConfig {
    fn default() -> Self {
        Self {
            manifest_dirs: Vec::new(),
            environments: BTreeMap::new(),
            tokens: Vec::new(),
            array_inclusion_matchers: BTreeMap::new(),
            max_cohorts_per_request: 1000,
        }
    }
}

/// `[[partner.tokens]]`: one caller token (several secrets for rotation).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerTokenConfig {
    pub secret_env: Option<OneOrMany>,
    pub secret_file: Option<OneOrMany>,
    /// Integration keys this token may post to; `["*"]` allows every one.
    pub integrations: Vec<String>,
    /// Requests per second this token may make (unset: no limit); beyond it
    /// the endpoint answers 429 with `X-Ratelimit-Reset`, as LaunchDarkly does.
    pub requests_per_second: Option<f64>,
    /// The client-side IDs this token may write; absent: every one.
    pub environments: Option<Vec<String>>,
}

/// `[ingest]`: how pushes reach Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Group commit (`store::GroupCommit`): a one-push request of at most 64
    /// changes (not a snapshot page) joins the pushes arriving together,
    /// sent in one script call; a group waits at most this long (µs) for the
    /// previous group of its slot to be answered. 0 = off (one call per push,
    /// the default until group commit is tested).
    pub group_commit_wait_us: u64,
    /// The most pushes in one group.
    pub group_commit_max: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            // Off until the integration tests of group commit exist.
            group_commit_wait_us: 0,
            group_commit_max: 64,
        }
    }
}
