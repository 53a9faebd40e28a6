#![warn(missing_docs)]
//! The flusher: moves dirty members from Redis to LaunchDarkly.
//!
//! Each replica holds leases on a fair share of the partitions
//! ([`leases`]), walks their due sets oldest first, and flushes up to
//! `flush.concurrency` links at once ([`link`]; each LaunchDarkly request
//! through [`request`]: the rate's token, the lease check, metrics, audit,
//! retry and block), each one batch at a time. A
//! large first sync therefore cannot starve a small real-time cohort: once its
//! batch is sent, the big link goes back into the due set behind links that
//! were due earlier.

mod backoff;
mod leases;
pub mod link;
pub mod observe;
mod request;
mod segment;
mod shadow;

pub use leases::Leases;
pub use observe::{Observations, RedisHealth, Sample};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::launchdarkly::{LdClient, Throttle};
use crate::reconcile::Reconciler;
use crate::store::{LinkId, Partition, Store};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// What every link flush needs.
pub struct FlushContext {
    /// The running configuration.
    pub settings: Arc<Settings>,
    /// Redis.
    pub store: Store,
    /// LaunchDarkly's REST API.
    pub ld: LdClient,
    /// The deployment's rate and 429 pause, shared by every flush.
    pub throttle: Arc<Throttle>,
    /// The partitions this replica may write.
    pub leases: Leases,
    /// Gauges and the 15-minute series, shared with the operator API.
    pub observations: Arc<Observations>,
    attempts: Mutex<HashMap<LinkId, u32>>,
    /// Set when shutdown begins: a flush stops before its next request.
    stopping: AtomicBool,
}

impl FlushContext {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn bump_attempts(&self, link: &LinkId) -> u32 {
        let mut a = self.attempts.lock().expect("attempts lock");
        let n = a.entry(link.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n - 1
    }

    /// Forgets a link's failures; returns how many there were.
    fn reset_attempts(&self, link: &LinkId) -> u32 {
        self.attempts
            .lock()
            .expect("attempts lock")
            .remove(link)
            .unwrap_or(0)
    }
}

/// The background worker of one replica.
pub struct Flusher {
    ctx: Arc<FlushContext>,
    wake: Arc<Notify>,
}

impl Flusher {
    /// A flusher with its own LaunchDarkly client, throttle and lease token;
    /// `wake` is notified when a push makes a link due at once.
    pub fn new(settings: Arc<Settings>, store: Store, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let ld = LdClient::new(&settings.launchdarkly, &settings.ld_token)?;
        let throttle = Arc::new(
            Throttle::new(settings.launchdarkly.requests_per_second)
                .with_max_pause(Duration::from_secs(settings.launchdarkly.max_pause_seconds)),
        );
        let token = format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple());
        let observations = Arc::new(Observations::new(
            token.clone(),
            settings.launchdarkly.requests_per_second,
            settings.redis.partitions,
        ));
        let leases = Leases::new(
            token,
            settings.lease_ttl,
            settings.request_timeout(),
            settings.redis.partitions,
        )
        .with_join_wait(2 * lease_period_of(settings.lease_ttl));
        Ok(Flusher {
            ctx: Arc::new(FlushContext {
                settings,
                store,
                ld,
                throttle,
                leases,
                observations,
                attempts: Mutex::new(HashMap::new()),
                stopping: AtomicBool::new(false),
            }),
            wake,
        })
    }

    /// A reconciler sharing this flusher's LaunchDarkly client and throttle,
    /// so an export's calls count against the same rate as the writes.
    pub fn reconciler(&self) -> Reconciler {
        reconciler(&self.ctx)
    }

    /// What this flusher observes (for the operator API's overview).
    pub fn observations(&self) -> Arc<Observations> {
        self.ctx.observations.clone()
    }

