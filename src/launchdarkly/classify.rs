//! What a LaunchDarkly response means for the flusher, decided in one place.

/// Which call was made (a 409 means different things for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST …/segments/{project}/{environment}`: creating the link's segment.
    CreateSegment,
    /// `POST …/{segmentKey}/contexts`: writing a batch of members.
    UpdateMembership,
    /// `GET …/{segmentKey}`: reading a segment's ownership mark after a 409.
    GetSegment,
    /// `DELETE …/{segmentKey}`: retiring a link with `--delete`.
    DeleteSegment,
    /// `PATCH …/{segmentKey}`: the segment's name follows a renamed cohort.
    RenameSegment,
}

/// What came back from LaunchDarkly, reduced to what classification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// `X-Ratelimit-Reset`: Unix epoch milliseconds.
    pub reset_ms: Option<i64>,
    /// `Retry-After`: seconds.
    pub retry_after_s: Option<u64>,
    /// The smaller of `X-Ratelimit-Global-Remaining` and `X-Ratelimit-Route-Remaining`.
    pub remaining: Option<i64>,
    /// `X-Ratelimit-Route-Remaining` alone (for the metric of that name).
    pub route_remaining: Option<i64>,
    /// LaunchDarkly's `message` (or the start of the body).
    pub message: String,
    /// `X-Request-Id`: LaunchDarkly's name for the request, if it sent one.
    pub request_id: Option<String>,
}

impl Reply {
    /// A reply that carries only a status and a message: no rate-limit
    /// headers, no request id (a download's answer, or a test's).
    pub fn status_only(status: u16, message: impl Into<String>) -> Reply {
        Reply {
            status,
            reset_ms: None,
            retry_after_s: None,
            remaining: None,
            route_remaining: None,
            message: message.into(),
            request_id: None,
        }
    }
}

/// One attempt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// LaunchDarkly answered (any status).
    Replied(Reply),
    /// No answer within the request timeout: LaunchDarkly may still apply it.
    TimedOut,
    /// The connection broke after the request may have been sent (reset, closed mid-request).
    Transport(String),
    /// The request never left: connection refused, DNS or TLS failure.
    NotSent(String),
}

impl Attempt {
    /// The `status` label of `cohort_bridge_ld_requests_total`: the HTTP
    /// status, or `timeout` / `transport` / `not_sent`.
    pub fn status_label(&self) -> String {
        match self {
            Attempt::Replied(r) => r.status.to_string(),
            Attempt::TimedOut => "timeout".into(),
            Attempt::Transport(_) => "transport".into(),
            Attempt::NotSent(_) => "not_sent".into(),
        }
    }
}

/// What the flusher does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: record what LaunchDarkly now has.
    Success,
    /// 409 on create: the segment exists; carry on.
    AlreadyExists,
    /// 429: every writer holds off until `until_ms` (None: reset missing or
    /// already past, so wait the configured fallback).
    RateLimited {
        /// When the pause ends (Unix ms), if LaunchDarkly said.
        until_ms: Option<i64>,
    },
    /// Transient: retry with backoff. `in_doubt` when LaunchDarkly may have
    /// applied the request without us knowing (timeout, reset connection).
    Retry {
        /// What failed, for the link's `last_error`.
        reason: String,
        /// LaunchDarkly may have applied the request.
        in_doubt: bool,
    },
    /// 401/403/404 and other configuration problems: keep the data, report,
    /// try again later.
    Block {
        /// Why; its first word is the `links_blocked` metric's label.
        reason: String,
    },
    /// 400 and other permanent rejections of this body: split to find the
    /// offending keys, then dead-letter them.
    Rejected {
        /// LaunchDarkly's message.
        message: String,
    },
}

/// Classifies one attempt. Pure: `now_ms` is passed in.
pub fn classify(op: Operation, attempt: &Attempt, now_ms: i64) -> Verdict {
    let r = match attempt {
        Attempt::TimedOut => {
            return Verdict::Retry {
                reason: "request timed out".into(),
                in_doubt: true,
            }
        }
        Attempt::Transport(e) => {
            return Verdict::Retry {
                reason: format!("transport error: {e}"),
                in_doubt: true,
            }
        }
        Attempt::NotSent(e) => {
            return Verdict::Retry {
                reason: format!("could not connect: {e}"),
                in_doubt: false,
            }
        }
        Attempt::Replied(r) => r,
    };
    let msg = |what: &str| {
        if r.message.is_empty() {
            format!("{} {what}", r.status)
        } else {
            format!("{} {what}: {}", r.status, r.message)
        }
    };
    match r.status {
        200..=299 => Verdict::Success,
        409 if op == Operation::CreateSegment => Verdict::AlreadyExists,
        429 => Verdict::RateLimited {
            until_ms: rate_limited_until(r, now_ms),
        },
        // A gateway's 502 or 504 says nothing of whether LaunchDarkly
        // applied the request behind it: in doubt, like a timeout.
        502 | 504 => Verdict::Retry {
            reason: msg("from LaunchDarkly"),
            in_doubt: true,
        },
        408 | 409 | 500 | 503..=599 => Verdict::Retry {
            reason: msg("from LaunchDarkly"),
            in_doubt: false,
        },
        401 => Verdict::Block {
            reason: msg("unauthorized: check the API token"),
        },
        403 => Verdict::Block {
            reason: msg("forbidden: the token lacks createSegment/updateIncluded"),
        },
        404 => Verdict::Block {
            reason: msg("not found: check the destination's project and environment"),
        },
        400 | 413 | 422 => Verdict::Rejected {
            message: msg("rejected"),
        },
        _ => Verdict::Block {
            reason: msg("unexpected response"),
        },
    }
}

