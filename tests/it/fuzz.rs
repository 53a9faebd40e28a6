//! Property tests ("fuzzing" on stable Rust) of every verifier and parser:
//! arbitrary bytes and mutated valid payloads (the recorded fixtures and the
//! signature vectors) never panic, never allocate beyond a small multiple of
//! the body, and never accept a body whose signature does not cover what is
//! applied.
//!
//! 256 cases per property by default; `CB_FUZZ_CASES=100000` (or
//! `PROPTEST_CASES`) for a longer run.

use crate::support::alloc::thread_peak;
use cohort_bridge::config::manifest::{Manifest, BUILTIN};
use cohort_bridge::config::{ResolvedAuth, Secret, SegmentBatches, Source, SourceKind};
use cohort_bridge::verify::{self, VerifyError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::PathBuf;
use std::time::Duration;

fn cases() -> u32 {
    ["CB_FUZZ_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(256)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Verifiers see unauthenticated input: about the body, no more.
fn verifier_budget(body: usize) -> usize {
    2 * body + 64 * 1024
}

/// Parsers see verified input and build a `serde_json::Value` of it: a
/// bounded multiple of the body.
fn parser_budget(body: usize) -> usize {
    64 * body + 256 * 1024
}

fn fixtures(kind: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(kind);
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(std::fs::read(p).unwrap());
            }
        }
    }
    assert!(!out.is_empty(), "fixtures/{kind}");
    out
}

/// A seed and its mutations: byte flips, insertions, deletions, truncation.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (
        0..n,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..8),
    )
        .prop_map(move |(i, edits)| {
            let mut b = seeds[i].clone();
            for (at, byte, op) in edits {
                if b.is_empty() {
                    b.push(byte);
                    continue;
                }
                let at = at.index(b.len());
                match op {
                    0 => b[at] = byte,
                    1 => b.insert(at, byte),
                    2 => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            b
        })
}

fn bodies(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), mutated(seeds),]
}

fn source(kind: SourceKind, auth: ResolvedAuth) -> Source {
    Source {
        id: "fuzz".into(),
        kind,
        destinations: vec!["production".into()],
        key_field: kind.default_key_field().into(),
        auth,
        context_kinds: vec!["user".into()],
    }
}

fn header_values() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,120}",
        "v1,[A-Za-z0-9+/=]{0,60}( v1,[A-Za-z0-9+/=]{0,60}){0,20}",
        "ts:[0-9]{0,16},hmac:[A-Za-z0-9+/=]{0,50}",
        "[0-9a-f]{40}",
        "Basic [A-Za-z0-9+/=]{0,40}",
    ]
}

fn all_auths() -> Vec<ResolvedAuth> {
    let s = || vec![Secret::new("fuzz-secret"), Secret::new("whsec_AAAA")];
    vec![
        ResolvedAuth::Header {
            header: "X-Token".into(),
            secrets: s(),
        },
        ResolvedAuth::Basic {
            username: Secret::new("user"),
            passwords: s(),
        },
        ResolvedAuth::HeapHash {
            secrets: s(),
            tolerance: Duration::from_secs(300),
        },
        ResolvedAuth::SegmentSignature {
            secrets: s(),
            batches: SegmentBatches::Signed,
        },
        ResolvedAuth::SegmentSignature {
            secrets: s(),
            batches: SegmentBatches::FirstEvent,
        },
        ResolvedAuth::StandardWebhooks {
            secrets: s(),
            tolerance: Duration::from_secs(300),
        },
    ]
}

#[test]
fn verifiers_never_panic_and_allocate_about_the_body() {
    let mut seeds = fixtures("segment");
    seeds.extend(fixtures("heap"));
    let auths = all_auths();
    let names = [
        "X-Token",
        "Authorization",
        "Heap-Hash",
        "X-Signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ];
    let strategy = (
        bodies(seeds),
        prop::collection::vec((0..names.len(), header_values()), 0..8),
        0..auths.len(),
    );
    runner()
        .run(&strategy, |(body, headers, a)| {
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(n, v)| (names[n].to_string(), v))
                .collect();
            let (r, peak) = thread_peak(|| {
                verify::verify(&auths[a], &headers, &body, 1_767_225_600_000).map(|_| ())
            });
            prop_assert!(r.is_err(), "accepted without a secret: {headers:?}");
            prop_assert!(peak <= verifier_budget(body.len()), "{peak} bytes");
            Ok(())
        })
        .unwrap();
}