    /// Runs until `shutdown` turns true, then lets flushes in flight finish
    /// (up to the grace period) and releases the leases.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let upkeep = tokio::spawn(keep_leases(ctx.clone(), shutdown.clone()));
        let maint = tokio::spawn(housekeeping(ctx.clone(), shutdown.clone()));
        let reconciles = tokio::spawn(reconcile_due(ctx.clone(), shutdown.clone()));
        let sampling = tokio::spawn(sample_members(ctx.clone(), shutdown.clone()));
        let check_every = lease_period(&ctx).max(Duration::from_secs(1));
        let observer = tokio::spawn(observe::observe(ctx.clone(), check_every, shutdown.clone()));
        let concurrency = ctx.settings.flush_concurrency();
        let poll = Duration::from_millis(ctx.settings.flush.poll_interval_ms);
        let margin = ctx.settings.request_timeout() + Duration::from_millis(500);
        let mut inflight: HashMap<LinkId, Partition> = HashMap::new();
        let mut tasks: JoinSet<(LinkId, anyhow::Result<link::Flushed>)> = JoinSet::new();
        // Which link each task flushes, so a panicking task frees only its own.
        let mut ids: HashMap<tokio::task::Id, LinkId> = HashMap::new();
        let mut redis_trouble = TroubleLog::default();

        while !*shutdown.borrow() {
            let usable = ctx.leases.usable(margin);
            let now = now_ms();
            let mut wait = poll;
            // Under load the due sets are read once per few freed slots, not
            // once per finished flush: a pass reads every partition's due
            // set, and one pass per flush caps the flush rate at the pass
            // rate. The fourth part of the slots, at least one.
            let free = concurrency.saturating_sub(inflight.len());
            if free >= (concurrency / 4).max(1) && !usable.is_empty() {
                // Links in flight are not waited for: one whose due time
                // passed while it waits for a token (or whose push came
                // during its request) would make this loop spin.
                let busy: Vec<LinkId> = inflight.keys().cloned().collect();
                let period_ms = 1000.0 / ctx.throttle.replica_rate().max(1e-6);
                let queued = ctx.throttle.waiting();
                let horizon = now + lead_ms(period_ms, queued, free);
                match ctx.store.due_work(&usable, horizon, &busy, free).await {
                    Ok(work) => {
                        redis_trouble.clear("Reading due links works again.");
                        let start = must_start(&work.due, now, period_ms, queued);
                        if start < work.due.len() {
                            // Links due soon wait their turn: look again in a period.
                            wait = wait.min(Duration::from_millis(period_ms.ceil() as u64));
                        }
                        for (partition, l, at) in work.due.into_iter().take(start) {
                            if inflight.len() >= concurrency {
                                break;
                            }
                            inflight.insert(l.clone(), partition);
                            let c = ctx.clone();
                            let task = l.clone();
                            let handle = tasks.spawn(async move {
                                let r = link::flush(c.clone(), partition, l.clone(), at).await;
                                if r.is_err() {
                                    retry_soon(&c, partition, &l).await;
                                }
                                (l, r)
                            });
                            ids.insert(handle.id(), task);
                        }
                        if let Some(next) = work.next_ms {
                            wait = wait.min(Duration::from_millis((next - now_ms()).max(0) as u64));
                        }
                    }
                    Err(e) => redis_trouble
                        .warn(&e, "Cannot read due links; retrying until Redis answers."),
                }
            }
            tokio::select! {
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    finish(&mut inflight, &mut ids, done);
                    // Every other flush already done is counted too.
                    while let Some(done) = tasks.try_join_next_with_id() {
                        finish(&mut inflight, &mut ids, done);
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }

        ctx.stopping.store(true, Ordering::SeqCst);
        let grace = Duration::from_secs(ctx.settings.server.shutdown_grace_seconds);
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = tasks.join_next_with_id().await {
                finish(&mut inflight, &mut ids, done);
            }
        })
        .await;
        // LaunchDarkly may still apply an abandoned request (its body was
        // sent). Its partition's lease is kept until it expires, so the next
        // holder cannot write those members before the old request has landed
        // or timed out (the lease outlives any request sent under it).
        let mut keep = BTreeSet::new();
        if drained.is_err() {
            keep = inflight.values().copied().collect();
            tracing::warn!(partitions = ?keep, "Flushes still in flight at the end of the grace period were abandoned; their members stay unknown and are re-sent once these partitions' leases expire.");
            tasks.abort_all();
        }
        let _ = maint.await;
        reconciles.abort();
        sampling.abort();
        let _ = upkeep.await;
        let _ = observer.await;
        ctx.leases.release_all(&ctx.store, &keep).await;
        Ok(())
    }
}

/// How far ahead of now the loop looks for links due soon: the time the
/// rate needs to serve the flushes already queued for a token and as many
/// more as there are free slots.
fn lead_ms(period_ms: f64, queued: usize, free: usize) -> i64 {
    ((queued + free) as f64 * period_ms) as i64
}

