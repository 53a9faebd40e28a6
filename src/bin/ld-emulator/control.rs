//! The test-only control API under `/_emulator` (no auth, JSON in and out):
//! faults, runtime config, state, request log, stats, per-second request
//! counts (`rate`), writes in flight per segment (`writes`), reset.

use crate::app::Emulator;
use crate::exports::ExportLayout;
use crate::faults::parse_faults;
use crate::http::{json_response, read_body, Resp};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub async fn handle(emu: Arc<Emulator>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(e) => return bad_request(&e),
    };
    // Control errors are all 400s; the message says what was wrong.
    let parse = || -> Result<Value, String> {
        serde_json::from_slice(&body).map_err(|e| format!("invalid JSON: {e}"))
    };
    let parts: Vec<&str> = path.split('/').skip(2).collect();
    let result = match (&method, parts.as_slice()) {
        (&Method::POST, ["faults"]) => parse().and_then(|v| add_faults(&emu, &v)),
        (&Method::GET, ["faults"]) => Ok(list_faults(&emu)),
        (&Method::DELETE, ["faults"]) => {
            emu.world().faults.clear();
            Ok(list_faults(&emu))
        }
        (&Method::POST, ["config"]) => parse().and_then(|v| set_config(&emu, &v)),
        (&Method::GET, ["config"]) => Ok(config(&emu)),
        (&Method::GET, ["state"]) => Ok(state(&emu)),
        (&Method::GET, ["segments", p, e, k]) => Ok(segment(&emu, p, e, k)),
        // Deletes a segment, as someone might in LaunchDarkly's UI.
        (&Method::DELETE, ["segments", p, e, k]) => {
            let deleted = emu.world().segments.delete(p, e, k);
            Ok(ok(json!({"deleted": deleted})))
        }
        // Adds and removes included members behind the bridge's back (drift).
        (&Method::POST, ["segments", p, e, k, "members"]) => {
            parse().and_then(|v| drift(&emu, p, e, k, &v))
        }
        (&Method::GET, ["requests"]) => requests(&emu, &query),
        (&Method::GET, ["stats"]) => Ok(stats(&emu)),
        (&Method::GET, ["rate"]) => rate(&emu, &query),
        (&Method::GET, ["writes"]) => Ok(ok(emu.world().journal.writes.json())),
        (&Method::POST, ["reset"]) => {
            emu.world().reset();
            Ok(ok(json!({"reset": true})))
        }
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"code": "not_found", "message": format!("no control route {method} {path}")}),
            )
        }
    };
    result.unwrap_or_else(|message| bad_request(&message))
}

fn ok(v: Value) -> Resp {
    json_response(StatusCode::OK, &v)
}

fn bad_request(message: &str) -> Resp {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"code": "invalid_request", "message": message}),
    )
}

fn add_faults(emu: &Emulator, body: &Value) -> Result<Resp, String> {
    let faults = parse_faults(body)?;
    let queued = faults.len();
    let mut world = emu.world();
    world.faults.push(faults);
    let pending = world.faults.pending();
    Ok(ok(json!({"queued": queued, "pending": pending})))
}

fn list_faults(emu: &Emulator) -> Resp {
    ok(json!({"pending": emu.world().faults.pending()}))
}

fn config(emu: &Emulator) -> Resp {
    let world = emu.world();
    ok(json!({
        "rate_limit_global": world.budgets.global,
        "rate_limit_route": world.budgets.route,
        "window_ms": world.budgets.window_ms,
        "projects": world.segments.projects,
        "max_rps": world.max_rps,
        "reject_keys": world.segments.reject_keys,
        "export_polls": world.exports.polls,
        "export_layout": world.exports.layout.name(),
    }))
}

