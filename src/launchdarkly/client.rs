//! The HTTP client: raw-token `Authorization`, `LD-API-Version`, JSON bodies.

use super::classify::{Attempt, Reply};
use crate::config::{LaunchDarklyConfig, Secret};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;
use std::time::Duration;

/// Body of `POST /api/v2/segments/{project}/{environment}` for a big segment.
#[derive(Debug, Serialize)]
pub struct NewSegment<'a> {
    /// The segment key (unique in its project and environment).
    pub key: &'a str,
    /// The segment's display name.
    pub name: &'a str,
    /// Free text; holds the link's ownership mark ([`ownership_mark`]).
    pub description: String,
    /// Tags shown in LaunchDarkly's UI.
    pub tags: &'a [String],
    /// Always true: a big (unbounded) segment, written through `…/contexts`.
    pub unbounded: bool,
    /// The context kind the segment's keys belong to.
    #[serde(rename = "unboundedContextKind")]
    pub unbounded_context_kind: &'a str,
}

/// Body of `POST …/{segmentKey}/contexts` (`SegmentUserState`): only `included` is written.
#[derive(Debug, Default, Serialize)]
pub struct MembershipUpdate<'a> {
    /// The changes to the segment's included list.
    pub included: IncludedList<'a>,
}

/// Keys to add to and remove from a big segment's included list.
#[derive(Debug, Default, Serialize)]
pub struct IncludedList<'a> {
    /// Keys that join the segment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<&'a str>,
    /// Keys that leave the segment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<&'a str>,
}

impl<'a> MembershipUpdate<'a> {
    /// The body for claimed members: (key, desired in) each.
    pub fn from_members(members: &'a [(String, bool)]) -> Self {
        let mut u = MembershipUpdate::default();
        for (key, include) in members {
            if *include {
                u.included.add.push(key);
            } else {
                u.included.remove.push(key);
            }
        }
        u
    }
}

/// The line a segment the bridge created carries in its description,
/// naming the link that owns it. On a 409 at creation the existing segment
/// is adopted only if one line of its description is exactly this mark (or
/// the destination sets `adopt_existing_segments`).
pub fn ownership_mark(link: &str) -> String {
    format!("managed by cohort-bridge link {link}")
}

/// Whether a segment (LaunchDarkly's JSON) carries the link's mark.
pub fn carries_mark(segment: &serde_json::Value, link: &str) -> bool {
    let mark = ownership_mark(link);
    segment
        .get("description")
        .and_then(|d| d.as_str())
        .is_some_and(|d| d.lines().any(|l| l.trim() == mark))
}

/// What LaunchDarkly holds for one context of a big segment: the
/// `BigSegmentTarget` of `GET …/{segment}/contexts/{key}` (its `userKey`
/// is the key asked for, so it is not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct MemberState {
    /// The key is on the segment's included list.
    pub included: bool,
    /// The key is on the segment's excluded list (the bridge never writes it).
    pub excluded: bool,
}

/// A LaunchDarkly REST client. `Debug` never shows the token.
#[derive(Clone, Debug)]
pub struct LdClient {
    pub(super) http: reqwest::Client,
    pub(super) base: reqwest::Url,
}

