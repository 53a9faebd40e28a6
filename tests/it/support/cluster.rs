//! A private three-primary Redis Cluster: three `redis-server
//! --cluster-enabled yes` on free ports (each with its own data directory and
//! AOF), joined by `redis-cli --cluster create`, ready once every node
//! reports `cluster_state:ok`. A node can be killed and restarted on the same
//! port and directory (it rejoins from its `nodes-<port>.conf`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to form (or to heal after a restart).
const FORM: Duration = Duration::from_secs(30);

pub struct ClusterNode {
    child: Option<Child>,
    pub port: u16,
    /// The cluster bus port (`cluster-port`), picked free like `port`.
    bus_port: u16,
    dir: tempfile::TempDir,
}

impl ClusterNode {
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &self.bus_port.to_string()])
            .args([
                "--cluster-config-file",
                &format!("nodes-{}.conf", self.port),
            ])
            .args(["--cluster-node-timeout", "5000"])
            .args(["--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let client = self.client();
        let start = Instant::now();
        loop {
            if let Ok(mut c) = client.get_connection() {
                if ::redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server --cluster-enabled did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain (non-cluster) client of this node alone.
    pub fn client(&self) -> ::redis::Client {
        ::redis::Client::open(self.url()).expect("url")
    }

    /// The keys this node holds whose name contains `prefix` (`KEYS` on one
    /// node sees only its own slots).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut c = self.client().get_connection().expect("connect");
        ::redis::cmd("KEYS")
            .arg(format!("*{prefix}*"))
            .query(&mut c)
            .expect("KEYS")
    }

    fn cluster_state(&self) -> Option<String> {
        let mut c = self.client().get_connection().ok()?;
        let info: String = ::redis::cmd("CLUSTER").arg("INFO").query(&mut c).ok()?;
        info.lines()
            .find_map(|l| l.trim().strip_prefix("cluster_state:"))
            .map(str::to_string)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    /// Three primaries, no replicas, every slot assigned, state ok everywhere.
    pub fn start() -> Self {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let p = super::free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut nodes = Vec::new();
        for i in 0..3 {
            let mut n = ClusterNode {
                child: None,
                port: ports[2 * i],
                bus_port: ports[2 * i + 1],
                dir: tempfile::tempdir().expect("temp dir"),
            };
            n.spawn();
            nodes.push(n);
        }
        let cluster = RedisCluster { nodes };
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.await_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub fn await_ok(&self) {
        let start = Instant::now();
        loop {
            if self
                .nodes
                .iter()
                .all(|n| n.cluster_state().as_deref() == Some("ok"))
            {
                return;
            }
            assert!(
                start.elapsed() < FORM,
                "the cluster did not reach cluster_state:ok within {FORM:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed URL (first node).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The other nodes' URLs, as `redis.cluster_urls` TOML.
    pub fn other_urls_toml(&self) -> String {
        let urls: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("{:?}", n.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The index of the node serving `key`'s slot (from `CLUSTER SLOTS`).
    pub fn node_of(&self, key: &str) -> usize {
        let mut c = self.nodes[0].client().get_connection().expect("connect");
        let slot: i64 = ::redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .expect("CLUSTER KEYSLOT");
        let ranges: Vec<(i64, i64, (String, u16))> = ::redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<::redis::Value>>(&mut c)
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|r| {
                let ::redis::Value::Array(parts) = r else {
                    panic!("CLUSTER SLOTS entry {r:?}")
                };
                let start: i64 = ::redis::from_redis_value_ref(&parts[0]).unwrap();
                let end: i64 = ::redis::from_redis_value_ref(&parts[1]).unwrap();
                let ::redis::Value::Array(node) = &parts[2] else {
                    panic!("CLUSTER SLOTS node {:?}", parts[2])
                };
                let host: String = ::redis::from_redis_value_ref(&node[0]).unwrap();
                let port: u16 = ::redis::from_redis_value_ref(&node[1]).unwrap();
                (start, end, (host, port))
            })
            .collect();
        let (_, _, (_, port)) = ranges
            .iter()
            .find(|(s, e, _)| (*s..=*e).contains(&slot))
            .unwrap_or_else(|| panic!("slot {slot} of {key} is served by no node"));
        self.nodes
            .iter()
            .position(|n| n.port == *port)
            .expect("the slot's node is one of ours")
    }

    /// `kill -9` of one node.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts a killed node again on its port and directory; it rejoins.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i].spawn();
        self.await_ok();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}
