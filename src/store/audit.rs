//! The audit trail: one capped list per link recording every LaunchDarkly
//! write the flusher made (or, in shadow mode, would have made).
//!
//! Cost: one `LPUSH` + `LTRIM` pipeline per write (at most one write per
//! link per flush, never per member), and at most `cap` entries of at most
//! `2 × AUDIT_KEYS` keys each per link.

use super::{LinkId, Store, StoreError};

/// At most this many added and this many removed keys are kept per entry
/// (the counts are always exact).
pub const AUDIT_KEYS: usize = 20;

/// One LaunchDarkly write of a link, as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// When the answer came (Unix ms).
    pub at_ms: i64,
    /// `update_membership` or `create_segment`.
    pub operation: String,
    /// The segment key written.
    pub segment: String,
    /// Keys added (all of them counted).
    pub adds: u64,
    /// Keys removed (all of them counted).
    pub removes: u64,
    /// The first added keys (at most 20).
    pub add_keys: Vec<String>,
    /// The first removed keys (at most 20).
    pub remove_keys: Vec<String>,
    /// The HTTP status, or `timeout`, `transport`, `not_sent`, or `shadowed`
    /// (shadow mode: not sent).
    pub status: String,
    /// LaunchDarkly's `X-Request-Id`, when it sent one.
    pub request_id: Option<String>,
    /// LaunchDarkly's message, or the transport error, for a write that failed.
    pub message: Option<String>,
}

impl AuditEntry {
    /// An entry for the batch `members` ((key, desired in) each); the keys
    /// kept are capped at [`AUDIT_KEYS`] per direction.
    pub fn for_batch(
        at_ms: i64,
        operation: &str,
        segment: &str,
        members: &[(String, bool)],
    ) -> Self {
        let mut e = AuditEntry {
            at_ms,
            operation: operation.to_string(),
            segment: segment.to_string(),
            adds: 0,
            removes: 0,
            add_keys: Vec::new(),
            remove_keys: Vec::new(),
            status: String::new(),
            request_id: None,
            message: None,
        };
        for (key, include) in members {
            let (n, keys) = if *include {
                (&mut e.adds, &mut e.add_keys)
            } else {
                (&mut e.removes, &mut e.remove_keys)
            };
            *n += 1;
            if keys.len() < AUDIT_KEYS {
                keys.push(key.clone());
            }
        }
        e
    }
}

impl Store {
    /// Records one write of the link, keeping the newest `cap` entries
    /// (`cap` 0: nothing is recorded).
    pub async fn record_audit(
        &self,
        link: &LinkId,
        entry: &AuditEntry,
        cap: usize,
    ) -> Result<(), StoreError> {
        if cap == 0 {
            return Ok(());
        }
        let partition = self.keys.partition(&link.source, &link.cohort);
        let key = self.keys.audit(partition, link);
        let json = serde_json::to_string(entry).unwrap_or_default();
        // One key, so one slot: the pipeline is fine on Redis Cluster.
        let _: () = redis::pipe()
            .cmd("LPUSH")
            .arg(&key)
            .arg(json)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(cap as i64 - 1)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The link's audit entries, newest first: those at or after `since_ms`,
    /// at most `limit`. Reads at most the list's cap.
    pub async fn audit(
        &self,
        link: &LinkId,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.audit(partition, link))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await?;
        Ok(raw
            .iter()
            .filter_map(|s| serde_json::from_str::<AuditEntry>(s).ok())
            .filter(|e| since_ms.is_none_or(|s| e.at_ms >= s))
            .take(limit)
            .collect())
    }
}

/// Reads a `--since`/`since=` bound: Unix milliseconds, or an RFC 3339 time
/// (`2026-12-02T14:02:00Z`). `None`: neither.
pub fn parse_since(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_ms_or_rfc3339() {
        assert_eq!(parse_since("1767225600000"), Some(1_767_225_600_000));
        assert_eq!(parse_since("2026-01-01T00:00:00Z"), Some(1_767_225_600_000));
        assert_eq!(
            parse_since("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_since("yesterday"), None);
        assert_eq!(parse_since(""), None);
    }

    #[test]
    fn entries_count_every_key_and_keep_the_first() {
        let members: Vec<(String, bool)> = (0..30).map(|i| (format!("k{i}"), i % 3 != 0)).collect();
        let e = AuditEntry::for_batch(1, "update_membership", "seg", &members);
        assert_eq!((e.adds, e.removes), (20, 10));
        assert_eq!(e.add_keys.len(), AUDIT_KEYS);
        assert_eq!(e.remove_keys.len(), 10);
        assert_eq!(e.add_keys[0], "k1");
    }
}
