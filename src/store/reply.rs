//! Decoding what Redis and the scripts answer, and the store's one error.

use redis::Value;

/// Redis could not be reached or answered an error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached, or a command failed.
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script answered something the store cannot read.
    #[error("unexpected reply from a script: {0}")]
    Reply(String),
    /// Redis Cluster answers, but not well enough to take writes.
    #[error("cluster not ready: {0}")]
    Cluster(String),
}

/// A script's integer (or integer text) reply.
pub(super) fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Reply(format!("{v:?}"))),
        other => Err(StoreError::Reply(format!("{other:?}"))),
    }
}

/// A script's text reply.
pub(super) fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(StoreError::Reply(format!("{other:?}"))),
    }
}
