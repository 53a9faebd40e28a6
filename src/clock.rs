//! Wall-clock time in Unix milliseconds: versions, due times and LaunchDarkly's
//! `X-Ratelimit-Reset` are all expressed in it.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