/// Applies the fields present; `"projects": null` and `"max_rps": null`
/// switch those features off again. Everything is checked before anything
/// changes.
fn set_config(emu: &Emulator, body: &Value) -> Result<Resp, String> {
    let Some(fields) = body.as_object() else {
        return Err("config must be a JSON object".into());
    };
    let known = [
        "rate_limit_global",
        "rate_limit_route",
        "window_ms",
        "projects",
        "max_rps",
        "reject_keys",
        "export_polls",
        "export_layout",
    ];
    if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown config field \"{unknown}\""));
    }
    let positive = |name: &str| -> Result<Option<u64>, String> {
        match fields.get(name) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(format!("{name} must be a positive integer")),
            },
        }
    };
    let global = positive("rate_limit_global")?;
    let route = positive("rate_limit_route")?;
    let window = positive("window_ms")?;
    let projects = match fields.get("projects") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(
            serde_json::from_value::<BTreeMap<String, BTreeSet<String>>>(v.clone()).map_err(
                |e| format!("projects must map project keys to environment key arrays: {e}"),
            )?,
        )),
    };
    let max_rps = match fields.get("max_rps") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => match v.as_f64() {
            Some(r) if r > 0.0 => Some(Some(r)),
            _ => return Err("max_rps must be a positive number or null".into()),
        },
    };
    let reject_keys = match fields.get("reject_keys") {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<BTreeSet<String>>(v.clone())
                .map_err(|e| format!("reject_keys must be an array of context keys: {e}"))?,
        ),
    };
    let export_polls = match fields.get("export_polls") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or("export_polls must be a non-negative integer")?,
        ),
    };
    let export_layout = match fields.get("export_layout") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(ExportLayout::parse)
                .ok_or("export_layout must be \"keys\" or \"two_columns\"")?,
        ),
    };
    {
        let mut world = emu.world();
        if let Some(n) = export_polls {
            world.exports.polls = n;
        }
        if let Some(l) = export_layout {
            world.exports.layout = l;
        }
        if let Some(k) = reject_keys {
            world.segments.reject_keys = k;
        }
        if let Some(n) = global {
            world.budgets.global = n;
        }
        if let Some(n) = route {
            world.budgets.route = n;
        }
        if let Some(n) = window {
            world.budgets.window_ms = n;
            // New window length: start counting afresh.
            world.limiter.clear();
        }
        if let Some(p) = projects {
            world.segments.projects = p;
        }
        if let Some(r) = max_rps {
            world.max_rps = r;
        }
    }
    Ok(config(emu))
}

/// `{"add": [keys], "remove": [keys]}` applied to a segment's included
/// list with no request logged: what someone editing the segment in
/// LaunchDarkly (or another tool) would leave behind.
fn drift(emu: &Emulator, p: &str, e: &str, k: &str, body: &Value) -> Result<Resp, String> {
    let list = |name: &str| -> Result<Vec<String>, String> {
        match body.get(name) {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("{name} must be an array of context keys: {e}")),
        }
    };
    if let Some(unknown) = body
        .as_object()
        .ok_or("members must be a JSON object")?
        .keys()
        .find(|k| *k != "add" && *k != "remove")
    {
        return Err(format!("unknown members field \"{unknown}\""));
    }
    let (add, remove) = (list("add")?, list("remove")?);
    emu.world()
        .segments
        .drift(p, e, k, add, &remove)
        .map_err(|_| format!("no segment {p}/{e}/{k}"))?;
    Ok(segment(emu, p, e, k))
}

fn state(emu: &Emulator) -> Resp {
    let world = emu.world();
    let segments: Vec<Value> = world
        .segments
        .all()
        .iter()
        .map(|s| s.to_state_json())
        .collect();
    ok(Value::from(segments))
}

fn segment(emu: &Emulator, project: &str, environment: &str, key: &str) -> Resp {
    let world = emu.world();
    let found = world
        .segments
        .all()
        .into_iter()
        .find(|s| s.project == project && s.environment == environment && s.spec.key == key)
        .map(|s| s.to_state_json());
    match found {
        Some(v) => ok(v),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"code": "not_found", "message": format!("no segment {project}/{environment}/{key}")}),
        ),
    }
}

fn requests(emu: &Emulator, query: &str) -> Result<Resp, String> {
    let mut since = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("since", v)) => {
                since = v
                    .parse()
                    .map_err(|_| "since must be a non-negative integer".to_string())?;
            }
            _ => return Err(format!("unknown query parameter {pair}")),
        }
    }
    let world = emu.world();
    let entries = world.journal.entries_since(since);
    Ok(ok(json!(entries)))
}

fn stats(emu: &Emulator) -> Resp {
    let world = emu.world();
    let mut v = world.journal.stats_json(world.monitor.max_in_1s);
    v["faults_pending"] = json!(world
        .faults
        .pending()
        .iter()
        .map(|f| f.count as u64)
        .sum::<u64>());
    ok(v)
}

/// `GET /_emulator/rate?window_ms=N` (default 1000): every LaunchDarkly-route
/// arrival since the last reset, counted per epoch second, and the most in
/// any window of N ms.
fn rate(emu: &Emulator, query: &str) -> Result<Resp, String> {
    let mut window_ms = 1000;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("window_ms", v)) => {
                window_ms = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("window_ms must be a positive integer")?;
            }
            _ => return Err(format!("unknown query parameter {pair}")),
        }
    }
    let arrivals = emu.world().journal.arrivals.clone();
    Ok(ok(crate::journal::rate_json(&arrivals, window_ms)))
}
