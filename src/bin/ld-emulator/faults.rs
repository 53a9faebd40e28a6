//! Injected faults: their JSON shape (as posted to `/_emulator/faults`) and
//! the FIFO queue from which each LaunchDarkly-route request takes the
//! first fault whose `route` matches it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::VecDeque;

/// Which LaunchDarkly route a request hit. Also the key of the per-route
/// rate limiter and of `by_route` in the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `POST /api/v2/segments/{p}/{e}`
    Create,
    /// `GET /api/v2/segments/{p}/{e}/{key}`
    Get,
    /// `POST .../{key}/contexts` or `.../{key}/users`
    Contexts,
    /// `GET .../{key}/contexts/{ck}` or `.../{key}/users/{uk}`
    GetContext,
    /// `GET /api/v2/segments/{p}/{e}` (paginated listing)
    List,
    /// `PATCH /api/v2/segments/{p}/{e}/{key}` (JSON patch or semantic patch)
    Patch,
    /// `DELETE /api/v2/segments/{p}/{e}/{key}`
    Delete,
    /// `POST .../{key}/exports`: starts a big-segment export
    CreateExport,
    /// `GET .../{key}/exports/{id}`: the export's status
    GetExport,
    /// `GET .../{key}/exports/{id}/file`: the exported file
    ExportFile,
    /// Anything else under `/api/`.
    Unknown,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::Create => "create",
            Route::Get => "get",
            Route::Contexts => "contexts",
            Route::GetContext => "get_context",
            Route::List => "list",
            Route::Patch => "patch",
            Route::Delete => "delete",
            Route::CreateExport => "create_export",
            Route::GetExport => "get_export",
            Route::ExportFile => "export_file",
            Route::Unknown => "unknown",
        }
    }
}

/// Which requests a fault applies to: one route, or `any` (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RouteMatch {
    #[default]
    Any,
    Create,
    Get,
    Contexts,
    GetContext,
    List,
    Patch,
    Delete,
    CreateExport,
    GetExport,
    ExportFile,
}

impl RouteMatch {
    fn matches(self, route: Route) -> bool {
        matches!(
            (self, route),
            (RouteMatch::Any, _)
                | (RouteMatch::Create, Route::Create)
                | (RouteMatch::Get, Route::Get)
                | (RouteMatch::Contexts, Route::Contexts)
                | (RouteMatch::GetContext, Route::GetContext)
                | (RouteMatch::List, Route::List)
                | (RouteMatch::Patch, Route::Patch)
                | (RouteMatch::Delete, Route::Delete)
                | (RouteMatch::CreateExport, Route::CreateExport)
                | (RouteMatch::GetExport, Route::GetExport)
                | (RouteMatch::ExportFile, Route::ExportFile)
        )
    }
}

/// What happens after a hang or a dropped connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Then {
    /// Handle the request normally (state changes) before answering/dropping.
    Apply,
    /// Drop the connection without applying anything.
    Drop,
}

/// One kind of fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Answer with this status and LaunchDarkly's error body for it.
    Status {
        status: u16,
        #[serde(default)]
        headers: Map<String, Value>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Answer 429. `reset_in_ms` (may be negative: a reset in the past)
    /// sets `X-Ratelimit-Reset`; `"reset": "missing"` omits it.
    RateLimited {
        #[serde(default)]
        reset_in_ms: Option<i64>,
        #[serde(default)]
        reset: Option<String>,
        #[serde(default)]
        retry_after_s: Option<u64>,
    },
    /// Wait, then handle normally.
    Latency { ms: u64 },
    /// Hold the request `ms` (forever when absent, until the client leaves),
    /// then apply (default) or drop it.
    Hang {
        #[serde(default)]
        ms: Option<u64>,
        #[serde(default)]
        then: Option<Then>,
    },
    /// Close the TCP connection without a response; with `then: apply` the
    /// request is applied first.
    ResetConnection {
        #[serde(default)]
        then: Option<Then>,
    },
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Status { .. } => "status",
            FaultKind::RateLimited { .. } => "rate_limited",
            FaultKind::Latency { .. } => "latency",
            FaultKind::Hang { .. } => "hang",
            FaultKind::ResetConnection { .. } => "reset_connection",
        }
    }
}

/// A queued fault as posted: the kind plus `route` and `count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(default)]
    pub route: RouteMatch,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(flatten)]
    pub kind: FaultKind,
}

fn one() -> u32 {
    1
}

/// Parses one fault object or an array of them.
pub fn parse_faults(body: &Value) -> Result<Vec<Fault>, String> {
    let items: Vec<&Value> = match body {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut faults = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let fault: Fault =
            serde_json::from_value(item.clone()).map_err(|e| format!("fault {i}: {e}"))?;
        if fault.count == 0 {
            return Err(format!("fault {i}: count must be at least 1"));
        }
        if let FaultKind::Status { status, .. } = &fault.kind {
            if !(100..=999).contains(status) {
                return Err(format!("fault {i}: status {status} is not an HTTP status"));
            }
        }
        if let FaultKind::RateLimited { reset: Some(r), .. } = &fault.kind {
            if r != "missing" {
                return Err(format!("fault {i}: reset must be \"missing\" if given"));
            }
        }
        faults.push(fault);
    }
    Ok(faults)
}

/// FIFO of pending faults; `count` is decremented as requests consume them.
#[derive(Debug, Default)]
pub struct FaultQueue {
    pending: VecDeque<Fault>,
}

impl FaultQueue {
    pub fn push(&mut self, faults: Vec<Fault>) {
        self.pending.extend(faults);
    }

    /// Takes one use of the oldest fault that matches `route`.
    pub fn take(&mut self, route: Route) -> Option<FaultKind> {
        let index = self.pending.iter().position(|f| f.route.matches(route))?;
        let fault = self.pending.get_mut(index)?;
        fault.count -= 1;
        let kind = fault.kind.clone();
        if fault.count == 0 {
            self.pending.remove(index);
        }
        Some(kind)
    }

    pub fn pending(&self) -> Vec<Fault> {
        self.pending.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_consumes_in_order_by_route() {
        let faults = parse_faults(&json!([
            {"kind": "status", "status": 500, "route": "contexts", "count": 2},
            {"kind": "latency", "ms": 5}
        ]))
        .unwrap();
        let mut q = FaultQueue::default();
        q.push(faults);
        assert_eq!(q.take(Route::Create).map(|k| k.name()), Some("latency"));
        assert_eq!(q.take(Route::Create), None);
        assert_eq!(q.take(Route::Contexts).map(|k| k.name()), Some("status"));
        assert_eq!(q.take(Route::Contexts).map(|k| k.name()), Some("status"));
        assert_eq!(q.take(Route::Contexts), None);
    }

    #[test]
    fn rejects_bad_faults() {
        assert!(parse_faults(&json!({"kind": "nope"})).is_err());
        assert!(parse_faults(&json!({"kind": "status"})).is_err());
        assert!(parse_faults(&json!({"kind": "latency", "ms": 1, "count": 0})).is_err());
        assert!(parse_faults(&json!({"kind": "rate_limited", "reset": "soon"})).is_err());
        let f = parse_faults(&json!({"kind": "rate_limited", "reset_in_ms": -500})).unwrap();
        assert_eq!(f[0].route, RouteMatch::Any);
        assert_eq!(f[0].count, 1);
    }
}
