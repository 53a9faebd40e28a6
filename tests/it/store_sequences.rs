//! Fault sequences against the real store (a private `redis-server`) and,
//! end to end, the bridge with the LaunchDarkly emulator over HTTP:
//! overlapping snapshot sessions, the tie rule in every script, the shared
//! 429 pause, big keys freed with UNLINK, a segment deleted in LaunchDarkly,
//! and one link per LaunchDarkly segment key.

use crate::support::bridge::{amplitude_body, AMPLITUDE_SECRET, OPERATOR_TOKEN};
use crate::support::{converge, eventually, stack, Bridge, RedisServer, WAIT};
use cohort_bridge::config::RedisConfig;
use cohort_bridge::sources::{Change, Push, Snapshot, Version};
use cohort_bridge::store::{ApplyParams, Claim, Keys, LinkId, Store};
use reqwest::Method;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SRC: &str = "src";
const COHORT: &str = "c";
const DEST: &str = "d";

fn params() -> ApplyParams {
    ApplyParams {
        now_ms: 1_000_000,
        dedupe_ttl_ms: 60_000,
        max_delay_ms: 1_000,
        batch: 100,
        // The history on, as by default: its record rides in every apply.
        history: cohort_bridge::store::HistoryParams {
            entries: 50,
            keys: 64,
            max_age_ms: 86_400_000,
        },
    }
}

fn store(redis: &RedisServer, prefix: &str) -> Store {
    Store::connect(&RedisConfig {
        url: redis.url(),
        key_prefix: prefix.into(),
        partitions: 1,
        ..RedisConfig::default()
    })
    .expect("store")
}

fn change(key: &str, include: bool, version_ms: i64) -> Change {
    Change {
        key: key.into(),
        include,
        version: Version::from_ms(version_ms).unwrap(),
    }
}

async fn push(s: &Store, changes: Vec<Change>) {
    push_with(s, changes, params()).await;
}

/// [`push`] with other apply parameters (the time, the history's settings).
async fn push_with(s: &Store, changes: Vec<Change>, params: ApplyParams) {
    let p = Push {
        cohort_id: COHORT.into(),
        cohort_name: None,
        delivery_id: None,
        changes,
        snapshot: None,
    };
    s.apply(SRC, &[DEST.into()], &p, params)
        .await
        .expect("apply");
}

/// A connection of its own to `redis`, to read the keys the scripts wrote.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A store on a fresh Redis whose pushes keep `entries` history records
/// (and the apply parameters that say so), with the cohort's history key.
fn history_store(prefix: &str, entries: usize) -> (RedisServer, Store, ApplyParams, String) {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let s = store(&redis, prefix);
    let mut params = params();
    params.history.entries = entries;
    let key = Keys::new(prefix, 1).history(0, SRC, COHORT);
    (redis, s, params, key)
}

/// The one link of [`push`]'s cohort.
fn the_link() -> LinkId {
    LinkId {
        destination: DEST.into(),
        source: SRC.into(),
        cohort: COHORT.into(),
    }
}

/// One page (the only one) of a full snapshot session at `version`.
async fn snapshot(s: &Store, session: &str, version: i64, members: &[&str]) {
    let p = Push {
        cohort_id: COHORT.into(),
        cohort_name: None,
        delivery_id: None,
        changes: members.iter().map(|m| change(m, true, version)).collect(),
        snapshot: Some(Snapshot {
            session: session.into(),
            page: 1,
            total_pages: 1,
            version: Version::from_ms(version).unwrap(),
            armed_only: false,
        }),
    };
    s.apply(SRC, &[DEST.into()], &p, params())
        .await
        .expect("page");
}

async fn finalize(s: &Store) {
    let f = s
        .finalize_snapshot(SRC, &[DEST.into()], COHORT, params(), None, None)
        .await
        .expect("finalize");
    assert!(f.finished && !f.abandoned, "{f:?}");
}

