//! What a reconcile needs from Redis: a staging set for the keys of
//! LaunchDarkly's export, the chunked comparison (`scripts/reconcile.lua`),
//! and the per-link report.
//!
//! Memory: the bridge holds one chunk of keys at a time; the export's keys
//! live in Redis (a set with a TTL, under the link's hash tag) only while
//! the run compares, and the comparison removes them as it goes.

use super::{scripts, LinkId, Store, StoreError};
use std::collections::HashMap;

/// Counts of one chunk, or of a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReconcileCounts {
    /// Members compared (tracked by the bridge, or listed by LaunchDarkly).
    pub checked: u64,
    /// Desired in, absent from LaunchDarkly.
    pub missing: u64,
    /// In LaunchDarkly, desired out or never written by the bridge.
    pub extra: u64,
    /// Differences marked for a rewrite (all but dead-lettered members).
    pub repaired: u64,
    /// Missing members the bridge had recorded as in LaunchDarkly: drift,
    /// LaunchDarkly changed behind its back.
    pub drift_missing: u64,
    /// Extra members the bridge had recorded as out of LaunchDarkly (or
    /// never wrote): drift.
    pub drift_extra: u64,
}

impl std::ops::AddAssign for ReconcileCounts {
    fn add_assign(&mut self, o: Self) {
        self.checked += o.checked;
        self.missing += o.missing;
        self.extra += o.extra;
        self.repaired += o.repaired;
        self.drift_missing += o.drift_missing;
        self.drift_extra += o.drift_extra;
    }
}

/// A link's last completed reconcile, as the links API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReconcileReport {
    /// When it finished (ms).
    pub last_reconciled_ms: i64,
    /// Members compared.
    pub checked: u64,
    /// Desired in, absent from LaunchDarkly.
    pub missing: u64,
    /// In LaunchDarkly but desired out (or never written).
    pub extra: u64,
    /// Marked for a rewrite.
    pub repaired: u64,
}

impl ReconcileReport {
    pub(super) fn decode(h: &HashMap<String, String>) -> Option<ReconcileReport> {
        let n = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Some(ReconcileReport {
            last_reconciled_ms: h.get("last_reconciled_ms")?.parse().ok()?,
            checked: n("checked"),
            missing: n("missing"),
            extra: n("extra"),
            repaired: n("repaired"),
        })
    }
}

/// Which half of the comparison a chunk works on (see `reconcile.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcilePhase {
    /// The bridge's members, by HSCAN cursor.
    Tracked,
    /// The keys the export listed that the first phase did not meet.
    Untracked,
}

impl Store {
    /// Adds one chunk of exported keys to the run's staging set and
    /// (re)arms its TTL, in one round trip.
    pub async fn stage_export_keys(
        &self,
        link: &LinkId,
        run: &str,
        keys: &[String],
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let partition = self.keys.partition(&link.source, &link.cohort);
        let stage = self.keys.reconcile_stage(partition, link, run);
        let _: () = redis::pipe()
            .cmd("SADD")
            .arg(&stage)
            .arg(keys)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&stage)
            .arg(ttl_ms.max(1))
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Drops a run's staging set (after a failure, or at the end).
    pub async fn drop_stage(&self, link: &LinkId, run: &str) -> Result<(), StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let _: () = redis::cmd("DEL")
            .arg(self.keys.reconcile_stage(partition, link, run))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Compares one chunk. `None` if the cohort was never linked to the
    /// destination; else the next cursor (`"0"`: this phase is done) and
    /// the chunk's counts.
    pub async fn reconcile_chunk(
        &self,
        link: &LinkId,
        run: &str,
        phase: ReconcilePhase,
        cursor: &str,
        chunk: usize,
        now_ms: i64,
    ) -> Result<Option<(String, ReconcileCounts)>, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let mode = match phase {
            ReconcilePhase::Tracked => "scan",
            ReconcilePhase::Untracked => "rest",
        };
        type Reply = (String, u64, u64, u64, u64, u64, u64);
        let (next, checked, missing, extra, repaired, drift_missing, drift_extra): Reply =
            scripts::RECONCILE
                .key(self.keys.want(partition, &link.source, &link.cohort))
                .key(self.keys.cohort_meta(partition, &link.source, &link.cohort))
                .key(self.keys.dirty(partition, link))
                .key(self.keys.due(partition))
                .key(self.keys.reconcile_stage(partition, link, run))
                .arg(&link.destination)
                .arg(link.to_string())
                .arg(now_ms)
                .arg(mode)
                .arg(cursor)
                .arg(chunk.max(1))
                .invoke_async(&mut self.conn())
                .await?;
        if next == "-1" {
            return Ok(None);
        }
        let counts = ReconcileCounts {
            checked,
            missing,
            extra,
            repaired,
            drift_missing,
            drift_extra,
        };
        Ok(Some((next, counts)))
    }

    /// Records a finished run as the link's report.
    pub async fn record_reconcile(
        &self,
        link: &LinkId,
        at_ms: i64,
        c: &ReconcileCounts,
    ) -> Result<(), StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let _: () = redis::cmd("HSET")
            .arg(self.keys.reconcile_report(partition, link))
            .arg("last_reconciled_ms")
            .arg(at_ms)
            .arg("checked")
            .arg(c.checked)
            .arg("missing")
            .arg(c.missing)
            .arg("extra")
            .arg(c.extra)
            .arg("repaired")
            .arg(c.repaired)
            .arg("drift_missing")
            .arg(c.drift_missing)
            .arg("drift_extra")
            .arg(c.drift_extra)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Records why a run failed (the last report stands).
    pub async fn record_reconcile_error(
        &self,
        link: &LinkId,
        at_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let _: () = redis::cmd("HSET")
            .arg(self.keys.reconcile_report(partition, link))
            .arg("last_error")
            .arg(error)
            .arg("last_error_ms")
            .arg(at_ms)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// When the link's last reconcile run ended, finished or failed.
    pub async fn reconcile_last_run_ms(&self, link: &LinkId) -> Result<Option<i64>, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let (ok, failed): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.keys.reconcile_report(partition, link))
            .arg("last_reconciled_ms")
            .arg("last_error_ms")
            .query_async(&mut self.conn())
            .await?;
        Ok(ok.max(failed))
    }

    /// The link's last report, if it was ever reconciled.
    pub async fn reconcile_report(
        &self,
        link: &LinkId,
    ) -> Result<Option<ReconcileReport>, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.reconcile_report(partition, link))
            .query_async(&mut self.conn())
            .await?;
        Ok(ReconcileReport::decode(&h))
    }
}
