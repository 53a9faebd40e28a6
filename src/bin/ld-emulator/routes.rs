//! The LaunchDarkly routes: request logging, fault injection, and the
//! normal handling (auth, rate limits, API version, body validation, the
//! segment data), with `X-Ratelimit-*` headers on every response.

use crate::app::{now_ms, Emulator, World};
use crate::exports::Export;
use crate::faults::{FaultKind, Route, Then};
use crate::http::{
    json_response, ld_error, no_content, read_body, set_header, text_response, DropConnection, Resp,
};
use crate::journal::{LogEntry, Outcome};
use crate::ratelimit::{allowed_per_second, Limiter, RateDecision};
use crate::state::{MembershipChange, SegmentSpec, SegmentsError};
use crate::target::{self, Target};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// API versions LaunchDarkly currently serves (20220603 is end of life).
const SUPPORTED_VERSIONS: [&str; 2] = ["20240415", "beta"];

/// Everything about a request that handling needs, read up front.
struct Call {
    method: Method,
    target: Target,
    version: Option<String>,
    auth_ok: bool,
    content_type: Option<String>,
    /// The request URI's query string (the listing's `limit` and `offset`).
    query: String,
    body: Bytes,
}

/// Completes the request's log entry exactly once; if the handler is
/// dropped first (client went away, connection reset) it logs "dropped".
struct Completion {
    emu: Arc<Emulator>,
    seq: u64,
    auth_ok: bool,
    done: bool,
    /// The segment this request writes, counted in flight until it ends.
    writes: Option<String>,
}

impl Completion {
    fn finish(mut self, status: Option<u16>, applied: bool) {
        self.record(status, applied);
    }

