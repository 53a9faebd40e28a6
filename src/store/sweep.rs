//! The tombstone sweeper's store calls (`sweep.lua`): a partition's cohorts
//! and one chunk of one cohort's sweep.

use super::{scripts, Store, StoreError};

impl Store {

    /// Sweeps one chunk of a cohort's tombstones (see `sweep.lua`).
    pub async fn sweep_chunk(
        &self,
        p: u16,
        token: &str,
        source_cohort: &str,
        cursor: &str,
        cutoff_ms: i64,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let (source, cohort) = source_cohort.split_once(':').unwrap_or((source_cohort, ""));
        let (next, removed): (String, u64) = scripts::SWEEP
            .key(self.keys.want(p, source, cohort))
            .key(self.keys.lease(p))
            .arg(cursor)
            .arg(500)
            .arg(cutoff_ms)
            .arg(token)
            .invoke_async(&mut self.conn())
            .await?;
        Ok((next != "-1").then_some((next, removed)))
    }


    /// Every `<source>:<cohort>` of a partition.
    pub async fn cohorts(&self, p: u16) -> Result<Vec<String>, StoreError> {
        Ok(redis::cmd("SMEMBERS")
            .arg(self.keys.cohorts(p))
            .query_async(&mut self.conn())
            .await?)
    }
}
