//! The `/ops` dashboard in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven with `fantoccini`): it loads without a console
//! error, the token prompt refuses a wrong token and opens with the right
//! one, the links table, both charts and the replicas show real data, and a
//! redrive from the page round-trips. A screenshot is kept in
//! `target/artifacts/ops-dashboard.png`. Also: the links list's paging,
//! search and sort over 5,000 links.

use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::browser::Browser;
use crate::support::{eventually, stack, Bridge, TestConfig, WAIT};
use fantoccini::Locator;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Instant;

const LINK: &str = "production:amplitude:ops-page";

fn with_operator(cfg: &mut TestConfig) {
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
}

/// Where test artifacts go: `target/artifacts/` (or under `CARGO_TARGET_DIR`).
fn artifacts_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).expect("create target/artifacts");
    dir
}

/// Console entries at level SEVERE (errors, CSP violations, failed loads).
fn errors(log: &[(String, String)]) -> Vec<&(String, String)> {
    log.iter().filter(|(level, _)| level == "SEVERE").collect()
}

async fn dead_letters(bridge: &Bridge) -> u64 {
    let (s, v) = bridge
        .operator(
            Method::GET,
            &format!("/links/{LINK}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["dead_letters"].as_u64().expect("dead_letters")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_real_data_and_redrives_from_the_page() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    // Real data: a cohort of 20, one member LaunchDarkly refuses (a dead letter).
    emu.configure(json!({"reject_keys": ["u03"]})).await;
    let users: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let (status, body) = bridge
        .amplitude(&amplitude_body(
            "ops-page",
            true,
            1_767_225_600,
            "o1",
            &refs,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the dead letter is recorded", WAIT, || async {
        (dead_letters(&bridge).await == 1).then_some(())
    })
    .await;

    let browser = Browser::start(1400, 1700).await;
    let c = &browser.client;
    c.goto(&format!("{}/ops", bridge.base))
        .await
        .expect("open /ops");
    browser
        .until(
            "the token prompt shows",
            "!document.getElementById('signin').hidden && document.readyState === 'complete'",
        )
        .await;
    let log = browser.console().await;
    assert!(errors(&log).is_empty(), "console errors on load: {log:?}");
    assert_eq!(
        browser
            .eval("return document.getElementById('dashboard').hidden")
            .await,
        json!(true),
        "nothing shows before a token"
    );

    // A wrong token is refused with a message; the dashboard stays hidden.
    let token = c.find(Locator::Id("token")).await.expect("token input");
    token.send_keys("not-the-token").await.expect("type");
    c.find(Locator::Id("load"))
        .await
        .expect("open button")
        .click()
        .await
        .expect("click");
    let shown = browser
        .until(
            "the refusal shows",
            "document.getElementById('auth-error').textContent",
        )
        .await;
    assert!(shown.as_str().unwrap().contains("Token refused"), "{shown}");
    assert_eq!(
        browser
            .eval("return document.getElementById('dashboard').hidden")
            .await,
        json!(true)
    );
    // The refused calls are the only console entries (the browser logs a 401).
    let log = browser.console().await;
    for (_, m) in errors(&log) {
        assert!(m.contains("401"), "unexpected console error: {m}");
    }

    // The right token opens the dashboard.
    let token = c.find(Locator::Id("token")).await.expect("token input");
    token.send_keys(OPERATOR_TOKEN).await.expect("type");
    c.find(Locator::Id("load"))
        .await
        .expect("open button")
        .click()
        .await
        .expect("click");
    browser
        .until(
            "the dashboard shows",
            "!document.getElementById('dashboard').hidden",
        )
        .await;
    assert_eq!(
        browser
            .eval("return sessionStorage.getItem('cb-token')")
            .await,
        json!(OPERATOR_TOKEN),
        "the token is kept in the tab"
    );

    // The links table: the link with its segment, 20 tracked, 1 dead letter.
    let row = format!("document.querySelector('#links tr[data-link=\"{LINK}\"]')");
    let cells = browser
        .until(
            "the link's row shows",
            &format!("{row} && Array.from({row}.cells).map(c => c.textContent)"),
        )
        .await;
    let cells: Vec<&str> = cells
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cells[0], LINK, "{cells:?}");
    assert_eq!(cells[1], "amplitude-ops-page", "{cells:?}");
    assert_eq!(cells[2], "20", "tracked: {cells:?}");
    assert_eq!(cells[7], "1", "dead letters: {cells:?}");
    assert_ne!(cells[5], "–", "a last write: {cells:?}");
    assert_eq!(cells[8], "–", "no reconcile figures yet: {cells:?}");
    assert_eq!(
        browser
            .eval("return document.getElementById('page').textContent")
            .await,
        json!("1–1 of 1")
    );

    // Both charts are drawn from real figures: a propagation point (the
    // acknowledged batches) and the request rate against the budget.
    browser
        .until(
            "the propagation chart has its p50 and p99",
            "document.querySelector('#chart-propagation path.p50') && document.querySelector('#chart-propagation path.p99')",
        )
        .await;
    browser
        .until(
            "the budget chart has the rate and the budget",
            "document.querySelector('#chart-budget path.rate') && document.querySelector('#chart-budget path.budget')",
        )
        .await;
    // The replicas: this one, holding all four partitions; Redis up.
    let replicas = browser
        .until(
            "the replica holds every partition",
            "Array.from(document.querySelectorAll('#replicas tr')).map(r => r.textContent).join('|').includes('0, 1, 2, 3') && document.getElementById('replicas').textContent",
        )
        .await;
    assert!(
        replicas.as_str().unwrap().contains("this page's replica"),
        "{replicas}"
    );
    assert_eq!(
        browser
            .eval("return document.getElementById('redis').textContent")
            .await,
        json!("up")
    );
    let (_, overview) = bridge
        .operator(Method::GET, "/overview", Some(OPERATOR_TOKEN), None)
        .await;
    assert!(
        overview["series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["propagation_samples"].as_u64() > Some(0)),
        "the series holds the acknowledged batches: {overview}"
    );

    // Redrive from the page: LaunchDarkly accepts u03 now; two clicks (the
    // second confirms), then the dead letter is gone and u03 is written.
    emu.configure(json!({"reject_keys": []})).await;
    let redrive = format!("{row}.querySelectorAll('button')[1]");
    browser
        .eval(&format!("{redrive}.click(); return null"))
        .await;
    assert_eq!(
        browser.eval(&format!("return {redrive}.textContent")).await,
        json!("confirm redrive")
    );
    browser
        .eval(&format!("{redrive}.click(); return null"))
        .await;
    browser
        .until(
            "the page reports the redrive",
            "document.getElementById('action-status').textContent === 'redrive: done' && document.getElementById('detail').textContent.includes('\"redriven\": 1')",
        )
        .await;
    eventually("u03 is written after the redrive", WAIT, || async {
        let m = emu
            .members("default", "production", "amplitude-ops-page")
            .await?;
        m.contains(&"u03".to_string()).then_some(())
    })
    .await;
    assert_eq!(dead_letters(&bridge).await, 0);
    browser
        .until(
            "the page shows no dead letter after its refresh",
            &format!("{row} && {row}.cells[7].textContent === '0'"),
        )
        .await;

    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = artifacts_dir().join("ops-dashboard.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());

    let log = browser.console().await;
    assert!(errors(&log).is_empty(), "console errors: {log:?}");
    browser.close().await;
}

/// The links list with 5,000 links: the default answer lists them all (as
/// before), a page is `limit` of them from `offset`, `q` filters, `sort`
/// orders, and a bad query is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_links_list_pages_searches_and_sorts_five_thousand_links() {
    use futures_util::stream::{self, StreamExt};
    const LINKS: usize = 5000;
    let (_redis, _emu, mut cfg) = stack();
    with_operator(&mut cfg);
    // Keep LaunchDarkly out of the way: the links stay pending.
    cfg.set("flush", "max_delay_ms", "3600000");
    let bridge = Bridge::start(&cfg).await;
    let bodies: Vec<Value> = (0..LINKS)
        .map(|i| {
            let users: Vec<String> = (0..=(i % 7)).map(|u| format!("u{u}")).collect();
            let refs: Vec<&str> = users.iter().map(String::as_str).collect();
            amplitude_body(
                &format!("c{i:04}"),
                true,
                1_767_225_600,
                &format!("d{i}"),
                &refs,
            )
        })
        .collect();
    stream::iter(bodies.iter())
        .for_each_concurrent(16, |b| {
            let bridge = &bridge;
            async move {
                let (s, v) = bridge.amplitude(b).await;
                assert_eq!(s, 200, "{v}");
            }
        })
        .await;

    let get = |q: String| {
        let bridge = &bridge;
        async move {
            bridge
                .operator(
                    Method::GET,
                    &format!("/links{q}"),
                    Some(OPERATOR_TOKEN),
                    None,
                )
                .await
        }
    };
    let started = Instant::now();
    let (s, all) = get(String::new()).await;
    let all_ms = started.elapsed().as_millis();
    assert_eq!(s, 200);
    assert_eq!(all["links"].as_array().unwrap().len(), LINKS);
    assert_eq!(all["total"], LINKS);
    let ids: Vec<&str> = all["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["link"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "the default answer is ordered by link");

    let started = Instant::now();
    let (s, page) = get("?sort=-backlog&offset=50&limit=50".into()).await;
    let page_ms = started.elapsed().as_millis();
    assert_eq!(s, 200, "{page}");
    let page = page["links"].as_array().unwrap().clone();
    assert_eq!(page.len(), 50);
    let backlog: Vec<u64> = page.iter().map(|l| l["dirty"].as_u64().unwrap()).collect();
    assert!(backlog.windows(2).all(|w| w[0] >= w[1]), "{backlog:?}");
    // 5000 links with 1..=7 members each: the largest (7) fill the first pages.
    assert!(backlog.iter().all(|b| *b == 7), "{backlog:?}");

    let (_, found) = get("?q=AMPLITUDE:C012&limit=5".into()).await;
    assert_eq!(found["total"], 10, "c0120..c0129: {found}");
    assert_eq!(found["links"].as_array().unwrap().len(), 5);
    assert_eq!(found["links"][0]["link"], "production:amplitude:c0120");
    let (_, last) = get("?q=c012&offset=8".into()).await;
    assert_eq!(last["links"].as_array().unwrap().len(), 2);
    assert_eq!(last["offset"], 8);

    for bad in ["?sort=size", "?limit=0", "?offset=-1", "?page=2"] {
        let (s, v) = get(bad.into()).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["error"]["message"].is_string(), "{bad}: {v}");
    }
    eprintln!("GET /v1/operator/links with {LINKS} links: all {all_ms} ms; a sorted page of 50 {page_ms} ms");
}