    fn record(&mut self, status: Option<u16>, applied: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let outcome = Outcome {
            completed_ms: now_ms(),
            status,
            applied,
            authorization_ok: self.auth_ok,
        };
        let mut world = self.emu.world();
        world.journal.finish(self.seq, outcome);
        if let Some(segment) = &self.writes {
            world.journal.writes.end(segment);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.record(None, false);
    }
}

pub async fn handle(emu: Arc<Emulator>, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let received_ms = now_ms();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let version = header("ld-api-version");
    let auth_ok = emu.token_ok(header(AUTHORIZATION.as_str()).as_deref());
    let content_type = header(CONTENT_TYPE.as_str());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let target = target::parse(&method, &path);
    let (body, unreadable) = match read_body(req.into_body()).await {
        Ok(b) => (b, None),
        Err(e) => (Bytes::new(), Some(e)),
    };
    let call = Call {
        method,
        target,
        version,
        auth_ok,
        content_type,
        query,
        body,
    };
    if let Some(e) = unreadable {
        // Not logged: nothing usable arrived.
        let mut resp = ld_error(400, Some(&e));
        add_rate_headers(&mut resp, &peek(&emu, &call));
        return Ok(resp);
    }

    let (seq, fault) = register(&emu, &call, path, received_ms);
    let writes = written_segment(&call);
    if let Some(segment) = &writes {
        emu.world().journal.writes.begin(segment, seq);
    }
    let completion = Completion {
        emu: emu.clone(),
        seq,
        auth_ok,
        done: false,
        writes,
    };

    if let Some(FaultKind::Hang { ms: None, .. }) = fault {
        // Hold until the client disconnects; hyper then drops this future
        // and `Completion` logs the request as dropped, never applied.
        std::future::pending::<()>().await;
    }
    // Everything else runs in its own task so that a client giving up does
    // not stop a request that LaunchDarkly would still have applied.
    let task = tokio::spawn(async move { process(emu, call, fault, completion).await });
    // LaunchDarkly names each request in `X-Request-Id`; the emulator's is
    // `emu-<seq>`, the request's sequence number in its log.
    task.await.unwrap_or(Err(DropConnection)).map(|mut resp| {
        set_header(&mut resp, "X-Request-Id", &format!("emu-{seq}"));
        resp
    })
}

/// The segment (`project/environment/key`) a request would change, if it
/// is a write: a create (the key is in its body), a membership update, a
/// patch or a delete. Tracked whatever the answer turns out to be: two
/// replicas sending writes for one segment at once is the fault, not
/// whether both were applied.
fn written_segment(call: &Call) -> Option<String> {
    let t = &call.target;
    let key = match t.route? {
        Route::Create => serde_json::from_slice::<Value>(&call.body)
            .ok()?
            .get("key")?
            .as_str()?
            .to_string(),
        Route::Contexts | Route::Patch | Route::Delete => t.key.clone(),
        _ => return None,
    };
    Some(format!("{}/{}/{key}", t.project, t.environment))
}

/// Logs the arrival, checks the client's pacing, and takes a fault.
fn register(
    emu: &Emulator,
    call: &Call,
    path: String,
    received_ms: u64,
) -> (u64, Option<FaultKind>) {
    let mut world = emu.world();
    let seq = world.next_seq;
    world.next_seq += 1;
    let in_last_second = world.monitor.record(received_ms);
    if let Some(max_rps) = world.max_rps {
        if in_last_second > allowed_per_second(max_rps) {
            world.journal.rate_exceeded += 1;
        }
    }
    if world
        .announced_reset_ms
        .is_some_and(|reset| received_ms < reset)
    {
        world.journal.early_after_429 += 1;
    }
    let route = call.target.route();
    let fault = world.faults.take(route);
    let entry = LogEntry {
        seq,
        method: call.method.to_string(),
        path,
        route: route.name(),
        received_ms,
        completed_ms: None,
        status: None,
        ld_api_version: call.version.clone(),
        authorization_ok: call.auth_ok,
        body: serde_json::from_slice(&call.body).unwrap_or(Value::Null),
        applied: false,
        fault: fault.as_ref().map(FaultKind::name),
    };
    world.journal.start(entry);
    (seq, fault)
}

async fn process(
    emu: Arc<Emulator>,
    call: Call,
    fault: Option<FaultKind>,
    completion: Completion,
) -> Result<Resp, DropConnection> {
    let sleep = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    match fault {
        None => {}
        Some(FaultKind::Latency { ms }) => sleep(ms).await,
        Some(FaultKind::Hang { ms, then }) => {
            sleep(ms.unwrap_or(0)).await;
            if then == Some(Then::Drop) {
                completion.finish(None, false);
                return Err(DropConnection);
            }
        }
        Some(FaultKind::ResetConnection { then }) => {
            let applied = then == Some(Then::Apply) && respond(&emu, &call).1;
            completion.finish(None, applied);
            return Err(DropConnection);
        }
        Some(FaultKind::Status {
            status,
            headers,
            message,
        }) => {
            let mut resp = ld_error(status, message.as_deref());
            add_rate_headers(&mut resp, &peek(&emu, &call));
            for (name, value) in &headers {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_string);
                set_header(&mut resp, name, &text);
            }
            completion.finish(Some(status), false);
            return Ok(resp);
        }
        Some(FaultKind::RateLimited {
            reset_in_ms,
            reset,
            retry_after_s,
        }) => {
            let resp = injected_429(&emu, &call, reset_in_ms, reset.is_some(), retry_after_s);
            completion.finish(Some(429), false);
            return Ok(resp);
        }
    }
    let (resp, applied) = respond(&emu, &call);
    completion.finish(Some(resp.status().as_u16()), applied);
    Ok(resp)
}

fn peek(emu: &Emulator, call: &Call) -> RateDecision {
    let mut world = emu.world();
    let budgets = world.budgets;
    world.limiter.peek(&budgets, call.target.route(), now_ms())
}

fn add_rate_headers(resp: &mut Resp, v: &RateDecision) {
    set_header(
        resp,
        "X-Ratelimit-Global-Remaining",
        &v.global_remaining.to_string(),
    );
    set_header(
        resp,
        "X-Ratelimit-Route-Remaining",
        &v.route_remaining.to_string(),
    );
    set_header(resp, "X-Ratelimit-Reset", &v.reset_ms.to_string());
}

fn injected_429(
    emu: &Emulator,
    call: &Call,
    reset_in_ms: Option<i64>,
    reset_missing: bool,
    retry_after_s: Option<u64>,
) -> Resp {
    let now = now_ms();
    let mut resp = ld_error(429, None);
    let verdict = peek(emu, call);
    set_header(
        &mut resp,
        "X-Ratelimit-Global-Remaining",
        &verdict.global_remaining.to_string(),
    );
    set_header(&mut resp, "X-Ratelimit-Route-Remaining", "0");
    let mut announced = None;
    if !reset_missing {
        let reset = (now as i64)
            .saturating_add(reset_in_ms.unwrap_or(1000))
            .max(0) as u64;
        set_header(&mut resp, "X-Ratelimit-Reset", &reset.to_string());
        announced = Some(reset);
    }
    if let Some(secs) = retry_after_s {
        set_header(&mut resp, "Retry-After", &secs.to_string());
        let until = now.saturating_add(secs.saturating_mul(1000));
        announced = Some(announced.map_or(until, |a: u64| a.max(until)));
    }
    if announced.is_some() {
        emu.world().announced_reset_ms = announced;
    }
    resp
}