/// Members desired in, read from the want hash.
async fn desired_in(redis: &RedisServer, prefix: &str) -> BTreeSet<String> {
    let k = Keys::new(prefix, 1);
    let mut c = raw(redis).await;
    let all: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(k.want(0, SRC, COHORT))
        .query_async(&mut c)
        .await
        .unwrap();
    all.into_iter()
        .filter(|(_, v)| cohort_bridge::store::MemberValue::parse(v).unwrap().desired)
        .map(|(m, _)| m)
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The issue's reproduction: A and C in at v50; Y (v200, {B}) completes; X
/// (v100, {A}) completes before Y is finalized. Last writer wins says {B}.
/// Also in the other order of completion and with X finalized in between.
#[tokio::test]
async fn overlapping_snapshot_sessions_are_all_finalized_last_writer_wins() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    for (i, order) in ["YX-then-finalize", "XY-then-finalize", "X-finalize-Y"]
        .iter()
        .enumerate()
    {
        let prefix = format!("ovl{i}");
        let s = store(&redis, &prefix);
        push(&s, vec![change("A", true, 50), change("C", true, 50)]).await;
        match *order {
            "YX-then-finalize" => {
                snapshot(&s, "Y", 200, &["B"]).await;
                snapshot(&s, "X", 100, &["A"]).await;
                finalize(&s).await;
            }
            "XY-then-finalize" => {
                snapshot(&s, "X", 100, &["A"]).await;
                snapshot(&s, "Y", 200, &["B"]).await;
                finalize(&s).await;
            }
            _ => {
                snapshot(&s, "X", 100, &["A"]).await;
                finalize(&s).await;
                snapshot(&s, "Y", 200, &["B"]).await;
                finalize(&s).await;
            }
        }
        assert_eq!(desired_in(&redis, &prefix).await, set(&["B"]), "{order}");
        // Nothing is left pending or queued.
        assert!(
            s.pending_snapshots(&[0]).await.unwrap().is_empty(),
            "{order}"
        );
        // A late, older "in" of a member no snapshot page listed is stale.
        push(&s, vec![change("D", true, 150), change("A", true, 150)]).await;
        assert_eq!(
            desired_in(&redis, &prefix).await,
            set(&["B"]),
            "{order}: late"
        );
    }
    // Y completes, then X, and X is finalized first by a flusher (any
    // order): same answer.
    let s = store(&redis, "ovl9");
    push(&s, vec![change("A", true, 50), change("C", true, 50)]).await;
    snapshot(&s, "X", 100, &["A"]).await;
    snapshot(&s, "Y", 200, &["B"]).await;
    snapshot(&s, "Z", 300, &["B", "C"]).await;
    finalize(&s).await;
    assert_eq!(desired_in(&redis, "ovl9").await, set(&["B", "C"]));
}

/// The tie rule (store docs): at equal versions "out" wins, in every
/// order of arrival, in apply, in snapshot finalization and through a resync.
#[tokio::test]
async fn equal_versions_out_wins_in_every_script() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    // apply, both orders
    let s = store(&redis, "tie-apply-a");
    push(&s, vec![change("m", false, 5)]).await;
    push(&s, vec![change("m", true, 5)]).await;
    assert_eq!(desired_in(&redis, "tie-apply-a").await, set(&[]));
    let s = store(&redis, "tie-apply-b");
    push(&s, vec![change("m", true, 5)]).await;
    push(&s, vec![change("m", false, 5)]).await;
    assert_eq!(desired_in(&redis, "tie-apply-b").await, set(&[]));

    // snapshot finalize: a plain "in" at the snapshot's version, in no
    // page, is removed; a page's "in" against a plain "out" of that version loses.
    for (i, out_first) in [true, false].into_iter().enumerate() {
        let prefix = format!("tie-snap{i}");
        let s = store(&redis, &prefix);
        if out_first {
            push(&s, vec![change("p", true, 100), change("q", false, 100)]).await;
            snapshot(&s, "S", 100, &["q"]).await;
        } else {
            snapshot(&s, "S", 100, &["q"]).await;
            push(&s, vec![change("q", false, 100)]).await;
        }
        finalize(&s).await;
        // After the finalization, a plain "in" at the snapshot's version
        // of a member in no page loses too.
        push(&s, vec![change("p", true, 100), change("r", true, 100)]).await;
        assert_eq!(desired_in(&redis, &prefix).await, set(&[]), "{prefix}");
    }

    // resync: re-sends the state the rule decided.
    let s = store(&redis, "tie-resync");
    push(&s, vec![change("m", true, 7), change("n", true, 7)]).await;
    push(&s, vec![change("m", false, 7)]).await;
    let link = the_link();
    assert_eq!(s.resync(&link, 1_000_000, 10).await.unwrap(), Some(2));
    assert!(s
        .try_acquire_lease(0, "t", Duration::from_secs(60))
        .await
        .unwrap());
    let Claim::Members(mut got) = s.claim(0, "t", &link, 10, 2_000_000).await.unwrap() else {
        panic!("nothing to send after a resync");
    };
    got.sort();
    assert_eq!(got, vec![("m".into(), false), ("n".into(), true)]);
}

