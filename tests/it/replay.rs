//! `cohort-bridge replay` as a person runs it: the summary table's counts on
//! a mix of good and bad fixtures, `--dry-run` (nothing sent, no secret
//! printed), `--rate` (requests wait for the limiter), and the progress bar
//! on a terminal only. The real binary against a real bridge, Redis and
//! emulator.

use crate::support::bridge::{amplitude_body, heap_body, AMPLITUDE_SECRET, HEAP_SECRET};
use crate::support::{converge, data_keys, emulator::TOKEN, stack, Bridge, TestConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A directory of fixtures plus the bridge configuration replay reads.
struct Fixtures {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Fixtures {
    fn new(cfg: &TestConfig) -> Fixtures {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bridge.toml");
        std::fs::write(&config, cfg.toml()).unwrap();
        Fixtures { dir, config }
    }

    /// Writes `<sub>/<name>` and returns the directory `<sub>`.
    fn write(&self, sub: &str, name: &str, body: &[u8]) -> PathBuf {
        let d = self.dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), body).unwrap();
        d
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }
}

fn amplitude(message_id: &str, users: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&amplitude_body(
        "replay",
        true,
        1_767_225_600,
        message_id,
        users,
    ))
    .unwrap()
}

/// Runs `cohort-bridge replay <args> --url <base> --config <config> <paths>`
/// off the test's runtime (the bridge runs on it), with stdout and stderr
/// piped (not a terminal).
async fn replay(base: &str, config: &Path, args: &[&str], paths: &[PathBuf]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort-bridge"));
    cmd.env("LD_API_TOKEN", TOKEN)
        .env("AMPLITUDE_SECRET", AMPLITUDE_SECRET)
        .env("HEAP_SECRET", HEAP_SECRET)
        .env_remove("COHORT_BRIDGE_CONFIG")
        .env_remove("RUST_LOG")
        .arg("replay")
        .args(args)
        .args(["--url", base, "--config"])
        .arg(config)
        .args(paths);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// The rows of the summary table on stderr: label → count.
fn summary(stderr: &str) -> BTreeMap<String, u64> {
    let table = stderr
        .split_once("replay summary\n")
        .unwrap_or_else(|| panic!("no summary table in: {stderr}"))
        .1;
    table
        .lines()
        .filter_map(|l| {
            let (label, n) = l.trim().rsplit_once(' ')?;
            Some((label.trim().to_string(), n.parse().ok()?))
        })
        .collect()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn row(rows: &BTreeMap<String, u64>, label: &str) -> u64 {
    *rows
        .get(label)
        .unwrap_or_else(|| panic!("no row {label:?} in {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_counts_files_pushes_statuses_and_accepted_changes() {
    let (mut redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let f = Fixtures::new(&cfg);
    // 2 accepted, a retried delivery (200, duplicate, 0 accepted), a body
    // that is not JSON (400), a Heap page with 1 add, and a file in a
    // directory that names no source (skipped, not sent).
    let amp = f.write("amplitude", "001.json", &amplitude("r1", &["u1", "u2"]));
    f.write("amplitude", "002.json", &amplitude("r1", &["u1", "u2"]));
    f.write("amplitude", "003.json", b"{not json");
    let heap = f.write(
        "heap",
        "001.json",
        &heap_body(41, "task-41", 1, 1, &["h@x.com"], &[]),
    );
    let notes = f.write("notes", "001.json", b"{}");
    let out = replay(&bridge.base, &f.config, &[], &[amp, heap, notes]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows = summary(&stderr);
    for (label, want) in [
        ("files", 5),
        ("skipped", 1),
        ("pushes sent", 4),
        ("2xx", 3),
        ("4xx", 1),
        ("5xx", 0),
        ("duplicates", 1),
        ("accepted changes", 3),
        ("paced by --rate", 0),
    ] {
        assert_eq!(row(&rows, label), want, "{label}: {stderr}\n{stdout}");
    }
    // One plain line per file on stdout, as before; no terminal, no bar.
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert!(stdout.contains("003.json [amplitude] -> 400 "), "{stdout}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes without a terminal: {stderr:?}"
    );
    converge(&emu, "production", "amplitude-replay", &["u1", "u2"]).await;
    converge(&emu, "production", "heap-41", &["h@x.com"]).await;

    // With Redis gone the bridge answers 503: counted as 5xx, and replay fails.
    redis.kill();
    let again = f.write("amplitude-2", "001.json", &amplitude("r2", &["u3"]));
    let out = replay(
        &bridge.base,
        &f.config,
        &["--source", "amplitude"],
        &[again],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let rows = summary(&stderr);
    assert_eq!(row(&rows, "5xx"), 1, "{stderr}");
    assert_eq!(row(&rows, "2xx"), 0, "{stderr}");
    assert_eq!(row(&rows, "accepted changes"), 0, "{stderr}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_nothing_and_prints_no_secret() {
    let (redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let f = Fixtures::new(&cfg);
    let amp = f.write("amplitude", "001.json", &amplitude("d1", &["u1"]));
    let heap = f.write(
        "heap",
        "001.json",
        &heap_body(42, "task-42", 1, 1, &["d@x.com"], &[]),
    );
    let out = replay(&bridge.base, &f.config, &["--dry-run"], &[amp, heap]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // What would be sent: method, URL, headers, body size.
    let amp_len = amplitude("d1", &["u1"]).len();
    for needle in [
        format!(
            "[amplitude] would send: POST {}/v1/webhooks/amplitude ({amp_len} body bytes)",
            bridge.base
        ),
        format!("[heap] would send: POST {}/v1/webhooks/heap (", bridge.base),
        "    Content-Type: application/json".to_string(),
        "    X-Cohort-Bridge-Token: <redacted>".to_string(),
        "    Heap-Hash: <redacted>".to_string(),
    ] {
        assert!(
            stdout.contains(&needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }
    for secret in [AMPLITUDE_SECRET, HEAP_SECRET, TOKEN, "hmac="] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed"
        );
    }
    let rows = summary(&stderr);
    assert_eq!(row(&rows, "not sent (--dry-run)"), 2, "{stderr}");
    assert_eq!(row(&rows, "pushes sent"), 0, "{stderr}");
    // Nothing reached the bridge (replay has exited: anything it sent has
    // been answered), so nothing is in Redis nor in the emulator.
    let (_, metrics) = bridge.get("/metrics").await;
    assert!(
        !metrics.contains("cohort_bridge_requests_total{"),
        "the bridge counted requests:\n{metrics}"
    );
    assert_eq!(data_keys(&redis, &cfg.prefix), Vec::<String>::new());
    assert!(emu.requests().await.is_empty());
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_makes_requests_wait_for_the_limiter() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let f = Fixtures::new(&cfg);
    let users: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        f.write(
            "amplitude",
            &format!("{i:03}.json"),
            &amplitude(&format!("rate-{i}"), &[u]),
        );
    }
    let dir = f.path("amplitude");
    // `--rate 4`: one token every 250 ms and no burst, so 5 requests cannot
    // all go out within 1 s. What is checked: the limiter held requests back
    // (the summary counts those that waited for it; the first never does),
    // and the run took at least the 4 intervals the limiter guarantees (a
    // lower bound, met whatever the machine's speed).
    let start = Instant::now();
    let out = replay(
        &bridge.base,
        &f.config,
        &["--rate", "4"],
        std::slice::from_ref(&dir),
    )
    .await;
    let took = start.elapsed();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows = summary(&stderr);
    assert_eq!(row(&rows, "2xx"), 5, "{stderr}");
    assert!(row(&rows, "paced by --rate") >= 1, "{stderr}");
    assert!(row(&rows, "paced by --rate") <= 4, "{stderr}");
    assert!(
        took >= Duration::from_secs(1),
        "5 requests at 4/s took {took:?}"
    );
    let want: Vec<&str> = users.iter().map(String::as_str).collect();
    converge(&emu, "production", "amplitude-replay", &want).await;
    // Zero is refused by the command line, naming the flag.
    let out = replay(&bridge.base, &f.config, &["--rate", "0"], &[dir]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--rate"), "{stderr}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_replay_draws_a_progress_bar_over_the_files() {
    let (_redis, _emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let f = Fixtures::new(&cfg);
    for i in 0..3 {
        f.write(
            "amplitude",
            &format!("{i:03}.json"),
            &amplitude(&format!("tty-{i}"), &[&format!("t{i}")]),
        );
    }
    // `script` (util-linux) runs the command on a pseudo-terminal and
    // copies what it wrote, escape codes included.
    let replay_cmd = format!(
        "{} replay --url {} --config {} {}",
        env!("CARGO_BIN_EXE_cohort-bridge"),
        bridge.base,
        f.config.display(),
        f.path("amplitude").display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &replay_cmd, "/dev/null"])
        .env("LD_API_TOKEN", TOKEN)
        .env("AMPLITUDE_SECRET", AMPLITUDE_SECRET)
        .env("HEAP_SECRET", HEAP_SECRET)
        .env_remove("COHORT_BRIDGE_CONFIG");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("script (util-linux) runs"))
        .await
        .unwrap();
    let (screen, err) = text(&out);
    assert!(out.status.success(), "{screen}\n{err}");
    // The bar's template ("{pos}/{len} files") and its drawing (escape codes).
    assert!(
        screen.contains("/3 files"),
        "no progress bar in: {screen:?}"
    );
    assert!(screen.contains('\u{1b}'), "{screen:?}");
    assert!(screen.contains("replay summary"), "{screen:?}");
    bridge.stop().await;
}
