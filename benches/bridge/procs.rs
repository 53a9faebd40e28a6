//! The processes a run needs: its own `redis-server`, the LaunchDarkly
//! emulator and the bridge, each a child process stopped on drop.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LD_TOKEN: &str = "bench-ld-token";
pub const SOURCE_SECRET: &str = "bench-source-secret";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

fn bin(name: &str) -> PathBuf {
    match name {
        // BENCH_BRIDGE_BIN=<path> runs another build of the bridge (e.g.
        // one saved before a change) under the same load.
        "cohort-bridge" => std::env::var_os("BENCH_BRIDGE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cohort-bridge"))),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_ld-emulator")),
    }
}

/// Where reports go: `<target>/bench/`.
pub fn report_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_cohort-bridge"));
    let target = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench")
}

/// A private Redis: AOF on, `appendfsync everysec` (the production setting
/// the README recommends; `always` would measure the disk), no RDB saves.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let r = Redis {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if let Ok(mut c) = r.conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return r;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    pub fn used_memory(&self) -> u64 {
        let mut c = self.conn().expect("redis connection");
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut c)
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO memory")
    }

    pub fn flushall(&self) {
        let mut c = self.conn().expect("redis connection");
        let () = redis::cmd("FLUSHALL")
            .arg("SYNC")
            .query(&mut c)
            .expect("FLUSHALL");
    }

    /// `redis-benchmark -P 64 -t hset` against this Redis: HSET/s.
    pub fn hset_ceiling(&self, requests: u64) -> f64 {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-P", "64", "-t", "hset", "-q", "-n", &requests.to_string()])
            .output()
            .expect("redis-benchmark must be installed (it ships with redis-server)");
        let text = String::from_utf8_lossy(&out.stdout);
        // "HSET: 2010050.25 requests per second, p50=..." (after \r progress lines)
        let rate = text
            .split(['\r', '\n'])
            .filter_map(|l| l.trim().strip_prefix("HSET: "))
            .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
            .next_back()
            .unwrap_or_else(|| panic!("could not read redis-benchmark output: {text}"));
        let mut c = self.conn().expect("redis connection");
        let _: i64 = redis::cmd("DEL").arg("myhash").query(&mut c).unwrap_or(0);
        rate
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Emulator {
    child: Child,
    pub url: String,
}

impl Emulator {
    pub fn start() -> Emulator {
        let mut child = Command::new(bin("ld-emulator"))
            .args(["--listen", "127.0.0.1:0", "--token", LD_TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ld-emulator binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("emulator banner");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("emulator url")
            .to_string();
        Emulator { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What differs between the bridge configurations of the phases.
#[derive(Clone, Copy)]
pub struct BridgeOpts {
    pub ld_rps: f64,
    pub max_delay_ms: u64,
}

pub struct Bridge {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Bridge {
    pub async fn start(redis: &Redis, emu: &Emulator, opts: BridgeOpts) -> Bridge {
        Bridge::start_with(redis, emu, opts, "").await
    }

    /// [`Bridge::start`] with `extra` settings, one `table.key = value` per
    /// line, for the `launchdarkly` and `flush` tables (others are ignored).
    pub async fn start_with(
        redis: &Redis,
        emu: &Emulator,
        opts: BridgeOpts,
        extra: &str,
    ) -> Bridge {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let toml = format!(
            r#"[server]
listen = "127.0.0.1:{port}"
[redis]
url = "{redis}"
key_prefix = "bench"
[launchdarkly]
base_url = "{ld}"
requests_per_second = {rps:.1}
{extra_ld}
[flush]
max_delay_ms = {delay}
{extra_flush}
[destinations.production]
project = "default"
environment = "production"
[[sources]]
id = "amp"
kind = "amplitude"
destinations = ["production"]
auth = {{ scheme = "header", header = "X-Cohort-Bridge-Token", secret_env = "BENCH_SECRET" }}
"#,
            redis = redis.url(),
            ld = emu.url,
            rps = opts.ld_rps,
            delay = opts.max_delay_ms,
            extra_ld = section_lines(extra, "launchdarkly."),
            extra_flush = section_lines(extra, "flush."),
        );
        let cfg = dir.path().join("bench.toml");
        std::fs::write(&cfg, toml).expect("write config");
        let log = std::fs::File::create(dir.path().join("bridge.log")).expect("log file");
        let child = Command::new(bin("cohort-bridge"))
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("LD_API_TOKEN", LD_TOKEN)
            .env("BENCH_SECRET", SOURCE_SECRET)
            // BENCH_BRIDGE_LOG=<filter> keeps each bridge's log in
            // target/bench/ (e.g. cohort_bridge::flush::phases=debug).
            .env(
                "RUST_LOG",
                std::env::var("BENCH_BRIDGE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cohort-bridge binary");
        let b = Bridge {
            child,
            port,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(&ready).send().await {
                if r.status().is_success() {
                    return b;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "bridge did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var("BENCH_BRIDGE_LOG").is_ok() {
            let dir = report_dir();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(
                self._dir.path().join("bridge.log"),
                dir.join(format!("bridge-{}.log", self.port)),
            );
        }
    }
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// `/proc/<pid>/stat` (`self` for the benchmark's own process, which is the
/// load generator). 0 when it cannot be read.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it are plain.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest` starts
    // at field 3 (the state), so they are at 11 and 12 here.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks()
}

/// `getconf CLK_TCK` (100 on Linux unless told otherwise).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The cores each process of a figure used while it ran: CPU seconds over
/// wall seconds, per process.
pub struct CpuMeter {
    procs: Vec<(&'static str, String, f64)>,
    start: Instant,
}

impl CpuMeter {
    /// Starts measuring the named processes (`pid` as text; "self" for this one).
    pub fn start(procs: &[(&'static str, String)]) -> CpuMeter {
        CpuMeter {
            procs: procs
                .iter()
                .map(|(n, p)| (*n, p.clone(), cpu_seconds(p)))
                .collect(),
            start: Instant::now(),
        }
    }

    /// Cores used since [`CpuMeter::start`], per process name.
    pub fn cores(&self) -> Vec<(&'static str, f64)> {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        self.procs
            .iter()
            .map(|(n, p, before)| (*n, (cpu_seconds(p) - before) / wall))
            .collect()
    }
}

/// The lines of `extra` that start with `prefix` (`flush.lease_ttl_ms = 3000`),
/// without it, for the table of that name.
fn section_lines(extra: &str, prefix: &str) -> String {
    extra
        .lines()
        .filter_map(|l| l.trim().strip_prefix(prefix))
        .collect::<Vec<_>>()
        .join("\n")
}
