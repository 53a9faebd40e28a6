//! The validated settings the running bridge uses ([`Settings`]) and the
//! types they are made of: destinations, sources and their resolved
//! authentication. Only [`Settings::from_raw`] (`validate`) builds them.

use super::partner::PartnerSettings;
use super::raw::{FlushConfig, IngestConfig, LaunchDarklyConfig, Mode, RedisConfig, ServerConfig};
use super::{Secret, SourceKind};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A source's resolved authentication: the secrets themselves, never their names.
#[derive(Debug, Clone)]
pub enum ResolvedAuth {
    /// A shared secret in a fixed header, compared in constant time.
    Header {
        header: String,
        secrets: Vec<Secret>,
    },
    /// HTTP Basic; any listed password is accepted with the username.
    Basic {
        username: Secret,
        passwords: Vec<Secret>,
    },
    /// Heap's `Heap-Hash: ts:<ts>,hmac:<base64>` over `ts ++ body`.
    HeapHash {
        secrets: Vec<Secret>,
        tolerance: Duration,
    },
    /// Segment's `X-Signature: hex(HMAC-SHA1(secret, body))`.
    SegmentSignature {
        secrets: Vec<Secret>,
        batches: SegmentBatches,
    },
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks {
        secrets: Vec<Secret>,
        tolerance: Duration,
    },
    /// No authentication (only with `allow_unauthenticated = true`).
    None,
}

/// Which Segment batches a `segment-signature` source applies (`auth.batches`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SegmentBatches {
    /// `"signed"` (default): only what the signature covers; an array signed
    /// over element 0 alone is refused (401).
    #[default]
    Signed,
    /// `"first-event"`: an array signed over element 0 is applied once, the
    /// first time its element 0 is seen; afterwards it is a duplicate.
    FirstEvent,
}

/// A validated destination.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub project: String,
    pub environment: String,
    pub context_kind: String,
    pub segment_key: String,
    pub segment_name: String,
    pub tags: Vec<String>,
    /// `adopt_existing_segments`: adopt an unmarked segment on a 409.
    pub adopt_existing_segments: bool,
    /// `mode`, or `launchdarkly.mode` when the destination sets none.
    pub mode: Mode,
}

/// A validated source.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub kind: SourceKind,
    pub destinations: Vec<String>,
    pub key_field: String,
    pub auth: ResolvedAuth,
    /// The distinct context kinds of the source's destinations.
    pub context_kinds: Vec<String>,
}

/// Validated settings: what the running bridge uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    pub listen: SocketAddr,
    /// `server.metrics_listen`: `/metrics` is served only there when set.
    pub metrics_listen: Option<SocketAddr>,
    pub redis: RedisConfig,
    pub launchdarkly: LaunchDarklyConfig,
    pub ld_token: Secret,
    pub flush: FlushConfig,
    /// `[ingest]`: group commit.
    pub ingest: IngestConfig,
    /// `flush.lease_ttl_ms` with its default applied.
    pub lease_ttl: Duration,
    pub destinations: BTreeMap<String, Arc<Destination>>,
    pub sources: BTreeMap<String, Arc<Source>>,
    pub operator_token: Option<Secret>,
    /// `[partner]`: manifests, environments, tokens and the derived sources.
    pub partner: PartnerSettings,
    /// Problems that do not stop the bridge (a secret file readable by
    /// others), each naming its key; logged at load, printed by check-config.
    pub warnings: Vec<(String, String)>,
}

impl Settings {
    /// A configured source, or the source derived from a partner integration
    /// (`partner-<integrationKey>`): what the flusher needs for a link.
    pub fn source(&self, id: &str) -> Option<&Arc<Source>> {
        self.sources
            .get(id)
            .or_else(|| self.partner.sources.get(id))
    }

    /// Whether links into `destination` are written to LaunchDarkly: its
    /// own `mode`, else `launchdarkly.mode`. Everything that would call
    /// LaunchDarkly for a link (flush, reconcile, verification) asks this.
    pub fn mode_of(&self, destination: &str) -> Mode {
        self.destinations
            .get(destination)
            .map_or(self.launchdarkly.mode, |d| d.mode)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.launchdarkly.request_timeout_ms)
    }

    /// Links one replica flushes at once: `flush.concurrency`, or by default
    /// enough slots to use the configured rate when a flush (its token, the
    /// claim, LaunchDarkly's answer and the acknowledgement) takes a quarter
    /// of a second: `requests_per_second / 4`, at least 4 and at most 128.
    /// A slot waiting for its token costs nothing but a task, so spare slots
    /// are harmless; too few cap the flush rate below the rate limit (four
    /// slots at LaunchDarkly's usual 100-300 ms cannot use 50 requests/s,
    /// and 64 at 300 ms cannot use more than about 210/s; at 2,000/s over a
    /// thousand links the flushes that fall due together also start late
    /// while every slot waits for its token: see the README's figure 4d).
    pub fn flush_concurrency(&self) -> usize {
        self.flush.concurrency.unwrap_or_else(|| {
            let rps = self.launchdarkly.requests_per_second;
            ((rps / 4.0).ceil() as usize).clamp(4, 128)
        })
    }
}
