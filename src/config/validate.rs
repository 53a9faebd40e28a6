//! Validation of [`RawConfig`] into [`Settings`]: every problem is collected
//! and named by its key, and every secret is resolved once, at startup
//! (sources' `auth` in `auth`, `[partner]` in `partner`, secrets through
//! `secret_source`).

use super::auth::resolve_auth;
use super::raw::{LaunchDarklyConfig, RawConfig, RedisConfig};
use super::secret_source::{read_env, read_file, SecretSource};
use super::{ConfigError, Destination, Problems, Secret, Settings, Source, SourceKind};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

impl Settings {
    /// Validates everything, collecting every problem before failing.
    pub fn from_raw(raw: RawConfig, env: &dyn SecretSource) -> Result<Settings, ConfigError> {
        let mut p = Problems::default();

        let listen = match raw.server.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                p.add(
                    "server.listen",
                    format!("{:?} is not an address: {e}", raw.server.listen),
                );
                None
            }
        };
        if raw.server.max_body_bytes == 0 {
            p.add("server.max_body_bytes", "must be greater than 0");
        }
        if raw.server.body_read_timeout_ms == 0 {
            p.add("server.body_read_timeout_ms", "must be greater than 0");
        }
        let operator_token = raw
            .server
            .operator_token_env
            .as_ref()
            .and_then(|name| read_env(env, &mut p, "server.operator_token_env", name));
        if let Some(t) = &operator_token {
            check_token_length(&mut p, "server.operator_token_env", t);
        }
        if raw.server.workers > 1024 {
            p.add(
                "server.workers",
                "must be at most 1024 (0: one per CPU core)",
            );
        }
        if raw.server.max_key_bytes == 0 {
            p.add("server.max_key_bytes", "must be greater than 0");
        }
        if raw.server.max_future_skew_seconds > 10 * 365 * 24 * 3600 {
            p.add(
                "server.max_future_skew_seconds",
                "must be at most ten years (315360000)",
            );
        }

        validate_redis(&raw.redis, &mut p);
        validate_launchdarkly(&raw.launchdarkly, &mut p);
        let ld_token = resolve_ld_token(&raw.launchdarkly, env, &mut p);

        let lease_ttl_ms = raw
            .flush
            .lease_ttl_ms
            .unwrap_or_else(|| (raw.launchdarkly.request_timeout_ms * 3).max(30_000));
        if lease_ttl_ms < raw.launchdarkly.request_timeout_ms + 2_000 {
            p.add(
                "flush.lease_ttl_ms",
                format!(
                    "must exceed launchdarkly.request_timeout_ms ({}) by at least 2000 so no request outlives its lease",
                    raw.launchdarkly.request_timeout_ms
                ),
            );
        }
        if raw.flush.concurrency == Some(0) {
            p.add("flush.concurrency", "must be at least 1");
        }
        if raw.flush.poll_interval_ms == 0 {
            p.add("flush.poll_interval_ms", "must be at least 1");
        }
        // One record is built inside the apply script: keep it small.
        if raw.flush.history_keys_per_entry > 1000 {
            p.add("flush.history_keys_per_entry", "must be at most 1000");
        }
        if raw.ingest.group_commit_wait_us > 10_000 {
            p.add(
                "ingest.group_commit_wait_us",
                "must be at most 10000 (10 ms)",
            );
        }
        if raw.ingest.group_commit_max == 0 || raw.ingest.group_commit_max > 1024 {
            p.add("ingest.group_commit_max", "must be between 1 and 1024");
        }
        if raw.flush.history_entries_per_cohort > 10_000 {
            p.add("flush.history_entries_per_cohort", "must be at most 10000");
        }
        if raw.flush.history_entries_per_cohort > 0 && raw.flush.history_max_age_seconds == 0 {
            p.add(
                "flush.history_max_age_seconds",
                "must be at least 1 while the history is on",
            );
        }
        // A zero interval would re-audit a shadow link's whole backlog on every push.
        if raw.flush.shadow_interval_ms == 0 {
            p.add("flush.shadow_interval_ms", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&raw.flush.verify_share) {
            p.add(
                "flush.verify_share",
                "must be between 0 (off) and 1 (a share of launchdarkly.requests_per_second)",
            );
        }

        let mut destinations = BTreeMap::new();
        for (name, d) in &raw.destinations {
            let key = format!("destinations.{name}");
            check_id(&mut p, &key, name);
            if d.project.trim().is_empty() {
                p.add(format!("{key}.project"), "must not be empty");
            }
            if d.environment.trim().is_empty() {
                p.add(format!("{key}.environment"), "must not be empty");
            }
            if !valid_context_kind(&d.context_kind) {
                p.add(
                    format!("{key}.context_kind"),
                    format!("{:?} is not a valid LaunchDarkly context kind (letters, digits, '.', '_', '-'; not \"kind\")", d.context_kind),
                );
            }
            let segment_key = d
                .segment_key
                .clone()
                .unwrap_or_else(|| "{source}-{cohort_id}".into());
            let segment_name = d
                .segment_name
                .clone()
                .unwrap_or_else(|| "{cohort_name}".into());
            for (field, tpl) in [
                ("segment_key", &segment_key),
                ("segment_name", &segment_name),
            ] {
                if let Err(msg) = crate::naming::check_template(tpl) {
                    p.add(format!("{key}.{field}"), msg);
                }
            }
            let tags = d
                .tags
                .clone()
                .unwrap_or_else(|| vec!["cohort-bridge".into()]);
            for (i, t) in tags.iter().enumerate() {
                if crate::naming::slug(t) != *t || t.is_empty() {
                    p.add(
                        format!("{key}.tags[{i}]"),
                        format!("{t:?} is not a valid LaunchDarkly tag (letters, digits, '.', '_', '-')"),
                    );
                }
            }
            destinations.insert(
                name.clone(),
                Arc::new(Destination {
                    name: name.clone(),
                    project: d.project.clone(),
                    environment: d.environment.clone(),
                    context_kind: d.context_kind.clone(),
                    segment_key,
                    segment_name,
                    tags,
                    adopt_existing_segments: d.adopt_existing_segments,
                    mode: d.mode.unwrap_or(raw.launchdarkly.mode),
                }),
            );
        }

        let mut sources = BTreeMap::new();
        for (i, s) in raw.sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            check_id(&mut p, &format!("{key}.id"), &s.id);
            if sources.contains_key(&s.id) {
                p.add(
                    format!("{key}.id"),
                    format!("duplicate source id {:?}", s.id),
                );
            }
            let kind = match s.kind.parse::<SourceKind>() {
                Ok(k) => Some(k),
                _ => {
                    p.add(
                        format!("{key}.kind"),
                        format!(
                            "unknown kind {:?}; known kinds: {}",
                            s.kind,
                            SourceKind::names().join(", ")
                        ),
                    );
                    None
                }
            };
            if s.destinations.is_empty() {
                p.add(
                    format!("{key}.destinations"),
                    "must list at least one destination",
                );
            }
            for (j, d) in s.destinations.iter().enumerate() {
                if !raw.destinations.contains_key(d) {
                    p.add(
                        format!("{key}.destinations[{j}]"),
                        format!("unknown destination {d:?} (define [destinations.{d}])"),
                    );
                }
            }
            let key_field = s
                .key_field
                .clone()
                .or_else(|| kind.map(|k| k.default_key_field().to_string()))
                .unwrap_or_default();
            if key_field.is_empty() || key_field.split('.').any(str::is_empty) {
                p.add(
                    format!("{key}.key_field"),
                    format!("{key_field:?} is not a field path"),
                );
            }
            let auth = resolve_auth(
                &s.auth,
                s.allow_unauthenticated,
                env,
                &mut p,
                &format!("{key}.auth"),
            );
            let mut context_kinds: Vec<String> = s
                .destinations
                .iter()
                .filter_map(|d| raw.destinations.get(d))
                .map(|d| d.context_kind.clone())
                .collect();
            context_kinds.sort();
            context_kinds.dedup();
            if let (Some(kind), Some(auth)) = (kind, auth) {
                sources.insert(
                    s.id.clone(),
                    Arc::new(Source {
                        id: s.id.clone(),
                        kind,
                        destinations: s.destinations.clone(),
                        key_field,
                        auth,
                        context_kinds,
                    }),
                );
            }
        }

        let partner =
            super::partner::validate(&raw.partner, &destinations, &raw.sources, env, &mut p);

        let metrics_listen = match raw
            .server
            .metrics_listen
            .as_deref()
            .map(str::parse::<SocketAddr>)
        {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                p.add(
                    "server.metrics_listen",
                    format!("{:?} is not an address: {e}", raw.server.metrics_listen),
                );
                None
            }
        };
        if !p.0.is_empty() {
            return Err(ConfigError { problems: p.0 });
        }
        for (key, msg) in &p.1 {
            tracing::warn!(key = %key, "{msg}");
        }
        Ok(Settings {
            listen: listen.expect("checked above"),
            metrics_listen,
            server: raw.server,
            redis: raw.redis,
            ld_token: ld_token.expect("checked above"),
            launchdarkly: raw.launchdarkly,
            lease_ttl: Duration::from_millis(lease_ttl_ms),
            flush: raw.flush,
            ingest: raw.ingest,
            destinations,
            sources,
            operator_token,
            partner,
            warnings: p.1,
        })
    }
}

