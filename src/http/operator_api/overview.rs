//! `GET /v1/operator/overview`: the deployment at a glance (replicas and
//! their partitions, Redis health, the LaunchDarkly budget, this replica's
//! 15-minute series).

use super::{authorize, ApiError, AppState, NativeError};
use crate::clock::now_ms;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

/// One replica as the overview shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ReplicaView {
    /// The replica's id.
    id: String,
    /// Its last heartbeat (ms; 0 for a lease whose replica's heartbeat expired).
    last_heartbeat_ms: i64,
    /// The partitions it holds.
    partitions: Vec<u16>,
    /// Whether it is the replica that answered.
    this_replica: bool,
}

/// How the LaunchDarkly rate is shared.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct BudgetView {
    /// The configured `launchdarkly.requests_per_second` (the deployment's).
    limit_requests_per_second: f64,
    /// This replica's share of it.
    share_requests_per_second: f64,
    /// The live replicas it is shared by.
    live_replicas: u64,
}

/// `GET /v1/operator/overview`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Overview {
    /// The replica that answered (the series are its own).
    replica: String,
    /// The live replicas and the partitions each holds.
    replicas: Vec<ReplicaView>,
    /// The configured number of partitions.
    partitions: u16,
    /// Partitions no replica holds.
    unheld_partitions: Vec<u16>,
    /// Whether Redis answered the lease reads (false: `replicas` is unknown).
    leases_known: bool,
    /// Redis health, from the flusher's last check.
    redis: crate::flush::observe::RedisHealth,
    /// The LaunchDarkly budget.
    budget: BudgetView,
    /// Seconds between two samples of `series`.
    sample_every_seconds: u64,
    /// The last 15 minutes, oldest first: propagation and LaunchDarkly requests/s.
    series: Vec<crate::flush::observe::Sample>,
}

/// The deployment at a glance: replicas, partitions, Redis health, the
/// LaunchDarkly budget and the last 15 minutes of propagation and request rate.
#[utoipa::path(
    get,
    path = "/v1/operator/overview",
    tag = "operator",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The overview (it answers with Redis down: `leases_known` false).", body = Overview),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No operator token is configured (`operator_api_disabled`).", body = NativeError),
    )
)]
pub(crate) async fn overview(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let obs = &state.observations;
    // With Redis down the overview still answers: Redis health is what the
    // operator needs then; replicas and leases are unknown (empty).
    let (holders, live, leases_known) = match (
        state.store.lease_holders().await,
        state
            .store
            .live_replicas(now_ms(), state.settings.lease_ttl)
            .await,
    ) {
        (Ok(h), Ok(l)) => (h, l, true),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "Overview without replicas: Redis did not answer.");
            (Vec::new(), Vec::new(), false)
        }
    };
    let mut replicas: Vec<ReplicaView> = live
        .into_iter()
        .map(|(id, at)| ReplicaView {
            this_replica: id == obs.replica(),
            partitions: Vec::new(),
            id,
            last_heartbeat_ms: at,
        })
        .collect();
    let mut unheld = Vec::new();
    for (partition, holder) in holders.into_iter().enumerate() {
        let partition = partition as u16;
        match holder {
            None => unheld.push(partition),
            Some(h) => match replicas.iter_mut().find(|r| r.id == h) {
                Some(r) => r.partitions.push(partition),
                // A lease of a replica whose heartbeat expired (it will too).
                None => replicas.push(ReplicaView {
                    id: h,
                    last_heartbeat_ms: 0,
                    partitions: vec![partition],
                    this_replica: false,
                }),
            },
        }
    }
    Ok(HttpResponse::Ok().json(Overview {
        replica: obs.replica().to_string(),
        replicas,
        partitions: state.settings.redis.partitions,
        unheld_partitions: unheld,
        leases_known,
        redis: obs.redis_health(),
        budget: BudgetView {
            limit_requests_per_second: obs.limit_rps(),
            share_requests_per_second: obs.share_rps(),
            live_replicas: obs.replicas(),
        },
        sample_every_seconds: crate::flush::observe::SAMPLE_EVERY.as_secs(),
        series: obs.series(),
    }))
}
