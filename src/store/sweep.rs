//! The tombstone sweeper's store calls (`sweep.lua`): a partition's cohorts
//! and one chunk of one cohort's sweep.

use super::{scripts, Partition, Store, StoreError};

impl Store {
    /// Sweeps one chunk of a cohort's tombstones (see `sweep.lua`).
    pub async fn sweep_chunk(
        &self,
        partition: Partition,
        token: &str,
        source_cohort: &str,
        cursor: &str,
        cutoff_ms: i64,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let (source, cohort) = source_cohort.split_once(':').unwrap_or((source_cohort, ""));
        let (next, removed): (String, u64) = scripts::SWEEP
            .key(self.keys.want(partition, source, cohort))
            .key(self.keys.lease(partition))
            .arg(cursor)
            .arg(500)
            .arg(cutoff_ms)
            .arg(token)
            .invoke_async(&mut self.conn())
            .await?;
        Ok((next != "-1").then_some((next, removed)))
    }

    /// Every `<source>:<cohort>` of a partition.
    pub async fn cohorts(&self, partition: Partition) -> Result<Vec<String>, StoreError> {
        Ok(redis::cmd("SMEMBERS")
            .arg(self.keys.cohorts(partition))
            .query_async(&mut self.conn())
            .await?)
    }
}