impl LdClient {
    /// A client for `launchdarkly.base_url`, sending `token` on every request
    /// and giving up on a request after `launchdarkly.request_timeout_ms`.
    pub fn new(cfg: &LaunchDarklyConfig, token: &Secret) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(token.expose()).map_err(|_| {
            anyhow::anyhow!("launchdarkly token contains characters not allowed in a header")
        })?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert("LD-API-Version", HeaderValue::from_str(&cfg.api_version)?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(5_000)))
            .user_agent(concat!("cohort-bridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = reqwest::Url::parse(&cfg.base_url)?;
        Ok(LdClient { http, base })
    }

    pub(super) fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(["api", "v2", "segments"]);
            path.extend(segments);
        }
        url
    }

    /// `POST …/segments/{project}/{environment}`: creates a big segment.
    pub async fn create_segment(
        &self,
        project: &str,
        environment: &str,
        body: &NewSegment<'_>,
    ) -> Attempt {
        self.post(self.url(&[project, environment]), body).await
    }

    /// `POST …/segments/{project}/{environment}/{segment}/contexts`: adds
    /// and removes members of a big segment.
    pub async fn update_membership(
        &self,
        project: &str,
        environment: &str,
        segment: &str,
        body: &MembershipUpdate<'_>,
    ) -> Attempt {
        self.post(self.url(&[project, environment, segment, "contexts"]), body)
            .await
    }

    /// `GET …/segments/{project}/{environment}/{segment}`: the attempt, and
    /// the segment's JSON when LaunchDarkly answered 2xx with a JSON body.
    pub async fn get_segment(
        &self,
        project: &str,
        environment: &str,
        segment: &str,
    ) -> (Attempt, Option<serde_json::Value>) {
        self.get_json(self.url(&[project, environment, segment]))
            .await
    }

    /// `GET …/segments/{project}/{environment}/{segment}/contexts/{key}`:
    /// the attempt, and the member's state when LaunchDarkly answered 2xx
    /// with a `BigSegmentTarget` body (`None` for any other body).
    pub async fn member_state(
        &self,
        project: &str,
        environment: &str,
        segment: &str,
        key: &str,
    ) -> (Attempt, Option<MemberState>) {
        let (attempt, json) = self
            .get_json(self.url(&[project, environment, segment, "contexts", key]))
            .await;
        let state = json.and_then(|v| serde_json::from_value(v).ok());
        (attempt, state)
    }

    /// `DELETE …/segments/{project}/{environment}/{segment}`: retiring a
    /// link with `--delete`.
    pub async fn delete_segment(&self, project: &str, environment: &str, segment: &str) -> Attempt {
        match self
            .http
            .delete(self.url(&[project, environment, segment]))
            .send()
            .await
        {
            Ok(resp) => Attempt::Replied(read_reply(resp).await),
            Err(e) if e.is_timeout() => Attempt::TimedOut,
            Err(e) if e.is_connect() => Attempt::NotSent(error_chain(&e)),
            Err(e) => Attempt::Transport(error_chain(&e)),
        }
    }

    /// `PATCH …/segments/{project}/{environment}/{segment}`: renames the
    /// segment with a JSON patch (`[{"op": "replace", "path": "/name", …}]`),
    /// the form reference/launchdarkly.md names first.
    pub async fn rename_segment(
        &self,
        project: &str,
        environment: &str,
        segment: &str,
        name: &str,
    ) -> Attempt {
        let body = serde_json::json!([{"op": "replace", "path": "/name", "value": name}]);
        match self
            .http
            .patch(self.url(&[project, environment, segment]))
            .json(&body)
            .send()
            .await
        {
            Ok(resp) => Attempt::Replied(read_reply(resp).await),
            Err(e) if e.is_timeout() => Attempt::TimedOut,
            Err(e) if e.is_connect() => Attempt::NotSent(error_chain(&e)),
            Err(e) => Attempt::Transport(error_chain(&e)),
        }
    }

    /// `GET url`: the attempt, and the JSON body of a 2xx answer.
    pub(super) async fn get_json(&self, url: reqwest::Url) -> (Attempt, Option<serde_json::Value>) {
        match self.http.get(url).send().await {
            Ok(resp) => {
                let (reply, body) = read_reply_body(resp).await;
                let json = (200..300)
                    .contains(&reply.status)
                    .then(|| serde_json::from_str(&body).ok())
                    .flatten();
                (Attempt::Replied(reply), json)
            }
            Err(e) if e.is_timeout() => (Attempt::TimedOut, None),
            Err(e) if e.is_connect() => (Attempt::NotSent(error_chain(&e)), None),
            Err(e) => (Attempt::Transport(error_chain(&e)), None),
        }
    }

    async fn post<T: Serialize>(&self, url: reqwest::Url, body: &T) -> Attempt {
        match self.http.post(url).json(body).send().await {
            Ok(resp) => Attempt::Replied(read_reply(resp).await),
            Err(e) if e.is_timeout() => Attempt::TimedOut,
            Err(e) if e.is_connect() => Attempt::NotSent(error_chain(&e)),
            Err(e) => Attempt::Transport(error_chain(&e)),
        }
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn header_i64(h: &HeaderMap, name: &str) -> Option<i64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn read_reply(resp: reqwest::Response) -> Reply {
    read_reply_body(resp).await.0
}

pub(super) async fn read_reply_body(resp: reqwest::Response) -> (Reply, String) {
    let status = resp.status().as_u16();
    let h = resp.headers();
    let reset_ms = header_i64(h, "x-ratelimit-reset");
    let retry_after_s = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let route_remaining = header_i64(h, "x-ratelimit-route-remaining");
    let request_id = h
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect::<String>());
    let remaining = [
        header_i64(h, "x-ratelimit-global-remaining"),
        route_remaining,
    ]
    .into_iter()
    .flatten()
    .min();
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    let reply = Reply {
        status,
        reset_ms,
        retry_after_s,
        remaining,
        route_remaining,
        message,
        request_id,
    };
    (reply, body)
}