/// Bearer tokens shorter than this are configuration errors (guessable).
pub const MIN_TOKEN_BYTES: usize = 16;

pub(super) fn check_token_length(p: &mut Problems, key: &str, token: &Secret) {
    if token.expose().len() < MIN_TOKEN_BYTES {
        p.add(
            key,
            format!("the token is shorter than {MIN_TOKEN_BYTES} bytes; use a long random value"),
        );
    }
}

/// A requests-per-second setting that governor can turn into a quota:
/// positive, finite, and with a period between 1 ns and about 11.6 days.
pub(super) fn check_rate(p: &mut Problems, key: &str, rps: f64) -> bool {
    let ok = rps.is_finite()
        && (1e-6..=1e9).contains(&rps)
        && Duration::try_from_secs_f64(1.0 / rps).is_ok_and(|d| !d.is_zero());
    if !ok {
        p.add(
            key,
            format!("must be a positive number between 0.000001 and 1000000000, got {rps}"),
        );
    }
    ok
}

/// Whether a URL's host is a loopback address (127.0.0.0/8, ::1, localhost).
fn loopback_host(url: &str) -> bool {
    let Ok(uri) = url.parse::<actix_web::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Ids appear in URLs and Redis keys, where `:` separates parts.
pub(super) fn check_id(p: &mut Problems, key: &str, id: &str) {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        p.add(
            key,
            format!("{id:?} must be 1 to 64 letters, digits, '-' or '_'"),
        );
    }
}

