//! A link's life after its cohort: retired (frozen, emptied, deleted) and
//! what its later pushes get. Everything lives in the link meta hash:
//!
//! - `lifecycle`: `""` (active), `frozen`, `emptying`, `emptied`, `deleting`
//!   or `deleted`;
//! - `on_push`: what a later push of the cohort gets: `accept` (applied and
//!   kept as a backlog; a frozen link's default), `refuse` (a 409; the
//!   default of the other modes) or `ignore` (answered, changes nothing);
//! - `retired_ms`, `ignored_pushes`.
//!
//! A push reads `lifecycle` and `on_push` inside `apply.lua` (the link meta
//! hashes share the cohort's hash tag), so a retired link costs a push no
//! extra round trip: the script applies nothing to a refusing or ignoring
//! link and tells the ingest path which links those were.

use super::{LinkId, Partition, Store, StoreError};

/// How an operator retires a link.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RetireMode {
    /// Removes every member from the segment (under the normal rate limit) and keeps it.
    Empty,
    /// Deletes the segment in LaunchDarkly; nothing more is written.
    Delete,
    /// Stops every write and keeps the data; `unfreeze` resumes.
    Freeze,
}

/// What a retired link's later pushes get.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnPush {
    /// Applied as usual (a frozen link keeps them as its backlog).
    Accept,
    /// Refused with a 409 naming the link and its state.
    Refuse,
    /// Answered without changing anything, and counted (`ignored_pushes`).
    Ignore,
}

impl OnPush {
    /// The meta hash's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnPush::Accept => "accept",
            OnPush::Refuse => "refuse",
            OnPush::Ignore => "ignore",
        }
    }
}

impl RetireMode {
    /// The state the link enters.
    pub fn state(self) -> &'static str {
        match self {
            RetireMode::Empty => "emptying",
            RetireMode::Delete => "deleting",
            RetireMode::Freeze => "frozen",
        }
    }

    /// `on_push` when the operator does not choose: a frozen link keeps
    /// accepting (its backlog is sent on unfreeze); the others refuse.
    pub fn default_on_push(self) -> OnPush {
        match self {
            RetireMode::Freeze => OnPush::Accept,
            RetireMode::Empty | RetireMode::Delete => OnPush::Refuse,
        }
    }
}

/// Why a lifecycle change was not made.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The link does not exist.
    #[error("no link {0}: the cohort was never pushed for that destination")]
    UnknownLink(String),
    /// `unfreeze` of a link that is not frozen.
    #[error("link {link} is {state}, not frozen: only a frozen link can be unfrozen")]
    NotFrozen {
        /// The link.
        link: String,
        /// Its state.
        state: String,
    },
    /// `retire` of a link already retired (a frozen one may be emptied or deleted).
    #[error("link {link} is already {state}")]
    AlreadyRetired {
        /// The link.
        link: String,
        /// Its state.
        state: String,
    },
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    fn link_partition(&self, link: &LinkId) -> Partition {
        self.keys.partition(&link.source, &link.cohort)
    }

    async fn lifecycle_of(&self, link: &LinkId) -> Result<Option<String>, LifecycleError> {
        if self.link_status(link).await?.is_none() {
            return Err(LifecycleError::UnknownLink(link.to_string()));
        }
        let state: Option<String> = redis::cmd("HGET")
            .arg(self.keys.link_meta(self.link_partition(link), link))
            .arg("lifecycle")
            .query_async(&mut self.conn())
            .await
            .map_err(StoreError::from)?;
        Ok(state.filter(|s| !s.is_empty()))
    }

    /// Retires the link: `mode` decides what the flusher does next (it is
    /// made due now); `--empty` marks every tracked member for sending as
    /// out. A frozen link may be retired again (emptied or deleted).
    pub async fn retire(
        &self,
        link: &LinkId,
        mode: RetireMode,
        on_push: OnPush,
        now_ms: i64,
    ) -> Result<&'static str, LifecycleError> {
        if let Some(state) = self.lifecycle_of(link).await? {
            if state != "frozen" || mode == RetireMode::Freeze {
                return Err(LifecycleError::AlreadyRetired {
                    link: link.to_string(),
                    state,
                });
            }
        }
        let partition = self.link_partition(link);
        let now = now_ms.to_string();
        self.set_link_meta(
            partition,
            link,
            &[
                ("lifecycle", mode.state()),
                ("on_push", on_push.as_str()),
                ("retired_ms", &now),
            ],
        )
        .await?;
        if mode == RetireMode::Empty {
            self.resync(link, now_ms, 1000).await?;
        }
        self.reschedule(partition, link, now_ms).await?;
        Ok(mode.state())
    }

    /// Resumes a frozen link: its backlog is due now.
    pub async fn unfreeze(&self, link: &LinkId, now_ms: i64) -> Result<(), LifecycleError> {
        let state = self.lifecycle_of(link).await?.unwrap_or_default();
        if state != "frozen" {
            return Err(LifecycleError::NotFrozen {
                link: link.to_string(),
                state: if state.is_empty() {
                    "active".into()
                } else {
                    state
                },
            });
        }
        let partition = self.link_partition(link);
        let _: i64 = redis::cmd("HDEL")
            .arg(self.keys.link_meta(partition, link))
            .arg("lifecycle")
            .arg("on_push")
            .arg("retired_ms")
            .query_async(&mut self.conn())
            .await
            .map_err(StoreError::from)?;
        self.reschedule(partition, link, now_ms).await?;
        Ok(())
    }

    /// The flusher moves a retired link to its next state (`emptied`, `deleted`).
    pub async fn set_lifecycle(
        &self,
        partition: Partition,
        link: &LinkId,
        state: &str,
    ) -> Result<(), StoreError> {
        self.set_link_meta(partition, link, &[("lifecycle", state)])
            .await
    }

    /// Takes a link that must not be written (frozen, emptied, deleted) off
    /// the due set; a push or `unfreeze` puts it back.
    pub async fn not_due(&self, partition: Partition, link: &LinkId) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("ZREM")
            .arg(self.keys.due(partition))
            .arg(link.to_string())
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// An emptying link's members sent as out: no longer dirty for it
    /// (their desired state, shared with the cohort's other links, is kept).
    pub async fn settle_emptied(
        &self,
        partition: Partition,
        link: &LinkId,
        keys: &[String],
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let _: i64 = redis::cmd("SREM")
            .arg(self.keys.dirty(partition, link))
            .arg(keys)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