/// Normal LaunchDarkly handling. Returns the response and whether state
/// changed.
fn respond(emu: &Emulator, call: &Call) -> (Resp, bool) {
    let now = now_ms();
    let route = call.target.route();
    let mut world = emu.world();
    let budgets = world.budgets;
    if !call.auth_ok {
        let verdict = world.limiter.peek(&budgets, route, now);
        let mut resp = ld_error(401, Some("Invalid access token"));
        add_rate_headers(&mut resp, &verdict);
        return (resp, false);
    }
    let verdict = world.limiter.admit(&budgets, route, now);
    if let Some(limiter) = verdict.limited {
        world.announced_reset_ms = Some(verdict.reset_ms);
        let mut resp = ld_error(429, None);
        add_rate_headers(&mut resp, &verdict);
        if limiter == Limiter::Route {
            let secs = verdict.reset_ms.saturating_sub(now).div_ceil(1000);
            set_header(&mut resp, "Retry-After", &secs.to_string());
        }
        return (resp, false);
    }
    let (mut resp, applied) = match checked_body(emu, call) {
        Err((status, message)) => (ld_error(status, Some(&message)), false),
        Ok(body) => apply(&mut world, call, body.as_ref(), now),
    };
    add_rate_headers(&mut resp, &verdict);
    (resp, applied)
}

/// Version, route and body checks. `Ok(Some(body))` for a valid POST body;
/// `Err((status, message))` for LaunchDarkly's error response.
fn checked_body(emu: &Emulator, call: &Call) -> Result<Option<Value>, (u16, String)> {
    if let Some(v) = &call.version {
        if !SUPPORTED_VERSIONS.contains(&v.as_str()) {
            let why = if v == "20220603" {
                format!("LD-API-Version {v} reached end of life on 2025-04-15; use 20240415")
            } else {
                format!("Unsupported LD-API-Version \"{v}\"; supported: 20240415, beta")
            };
            return Err((400, why));
        }
    }
    let schema = match call.target.route {
        Some(Route::Create) => "SegmentBody",
        Some(Route::Contexts) => "SegmentUserState",
        Some(Route::Patch) => return checked_patch(emu, call).map(Some),
        Some(_) => return Ok(None),
        None if call.target.wrong_method => {
            return Err((405, format!("Method {} not allowed here", call.method)))
        }
        None => return Err((404, "Invalid resource identifier".into())),
    };
    let is_json = call.content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        let got = call.content_type.as_deref().unwrap_or("none");
        let msg = format!("Content-Type must be application/json, got {got}");
        return Err((400, msg));
    }
    let body: Value =
        serde_json::from_slice(&call.body).map_err(|e| (400, format!("Invalid JSON body: {e}")))?;
    emu.spec
        .validate(schema, &body)
        .map_err(|errors| (400, format!("Invalid request body: {}", errors.join("; "))))?;
    Ok(Some(body))
}

fn apply(world: &mut World, call: &Call, body: Option<&Value>, now: u64) -> (Resp, bool) {
    let t = &call.target;
    match t.route() {
        Route::List => return list(&world.segments, call),
        Route::CreateExport | Route::GetExport | Route::ExportFile => {
            return export_route(world, t, now)
        }
        _ => {}
    }
    let segments = &mut world.segments;
    let null = Value::Null;
    let body = body.unwrap_or(&null);
    let result =
        match t.route() {
            Route::Create => segments
                .create(
                    &t.project,
                    &t.environment,
                    SegmentSpec::from_validated(body),
                    now,
                )
                .map(|s| (json_response(StatusCode::CREATED, &s.to_ld_json()), true)),
            Route::Get => segments
                .get(&t.project, &t.environment, &t.key)
                .map(|s| (json_response(StatusCode::OK, &s.to_ld_json()), false)),
            Route::Contexts => segments
                .update_membership(
                    &t.project,
                    &t.environment,
                    &t.key,
                    MembershipChange::from_validated(body),
                    now,
                )
                .map(|()| (no_content(), true)),
            Route::GetContext => segments.get(&t.project, &t.environment, &t.key).map(|s| {
                let target = json!({
                    "userKey": t.context_key,
                    "included": s.included.contains(&t.context_key),
                    "excluded": s.excluded.contains(&t.context_key),
                });
                (json_response(StatusCode::OK, &target), false)
            }),
            Route::Patch => {
                let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
                segments
                    .rename(&t.project, &t.environment, &t.key, name, now)
                    .map(|s| (json_response(StatusCode::OK, &s.to_ld_json()), true))
            }
            Route::Delete => segments
                .check_env(&t.project, &t.environment)
                .and_then(
                    |()| match segments.delete(&t.project, &t.environment, &t.key) {
                        true => Ok((no_content(), true)),
                        false => Err(SegmentsError::NotFound),
                    },
                ),
            Route::List | Route::CreateExport | Route::GetExport | Route::ExportFile => {
                unreachable!("answered above")
            }
            Route::Unknown => Err(SegmentsError::NotFound),
        };
    result.unwrap_or_else(|e| (store_error(e, t), false))
}