/// How many of `due` (oldest first) to start now: every link already due,
/// and, when links due soon are more than the rate can serve by their due
/// times, those up to the last one that would otherwise be late.
///
/// Each flush takes its token before it claims its batch, and tokens come
/// one per `period_ms`, first come first served: the `k`-th link started now
/// gets its token about `(queued + k) * period_ms` from now. When that is
/// past the link's due time, it and every link before it start now, so the
/// queue drains into their due times instead of behind them. (Ten cohorts
/// whose first changes arrive together at 20 requests/s otherwise wait up to
/// half a second for tokens after their `max_delay_ms`, every time their
/// flushes stay in step.) A lone link, or links the rate can serve in time,
/// start at their due time, as before: nothing is flushed early for no
/// reason, so coalescing is unchanged.
fn must_start(due: &[(Partition, LinkId, i64)], now: i64, period_ms: f64, queued: usize) -> usize {
    let mut start = 0;
    for (k, (_, _, at)) in due.iter().enumerate() {
        let token_at = now + ((queued + k) as f64 * period_ms) as i64;
        if *at <= token_at {
            start = k + 1;
        }
    }
    start
}

/// After a flush failed on a Redis error, makes the link due again soon
/// instead of at its claim's hold time (a whole lease TTL away, meant for a
/// flusher that crashed). Waits out the request timeout first: the failure
/// may have followed a request whose outcome is unknown. If Redis is still
/// down this fails too, and the claim's hold stands.
async fn retry_soon(ctx: &FlushContext, partition: Partition, link: &LinkId) {
    let delay = ctx.settings.request_timeout()
        + Duration::from_millis(ctx.settings.launchdarkly.backoff_max_ms);
    let at = now_ms() + delay.as_millis() as i64;
    let _ = ctx.store.reschedule(partition, link, at).await;
}

type Done =
    Result<(tokio::task::Id, (LinkId, anyhow::Result<link::Flushed>)), tokio::task::JoinError>;

fn finish(
    inflight: &mut HashMap<LinkId, Partition>,
    ids: &mut HashMap<tokio::task::Id, LinkId>,
    done: Done,
) {
    match done {
        Ok((id, (l, r))) => {
            if let Err(e) = r {
                tracing::warn!(link = %l, error = %e, "Flush failed; the link stays due.");
            }
            ids.remove(&id);
            inflight.remove(&l);
        }
        Err(e) => {
            // Only this task's link is freed: the others are still being
            // flushed, and a second flush of one link must never start.
            let link = ids.remove(&e.id());
            if let Some(l) = &link {
                inflight.remove(l);
            }
            tracing::error!(link = ?link.map(|l| l.to_string()), error = %e, "A flush task panicked.");
        }
    }
}

/// How often leases are renewed.
fn lease_period(ctx: &FlushContext) -> Duration {
    lease_period_of(ctx.settings.lease_ttl)
}

