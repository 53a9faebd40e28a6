//! The real `cohort-bridge` binary: `check-config`, `serve` with JSON logs
//! and SIGTERM, and `replay`.

use crate::support::bridge::{amplitude_body, AMPLITUDE_SECRET, HEAP_SECRET};
use crate::support::{converge, emulator::TOKEN, eventually, free_port, stack, WAIT};
use std::io::Read;
use std::process::{Command, Stdio};

fn bridge_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cohort-bridge"));
    c.env("LD_API_TOKEN", TOKEN)
        .env("AMPLITUDE_SECRET", AMPLITUDE_SECRET)
        .env("HEAP_SECRET", HEAP_SECRET)
        .env_remove("COHORT_BRIDGE_CONFIG")
        .env_remove("RUST_LOG");
    c
}

#[test]
fn check_config_names_the_offending_keys_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[redis]\npartitions = 0\n[[sources]]\nid = \"a\"\nkind = \"amplitude\"\ndestinations = [\"nowhere\"]\nauth = { scheme = \"header\", header = \"X-T\", secret_env = \"UNSET_SECRET_VAR\" }\n",
    )
    .unwrap();
    let out = bridge_cmd()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "redis.partitions",
        "sources[0].destinations[0]",
        "UNSET_SECRET_VAR is not set",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    let missing = bridge_cmd()
        .args(["check-config", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[tokio::test]
async fn serve_logs_json_without_secrets_and_sigterm_releases_the_leases() {
    let (redis, emu, mut cfg) = stack();
    let port = free_port();
    cfg.set("server", "listen", format!("\"127.0.0.1:{port}\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, cfg.toml()).unwrap();

    let mut child = bridge_cmd()
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .env(
            "RUST_LOG",
            "debug,hyper=info,reqwest=info,h2=info,rustls=info",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the bridge is ready", WAIT, || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    // A rejected push (logged) and an accepted one that is flushed.
    let body = serde_json::to_vec(&amplitude_body("bin", true, 1, "b1", &["u1"])).unwrap();
    let r = http
        .post(format!("{base}/v1/webhooks/amplitude"))
        .header("X-Cohort-Bridge-Token", "wrong-secret-guess")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/v1/webhooks/amplitude"))
        .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    converge(&emu, "production", "amplitude-bin", &["u1"]).await;
    let leases_before = redis
        .keys(&cfg.prefix)
        .iter()
        .filter(|k| k.ends_with(":lease"))
        .count();
    assert_eq!(leases_before, 4, "one replica holds every partition");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let s = child.wait().unwrap();
        let mut logs = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        (s, logs)
    })
    .await
    .unwrap();
    let (status, logs) = exit;
    assert!(status.success(), "exit status {status:?}; logs:\n{logs}");
    let leases_after = redis
        .keys(&cfg.prefix)
        .iter()
        .filter(|k| k.ends_with(":lease"))
        .count();
    assert_eq!(leases_after, 0, "leases are released on shutdown");

    assert!(!logs.is_empty());
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some() || v.get("fields").is_some(),
            "{line}"
        );
    }
    for secret in [AMPLITUDE_SECRET, HEAP_SECRET, TOKEN, "wrong-secret-guess"] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
    assert!(logs.contains("Push rejected."), "the 401 is logged");
    assert!(logs.contains("Shutting down"), "{logs}");
}

#[tokio::test]
async fn replay_sends_fixtures_signed_as_their_source_would() {
    let (_redis, emu, cfg) = stack();
    let bridge = crate::support::Bridge::start(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, cfg.toml()).unwrap();
    // Directory names select the source: "heap" signs with a fresh Heap-Hash.
    let heap_dir = dir.path().join("heap");
    std::fs::create_dir(&heap_dir).unwrap();
    std::fs::write(
        heap_dir.join("01.json"),
        crate::support::bridge::heap_body(77, "task-77", 1, 1, &["r@x.com"], &[]),
    )
    .unwrap();
    let mut cmd = bridge_cmd();
    cmd.args(["replay", "--url", &bridge.base, "--config"])
        .arg(&config)
        .arg(&heap_dir);
    // The bridge runs on this test's runtime: wait for the child off it.
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[heap] -> 200"), "{stdout}");
    converge(&emu, "production", "heap-77", &["r@x.com"]).await;
    bridge.stop().await;
}

#[test]
fn environment_overrides_win_over_the_file_and_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        "[redis]\npartitions = 8\n[destinations.production]\nproject = \"default\"\nenvironment = \"production\"\n[[sources]]\nid = \"amplitude\"\nkind = \"amplitude\"\ndestinations = [\"production\"]\nauth = { scheme = \"header\", header = \"X-T\", secret_env = \"AMPLITUDE_SECRET\" }\n",
    )
    .unwrap();
    let ok = bridge_cmd()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("8 partition(s)"));
    let overridden = bridge_cmd()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("COHORT_BRIDGE_REDIS__PARTITIONS", "16")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&overridden.stdout).contains("16 partition(s)"));
    // A secret whose name starts with the prefix (config/example.toml's
    // `COHORT_BRIDGE_OPERATOR_TOKEN`) is not read as a configuration key.
    let secret_named_like_an_override = bridge_cmd()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("COHORT_BRIDGE_OPERATOR_TOKEN", "a-secret-value")
        .output()
        .unwrap();
    assert!(
        secret_named_like_an_override.status.success(),
        "{}",
        String::from_utf8_lossy(&secret_named_like_an_override.stderr)
    );
    let bad = bridge_cmd()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("COHORT_BRIDGE_REDIS__PARTITIONS", "0")
        .env("COHORT_BRIDGE_CONFIG", path.to_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("redis.partitions"));
}
