//! Validation names every offending key; secrets never show in `Debug`.

use super::*;
use std::collections::HashMap;

fn secrets() -> MapSecrets {
    let mut m = HashMap::new();
    for (k, v) in [
        ("LD_API_TOKEN", "api-0123456789abcdef"),
        ("AMP", "amp-secret-value"),
        ("AMP_OLD", "amp-old-secret"),
        ("HEAP", "heap-secret-value"),
        ("MP_USER", "mixpanel"),
        ("MP_PASS", "mp-pass-value"),
    ] {
        m.insert(k.to_string(), v.to_string());
    }
    MapSecrets(m)
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
[redis]
url = "redis://127.0.0.1:6379"
[launchdarkly]
api_token_env = "LD_API_TOKEN"
[destinations.production]
project = "default"
environment = "production"
[destinations.staging]
project = "default"
environment = "staging"
context_kind = "device"
segment_key = "{destination}-{source}-{cohort_id}"
[[sources]]
id = "amplitude-prod"
kind = "amplitude"
destinations = ["production", "staging"]
key_field = "user_properties.email"
auth = { scheme = "header", header = "X-Token", secret_env = ["AMP", "AMP_OLD"] }
[[sources]]
id = "heap-prod"
kind = "heap"
destinations = ["production"]
auth = { scheme = "heap-hash", secret_env = "HEAP", tolerance_seconds = 60 }
[[sources]]
id = "amp-basic"
kind = "amplitude"
destinations = ["production"]
auth = { scheme = "basic", username_env = "MP_USER", password_env = "MP_PASS" }
"#;

#[test]
fn a_good_config_resolves_with_defaults() {
    let s = from_toml_str(GOOD, &secrets()).unwrap();
    assert_eq!(s.redis.partitions, 64);
    assert_eq!(s.redis.key_prefix, "cb");
    assert_eq!(s.launchdarkly.max_keys_per_request, 1000);
    assert_eq!(s.launchdarkly.api_version, "20240415");
    assert_eq!(s.flush.max_delay_ms, 1000);
    assert_eq!(s.lease_ttl.as_millis(), 30_000);
    let amp = &s.sources["amplitude-prod"];
    assert_eq!(amp.key_field, "user_properties.email");
    assert!(matches!(&amp.auth, ResolvedAuth::Header { secrets, .. } if secrets.len() == 2));
    assert_eq!(s.sources["heap-prod"].key_field, "id");
    assert_eq!(
        s.destinations["production"].segment_key,
        "{source}-{cohort_id}"
    );
    assert_eq!(s.destinations["staging"].context_kind, "device");
}

#[test]
fn debug_output_never_contains_a_secret() {
    let s = from_toml_str(GOOD, &secrets()).unwrap();
    let debug = format!("{s:?}");
    for (_, v) in secrets().0 {
        if v != "mixpanel" {
            assert!(!debug.contains(&v), "secret {v} leaked into Debug");
        }
    }
    assert!(debug.contains("[redacted]"));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let bad = r#"
[server]
listen = "not an address"
[redis]
partitions = 0
key_prefix = "has space"
[launchdarkly]
api_token_env = "MISSING_TOKEN"
requests_per_second = -1.0
max_keys_per_request = 0
[destinations.production]
project = ""
environment = "production"
context_kind = "kind"
segment_key = "{cohort}"
tags = ["has space"]
[[sources]]
id = "bad:id"
kind = "mixpanelz"
destinations = ["prod"]
auth = { scheme = "header", secret_env = "NOPE" }
[[sources]]
id = "open"
kind = "heap"
destinations = ["production"]
auth = { scheme = "none" }
[[sources]]
id = "weird"
kind = "heap"
destinations = []
auth = { scheme = "telepathy" }
"#;
    let err = from_toml_str(bad, &secrets()).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    for expected in [
        "server.listen",
        "redis.partitions",
        "redis.key_prefix",
        "launchdarkly.api_token_env",
        "launchdarkly.requests_per_second",
        "launchdarkly.max_keys_per_request",
        "destinations.production.project",
        "destinations.production.context_kind",
        "destinations.production.segment_key",
        "destinations.production.tags[0]",
        "sources[0].id",
        "sources[0].kind",
        "sources[0].destinations[0]",
        "sources[0].auth.header",
        "sources[0].auth.secret_env",
        "sources[1].auth.scheme",
        "sources[2].destinations",
        "sources[2].auth.scheme",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} not reported; got {keys:?}"
        );
    }
    let text = err.to_string();
    assert!(text.contains("MISSING_TOKEN is not set"), "{text}");
    assert!(text.contains("allow_unauthenticated"), "{text}");
}