fn lease_period_of(lease_ttl: Duration) -> Duration {
    (lease_ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// Leases, heartbeat and the rate split, on their own task: nothing else
/// runs here, so renewal never waits behind housekeeping.
async fn keep_leases(ctx: Arc<FlushContext>, mut shutdown: watch::Receiver<bool>) {
    let mut trouble = TroubleLog::default();
    let every = lease_period(&ctx);
    loop {
        let split = |live| ctx.throttle.set_replicas(live);
        match ctx.leases.maintain(&ctx.store, now_ms(), split).await {
            Ok(live) => {
                trouble.clear("Lease maintenance works again.");
                ctx.observations.set_replicas(live);
                tracing::debug!(held = ctx.leases.count(), "Leases renewed.");
            }
            Err(e) => trouble.warn(&e, "Lease maintenance failed; retrying."),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Snapshot resumption, the tombstone sweeper and periodic resyncs: each
/// works in short Redis calls and yields between them (the gauges are
/// [`observe`]'s).
async fn housekeeping(ctx: Arc<FlushContext>, mut shutdown: watch::Receiver<bool>) {
    let every = lease_period(&ctx);
    let sweep_every = Duration::from_secs(ctx.settings.flush.sweep_interval_seconds.max(1));
    let mut last_sweep = tokio::time::Instant::now();
    let mut unparked = BTreeSet::new();
    loop {
        let held = ctx.leases.usable(Duration::ZERO);
        unpark_shadowed(&ctx, &held, &mut unparked).await;
        resume_snapshots(&ctx, &held).await;
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = tokio::time::Instant::now();
            sweep(&ctx, &held).await;
            if *shutdown.borrow() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Once per partition this replica holds: links that shadow mode parked and
/// whose destination is live now are made due at once (`shadow::unpark`), so
/// the backlog of the shadow period goes out on the first flush.
async fn unpark_shadowed(ctx: &FlushContext, held: &[Partition], done: &mut BTreeSet<Partition>) {
    for &partition in held {
        if done.contains(&partition) {
            continue;
        }
        match shadow::unpark(ctx, partition).await {
            Ok(n) => {
                done.insert(partition);
                if n > 0 {
                    tracing::info!(
                        partition,
                        links = n,
                        "Links parked by shadow mode are live now; their backlog is due at once."
                    );
                }
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "Could not unpark shadow links; retrying.");
            }
        }
    }
}

/// Removes tombstones older than the retention window, a chunk at a time.
async fn sweep(ctx: &FlushContext, partitions: &[Partition]) {
    let cutoff = now_ms() - (ctx.settings.redis.tombstone_retention_seconds as i64) * 1000;
    let mut removed = 0;
    let mut chunks = 0u64;
    tracing::info!(partitions = partitions.len(), "Sweep started.");
    for &partition in partitions {
        let Ok(cohorts) = ctx.store.cohorts(partition).await else {
            continue;
        };
        for c in cohorts {
            let mut cursor = "0".to_string();
            while let Ok(Some((next, n))) = ctx
                .store
                .sweep_chunk(partition, ctx.leases.token(), &c, &cursor, cutoff)
                .await
            {
                removed += n;
                chunks += 1;
                if next == "0" || ctx.stopping() {
                    break;
                }
                cursor = next;
                tokio::task::yield_now().await;
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, "Swept tombstones past retention.");
    }
    tracing::info!(chunks, "Sweep finished.");
    let interval = ctx.settings.flush.resync_interval_seconds as i64 * 1000;
    if interval > 0 {
        resync_due(ctx, partitions, interval).await;
    }
}

/// Periodic drift repair: rewrites each link whose last full resync (or, if
/// it never had one, its segment's creation) is older than `interval_ms`.
async fn resync_due(ctx: &FlushContext, partitions: &[Partition], interval_ms: i64) {
    let now = now_ms();
    for &partition in partitions {
        let Ok(links) = ctx.store.links_in(partition).await else {
            continue;
        };
        for link in links {
            let Ok(Some(status)) = ctx.store.link_status(&link).await else {
                continue;
            };
            let since = |k: &str| status.meta.get(k).and_then(|v| v.parse::<i64>().ok());
            let Some(last) = since("last_resync_ms").or_else(|| since("created_ms")) else {
                continue; // never written yet: nothing can have drifted
            };
            if now - last < interval_ms {
                continue;
            }
            match ctx.store.resync(&link, now, 1000).await {
                Ok(n) => tracing::info!(link = %link, members = ?n, "Periodic resync."),
                Err(e) => tracing::warn!(link = %link, error = %e, "Periodic resync failed."),
            }
        }
    }
}

fn reconciler(ctx: &FlushContext) -> Reconciler {
    Reconciler::new(
        ctx.settings.clone(),
        ctx.store.clone(),
        ctx.ld.clone(),
        ctx.throttle.clone(),
    )
}

/// `flush.reconcile_interval_seconds`: reconciles, one link at a time, each
/// link of this replica's partitions whose last run (finished or failed)
/// is older than the interval, or that never had one. Its own task: an
/// export's polling and download never hold up a flush, and its
/// LaunchDarkly calls share the flusher's throttle.
async fn reconcile_due(ctx: Arc<FlushContext>, mut shutdown: watch::Receiver<bool>) {
    let interval = ctx.settings.flush.reconcile_interval_seconds;
    if interval == 0 {
        return;
    }
    let interval_ms = (interval as i64).saturating_mul(1000);
    let every = Duration::from_millis((interval_ms / 4).clamp(200, 30_000) as u64);
    let reconciler = reconciler(&ctx);
    while !*shutdown.borrow() {
        for partition in ctx.leases.usable(Duration::ZERO) {
            let Ok(links) = ctx.store.links_in(partition).await else {
                continue;
            };
            for link in links {
                if *shutdown.borrow() || ctx.stopping() {
                    return;
                }
                // A shadow destination is never read (an export is a LaunchDarkly call).
                if ctx.settings.mode_of(&link.destination) == crate::config::Mode::Shadow {
                    continue;
                }
                let last = ctx.store.reconcile_last_run_ms(&link).await;
                let due = match last {
                    Ok(Some(at)) => now_ms() - at >= interval_ms,
                    Ok(None) => true,
                    Err(_) => false,
                };
                if due {
                    // Logged and counted by `run`; the next tick goes on.
                    let _ = reconciler.run(&link).await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// `flush.verify_share`: sampled verification ([`crate::reconcile::sample`])
/// of the links of this replica's partitions, one random member per link in
/// turn, each read within the sampler's share of the rate and only while no
/// write waits for a token. Its own task, like reconciles: a slow read never
/// holds up a flush. Replicas sample only the partitions they hold, so no
/// link is read by two replicas and the shares add up to the configured one.
async fn sample_members(ctx: Arc<FlushContext>, mut shutdown: watch::Receiver<bool>) {
    use crate::reconcile::sample::Sampler;
    let Some(sampler) = Sampler::new(reconciler(&ctx)) else {
        return;
    };
    let poll = Duration::from_millis(ctx.settings.flush.poll_interval_ms);
    // With nothing to read, look again this often.
    let rest = lease_period(&ctx).max(Duration::from_secs(1));
    let mut trouble = TroubleLog::default();
    while !*shutdown.borrow() {
        let mut links = Vec::new();
        for partition in ctx.leases.usable(Duration::ZERO) {
            if let Ok(l) = ctx.store.links_in(partition).await {
                links.extend(l.into_iter().map(|l| (partition, l)));
            }
        }
        let mut read = false;
        for (partition, link) in links {
            tokio::select! {
                _ = sampler.wait_turn(poll) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() || ctx.stopping() {
                return;
            }
            if !ctx.leases.valid_for(partition, Duration::ZERO) {
                continue; // given up meanwhile: its new holder samples it
            }
            match sampler.check(&link).await {
                Ok(Some(_)) => {
                    read = true;
                    ctx.observations.request_sent();
                    trouble.clear("Sampled verification works again.");
                }
                Ok(None) => {}
                Err(e) => trouble.warn(&e, "Sampled verification cannot reach Redis; retrying."),
            }
        }
        if !read {
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Chunks of one snapshot finalization worked per maintenance tick, so lease
/// renewal is never held up for long by a huge cohort.
const RESUME_CHUNKS_PER_TICK: usize = 200;

/// A finalization nobody has worked on for this long is taken over: its
/// receiver died (the receiver works a chunk every few milliseconds).
const RESUME_ORPHANED_AFTER: Duration = Duration::from_secs(10);

/// Resumes snapshot finalizations that no receiver is driving (the bridge
/// that applied the last page died midway): see `store::snapshot`.
async fn resume_snapshots(ctx: &FlushContext, partitions: &[Partition]) {
    use crate::ingest;
    let Ok(pending) = ctx.store.pending_snapshots(partitions).await else {
        return;
    };
    for (source_id, cohort) in pending {
        let Some(source) = ctx.settings.sources.get(&source_id) else {
            continue;
        };
        let params = ingest::apply_params(&ctx.settings, now_ms());
        let resume = ingest::Finalize::Resume {
            chunks: RESUME_CHUNKS_PER_TICK,
            orphaned_after: RESUME_ORPHANED_AFTER,
        };
        let (id, destinations) = (&source.id, &source.destinations);
        match ingest::finalize_snapshot(&ctx.store, id, destinations, &cohort, params, resume).await
        {
            Ok(fin) if fin.finished && !fin.abandoned => {
                tracing::info!(source = %id, %cohort, removed = fin.outcome.accepted, "Resumed snapshot finalization finished.");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(source = %id, %cohort, error = %e, "Resuming a snapshot finalization failed; retrying.");
            }
        }
    }
}

/// Logs a repeated failure once per outage, and its end.
#[derive(Default)]
struct TroubleLog(bool);

impl TroubleLog {
    fn warn(&mut self, error: &dyn std::fmt::Display, message: &'static str) {
        if !std::mem::replace(&mut self.0, true) {
            tracing::warn!(%error, "{message}");
        }
    }

    fn clear(&mut self, message: &'static str) {
        if std::mem::replace(&mut self.0, false) {
            tracing::info!("{message}");
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "bridge".into())
}