fn store_error(e: SegmentsError, t: &Target) -> Resp {
    match e {
        SegmentsError::UnknownProject(p) => {
            ld_error(404, Some(&format!("Unknown project key \"{p}\"")))
        }
        SegmentsError::UnknownEnvironment(p, e) => ld_error(
            404,
            Some(&format!(
                "Unknown environment key \"{e}\" in project \"{p}\""
            )),
        ),
        SegmentsError::InvalidKey(k) => {
            ld_error(400, Some(&format!("Invalid context key \"{k}\"")))
        }
        SegmentsError::NotFound => {
            ld_error(404, Some(&format!("Unknown segment key \"{}\"", t.key)))
        }
        SegmentsError::Conflict(key) => ld_error(
            409,
            Some(&format!("Segment with key \"{key}\" already exists")),
        ),
        SegmentsError::NotUnbounded => ld_error(
            400,
            Some(&format!(
                "Segment \"{}\" is not a big segment; this operation only supports big segments",
                t.key
            )),
        ),
    }
}

/// The two ways a `PATCH` may rename a segment, checked against
/// LaunchDarkly's schemas: a JSON patch (`[PatchOperation]`, or
/// `PatchWithComment`) replacing `/name`, or a semantic patch
/// (`domain-model=launchdarkly.semanticpatch`) with an `updateName`
/// instruction. Returns `{"name": …}`; other edits are refused with a 400
/// naming what the emulator does not support.
fn checked_patch(emu: &Emulator, call: &Call) -> Result<Value, (u16, String)> {
    let ct = call.content_type.as_deref().unwrap_or("none");
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
    {
        return Err((
            400,
            format!("Content-Type must be application/json, got {ct}"),
        ));
    }
    let semantic = parts.any(|p| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("domain-model")
                && v.trim().trim_matches('"') == "launchdarkly.semanticpatch"
        })
    });
    let body: Value =
        serde_json::from_slice(&call.body).map_err(|e| (400, format!("Invalid JSON body: {e}")))?;
    let invalid =
        |errors: Vec<String>| (400, format!("Invalid request body: {}", errors.join("; ")));
    if semantic {
        let Some(fields) = body.as_object() else {
            return Err((400, "Invalid request body: expected object".into()));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !["comment", "environmentKey", "instructions"].contains(&k.as_str()))
        {
            return Err(invalid(vec![format!("unknown field \"{unknown}\"")]));
        }
        if !fields.get("environmentKey").is_some_and(Value::is_string) {
            return Err(invalid(vec![
                "missing required field \"environmentKey\"".into()
            ]));
        }
        let instructions = fields
            .get("instructions")
            .ok_or_else(|| invalid(vec!["missing required field \"instructions\"".into()]))?;
        emu.spec
            .validate("Instructions", instructions)
            .map_err(invalid)?;
        let mut name = None;
        for i in instructions.as_array().into_iter().flatten() {
            match (i.get("kind").and_then(Value::as_str), i.get("value")) {
                (Some("updateName"), Some(Value::String(v))) => name = Some(v.clone()),
                (Some("updateName"), _) => {
                    return Err(invalid(vec!["updateName needs a string \"value\"".into()]))
                }
                (kind, _) => {
                    return Err((
                        400,
                        format!("The emulator supports only updateName, not {kind:?}"),
                    ))
                }
            }
        }
        return name
            .map(|n| json!({"name": n}))
            .ok_or_else(|| invalid(vec!["no instructions".into()]));
    }
    let ops = if body.is_array() {
        emu.spec
            .validate("PatchWithComment", &json!({"patch": body}))
            .map_err(invalid)?;
        body
    } else {
        emu.spec
            .validate("PatchWithComment", &body)
            .map_err(invalid)?;
        body["patch"].clone()
    };
    let mut name = None;
    for op in ops.as_array().into_iter().flatten() {
        match (op["op"].as_str(), op["path"].as_str(), &op["value"]) {
            (Some("replace"), Some("/name"), Value::String(v)) => name = Some(v.clone()),
            (Some("replace"), Some("/name"), _) => {
                return Err(invalid(vec!["/name must be replaced with a string".into()]))
            }
            (o, p, _) => {
                return Err((
                    400,
                    format!("The emulator supports only replace /name, not {o:?} {p:?}"),
                ))
            }
        }
    }
    name.map(|n| json!({"name": n}))
        .ok_or_else(|| invalid(vec!["empty patch".into()]))
}

