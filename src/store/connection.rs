//! The store's one connection: a single Redis endpoint or a Redis Cluster.
//!
//! [`Connection`] implements [`redis::aio::ConnectionLike`] by delegation, so
//! every call the store makes (`query_async`, scripts by SHA with the
//! `NOSCRIPT` fallback, pipelines) is the same code in both modes. What a
//! cluster changes:
//! - a command or a script goes to the primary of its keys' slot (every key
//!   of one push shares the partition's hash tag: one slot);
//! - a pipeline goes to the node of its first key and fails with `CROSSSLOT`
//!   if a later command names another slot, so the store only pipelines
//!   commands of one partition (per-partition reads run concurrently instead);
//! - `PING` and `SCRIPT LOAD` reach every primary (the client fans them out);
//! - node-level questions (`CONFIG GET`, `CLUSTER INFO`) are asked of each
//!   primary of the slot map by [`Connection::each_primary`], which also
//!   names a primary that does not answer (the client's own fan-out skips
//!   nodes it has no connection to).

use crate::config::RedisConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::time::Duration;

/// Retries of a failed command (reconnecting in between) before it is an error.
const RETRIES: usize = 1;
/// Longest wait between two such retries.
const MAX_RETRY_WAIT: Duration = Duration::from_millis(500);

/// A multiplexed connection to one Redis, or to every node of a cluster.
/// Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects lazily (nothing is dialled until the first command), so the
    /// bridge starts and reports not-ready while Redis is down.
    pub fn open(cfg: &RedisConfig) -> RedisResult<Connection> {
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let response_timeout = Duration::from_millis(cfg.response_timeout_ms);
        if !cfg.cluster {
            let client = redis::Client::open(cfg.url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(RETRIES)
                .set_max_delay(MAX_RETRY_WAIT);
            let conn = ConnectionManager::new_lazy_with_config(client, config)?;
            return Ok(Connection::Single(conn));
        }
        let seeds: Vec<&str> = std::iter::once(cfg.url.as_str())
            .chain(cfg.cluster_urls.iter().map(String::as_str))
            .collect();
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(connect_timeout)
            .response_timeout(response_timeout)
            .retries(RETRIES as u32)
            .max_retry_wait(MAX_RETRY_WAIT.as_millis() as u64)
            .build()?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(connect_timeout)
            .set_response_timeout(response_timeout);
        Ok(Connection::Cluster(
            client.get_pending_async_connection_with_config(config),
        ))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// Runs a node-level command on every primary (the one server when not
    /// a cluster): `(node, its reply or error)` per primary, a node that
    /// cannot be reached included (with its error). The primaries are those of
    /// the slot map a reachable node reports (`CLUSTER SLOTS`), named
    /// `host:port (slots a-b)`.
    pub async fn each_primary(
        &mut self,
        cmd: Cmd,
    ) -> RedisResult<Vec<(String, RedisResult<Value>)>> {
        let c = match self {
            Connection::Single(c) => {
                let reply = cmd.query_async::<Value>(c).await;
                return Ok(vec![(String::from("redis"), reply)]);
            }
            Connection::Cluster(c) => c,
        };
        let slots = cluster_slots(c).await?;
        let asks = primaries(&slots).into_iter().map(|(host, port, ranges)| {
            let mut c = c.clone();
            let cmd = cmd.clone();
            async move {
                let name = format!("{host}:{port} (slots {ranges})");
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                (
                    name,
                    c.route_command(cmd, routing).await.and_then(server_error),
                )
            }
        });
        let replies = futures_util::future::join_all(asks).await;
        if replies.is_empty() {
            return Err(unexpected(&slots));
        }
        Ok(replies)
    }
}

/// `CLUSTER SLOTS` from any node that answers (a random node may be one
/// that is down: ask a few times).
async fn cluster_slots(c: &mut ClusterConnection) -> RedisResult<Value> {
    let mut last = None;
    for _ in 0..4 {
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        match c
            .route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), routing)
            .await
        {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| unexpected(&Value::Nil)))
}

/// The primaries of a `CLUSTER SLOTS` reply: host, port and their slot ranges.
fn primaries(reply: &Value) -> Vec<(String, u16, String)> {
    let mut out: Vec<(String, u16, String)> = Vec::new();
    let Value::Array(ranges) = reply else {
        return out;
    };
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let host = match node.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = node.get(1) else {
            continue;
        };
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        let span = format!("{start}-{end}");
        match out.iter_mut().find(|(h, p, _)| *h == host && *p == port) {
            Some((_, _, spans)) => {
                spans.push(',');
                spans.push_str(&span);
            }
            None => out.push((host, port, span)),
        }
    }
    out
}

fn server_error(v: Value) -> RedisResult<Value> {
    match v {
        Value::ServerError(e) => Err(e.into()),
        other => Ok(other),
    }
}

fn unexpected(v: &Value) -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "unexpected reply from the cluster",
        format!("{v:?}"),
    ))
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn primaries_are_read_from_cluster_slots_with_their_ranges() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7009),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16000),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![Value::Int(16001), Value::Int(16383)]),
        ]);
        assert_eq!(
            primaries(&reply),
            vec![
                ("127.0.0.1".into(), 7000, "0-5460,10923-16000".into()),
                ("127.0.0.1".into(), 7001, "5461-10922".into()),
            ]
        );
        assert!(primaries(&Value::Nil).is_empty());
    }
}