#[tokio::test]
async fn the_shared_rate_pause_only_extends() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let s = store(&redis, "pause");
    let base = cohort_bridge::clock::now_ms();
    assert_eq!(
        s.share_rate_pause(base + 20_000).await.unwrap(),
        base + 20_000
    );
    assert_eq!(
        s.share_rate_pause(base + 10_000).await.unwrap(),
        base + 20_000
    );
    assert_eq!(s.rate_pause().await.unwrap(), Some(base + 20_000));
    assert_eq!(
        s.share_rate_pause(base + 30_000).await.unwrap(),
        base + 30_000
    );
    assert_eq!(s.rate_pause().await.unwrap(), Some(base + 30_000));
    // An absurd value never wraps the key's expiry.
    s.share_rate_pause(i64::MAX).await.unwrap();
}

async fn command_calls(c: &mut redis::aio::MultiplexedConnection, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A finalization frees its staging set with UNLINK, never DEL.
#[tokio::test]
async fn finalization_frees_the_staging_set_with_unlink() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let s = store(&redis, "unlink");
    let members: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    push(&s, vec![change("old", true, 1)]).await;
    snapshot(&s, "S", 10, &refs).await;
    let mut c = raw(&redis).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await
        .unwrap();
    finalize(&s).await;
    assert_eq!(command_calls(&mut c, "del").await, 0, "DEL on a big key");
    assert!(
        command_calls(&mut c, "unlink").await >= 1,
        "UNLINK of the staging set"
    );
    let k = Keys::new("unlink", 1);
    let exists: bool = redis::cmd("EXISTS")
        .arg(k.snapshot_members(0, SRC, COHORT, "S"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!exists);
}

async fn amp(bridge: &Bridge, source: &str, body: &serde_json::Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let (status, v) = bridge
        .post(
            source,
            &bytes,
            &[("X-Cohort-Bridge-Token", AMPLITUDE_SECRET.to_string())],
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

async fn blocked_reason(bridge: &Bridge, link: &str) -> String {
    let (s, v) = bridge
        .operator(
            Method::GET,
            &format!("/links/{link}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v.pointer("/meta/blocked")
        .or_else(|| v.pointer("/link/meta/blocked"))
        .and_then(|b| b.as_str())
        .unwrap_or("")
        .to_string()
}

/// A segment deleted in LaunchDarkly is re-created with the link's whole
/// current membership, not just the changes that came after.
#[tokio::test]
async fn a_segment_deleted_in_launchdarkly_is_recreated_with_the_whole_membership() {
    let (_redis, emu, mut cfg) = stack();
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    let bridge = Bridge::start(&cfg).await;
    amp(
        &bridge,
        "amplitude",
        &amplitude_body("c1", true, 1_000, "m1", &["u1", "u2"]),
    )
    .await;
    let key = "amplitude-c1";
    converge(&emu, "production", key, &["u1", "u2"]).await;
    emu.delete_segment("default", "production", key).await;
    amp(
        &bridge,
        "amplitude",
        &amplitude_body("c1", true, 2_000, "m2", &["u3"]),
    )
    .await;
    converge(&emu, "production", key, &["u1", "u2", "u3"]).await;
    bridge.stop().await;
}

/// Source `amp`, cohort `eu-1234` and source `amp-eu`, cohort `1234` both
/// render `amp-eu-1234`: the second link is blocked and writes nothing.
#[tokio::test]
async fn two_links_rendering_one_segment_key_the_second_is_blocked() {
    let (_redis, emu, mut cfg) = stack();
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    for id in ["amp", "amp-eu"] {
        cfg.sources.push_str(&format!(
            "\n[[sources]]\nid = \"{id}\"\nkind = \"amplitude\"\ndestinations = [\"production\"]\nauth = {{ scheme = \"header\", header = \"X-Cohort-Bridge-Token\", secret_env = \"AMPLITUDE_SECRET\" }}\n"
        ));
    }
    let bridge = Bridge::start(&cfg).await;
    amp(
        &bridge,
        "amp",
        &amplitude_body("eu-1234", true, 1_000, "m1", &["a1"]),
    )
    .await;
    converge(&emu, "production", "amp-eu-1234", &["a1"]).await;
    amp(
        &bridge,
        "amp-eu",
        &amplitude_body("1234", true, 1_000, "m2", &["e1"]),
    )
    .await;
    let reason = eventually("the second link is blocked", WAIT, || async {
        let r = blocked_reason(&bridge, "production:amp-eu:1234").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert!(reason.starts_with("segment_key_conflict"), "{reason}");
    assert_eq!(
        emu.members("default", "production", "amp-eu-1234").await,
        Some(vec!["a1".into()]),
        "the blocked link wrote nothing"
    );
    assert!(blocked_reason(&bridge, "production:amp:eu-1234")
        .await
        .is_empty());
    // The segment the bridge made names its link.
    let seg = emu
        .segment("default", "production", "amp-eu-1234")
        .await
        .unwrap();
    assert!(
        cohort_bridge::launchdarkly::carries_mark(&seg, "production:amp:eu-1234"),
        "{seg}"
    );
    assert!(!cohort_bridge::launchdarkly::carries_mark(
        &seg,
        "production:amp-eu:1234"
    ));
    let (_, metrics) = bridge.get("/metrics").await;
    assert!(
        metrics.contains("cohort_bridge_links_blocked_total{reason=\"segment_key_conflict\"}"),
        "{metrics}"
    );
    bridge.stop().await;
}

/// A 409 at creation adopts a segment only if it carries this link's mark,
/// or the destination sets `adopt_existing_segments`.
#[tokio::test]
async fn a_segment_made_by_hand_is_not_adopted_unless_the_destination_says_so() {
    let (_redis, emu, mut cfg) = stack();
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    cfg.sources.push_str(
        "\n[destinations.adopting]\nproject = \"default\"\nenvironment = \"staging\"\nadopt_existing_segments = true\n\n[[sources]]\nid = \"amp2\"\nkind = \"amplitude\"\ndestinations = [\"adopting\"]\nauth = { scheme = \"header\", header = \"X-Cohort-Bridge-Token\", secret_env = \"AMPLITUDE_SECRET\" }\n",
    );
    emu.create_segment_by_hand("default", "production", "amplitude-c7")
        .await;
    emu.create_segment_by_hand("default", "staging", "amp2-c7")
        .await;
    let bridge = Bridge::start(&cfg).await;
    amp(
        &bridge,
        "amplitude",
        &amplitude_body("c7", true, 1_000, "m1", &["u1"]),
    )
    .await;
    amp(
        &bridge,
        "amp2",
        &amplitude_body("c7", true, 1_000, "m2", &["u1"]),
    )
    .await;
    let reason = eventually("the unowned segment blocks its link", WAIT, || async {
        let r = blocked_reason(&bridge, "production:amplitude:c7").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert!(reason.starts_with("segment_exists_unowned"), "{reason}");
    converge(&emu, "staging", "amp2-c7", &["u1"]).await;
    assert_eq!(
        emu.members("default", "production", "amplitude-c7").await,
        Some(vec![]),
        "nothing written to the unowned segment"
    );
    // A segment made by hand carries no mark.
    let seg = emu
        .segment("default", "production", "amplitude-c7")
        .await
        .unwrap();
    assert!(!cohort_bridge::launchdarkly::carries_mark(
        &seg,
        "production:amplitude:c7"
    ));
    bridge.stop().await;
}

/// apply.lua's first-sync path (a member the want hash does not hold takes
/// one precomputed value and decision per run) keeps one-command-per-member
/// semantics when a never-seen member is listed again in the same push: the
/// later change sees the earlier one, as if each were its own push.
#[tokio::test]
async fn never_seen_members_listed_twice_in_one_push_see_their_first_change() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let prefix = "fresh-twice";
    let s = store(&redis, prefix);
    let p = Push {
        cohort_id: COHORT.into(),
        cohort_name: None,
        delivery_id: None,
        changes: vec![
            change("a", true, 10),  // new: accepted, to be written
            change("a", false, 20), // replaces it before any write: superseded, cancelled
            change("b", true, 20),  // new: accepted
            change("b", true, 10),  // older than the b just applied: stale
            change("c", false, 5),  // new and out: nothing to write (unchanged)
            change("d", true, 30),  // new: accepted
            change("d", true, 30),  // the same change again: supersedes the first
        ],
        snapshot: None,
    };
    let out = s
        .apply(SRC, &[DEST.into()], &p, params())
        .await
        .expect("apply");
    assert_eq!(
        (
            out.accepted,
            out.stale,
            out.unchanged,
            out.superseded,
            out.cancelled
        ),
        (6, 1, 1, 2, 1),
        "{out:?}"
    );
    assert_eq!(desired_in(&redis, prefix).await, set(&["b", "d"]));
    let k = Keys::new(prefix, 1);
    let link = the_link();
    let mut c = raw(&redis).await;
    let dirty: BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg(k.dirty(0, &link))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(dirty, set(&["b", "d"]));
    // The link is due max_delay after the push (2 waiting, under a batch),
    // and dirty since the push.
    let due: Option<f64> = redis::cmd("ZSCORE")
        .arg(k.due(0))
        .arg(link.to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(due, Some(1_001_000.0));
    let since: Option<i64> = redis::cmd("HGET")
        .arg(k.dirty_since(0))
        .arg(link.to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(since, Some(1_000_000));
    // A push of never-seen members only makes its link due too.
    let fresh = Push {
        cohort_id: "c2".into(),
        changes: vec![change("x", true, 10), change("y", true, 10)],
        ..p.clone()
    };
    s.apply(SRC, &[DEST.into()], &fresh, params())
        .await
        .expect("apply");
    let link2 = LinkId {
        cohort: "c2".into(),
        ..link.clone()
    };
    let due2: Option<f64> = redis::cmd("ZSCORE")
        .arg(k.due(0))
        .arg(link2.to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(due2, Some(1_001_000.0));
    let want: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(k.want(0, SRC, COHORT))
        .query_async(&mut c)
        .await
        .unwrap();
    let decoded: BTreeMap<&str, (i64, bool, bool)> = want
        .iter()
        .map(|(m, v)| {
            let mv = cohort_bridge::store::MemberValue::parse(v).unwrap();
            (m.as_str(), (mv.version_ms, mv.pending, mv.desired))
        })
        .collect();
    assert_eq!(
        decoded,
        BTreeMap::from([
            ("a", (20, false, false)),
            ("b", (20, true, true)),
            ("c", (5, false, false)),
            ("d", (30, true, true)),
        ])
    );
}

/// A push's history record: what the caller lists (delivery id, runs, the
/// first keys and their runs) and what the script works out (counts,
/// outcomes) form one JSON record; the list keeps its length, a duplicate
/// gets its own record.
#[tokio::test]
async fn a_push_record_lists_its_first_keys_with_their_runs_and_outcomes() {
    let (redis, s, mut params, key) = history_store("hist-record", 2);
    params.history.keys = 3;
    let p = Push {
        cohort_id: COHORT.into(),
        cohort_name: None,
        delivery_id: Some("id \"1\"".into()),
        changes: vec![
            change("a", true, 10),
            change("b", true, 10),
            change("a", false, 20), // a second run: replaces a's first change
            change("c", false, 20), // new and out: unchanged; not listed (3 keys)
            change("d", true, 5),   // a third run
        ],
        snapshot: None,
    };
    s.apply(SRC, &[DEST.into()], &p, params)
        .await
        .expect("apply");
    let mut c = raw(&redis).await;
    let records = |raw: Vec<String>| -> Vec<serde_json::Value> {
        raw.iter()
            .map(|r| {
                let (at, json) = r.split_once(' ').expect("<ms> <json>");
                assert_eq!(at, "1000000");
                serde_json::from_str(json).expect("a JSON record")
            })
            .collect()
    };
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        records(raw),
        vec![serde_json::json!({
            "d": "id \"1\"",
            "r": [["10", "1"], ["20", "0"], ["5", "1"]],
            "k": ["a", "b", "a"],
            "i": [1, 1, 2],
            "n": [5, 0, 1, 1, 1, 0],
            "o": "aac",
        })]
    );
    // The same delivery again: a duplicate's record; then a third push: the
    // reader's view (the list's first `entries` records) is the two newest.
    s.apply(SRC, &[DEST.into()], &p, params)
        .await
        .expect("apply");
    let mut third = p.clone();
    third.delivery_id = None;
    third.changes = vec![change("e", true, 30)];
    s.apply(SRC, &[DEST.into()], &third, params)
        .await
        .expect("apply");
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        records(raw),
        vec![
            serde_json::json!({"d": "", "r": [["30", "1"]], "k": ["e"], "n": [1, 0, 0, 0, 0, 0], "o": "a"}),
            serde_json::json!({
                "d": "id \"1\"",
                "r": [["10", "1"], ["20", "0"], ["5", "1"]],
                "k": ["a", "b", "a"],
                "i": [1, 1, 2],
                "n": [0, 0, 0, 0, 0, 1],
                "o": "ddd",
            }),
        ]
    );
}

/// The history list is trimmed every 16 pushes, not on each one
/// (`apply.lua`, `HIST_SLACK`): it never holds more than its cap plus 15
/// records, and the reader (`explain_member`) shows only the newest `cap`
/// records, none older than the max age.
#[tokio::test]
async fn the_history_holds_at_most_its_cap_and_slack_and_the_reader_shows_the_cap_within_the_age() {
    let (redis, s, mut params, key) = history_store("hist-trim", 3);
    params.history.max_age_ms = 10_000;
    let mut c = raw(&redis).await;
    let link = the_link();
    let mut longest = 0;
    for i in 0..40i64 {
        params.now_ms = 1_000_000 + i;
        push_with(&s, vec![change("m", i % 2 == 0, 10 + i)], params).await;
        let len: usize = redis::cmd("LLEN")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(len <= 3 + 15, "push {i}: the list holds {len} records");
        longest = longest.max(len);
    }
    // The list did hold more than its cap between two trims.
    assert!(longest > 3, "the list never went past its cap: {longest}");
    let shown = |e: cohort_bridge::store::MemberExplanation| {
        e.changes
            .iter()
            .filter(|c| c.kind == "push")
            .map(|c| c.at_ms)
            .collect::<Vec<_>>()
    };
    let now = 1_000_039;
    let e = s
        .explain_member(&link, "m", params.history, now)
        .await
        .expect("explain")
        .expect("a link");
    assert_eq!(shown(e), vec![1_000_039, 1_000_038, 1_000_037]);
    // 10 s later the two newest are within the age, the third is not.
    let e = s
        .explain_member(&link, "m", params.history, 1_000_037 + 10_001)
        .await
        .expect("explain")
        .expect("a link");
    assert_eq!(shown(e), vec![1_000_039, 1_000_038]);
}

/// A link's oldest waiting change is the first push that made it wait:
/// later pushes keep it (apply.lua writes the dirty-since entry only when
/// every member waiting came with the push); once the link drained and a
/// push makes it wait again, that push is the oldest.
#[tokio::test]
async fn the_oldest_waiting_change_is_the_push_that_made_the_link_wait() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let s = store(&redis, "since");
    let link = the_link();
    let at = |now_ms: i64, changes: Vec<Change>| {
        let s = &s;
        async move {
            let mut params = params();
            params.now_ms = now_ms;
            push_with(s, changes, params).await;
        }
    };
    let since = || async {
        s.link_status(&link)
            .await
            .expect("status")
            .expect("a link")
            .dirty_since_ms
    };
    at(1_000, vec![change("a", true, 10)]).await;
    assert_eq!(since().await, Some(1_000));
    at(2_000, vec![change("b", true, 20), change("c", true, 20)]).await;
    assert_eq!(since().await, Some(1_000));
    // Every waiting member flips back: nothing waits.
    at(
        3_000,
        vec![
            change("a", false, 30),
            change("b", false, 30),
            change("c", false, 30),
        ],
    )
    .await;
    assert_eq!(since().await, None);
    at(4_000, vec![change("d", true, 40)]).await;
    assert_eq!(since().await, Some(4_000));
}

/// The claim a draining link sends with its last batch's ack: a full batch
/// or nothing. With fewer than a full batch dirty it changes nothing (no
/// member marked unknown, the due time kept); with a full batch it claims
/// like any claim.
#[tokio::test]
async fn a_full_batch_claim_with_less_waiting_changes_nothing_and_one_sent_with_an_ack_follows_it()
{
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let prefix = "claim-full";
    let s = store(&redis, prefix);
    push(&s, vec![change("a", true, 10), change("b", true, 10)]).await;
    let link = the_link();
    assert!(s
        .try_acquire_lease(0, "t", Duration::from_secs(60))
        .await
        .unwrap());
    let k = Keys::new(prefix, 1);
    let mut c = raw(&redis).await;
    let state = |c: &mut redis::aio::MultiplexedConnection| {
        let (want, due) = (k.want(0, SRC, COHORT), k.due(0));
        let mut c = c.clone();
        async move {
            let values: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(want)
                .query_async(&mut c)
                .await
                .unwrap();
            let due: Vec<(String, i64)> = redis::cmd("ZRANGE")
                .arg(due)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
                .unwrap();
            (values, due)
        }
    };
    let before = state(&mut c).await;
    assert_eq!(
        s.claim_full(0, "t", &link, 3, 5_000_000).await.unwrap(),
        None
    );
    assert_eq!(
        state(&mut c).await,
        before,
        "a short claim changed the store"
    );
    // Under a lease it does not hold, it claims nothing either.
    assert_eq!(
        s.claim_full(0, "other", &link, 2, 5_000_000).await.unwrap(),
        Some(Claim::LeaseLost)
    );
    let Some(Claim::Members(mut got)) = s.claim_full(0, "t", &link, 2, 5_000_000).await.unwrap()
    else {
        panic!("a full batch was not claimed");
    };
    got.sort();
    assert_eq!(got, vec![("a".into(), true), ("b".into(), true)]);
    let (values, due) = state(&mut c).await;
    assert!(
        values.values().all(|v| v.ends_with('u')),
        "claimed members are unknown: {values:?}"
    );
    assert_eq!(due, vec![(link.to_string(), 5_000_000)]);

    // The ack of that batch with the next claim, in one call: the ack lands
    // first, so the claim draws the next members, never the batch acked.
    push(
        &s,
        vec![
            change("c", true, 10),
            change("d", true, 10),
            change("e", true, 10),
        ],
    )
    .await;
    let acked = cohort_bridge::store::AckedBatch {
        token: "t",
        link: &link,
        sent: &got,
        active_destinations: &[DEST.into()],
        now_ms: 1_000_100,
        max_delay_ms: 1_000,
        batch_size: 2,
        claim_was_full: true,
        claimed_all_at_ms: None,
    };
    let (ack, next) = s.ack_then_claim(0, &acked, 6_000_000).await.unwrap();
    assert!(
        matches!(
            ack,
            cohort_bridge::store::Ack::Done {
                written: 2,
                still_dirty: 3,
                ..
            }
        ),
        "{ack:?}"
    );
    let Some(Claim::Members(next)) = next else {
        panic!("the next full batch was not claimed: {next:?}");
    };
    assert_eq!(next.len(), 2);
    assert!(
        next.iter()
            .all(|(m, _)| ["c", "d", "e"].contains(&m.as_str())),
        "the claim drew the batch just acked: {next:?}"
    );
    // Less than a full batch left after this ack: nothing more is claimed.
    let acked = cohort_bridge::store::AckedBatch {
        sent: &next,
        ..acked
    };
    let (_, none) = s.ack_then_claim(0, &acked, 6_000_000).await.unwrap();
    assert_eq!(none, None);
}

/// A push of many never-seen members leaves them in one entry of the
/// link's fresh list, not in its dirty set one by one (apply.lua). They
/// wait all the same: the link's waiting count, its due time, its
/// dirty-since, `why`, and the claim that hands them to a request see them
/// as the dirty set's members; one taken back before the claim is not sent.
#[tokio::test]
async fn fresh_members_wait_in_one_entry_and_are_claimed_as_the_dirty_set_s_would_be() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let prefix = "fresh";
    let s = store(&redis, prefix);
    let k = Keys::new(prefix, 1);
    let link = the_link();
    let mut c = raw(&redis).await;
    let keys: Vec<String> = (0..150).map(|i| format!("f{i:03}")).collect();
    push(&s, keys.iter().map(|m| change(m, true, 10)).collect()).await;
    let (dirty, fresh): (u64, u64) = redis::pipe()
        .cmd("SCARD")
        .arg(k.dirty(0, &link))
        .cmd("LLEN")
        .arg(k.fresh(0, &link))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        (dirty, fresh),
        (0, 1),
        "one fresh entry, no set member each"
    );
    assert_eq!(s.dirty_len(0, &link).await.unwrap(), 150);
    // The flusher's gauges see them: the backlog, and the oldest waiting
    // change (dirty_since.lua keeps the entry of a link whose members all
    // wait in its fresh list).
    assert_eq!(s.backlog(&[0]).await.unwrap(), 150);
    assert_eq!(
        s.oldest_dirty(&[0], 1_000_100).await.unwrap(),
        Some(1_000_000)
    );
    let status = s.link_status(&link).await.unwrap().unwrap();
    assert_eq!(status.dirty, 150);
    // More than a batch (100) waits: the link is due at once.
    assert_eq!(status.due_at_ms, Some(1_000_000));
    assert_eq!(status.dirty_since_ms, Some(1_000_000));
    // A later small push neither hides them nor makes the link look younger.
    let mut later = params();
    later.now_ms = 1_000_500;
    push_with(
        &s,
        vec![change("f000", false, 20), change("f001", false, 20)],
        later,
    )
    .await;
    let status = s.link_status(&link).await.unwrap().unwrap();
    assert_eq!(status.dirty_since_ms, Some(1_000_000));
    let why = |key: &str| {
        let (s, link) = (s.clone(), link.clone());
        let key = key.to_string();
        async move {
            s.explain_member(&link, &key, params().history, 1_000_600)
                .await
                .unwrap()
                .unwrap()
                .dirty
        }
    };
    assert!(why("f005").await, "a fresh member is waiting");
    assert!(!why("f000").await, "one taken back is not");

    assert!(s
        .try_acquire_lease(0, "t", Duration::from_secs(60))
        .await
        .unwrap());
    let Claim::Members(first) = s.claim(0, "t", &link, 100, 2_000_000).await.unwrap() else {
        panic!("the fresh members were not claimed");
    };
    assert_eq!(first.len(), 100);
    let (dirty, fresh, count): (u64, u64, Option<u64>) = redis::pipe()
        .cmd("SCARD")
        .arg(k.dirty(0, &link))
        .cmd("LLEN")
        .arg(k.fresh(0, &link))
        .cmd("HGET")
        .arg(k.link_meta(0, &link))
        .arg("fresh")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        (dirty, fresh, count),
        (148, 0, Some(0)),
        "the entry moved into the dirty set, without the two taken back"
    );
    let acked = cohort_bridge::store::AckedBatch {
        token: "t",
        link: &link,
        sent: &first,
        active_destinations: &[DEST.into()],
        now_ms: 1_001_000,
        max_delay_ms: 1_000,
        batch_size: 100,
        claim_was_full: true,
        claimed_all_at_ms: None,
    };
    s.ack(0, &acked).await.unwrap();
    let Claim::Members(rest) = s.claim(0, "t", &link, 100, 2_000_000).await.unwrap() else {
        panic!("the rest was not claimed");
    };
    let mut sent: Vec<(String, bool)> = first.iter().chain(&rest).cloned().collect();
    sent.sort();
    let expected: Vec<(String, bool)> = keys[2..].iter().map(|m| (m.clone(), true)).collect();
    assert_eq!(sent, expected, "every fresh member once, none taken back");

    // Fewer than a batch, on a clean link: the entry is the batch itself,
    // each member marked unknown as any claim marks them.
    let small: Vec<String> = (0..80).map(|i| format!("g{i:03}")).collect();
    let acked = cohort_bridge::store::AckedBatch {
        sent: &rest,
        claim_was_full: false,
        ..acked
    };
    s.ack(0, &acked).await.unwrap();
    assert_eq!(s.dirty_len(0, &link).await.unwrap(), 0);
    push(&s, small.iter().map(|m| change(m, true, 30)).collect()).await;
    let Claim::Members(mut got) = s.claim(0, "t", &link, 100, 2_000_000).await.unwrap() else {
        panic!("the small fresh entry was not claimed");
    };
    got.sort();
    let expected: Vec<(String, bool)> = small.iter().map(|m| (m.clone(), true)).collect();
    assert_eq!(got, expected);
    let values: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(k.want(0, SRC, COHORT))
        .arg(&small)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        values
            .iter()
            .all(|v| v.as_deref().is_some_and(|v| v.ends_with("11u"))),
        "claimed members are unknown: {values:?}"
    );
    assert_eq!(s.dirty_len(0, &link).await.unwrap(), 80);
}
