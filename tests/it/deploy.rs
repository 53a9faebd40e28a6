//! `deploy/`: the Prometheus alert rules (`promtool check rules` and the
//! rules' unit tests), the Grafana dashboard, the Compose file
//! (`docker-compose config`), the Kubernetes manifests
//! (`kubernetes-validate`, offline) and the bridge configuration they carry
//! (`cohort-bridge check-config`); and that every metric the rules and the
//! dashboard name is in a real `/metrics` scrape.
//!
//! The tools come from `scripts/test-packages.txt` (promtool, docker-compose)
//! and `scripts/python-requirements.txt` (kubernetes-validate); a missing one
//! fails the test, naming what installs it.

use crate::support::bridge::{amplitude_body, AMPLITUDE_SECRET, HEAP_SECRET, OPERATOR_TOKEN};
use crate::support::{converge, emulator::TOKEN, eventually, stack, Bridge, WAIT};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

/// Runs a tool found on PATH; fails naming what installs it when it is absent.
fn tool(cmd: &mut Command, installed_by: &str) -> Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {name} ({e}): it is installed by {installed_by} (scripts/test.sh does it)"
        )
    })
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const PROMTOOL: &str = "the Debian package prometheus (scripts/test-packages.txt)";
const DOCKER_COMPOSE: &str = "the Debian package docker-compose (scripts/test-packages.txt)";
const KUBERNETES_VALIDATE: &str =
    "scripts/python-tools.sh (kubernetes-validate, scripts/python-requirements.txt)";

#[test]
fn promtool_accepts_the_alert_rules_and_their_unit_tests_pass() {
    let out = tool(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(deploy("prometheus/alerts.yaml")),
        PROMTOOL,
    );
    assert!(
        out.status.success(),
        "promtool check rules: {}",
        printed(&out)
    );
    let out = tool(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(deploy("prometheus/alerts_test.yaml")),
        PROMTOOL,
    );
    assert!(
        out.status.success(),
        "promtool test rules: {}",
        printed(&out)
    );
    // The alerts the deployment needs are all there, each with its texts.
    let rules = read("prometheus/alerts.yaml");
    for alert in [
        "CohortBridgePropagationSlow",
        "CohortBridgeBacklogGrowing",
        "CohortBridgeLinkBlocked",
        "CohortBridgeDeadLettersGrowing",
        "CohortBridgeRateLimited",
        "CohortBridgeRedisDown",
        "CohortBridgePartitionUnowned",
    ] {
        assert!(
            rules.contains(&format!("- alert: {alert}\n")),
            "{alert} missing"
        );
        assert!(
            rules.contains(&format!(
                "runbook: \"README.md#alerts-what-each-one-means-and-what-to-do, {alert}\""
            )),
            "{alert} has no runbook"
        );
    }
    assert_eq!(
        rules.matches("- alert: ").count(),
        rules.matches("summary: ").count(),
    );
    assert_eq!(
        rules.matches("- alert: ").count(),
        rules.matches("description: ").count(),
    );
    // The README has the section the runbooks point to, naming each alert.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    assert!(readme.contains("### Alerts: what each one means and what to do"));
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            readme.contains(&format!("**{alert}**")),
            "README does not explain {alert}"
        );
    }
}

/// Every PromQL expression of the dashboard's panels (`$instance` as `.*`).
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("expr").replace("$instance", ".*"));
        }
    }
    out
}

#[test]
fn the_dashboard_is_importable_and_its_queries_parse() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/cohort-bridge.json")).expect("dashboard JSON");
    // Import asks for the data source (`__inputs`); every query uses it.
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        assert!(
            !panel["targets"].as_array().unwrap().is_empty(),
            "{}",
            panel["title"]
        );
    }
    // promtool parses each query, as the expression of a recording rule.
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::Value::String(e.clone())
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&file, &rules).unwrap();
    let out = tool(
        Command::new("promtool").args(["check", "rules"]).arg(&file),
        PROMTOOL,
    );
    assert!(out.status.success(), "{}\n{rules}", printed(&out));
}

/// The `cohort_bridge_*` metric names (series names, such as
/// `..._seconds_bucket`) that the alert rules and the dashboard query.
fn metric_names_used() -> BTreeSet<String> {
    let re = regex::Regex::new(r"cohort_bridge_[a-z0-9_]*[a-z0-9]").unwrap();
    let rules = read("prometheus/alerts.yaml");
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/cohort-bridge.json")).unwrap();
    let mut text = rule_exprs(&rules).join("\n");
    text.push('\n');
    text.push_str(&dashboard_exprs(&dash).join("\n"));
    re.find_iter(&text)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// The `expr` of every rule: inline, or the block of lines indented under
/// `expr: |` (summaries and descriptions are not queries).
fn rule_exprs(rules: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let expr = expr.trim();
        if expr != "|" {
            out.push(expr.to_string());
            continue;
        }
        let mut block = Vec::new();
        while let Some(next) = lines.peek() {
            if next.len() - next.trim_start().len() <= indent && !next.trim().is_empty() {
                break;
            }
            block.push(next.trim().to_string());
            lines.next();
        }
        out.push(block.join(" "));
    }
    out
}