/// Largest page the listing serves, as LaunchDarkly caps it.
const MAX_LIMIT: usize = 50;

/// `GET /api/v2/segments/{p}/{e}`: `UserSegments`, ordered by key, paged by
/// `limit` (default 20) and `offset` as in API version 20240415.
fn list(segments: &crate::state::Segments, call: &Call) -> (Resp, bool) {
    let t = &call.target;
    let (mut limit, mut offset) = (20usize, 0usize);
    for pair in call.query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = value.parse::<usize>();
        match (name, number) {
            ("limit", Ok(n)) if (1..=MAX_LIMIT).contains(&n) => limit = n,
            ("offset", Ok(n)) => offset = n,
            ("limit" | "offset", _) => {
                let why = format!("{name} must be a non-negative integer (limit 1 to {MAX_LIMIT})");
                return (ld_error(400, Some(&why)), false);
            }
            _ => {
                let why = format!("The emulator does not support the query parameter {name}");
                return (ld_error(400, Some(&why)), false);
            }
        }
    }
    let all = match segments.list(&t.project, &t.environment) {
        Ok(all) => all,
        Err(e) => return (store_error(e, t), false),
    };
    let total = all.len();
    let items: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|s| s.to_ld_json())
        .collect();
    let base = format!("/api/v2/segments/{}/{}", t.project, t.environment);
    let link = |o: usize| json!({"href": format!("{base}?limit={limit}&offset={o}"), "type": "application/json"});
    let last = total.saturating_sub(1) / limit * limit;
    let mut links = json!({"self": link(offset), "first": link(0), "last": link(last)});
    if offset + limit < total {
        links["next"] = link(offset + limit);
    }
    if offset > 0 {
        links["prev"] = link(offset.saturating_sub(limit));
    }
    let body = json!({"items": items, "_links": links, "totalCount": total});
    (json_response(StatusCode::OK, &body), false)
}

/// The export routes: start one, read its status, download its file.
fn export_route(world: &mut World, t: &Target, now: u64) -> (Resp, bool) {
    let (p, e, k, id) = (&t.project, &t.environment, &t.key, &t.export_id);
    let unknown = || {
        let why = format!("Unknown export \"{id}\" of segment \"{k}\"");
        (ld_error(404, Some(&why)), false)
    };
    match t.route() {
        Route::CreateExport => {
            let keys: Vec<String> = match world.segments.get(p, e, k) {
                Ok(s) if !s.spec.unbounded => {
                    return (store_error(SegmentsError::NotUnbounded, t), false)
                }
                Ok(s) => s.included.iter().cloned().collect(),
                Err(err) => return (store_error(err, t), false),
            };
            let export = world.exports.start(Export {
                id: uuid::Uuid::new_v4().simple().to_string(),
                project: p.clone(),
                environment: e.clone(),
                segment_key: k.clone(),
                creation_ms: now,
                keys,
                polls_left: 0,
                completed: false,
            });
            // LaunchDarkly answers with no body: the id is the Location's last element.
            let mut resp = Resp::new(Default::default());
            set_header(&mut resp, "Location", &export.href());
            (resp, true)
        }
        Route::GetExport => match world.exports.poll(p, e, k, id) {
            Some(v) => (json_response(StatusCode::OK, &v), false),
            None => unknown(),
        },
        _ => match world.exports.file(p, e, k, id) {
            Some(Some(text)) => (text_response(StatusCode::OK, "text/csv", text), false),
            Some(None) => {
                let why = format!("Export \"{id}\" has not completed");
                (ld_error(404, Some(&why)), false)
            }
            None => unknown(),
        },
    }
}
