//! What sampled verification needs from Redis (`reconcile::sample`): a
//! random settled member of a link (`scripts/sample_pick.lua`), the
//! compare-and-set judgement of LaunchDarkly's answer for it
//! (`scripts/sample_judge.lua`), and the per-link report.

use super::{scripts, LinkId, Store, StoreError};
use std::collections::HashMap;

/// Members drawn per pick: the first settled, clean one is taken.
const DRAW: usize = 8;

/// A member chosen for a read-back, with what the bridge recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplePick {
    /// The member's key (the LaunchDarkly context key).
    pub member: String,
    /// Its stored value when picked (the compare-and-set's expectation).
    pub value: String,
    /// What the bridge recorded that LaunchDarkly holds: in or out.
    pub recorded_in: bool,
}

/// What judging a read-back found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleVerdict {
    /// LaunchDarkly holds what the bridge recorded.
    Match,
    /// Recorded in, LaunchDarkly lacks it: marked for a rewrite.
    Missing,
    /// Recorded out, LaunchDarkly has it: marked for a rewrite.
    Extra,
    /// The member changed between the read and the answer: not judged.
    Changed,
}

/// A link's sampled verification so far, as the links API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SampleReport {
    /// Read-backs judged against what the bridge recorded.
    pub checked: u64,
    /// Of those, where LaunchDarkly held something else (drift).
    pub mismatched: u64,
    /// Of the mismatches, recorded in but absent from LaunchDarkly.
    pub missing: u64,
    /// Of the mismatches, recorded out but present in LaunchDarkly.
    pub extra: u64,
    /// Mismatches marked for a rewrite by the normal flusher.
    pub repaired: u64,
    /// Members that changed between the read and LaunchDarkly's answer:
    /// not judged.
    pub changed: u64,
    /// Read-backs LaunchDarkly did not answer (404, 5xx, 429, timeout):
    /// never judged.
    pub failed: u64,
    /// When the last read-back ended (ms).
    pub last_ms: i64,
}

impl SampleReport {
    pub(super) fn decode(h: &HashMap<String, String>) -> Option<SampleReport> {
        let n = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Some(SampleReport {
            last_ms: h.get("last_ms")?.parse().ok()?,
            checked: n("checked"),
            mismatched: n("mismatched"),
            missing: n("missing"),
            extra: n("extra"),
            repaired: n("repaired"),
            changed: n("changed"),
            failed: n("failed"),
        })
    }
}

impl Store {
    /// A random member of the link whose LaunchDarkly state is settled (in
    /// or out, not dirty); `None` if none was drawn or the cohort was never
    /// linked to the destination.
    pub async fn sample_pick(&self, link: &LinkId) -> Result<Option<SamplePick>, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let got: Vec<String> = scripts::SAMPLE_PICK
            .key(self.keys.want(partition, &link.source, &link.cohort))
            .key(self.keys.cohort_meta(partition, &link.source, &link.cohort))
            .key(self.keys.dirty(partition, link))
            .arg(&link.destination)
            .arg(DRAW)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match <[String; 3]>::try_from(got) {
            Ok([member, value, state]) => Some(SamplePick {
                member,
                value,
                recorded_in: state == "i",
            }),
            Err(_) => None,
        })
    }

    /// Judges LaunchDarkly's answer (`included`) for a pick, repairing a
    /// mismatch only if the member's stored value is still the picked one.
    pub async fn sample_judge(
        &self,
        link: &LinkId,
        pick: &SamplePick,
        included: bool,
        now_ms: i64,
    ) -> Result<SampleVerdict, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let verdict: String = scripts::SAMPLE_JUDGE
            .key(self.keys.want(partition, &link.source, &link.cohort))
            .key(self.keys.cohort_meta(partition, &link.source, &link.cohort))
            .key(self.keys.dirty(partition, link))
            .key(self.keys.due(partition))
            .key(self.keys.sample_report(partition, link))
            .arg(&link.destination)
            .arg(link.to_string())
            .arg(now_ms)
            .arg(&pick.member)
            .arg(&pick.value)
            .arg(if included { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match verdict.as_str() {
            "match" => SampleVerdict::Match,
            "missing" => SampleVerdict::Missing,
            "extra" => SampleVerdict::Extra,
            _ => SampleVerdict::Changed,
        })
    }

    /// Counts a read-back LaunchDarkly did not answer usefully.
    pub async fn sample_failed(&self, link: &LinkId, now_ms: i64) -> Result<(), StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let report = self.keys.sample_report(partition, link);
        let _: () = redis::pipe()
            .cmd("HINCRBY")
            .arg(&report)
            .arg("failed")
            .arg(1)
            .ignore()
            .cmd("HSET")
            .arg(&report)
            .arg("last_ms")
            .arg(now_ms)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