/// The series names in a Prometheus text exposition.
fn series_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_name_is_in_a_real_scrape() {
    let used = metric_names_used();
    for expected in [
        "cohort_bridge_propagation_seconds_bucket",
        "cohort_bridge_changes_total",
        "cohort_bridge_ld_requests_total",
        "cohort_bridge_redis_up",
        "cohort_bridge_leases_held",
        "cohort_bridge_partitions",
        "cohort_bridge_links_blocked",
        "cohort_bridge_dirty_backlog",
    ] {
        assert!(used.contains(expected), "{expected} not found in {used:?}");
    }
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    // A link blocked once (LaunchDarkly answers its creation 403), so the
    // blocked-link counter has a series; it is retried and written later.
    emu.fault(serde_json::json!({"kind": "status", "status": 403, "route": "create", "count": 1}))
        .await;
    let (status, resp) = bridge
        .amplitude(&amplitude_body(
            "deploy-blocked",
            true,
            1_767_225_600,
            "db::0",
            &["b1"],
        ))
        .await;
    assert_eq!(status, 200, "{resp}");
    eventually("a link is blocked", WAIT, || async {
        let (_, text) = bridge.get("/metrics").await;
        text.contains("cohort_bridge_links_blocked_total{")
            .then_some(())
    })
    .await;
    let (status, resp) = bridge
        .amplitude(&amplitude_body(
            "deploy-metrics",
            true,
            1_767_225_600,
            "dm::enter::0",
            &["u1", "u2"],
        ))
        .await;
    assert_eq!(status, 200, "{resp}");
    // Once the emulator has the members, every histogram has had its sample
    // (recorded just after the acknowledged write): poll the scrape until
    // every name is there, within the usual bound.
    converge(
        &emu,
        "production",
        "amplitude-deploy-metrics",
        &["u1", "u2"],
    )
    .await;
    let start = std::time::Instant::now();
    let (missing, text) = loop {
        let (_, text) = bridge.get("/metrics").await;
        let exported = series_names(&text);
        let missing: Vec<String> = used.difference(&exported).cloned().collect();
        if missing.is_empty() || start.elapsed() > WAIT {
            break (missing, text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        missing.is_empty(),
        "the rules or the dashboard query metrics /metrics does not export: {missing:?}\n{text}"
    );
    bridge.stop().await;
}

/// The secrets compose.yaml and the Kubernetes Secret name, set for a test.
fn deploy_secrets(cmd: &mut Command) -> &mut Command {
    cmd.env("LD_API_TOKEN", TOKEN)
        .env("AMPLITUDE_SECRET", AMPLITUDE_SECRET)
        .env("HEAP_SECRET", HEAP_SECRET)
        .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env_remove("LD_BASE_URL")
        .env_remove("COHORT_BRIDGE_CONFIG")
}

#[test]
fn docker_compose_accepts_the_compose_file() {
    let compose = deploy("compose.yaml");
    let out = tool(
        deploy_secrets(&mut Command::new("docker-compose"))
            .arg("-f")
            .arg(&compose)
            .arg("config"),
        DOCKER_COMPOSE,
    );
    let text = printed(&out);
    assert!(out.status.success(), "docker-compose config: {text}");
    // Redis: AOF and noeviction.
    for needle in [
        "- --appendonly\n    - \"yes\"",
        "- --maxmemory-policy\n    - noeviction",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    // Two bridge replicas, each on its own published port, both answering
    // the network alias `bridge`; the emulator only under its profile.
    for needle in [
        "  bridge-1:\n",
        "  bridge-2:\n",
        "published: 8081",
        "published: 8082",
        "        - bridge\n",
        "    profiles:\n    - emulator\n",
        "stop_grace_period: 40s",
        "/etc/cohort-bridge/config.toml:ro",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert_eq!(text.matches("        - bridge\n").count(), 2, "{text}");
    // Secrets come from the environment: the file holds none, and without
    // one `docker-compose` refuses, naming it.
    let unset = tool(
        deploy_secrets(&mut Command::new("docker-compose"))
            .env_remove("LD_API_TOKEN")
            .arg("-f")
            .arg(&compose)
            .arg("config"),
        DOCKER_COMPOSE,
    );
    assert!(!unset.status.success());
    assert!(
        printed(&unset).contains("set LD_API_TOKEN"),
        "{}",
        printed(&unset)
    );
    // The stop grace outlives the bridge's shutdown grace.
    let grace = bridge_settings().server.shutdown_grace_seconds;
    assert!(
        40 > grace,
        "stop_grace_period 40s <= shutdown grace {grace}s"
    );
}

/// deploy/config/bridge.toml, parsed with the test secrets.
fn bridge_settings() -> cohort_bridge::config::Settings {
    cohort_bridge::config::from_toml_str(
        &read("config/bridge.toml"),
        &crate::support::TestConfig::secrets(),
    )
    .expect("deploy/config/bridge.toml is valid")
}

/// The text of the `bridge.toml: |` block of the ConfigMap.
fn configmap_toml() -> String {
    let text = read("kubernetes/configmap.yaml");
    let block = text
        .split_once("  bridge.toml: |\n")
        .expect("the ConfigMap has bridge.toml")
        .1;
    block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_deployment_config_passes_check_config_and_the_configmap_carries_it() {
    assert_eq!(
        configmap_toml(),
        read("config/bridge.toml"),
        "deploy/kubernetes/configmap.yaml must carry deploy/config/bridge.toml verbatim"
    );
    let out = deploy_secrets(&mut Command::new(env!("CARGO_BIN_EXE_cohort-bridge")))
        .env("COHORT_BRIDGE_REDIS__URL", "redis://redis:6379")
        .args(["check-config", "--config"])
        .arg(deploy("config/bridge.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "check-config: {}", printed(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
        "{}",
        printed(&out)
    );
}

/// The Kubernetes resource files (the kustomization is not a resource).
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    tool(
        Command::new("kubernetes-validate")
            .args(["--strict", "--quiet"])
            .args(files),
        KUBERNETES_VALIDATE,
    )
}

#[test]
fn kubernetes_validate_accepts_the_manifests_offline() {
    let files = manifests();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "configmap.yaml",
            "deployment.yaml",
            "pdb.yaml",
            "secret.yaml",
            "service.yaml"
        ]
    );
    let out = kubernetes_validate(&files);
    assert!(
        out.status.success(),
        "kubernetes-validate: {}",
        printed(&out)
    );
    // Every resource is listed in the kustomization.
    let kustomization = read("kubernetes/kustomization.yaml");
    for n in &names {
        assert!(kustomization.contains(&format!("  - {n}\n")), "{n}");
    }
    // The validator does reject a wrong manifest (a misspelt field).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("pdb.yaml");
    std::fs::write(
        &bad,
        read("kubernetes/pdb.yaml").replace("maxUnavailable:", "maxUnavailabel:"),
    )
    .unwrap();
    let out = kubernetes_validate(&[bad]);
    assert!(!out.status.success(), "{}", printed(&out));
    assert!(
        printed(&out).contains("maxUnavailabel"),
        "{}",
        printed(&out)
    );
}

#[test]
fn the_kubernetes_deployment_probes_terminates_and_reads_secrets_as_the_bridge_needs() {
    let d = read("kubernetes/deployment.yaml");
    let after = |key: &str| -> String {
        let i = d.find(key).unwrap_or_else(|| panic!("{key} missing"));
        d[i..].lines().take(4).collect::<Vec<_>>().join("\n")
    };
    assert!(after("readinessProbe:").contains("path: /readyz"));
    assert!(after("livenessProbe:").contains("path: /healthz"));
    let grace: u64 = regex::Regex::new(r"terminationGracePeriodSeconds: (\d+)")
        .unwrap()
        .captures(&d)
        .expect("terminationGracePeriodSeconds")[1]
        .parse()
        .unwrap();
    let shutdown = bridge_settings().server.shutdown_grace_seconds;
    assert!(
        grace > shutdown,
        "terminationGracePeriodSeconds {grace} must exceed server.shutdown_grace_seconds {shutdown}"
    );
    assert!(after("resources:").contains("memory: 64Mi"));
    // Every secret the configuration names comes from the Secret, and so
    // does the Redis URL (it may carry a password).
    for var in [
        "COHORT_BRIDGE_REDIS__URL",
        "LD_API_TOKEN",
        "AMPLITUDE_SECRET",
        "HEAP_SECRET",
        "OPERATOR_TOKEN",
    ] {
        let block = after(&format!("- name: {var}\n"));
        assert!(
            block.contains("secretKeyRef:") && block.contains("name: cohort-bridge-secrets"),
            "{var}: {block}"
        );
    }
    assert!(read("kubernetes/pdb.yaml").contains("kind: PodDisruptionBudget"));
}
