//! Replaying `fixtures/` (the recorded Amplitude, Heap, Segment, Mixpanel
//! and Standard Webhooks pushes) leaves LaunchDarkly with exactly the
//! membership worked out by hand below.

use crate::support::emulator::included;
use crate::support::{eventually, native, stack, WAIT};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Worked out from the fixture files (see fixtures/README.md): duplicates
/// apply once, the late older enter of user-10688 is stale, a member both
/// added and removed in one Heap body ends removed, a drain changes nothing;
/// a Segment exit newer than the entry wins and a non-audience event in a
/// batch is skipped; a paged Mixpanel replace removes the one member in no
/// page; a Standard Webhooks snapshot removes the members it does not list.
fn expected() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        (
            "amplitude-8x2kq1p",
            vec![
                "user-10482",
                "user-10533",
                "user-10601",
                "user-10622",
                "user-10655",
            ],
        ),
        ("amplitude-r4n7v0c", vec!["user-10482", "user-20117"]),
        (
            "heap-4417281",
            vec![
                "bruno.costa@example.com",
                "dmitri.volkov@example.com",
                "emma.larsen@example.com",
                "farah.haddad@example.com",
                "gabriel.moreau@example.com",
                "hana.kim@example.com",
                "ines.ferreira@example.com",
            ],
        ),
        (
            "heap-4417290",
            // The drain armed it; the full sync after it replaced it.
            vec!["lena.hoffmann@example.com", "nadia.karim@example.com"],
        ),
        (
            "mixpanel-1188",
            vec!["mp-user-1", "mp-user-2", "mp-user-5", "mp-user-6"],
        ),
        (
            "segment-aud_2fX8kLmVipQ3",
            vec!["seg-user-2", "seg-user-3", "seg-user-4"],
        ),
        (
            "standard-webhooks-beta-testers",
            vec!["sw-user-1", "sw-user-4"],
        ),
        // fixtures/partner: one segment per built-in manifest (fixtures/README.md).
        (
            "partner-amplitude-a1b2c3d",
            vec!["user-30001", "user-30002"],
        ),
        (
            "partner-census-synced-segments-census-42",
            vec!["cust_8812", "cust_8813"],
        ),
        (
            "partner-example-synced-segment-integration1-ex1-7",
            vec!["ex-u1", "ex-u2"],
        ),
        (
            "partner-example-synced-segment-integration2-mp-5501",
            vec!["mp-user-1", "mp-user-2"],
        ),
        ("partner-fulcrum-fc-310", vec!["fc-1", "fc-2"]),
        (
            "partner-heap-inbound-5523801",
            vec!["h.one@example.com", "h.two@example.com"],
        ),
        ("partner-hightouch-ht-model-88", vec!["ht-1"]),
        ("partner-rudderstack-rs-aud-17", vec!["rs-1", "rs-3"]),
        ("partner-segment-audiences-aud_2xk9", vec!["seg-1", "seg-2"]),
        ("partner-sumatra-synced-segments-sm-9", vec!["sm-2"]),
        (
            "partner-tealium-synced-segments-tl-badge-12",
            vec!["tl-1", "tl-2"],
        ),
        ("partner-zeotap-zt-3300", vec!["700001", "700002"]),
    ])
}

/// The `[partner]` section of config/demo.toml, with the token in a file.
fn partner_toml(token_file: &std::path::Path) -> String {
    format!(
        r#"
[partner]
array_inclusion_matchers = {{ "tealium-synced-segments" = "^add_member$" }}
[partner.environments]
"6512d0c0a1b2c3d4e5f60718" = "production"
[[partner.tokens]]
secret_file = {:?}
integrations = ["*"]
"#,
        token_file.display().to_string()
    )
}

#[tokio::test]
async fn replaying_the_fixtures_yields_the_expected_segments() {
    let (_redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "fixture-partner-token").unwrap();
    cfg.sources.push_str(&partner_toml(token.path()));
    let bridge = native::start(&cfg).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let results = cohort_bridge::replay::replay(
        &native::settings(&cfg),
        &bridge.base,
        std::slice::from_ref(&root),
        None,
    )
    .await
    .unwrap();
    // The whole directory: expected.json beside the fixtures is skipped, not sent.
    let skipped: Vec<_> = results.iter().filter(|r| r.status == 0).collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].file.ends_with("expected.json"));
    let results: Vec<_> = results.into_iter().filter(|r| r.status != 0).collect();
    assert_eq!(results.len(), 15 + 14 + 11);
    for r in &results {
        // The partner endpoint answers 204, as LaunchDarkly does.
        let want = if r.source.starts_with("partner-") {
            204
        } else {
            200
        };
        assert_eq!(r.status, want, "{}: {}", r.file.display(), r.body);
    }
    let dup = results
        .iter()
        .filter(|r| r.body.contains("\"duplicate\":true"))
        .count();
    assert_eq!(
        dup, 2,
        "exactly the retried Amplitude and Segment deliveries are duplicates"
    );
    // Mixpanel is answered in its own envelope.
    for r in results.iter().filter(|r| r.source == "mixpanel") {
        assert!(r.body.contains("\"status\":\"success\""), "{}", r.body);
    }

    let want = expected();
    let file: BTreeMap<String, Vec<String>> =
        serde_json::from_str(include_str!("../../fixtures/expected.json")).unwrap();
    let as_owned: BTreeMap<String, Vec<String>> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|m| m.to_string()).collect()))
        .collect();
    assert_eq!(file, as_owned, "fixtures/expected.json says the same");
    let got = eventually(
        "LaunchDarkly matches the expected segments",
        WAIT,
        || async {
            let mut got = BTreeMap::new();
            for seg in emu.segments().await {
                let key = seg["key"].as_str().unwrap_or_default().to_string();
                let members: Vec<String> = included(&seg);
                got.insert(key, members);
            }
            let matches = got.len() == want.len()
                && want.iter().all(|(k, v)| {
                    got.get(*k)
                        .map(|g| g.iter().map(String::as_str).collect::<Vec<_>>())
                        == Some(v.clone())
                });
            matches.then_some(got)
        },
    )
    .await;
    assert_eq!(got.len(), 4 + 12 + 3);
    // The segments are named after the cohorts.
    let heap = emu
        .segment("default", "production", "heap-4417281")
        .await
        .unwrap();
    assert_eq!(heap["name"], "Activated trial accounts");
    bridge.stop().await;
}
