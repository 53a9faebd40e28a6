//! Segment, Mixpanel and Standard Webhooks sources for tests: their config,
//! their secrets, and pushes signed or authenticated as each platform does.

use super::bridge::{Bridge, TestConfig};
use base64::Engine;
use cohort_bridge::config::{self, MapSecrets, Secret, Settings};
use serde_json::{json, Value};

pub const SEGMENT_SECRET: &str = "segment_shared_secret";
pub const MIXPANEL_USER: &str = "mixpanel";
pub const MIXPANEL_PASSWORD: &str = "s3cr3t-sync-key";
/// The official Standard Webhooks vector's secret, and the rotation pair.
pub const SW_OFFICIAL: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const SW_NEW: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const SW_OLD: &str = "whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Adds the `segment`, `mixpanel` and `standard-webhooks` sources (ids equal
/// to their kinds) to `cfg`, plus `sw-vectors`: Standard Webhooks with a
/// window wide enough for the vectors' old timestamps, accepting only the
/// official and the *new* rotation secret.
pub fn add_sources(cfg: &mut TestConfig) {
    cfg.sources.push_str(
        r#"
[[sources]]
id = "segment"
kind = "segment"
destinations = ["production"]
auth = { scheme = "segment-signature", secret_env = ["SEGMENT_OLD_SECRET", "SEGMENT_SECRET"] }

[[sources]]
id = "mixpanel"
kind = "mixpanel"
destinations = ["production"]
auth = { scheme = "basic", username_env = "MIXPANEL_USER", password_env = ["MIXPANEL_OLD_PASSWORD", "MIXPANEL_PASSWORD"] }

[[sources]]
id = "standard-webhooks"
kind = "standard-webhooks"
destinations = ["production"]
auth = { scheme = "standard-webhooks", secret_env = ["SW_OLD", "SW_NEW"], tolerance_seconds = 300 }

[[sources]]
id = "sw-vectors"
kind = "standard-webhooks"
destinations = ["production"]
auth = { scheme = "standard-webhooks", secret_env = ["SW_OFFICIAL", "SW_NEW"], tolerance_seconds = 400000000 }
"#,
    );
}

pub fn secrets() -> MapSecrets {
    let mut m = TestConfig::secrets();
    for (k, v) in [
        ("SEGMENT_SECRET", SEGMENT_SECRET),
        ("SEGMENT_OLD_SECRET", "segment-secret-before-rotation"),
        ("MIXPANEL_USER", MIXPANEL_USER),
        ("MIXPANEL_PASSWORD", MIXPANEL_PASSWORD),
        ("MIXPANEL_OLD_PASSWORD", "mixpanel-password-before-rotation"),
        ("SW_OFFICIAL", SW_OFFICIAL),
        ("SW_NEW", SW_NEW),
        ("SW_OLD", SW_OLD),
    ] {
        m.0.insert(k.into(), v.into());
    }
    m
}

pub fn settings(cfg: &TestConfig) -> Settings {
    match config::from_toml_str(&cfg.toml(), &secrets()) {
        Ok(s) => s,
        Err(e) => panic!("test config invalid: {e}\n{}", cfg.toml()),
    }
}

pub async fn start(cfg: &TestConfig) -> Bridge {
    Bridge::start_settings(settings(cfg)).await
}

/// POSTs a Segment body signed with `X-Signature` over the whole body.
pub async fn segment(bridge: &Bridge, body: &[u8]) -> (u16, Value) {
    let sig = cohort_bridge::verify::segment_sign(&Secret::new(SEGMENT_SECRET), body);
    bridge.post("segment", body, &[("X-Signature", sig)]).await
}

/// POSTs a Mixpanel body with HTTP Basic credentials.
pub async fn mixpanel(bridge: &Bridge, body: &Value) -> (u16, Value) {
    let creds = base64::engine::general_purpose::STANDARD
        .encode(format!("{MIXPANEL_USER}:{MIXPANEL_PASSWORD}"));
    bridge
        .post(
            "mixpanel",
            &serde_json::to_vec(body).unwrap(),
            &[("Authorization", format!("Basic {creds}"))],
        )
        .await
}

/// Standard Webhooks headers for `body`, signed now with `secret`.
pub fn sw_headers(secret: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = (cohort_bridge::clock::now_ms() / 1000).to_string();
    let sig = cohort_bridge::verify::standard_webhooks_sign(&Secret::new(secret), id, &ts, body);
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ]
}

/// POSTs a Standard Webhooks body signed now with the new secret.
pub async fn standard_webhooks(bridge: &Bridge, id: &str, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    bridge
        .post("standard-webhooks", &bytes, &sw_headers(SW_NEW, id, &bytes))
        .await
}

/// A Mixpanel body.
pub fn mixpanel_body(
    action: &str,
    cohort: i64,
    session: &str,
    page: u32,
    pages: u32,
    members: &[&str],
) -> Value {
    json!({
        "action": action,
        "parameters": {
            "mixpanel_project_id": "3141592",
            "mixpanel_cohort_name": format!("Cohort {cohort}"),
            "mixpanel_cohort_id": cohort,
            "mixpanel_cohort_description": "",
            "mixpanel_session_id": session,
            "page_info": {"total_pages": pages, "page_count": page},
            "members": members.iter().map(|m| json!({
                "mixpanel_distinct_id": m, "email": format!("{m}@example.com"), "first_name": "Test"
            })).collect::<Vec<_>>(),
        }
    })
}

/// A Segment Engage identify event.
pub fn segment_identify(
    audience: &str,
    user: &str,
    member: bool,
    message_id: &str,
    ts: &str,
) -> Value {
    json!({
        "type": "identify",
        "userId": user,
        "messageId": message_id,
        "timestamp": ts,
        "context": {"personas": {"computation_class": "audience", "computation_id": format!("aud_{audience}"),
            "computation_key": audience, "namespace": "spa_1", "space_id": "spa_1"}},
        "traits": {audience: member, "email": format!("{user}@example.com")},
    })
}

/// A Segment Engage track event (`Audience Entered` / `Audience Exited`).
pub fn segment_track(
    audience: &str,
    user: &str,
    entered: bool,
    message_id: &str,
    ts: &str,
) -> Value {
    json!({
        "type": "track",
        "event": if entered { "Audience Entered" } else { "Audience Exited" },
        "userId": user,
        "messageId": message_id,
        "timestamp": ts,
        "context": {"personas": {"computation_class": "audience", "computation_id": format!("aud_{audience}"),
            "computation_key": audience, "namespace": "spa_1", "space_id": "spa_1"}},
        "properties": {"audience_key": audience, audience: entered},
    })
}