/// When a 429 lets writers go again: the latest of `X-Ratelimit-Reset` and
/// `Retry-After` that lies in the future (a stale reset never hides a valid
/// `Retry-After`, nor the other way round). `None` when neither is valid.
/// Saturating: an absurd header cannot wrap; the throttle then clamps the
/// pause to `launchdarkly.max_pause_seconds`.
pub fn rate_limited_until(r: &Reply, now_ms: i64) -> Option<i64> {
    let retry_after = r.retry_after_s.map(|s| {
        let ms = i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000);
        now_ms.saturating_add(ms)
    });
    [r.reset_ms, retry_after]
        .into_iter()
        .flatten()
        .filter(|&t| t > now_ms)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    const NOW: i64 = 1_767_225_600_000;

    fn reply(status: u16) -> Reply {
        Reply::status_only(status, "")
    }

    fn kind(v: &Verdict) -> &'static str {
        match v {
            Verdict::Success => "success",
            Verdict::AlreadyExists => "exists",
            Verdict::RateLimited { .. } => "rate-limited",
            Verdict::Retry { in_doubt: true, .. } => "retry-in-doubt",
            Verdict::Retry { .. } => "retry",
            Verdict::Block { .. } => "block",
            Verdict::Rejected { .. } => "rejected",
        }
    }

    #[test]
    fn table() {
        let table: &[(Operation, u16, &str)] = &[
            (CreateSegment, 201, "success"),
            (UpdateMembership, 204, "success"),
            (UpdateMembership, 200, "success"),
            (CreateSegment, 409, "exists"),
            (UpdateMembership, 409, "retry"),
            (UpdateMembership, 429, "rate-limited"),
            (CreateSegment, 429, "rate-limited"),
            (UpdateMembership, 408, "retry"),
            (UpdateMembership, 500, "retry"),
            (UpdateMembership, 502, "retry-in-doubt"),
            (UpdateMembership, 503, "retry"),
            (UpdateMembership, 504, "retry-in-doubt"),
            (CreateSegment, 504, "retry-in-doubt"),
            (UpdateMembership, 501, "block"),
            (UpdateMembership, 401, "block"),
            (UpdateMembership, 403, "block"),
            (UpdateMembership, 404, "block"),
            (CreateSegment, 404, "block"),
            (UpdateMembership, 400, "rejected"),
            (CreateSegment, 400, "rejected"),
            (UpdateMembership, 413, "rejected"),
            (UpdateMembership, 418, "block"),
        ];
        for &(op, status, want) in table {
            let got = classify(op, &Attempt::Replied(reply(status)), NOW);
            assert_eq!(kind(&got), want, "{op:?} {status}");
        }
        assert_eq!(
            kind(&classify(UpdateMembership, &Attempt::TimedOut, NOW)),
            "retry-in-doubt"
        );
        assert_eq!(
            kind(&classify(
                UpdateMembership,
                &Attempt::Transport("reset".into()),
                NOW
            )),
            "retry-in-doubt"
        );
        assert_eq!(
            kind(&classify(
                UpdateMembership,
                &Attempt::NotSent("refused".into()),
                NOW
            )),
            "retry"
        );
    }

    #[test]
    fn rate_limit_reset_times() {
        let mut r = reply(429);
        r.reset_ms = Some(NOW + 2_000);
        assert_eq!(
            classify(UpdateMembership, &Attempt::Replied(r.clone()), NOW),
            Verdict::RateLimited {
                until_ms: Some(NOW + 2_000)
            }
        );
        // A reset in the past is not "go now": the caller waits a fallback.
        r.reset_ms = Some(NOW - 5_000);
        assert_eq!(
            classify(UpdateMembership, &Attempt::Replied(r.clone()), NOW),
            Verdict::RateLimited { until_ms: None }
        );
        r.reset_ms = None;
        r.retry_after_s = Some(3);
        assert_eq!(
            classify(UpdateMembership, &Attempt::Replied(r.clone()), NOW),
            Verdict::RateLimited {
                until_ms: Some(NOW + 3_000)
            }
        );
        r.retry_after_s = None;
        assert_eq!(
            classify(UpdateMembership, &Attempt::Replied(r), NOW),
            Verdict::RateLimited { until_ms: None }
        );
    }

    #[test]
    fn rate_limit_takes_the_latest_valid_time() {
        let mut r = reply(429);
        // A stale reset does not hide a valid Retry-After.
        r.reset_ms = Some(NOW - 5_000);
        r.retry_after_s = Some(60);
        assert_eq!(rate_limited_until(&r, NOW), Some(NOW + 60_000));
        // Both valid: the later one.
        r.reset_ms = Some(NOW + 90_000);
        assert_eq!(rate_limited_until(&r, NOW), Some(NOW + 90_000));
        r.reset_ms = Some(NOW + 2_000);
        assert_eq!(rate_limited_until(&r, NOW), Some(NOW + 60_000));
        // Absurd values saturate instead of wrapping.
        r.retry_after_s = Some(u64::MAX);
        assert_eq!(rate_limited_until(&r, NOW), Some(i64::MAX));
        r.retry_after_s = Some(i64::MAX as u64 / 1000);
        assert!(rate_limited_until(&r, NOW).unwrap() > NOW);
    }

    #[test]
    fn messages_carry_launchdarkly_text() {
        let mut r = reply(403);
        r.message = "Access to the requested resource was denied".into();
        match classify(UpdateMembership, &Attempt::Replied(r), NOW) {
            Verdict::Block { reason } => {
                assert!(reason.contains("denied") && reason.starts_with("403"));
            }
            v => panic!("{v:?}"),
        }
    }
}