fn parse_kind(kind: SourceKind, fixture_dir: &str) {
    let src = source(kind, ResolvedAuth::None);
    runner()
        .run(&bodies(fixtures(fixture_dir)), |body| {
            let verified = verify::verify(&ResolvedAuth::None, &Vec::new(), &body, 0).unwrap();
            let (_, peak) =
                thread_peak(|| cohort_bridge::sources::parse(&src, &verified, 1).map(|_| ()));
            prop_assert!(peak <= parser_budget(body.len()), "{peak} bytes");
            if kind == SourceKind::Mixpanel {
                let (_, peak) = thread_peak(|| cohort_bridge::sources::echo_action(kind, &body));
                prop_assert!(peak <= verifier_budget(body.len()), "{peak} bytes");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn amplitude_parser_never_panics() {
    parse_kind(SourceKind::Amplitude, "amplitude");
}

#[test]
fn heap_parser_never_panics() {
    parse_kind(SourceKind::Heap, "heap");
}

#[test]
fn segment_parser_never_panics_single_or_batched() {
    parse_kind(SourceKind::Segment, "segment");
}

#[test]
fn mixpanel_parser_never_panics() {
    parse_kind(SourceKind::Mixpanel, "mixpanel");
}

#[test]
fn standard_webhooks_parser_never_panics() {
    parse_kind(SourceKind::StandardWebhooks, "standard-webhooks");
}

#[test]
fn every_partner_manifest_parser_never_panics() {
    let seeds = fixtures("partner");
    for (key, text) in BUILTIN {
        let m = Manifest::load(key, text, None)
            .or_else(|_| Manifest::load(key, text, Some("^.*$")))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        runner()
            .run(&bodies(seeds.clone()), |body| {
                let headers: Vec<(String, String)> = Vec::new();
                let verified = verify::verify(&ResolvedAuth::None, &headers, &body, 1)
                    .expect("scheme none verifies");
                let (_, peak) = thread_peak(|| {
                    cohort_bridge::sources::partner::parse(&m, &verified, 1).map(|_| ())
                });
                prop_assert!(peak <= parser_budget(body.len()), "{key}: {peak} bytes");
                Ok(())
            })
            .unwrap();
    }
}

/// A signed body, mutated: verifies only if the mutation left the signed
/// bytes as they were.
#[test]
fn mutated_signed_bodies_verify_only_when_the_signed_bytes_are_intact() {
    let secret = Secret::new("fuzz-secret");
    let now = 1_767_225_600_000i64;
    let ts_ms = now.to_string();
    let ts_s = (now / 1000).to_string();
    let mut seeds = fixtures("segment");
    seeds.extend(fixtures("heap"));
    seeds.extend(fixtures("standard-webhooks"));
    let strategy = (0..seeds.len(), mutated(seeds.clone()), 0..3usize);
    runner()
        .run(&strategy, |(i, mutant, scheme)| {
            let original = &seeds[i];
            let (auth, headers) = match scheme {
                0 => (
                    ResolvedAuth::HeapHash {
                        secrets: vec![secret.clone()],
                        tolerance: Duration::from_secs(300),
                    },
                    vec![(
                        "Heap-Hash".to_string(),
                        verify::heap_sign(&secret, &ts_ms, original),
                    )],
                ),
                1 => (
                    ResolvedAuth::StandardWebhooks {
                        secrets: vec![secret.clone()],
                        tolerance: Duration::from_secs(300),
                    },
                    vec![
                        ("webhook-id".to_string(), "msg_1".to_string()),
                        ("webhook-timestamp".to_string(), ts_s.clone()),
                        (
                            "webhook-signature".to_string(),
                            verify::standard_webhooks_sign(&secret, "msg_1", &ts_s, original),
                        ),
                    ],
                ),
                _ => (
                    ResolvedAuth::SegmentSignature {
                        secrets: vec![secret.clone()],
                        batches: SegmentBatches::Signed,
                    },
                    vec![(
                        "X-Signature".to_string(),
                        verify::segment_sign(&secret, original),
                    )],
                ),
            };
            let r = verify::verify(&auth, &headers, &mutant, now);
            // The mutant may derive from another seed: then it was never signed.
            prop_assert_eq!(r.is_ok(), &mutant == original, "{:?}", r.map(|_| ()));
            Ok(())
        })
        .unwrap();
}

/// Segment batches signed over element 0: by default refused whatever else
/// the array holds; in first-event mode accepted only with element 0 intact,
/// and reported as covering exactly element 0.
#[test]
fn segment_batches_signed_over_element_0_never_cover_the_other_elements() {
    let secret = Secret::new("fuzz-secret");
    let events: Vec<Vec<u8>> = fixtures("segment")
        .into_iter()
        .filter(|b| b.first() == Some(&b'{'))
        // Element 0's bytes in an array are the value without whitespace around it.
        .map(|b| b.trim_ascii().to_vec())
        .collect();
    let strategy = (
        0..events.len(),
        prop::collection::vec(
            prop_oneof![
                3 => prop::sample::select(events.clone()),
                1 => bodies(events.clone()),
            ],
            1..4,
        ),
        any::<bool>(),
    );
    runner()
        .run(&strategy, |(i, rest, tamper_first)| {
            let first = &events[i];
            let sig = verify::segment_sign(&secret, first);
            let mut body = b"[".to_vec();
            let mut signed_first = first.clone();
            if tamper_first {
                let at = signed_first.len() / 2;
                signed_first[at] ^= 0x20;
            }
            body.extend_from_slice(&signed_first);
            for r in &rest {
                body.push(b',');
                body.extend_from_slice(r);
            }
            body.push(b']');
            let h = vec![("X-Signature".to_string(), sig)];
            let auth = |batches| ResolvedAuth::SegmentSignature {
                secrets: vec![secret.clone()],
                batches,
            };
            let signed = verify::verify(&auth(SegmentBatches::Signed), &h, &body, 0);
            prop_assert!(signed.is_err());
            if let Err(e) = &signed {
                prop_assert!(matches!(
                    e,
                    VerifyError::UnsignedBatch | VerifyError::BadSignature
                ));
            }
            match verify::verify(&auth(SegmentBatches::FirstEvent), &h, &body, 0) {
                Ok(v) => {
                    prop_assert!(!tamper_first || signed_first == *first);
                    prop_assert_eq!(v.first_event_only(), Some(first.as_slice()));
                }
                Err(e) => prop_assert!(
                    tamper_first || matches!(e, VerifyError::BadSignature) // `rest` may not be JSON: then there is no array.
                ),
            }
            Ok(())
        })
        .unwrap();
}