#[test]
fn unknown_keys_and_wrong_types_are_named() {
    let err = from_toml_str("[redis]\nurll = \"x\"\n", &secrets()).unwrap_err();
    assert!(err.to_string().contains("urll"), "{err}");
    let err = from_toml_str("[flush]\nmax_delay_ms = \"soon\"\n", &secrets()).unwrap_err();
    assert!(
        err.problems.iter().any(|(k, _)| k == "flush.max_delay_ms"),
        "{err}"
    );
}

#[test]
fn a_lease_shorter_than_the_request_timeout_is_refused() {
    let text = format!("{GOOD}\n[flush]\nlease_ttl_ms = 5000\n");
    let text = text.replacen(
        "[launchdarkly]\n",
        "[launchdarkly]\nrequest_timeout_ms = 10000\n",
        1,
    );
    let err = from_toml_str(&text, &secrets()).unwrap_err();
    assert!(
        err.problems.iter().any(|(k, _)| k == "flush.lease_ttl_ms"),
        "{err}"
    );
}

#[test]
fn a_cluster_is_configured_by_seed_urls() {
    let text = GOOD.replacen(
        "url = \"redis://127.0.0.1:6379\"\n",
        "url = \"redis://:seed-pass@127.0.0.1:7000\"\ncluster = true\ncluster_urls = [\"redis://127.0.0.1:7001\", \"redis://:seed-pass@127.0.0.1:7002\"]\n",
        1,
    );
    let s = from_toml_str(&text, &secrets()).unwrap();
    assert!(s.redis.cluster);
    assert_eq!(s.redis.cluster_urls.len(), 2);
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("seed-pass"),
        "a Redis password leaked: {debug}"
    );
    assert!(!from_toml_str(GOOD, &secrets()).unwrap().redis.cluster);
}

#[test]
fn cluster_settings_are_validated_with_their_keys() {
    let seeds_without_cluster = GOOD.replacen(
        "url = \"redis://127.0.0.1:6379\"\n",
        "url = \"redis://127.0.0.1:6379\"\ncluster_urls = [\"redis://127.0.0.1:7001\"]\n",
        1,
    );
    let err = from_toml_str(&seeds_without_cluster, &secrets()).unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|(k, m)| k == "redis.cluster_urls" && m.contains("cluster = true")),
        "{err}"
    );
    let bad_seeds = GOOD.replacen(
        "url = \"redis://127.0.0.1:6379\"\n",
        "url = \"unix:///tmp/redis.sock\"\ncluster = true\ncluster_urls = [\"redis://127.0.0.1:7001\", \"127.0.0.1:7002\"]\n",
        1,
    );
    let err = from_toml_str(&bad_seeds, &secrets()).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"redis.url"), "{err}");
    assert!(keys.contains(&"redis.cluster_urls[1]"), "{err}");
    assert!(!keys.contains(&"redis.cluster_urls[0]"), "{err}");
    let err = from_toml_str("[redis]\ncluster = \"yes\"\n", &secrets()).unwrap_err();
    assert!(
        err.problems.iter().any(|(k, _)| k == "redis.cluster"),
        "{err}"
    );
}

#[test]
fn the_default_flush_concurrency_follows_the_rate_from_4_to_128_slots() {
    let mut s = from_toml_str(GOOD, &secrets()).unwrap();
    for (rps, slots) in [(1.0, 4), (50.0, 13), (400.0, 100), (2_000.0, 128)] {
        s.launchdarkly.requests_per_second = rps;
        assert_eq!(s.flush_concurrency(), slots, "{rps}/s");
    }
    s.flush.concurrency = Some(7);
    assert_eq!(s.flush_concurrency(), 7);
}