fn valid_context_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind != "kind"
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn validate_redis(r: &RedisConfig, p: &mut Problems) {
    if !(r.url.starts_with("redis://")
        || r.url.starts_with("rediss://")
        || r.url.starts_with("unix://"))
    {
        p.add(
            "redis.url",
            format!(
                "{:?} must start with redis://, rediss:// or unix://",
                redact_url(&r.url)
            ),
        );
    }
    validate_cluster(r, p);
    if r.key_prefix.is_empty()
        || !r
            .key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        p.add(
            "redis.key_prefix",
            "must be letters, digits, '-', '_' or '.'",
        );
    }
    if r.snapshot_ttl_seconds == 0 {
        p.add("redis.snapshot_ttl_seconds", "must be at least 1");
    }
    if r.partitions == 0 || r.partitions > 16384 {
        p.add("redis.partitions", "must be between 1 and 16384");
    }
    if r.dedupe_ttl_seconds == 0 {
        p.add("redis.dedupe_ttl_seconds", "must be at least 1");
    }
    if r.response_timeout_ms == 0 {
        p.add("redis.response_timeout_ms", "must be at least 1");
    }
}

/// `redis.cluster` and `redis.cluster_urls`: every seed is a TCP node.
fn validate_cluster(r: &RedisConfig, p: &mut Problems) {
    if !r.cluster {
        if !r.cluster_urls.is_empty() {
            p.add(
                "redis.cluster_urls",
                "is only used with redis.cluster = true; set it, or remove cluster_urls",
            );
        }
        return;
    }
    if r.url.starts_with("unix://") {
        p.add(
            "redis.url",
            "a Redis Cluster is reached over TCP: with redis.cluster = true the url must be redis:// or rediss://",
        );
    }
    for (i, u) in r.cluster_urls.iter().enumerate() {
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
            p.add(
                format!("redis.cluster_urls[{i}]"),
                format!("{:?} must start with redis:// or rediss://", redact_url(u)),
            );
        }
    }
}

fn validate_launchdarkly(l: &LaunchDarklyConfig, p: &mut Problems) {
    if l.base_url.starts_with("http://") {
        if !loopback_host(&l.base_url) {
            p.add(
                "launchdarkly.base_url",
                format!(
                    "{:?} must be https (http is allowed only for a loopback address: 127.0.0.0/8, ::1, localhost)",
                    l.base_url
                ),
            );
        }
    } else if !l.base_url.starts_with("https://") {
        p.add(
            "launchdarkly.base_url",
            format!("{:?} must be an https URL", l.base_url),
        );
    }
    check_rate(p, "launchdarkly.requests_per_second", l.requests_per_second);
    if l.max_keys_per_request == 0 || l.max_keys_per_request > 100_000 {
        p.add(
            "launchdarkly.max_keys_per_request",
            "must be between 1 and 100000",
        );
    }
    if l.request_timeout_ms == 0 {
        p.add("launchdarkly.request_timeout_ms", "must be at least 1");
    }
    if l.backoff_base_ms == 0 || l.backoff_max_ms < l.backoff_base_ms {
        p.add(
            "launchdarkly.backoff_max_ms",
            "backoff_base_ms must be > 0 and backoff_max_ms >= backoff_base_ms",
        );
    }
    if l.api_version.trim().is_empty() {
        p.add("launchdarkly.api_version", "must not be empty");
    }
    if l.max_pause_seconds == 0 || l.max_pause_seconds > 86_400 {
        p.add(
            "launchdarkly.max_pause_seconds",
            "must be between 1 and 86400",
        );
    }
}

fn resolve_ld_token(
    l: &LaunchDarklyConfig,
    env: &dyn SecretSource,
    p: &mut Problems,
) -> Option<Secret> {
    if let Some(file) = &l.api_token_file {
        return read_file(env, p, "launchdarkly.api_token_file", file);
    }
    read_env(env, p, "launchdarkly.api_token_env", &l.api_token_env)
}

/// Hides a password in a Redis URL before it is printed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
