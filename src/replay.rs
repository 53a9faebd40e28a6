//! `cohort-bridge replay`: sends recorded pushes (fixtures) to a bridge,
//! authenticated or signed exactly as the configured source would, and
//! reports what each got back.
//!
//! A fixture file is the exact request body. Directories are replayed in file
//! name order. Without `--source`, a file's source is the configured source
//! whose id, or else whose kind, equals the name of the file's directory; a
//! file found by walking a directory that names no source (an `expected.json`
//! beside the fixtures, say) is skipped and reported, while a file named on
//! the command line must resolve.
//! Heap pushes are signed with a fresh timestamp at send time, as Heap does.
//! Segment bodies, batches included, are signed over the whole body (what
//! Segment's pending fix does; accepted whatever the source's `batches`). Standard Webhooks pushes are signed
//! at send time with a `webhook-id` derived from the body, so replaying the
//! same file twice is a retried delivery (de-duplicated), as a sender's
//! retry would be. Mixpanel pushes carry HTTP Basic credentials.
//! Partner fixtures (`partner/<integrationKey>/*.json`) are posted to
//! `/api/v2/segment-targets/<integrationKey>` with `Authorization: <token>`,
//! the first `[[partner.tokens]]` secret allowed to use that integration.

use crate::clock::now_ms;
use crate::config::{Settings, Source};
use crate::verify;
use anyhow::{anyhow, bail, Context};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The result of one replayed file.
#[derive(Debug)]
pub struct Replayed {
    pub file: PathBuf,
    pub source: String,
    /// 0 when the file was skipped (no source for its directory).
    pub status: u16,
    pub body: String,
    /// Set by `--dry-run`: nothing was sent and `body` says what would have been.
    pub dry_run: bool,
    /// The request waited for the `--rate` limiter before it was sent.
    pub waited_for_rate: bool,
}

/// Expands files and directories into an ordered list of fixture files,
/// each marked `true` when it was named on the command line.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() {
            out.push((p.clone(), true));
        } else {
            out.extend(
                walk(std::slice::from_ref(p))?
                    .into_iter()
                    .map(|f| (f, false)),
            );
        }
    }
    Ok(out)
}

fn walk(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let mut nested = Vec::new();
            for e in entries {
                if e.is_dir() {
                    nested.push(e);
                } else if e.extension().is_some_and(|x| x == "json") {
                    out.push(e);
                }
            }
            out.extend(walk(&nested)?);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    Ok(out)
}

fn source_for(
    settings: &Settings,
    file: &Path,
    explicit: Option<&str>,
) -> anyhow::Result<Arc<Source>> {
    if let Some(id) = explicit {
        return settings
            .sources
            .get(id)
            .cloned()
            .ok_or_else(|| anyhow!("no source with id {id:?} in the configuration"));
    }
    let dir = file
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|d| d.to_str())
        .unwrap_or_default();
    settings
        .sources
        .get(dir)
        .or_else(|| settings.sources.values().find(|s| s.kind.as_str() == dir))
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "{}: no --source given and no source has the id or kind {dir:?}",
                file.display()
            )
        })
}

/// A partner fixture (`.../partner/<integrationKey>/<file>.json`): the
/// integration key and the token to send, the first configured secret of the
/// first `[[partner.tokens]]` entry allowed to use that integration.
fn partner_target(settings: &Settings, file: &Path) -> Option<anyhow::Result<(String, String)>> {
    let dir = file.parent()?;
    if dir.parent()?.file_name()? != "partner" {
        return None;
    }
    let key = dir.file_name()?.to_str()?.to_string();
    if !settings.partner.manifests.contains_key(&key) {
        return Some(Err(anyhow!(
            "{}: no partner manifest has the integration key {key:?}",
            file.display()
        )));
    }
    let token = settings
        .partner
        .tokens
        .iter()
        .filter(|t| t.allows(&key))
        .find_map(|t| t.secrets.first());
    Some(match token {
        Some(t) => Ok((key, t.expose().to_string())),
        None => Err(anyhow!(
            "{}: no [[partner.tokens]] entry may use the integration {key:?}",
            file.display()
        )),
    })
}

/// Headers the source would send with `body`: the signing is the scheme's
/// own ([`verify::sign`], beside its verifier).
pub fn auth_headers(source: &Source, body: &[u8]) -> Vec<(String, String)> {
    let mut h = vec![("Content-Type".to_string(), "application/json".to_string())];
    h.extend(verify::sign(&source.auth, body, now_ms()));
    h
}

impl Replayed {
    /// A file that was not sent, and why.
    fn skipped(file: PathBuf, why: anyhow::Error) -> Replayed {
        Replayed {
            file,
            source: String::new(),
            status: 0,
            body: format!("skipped: {why}"),
            dry_run: false,
            waited_for_rate: false,
        }
    }

    /// Whether the file was left out (no source for its directory).
    pub fn is_skipped(&self) -> bool {
        self.status == 0 && !self.dry_run
    }

    /// The answer's JSON body, for a 2xx that has one.
    fn answer(&self) -> Option<serde_json::Value> {
        if !(200..300).contains(&self.status) || self.dry_run {
            return None;
        }
        serde_json::from_str(&self.body).ok()
    }

    /// Whether the bridge answered that the delivery was a retry it had
    /// already applied (`"duplicate": true`).
    pub fn is_duplicate(&self) -> bool {
        self.answer()
            .is_some_and(|v| v.get("duplicate") == Some(&serde_json::Value::Bool(true)))
    }

    /// The changes this push had accepted: the `accepted` count of a 2xx
    /// answer, 0 for a duplicate (its changes were accepted the first time),
    /// for any other answer, and for the partner endpoint's bodiless 204.
    pub fn accepted(&self) -> u64 {
        if self.is_duplicate() {
            return 0;
        }
        self.answer()
            .and_then(|v| v.get("accepted").and_then(|a| a.as_u64()))
            .unwrap_or(0)
    }

    /// The line printed for this file (stdout): `file [source] -> status body`.
    pub fn line(&self) -> String {
        if self.dry_run {
            self.body.clone()
        } else if self.is_skipped() {
            format!("{} -> {}", self.file.display(), self.body)
        } else {
            format!(
                "{} [{}] -> {} {}",
                self.file.display(),
                self.source,
                self.status,
                self.body
            )
        }
    }
}

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Source id for every file (default: the directory name, as id or kind).
    pub source: Option<String>,
    /// At most this many requests per second, with no burst (a `governor`
    /// limiter); unset: each request is sent when the previous one is answered.
    pub rate: Option<NonZeroU32>,
    /// Print what would be sent (method, URL, headers with credentials
    /// redacted, body size) and send nothing.
    pub dry_run: bool,
}

/// One request to send. Its headers are made at send time
/// ([`Request::headers`]): Heap and Standard Webhooks signatures carry the
/// time they were made, so a paced push is signed after its wait.
#[derive(Debug)]
struct Request {
    file: PathBuf,
    source: String,
    url: String,
    auth: Auth,
    body: Vec<u8>,
}

/// How a request authenticates.
#[derive(Debug)]
enum Auth {
    /// A native receiver: the source's own scheme signs the body.
    Source(Arc<Source>),
    /// The partner endpoint: `Authorization: <token>`.
    PartnerToken(String),
}

/// Headers whose value is shown by `--dry-run`; every other value (tokens,
/// signatures, Basic credentials, a source's own secret header) is redacted.
const SHOWN_HEADERS: [&str; 3] = ["content-type", "webhook-id", "webhook-timestamp"];

impl Request {
    /// The headers the sender would send now.
    fn headers(&self) -> Vec<(String, String)> {
        match &self.auth {
            Auth::Source(src) => auth_headers(src, &self.body),
            Auth::PartnerToken(token) => vec![
                ("Content-Type".to_string(), "application/json".to_string()),
                ("Authorization".to_string(), token.clone()),
            ],
        }
    }

    /// What `--dry-run` prints: method, URL, headers (credentials redacted)
    /// and the body's size.
    fn describe(&self) -> String {
        let mut out = format!(
            "{} [{}] would send: POST {} ({} body bytes)",
            self.file.display(),
            self.source,
            redact_url(&self.url),
            self.body.len()
        );
        for (k, v) in self.headers() {
            let shown = SHOWN_HEADERS.contains(&k.to_ascii_lowercase().as_str());
            out.push_str(&format!(
                "\n    {k}: {}",
                if shown { v.as_str() } else { "<redacted>" }
            ));
        }
        out
    }
}

/// The URL without any user name or password it carries.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() || !u.username().is_empty() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// What one file becomes: a request to send, or a reason to skip it.
enum Step {
    Send(Request),
    Skip(Replayed),
}

/// Builds the request for `file` (or the reason it is skipped).
fn prepare(
    settings: &Settings,
    base: &str,
    file: PathBuf,
    explicit: bool,
    source: Option<&str>,
) -> anyhow::Result<Step> {
    if source.is_none() {
        match partner_target(settings, &file) {
            None => {}
            Some(Err(e)) if !explicit => return Ok(Step::Skip(Replayed::skipped(file, e))),
            Some(Err(e)) => return Err(e),
            Some(Ok((key, token))) => {
                let body =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                return Ok(Step::Send(Request {
                    source: crate::config::partner_source_id(&key),
                    url: format!("{base}/api/v2/segment-targets/{key}"),
                    auth: Auth::PartnerToken(token),
                    body,
                    file,
                }));
            }
        }
    }
    let src = match source_for(settings, &file, source) {
        Ok(s) => s,
        Err(e) if !explicit => return Ok(Step::Skip(Replayed::skipped(file, e))),
        Err(e) => return Err(e),
    };
    let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    Ok(Step::Send(Request {
        source: src.id.clone(),
        url: format!("{base}/v1/webhooks/{}", src.id),
        auth: Auth::Source(src),
        body,
        file,
    }))
}

/// Sends one request and records what came back.
async fn send(client: &reqwest::Client, req: Request, base: &str) -> anyhow::Result<Replayed> {
    let mut builder = client.post(&req.url);
    for (k, v) in req.headers() {
        builder = builder.header(k, v);
    }
    let builder = builder.body(req.body);
    let resp = builder
        .send()
        .await
        .with_context(|| format!("sending {} to {base}", req.file.display()))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Ok(Replayed {
        file: req.file,
        source: req.source,
        status,
        body,
        dry_run: false,
        waited_for_rate: false,
    })
}

/// Replays every file, in order, and returns what each got back.
pub async fn replay(
    settings: &Settings,
    url: &str,
    paths: &[PathBuf],
    source: Option<&str>,
) -> anyhow::Result<Vec<Replayed>> {
    let opts = Options {
        source: source.map(str::to_string),
        ..Options::default()
    };
    replay_with(settings, url, paths, &opts, |_, _, _| {}).await
}

/// Replays every file, in order, as `opts` says, calling `on_file(done,
/// total, result)` after each one; returns what each got back.
pub async fn replay_with(
    settings: &Settings,
    url: &str,
    paths: &[PathBuf],
    opts: &Options,
    mut on_file: impl FnMut(usize, usize, &Replayed),
) -> anyhow::Result<Vec<Replayed>> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let limiter = opts
        .rate
        .map(|n| RateLimiter::direct(Quota::per_second(n).allow_burst(NonZeroU32::MIN)));
    let base = url.trim_end_matches('/');
    let files = collect(paths)?;
    let total = files.len();
    let mut out = Vec::with_capacity(total);
    for (file, explicit) in files {
        let result = match prepare(settings, base, file, explicit, opts.source.as_deref())? {
            Step::Skip(r) => r,
            Step::Send(req) if opts.dry_run => Replayed {
                body: req.describe(),
                file: req.file,
                source: req.source,
                status: 0,
                dry_run: true,
                waited_for_rate: false,
            },
            Step::Send(req) => {
                // A token now, or wait for the next one: which of the two is
                // recorded, so the summary shows that the pace held requests back.
                let waited = match &limiter {
                    Some(l) if l.check().is_err() => {
                        l.until_ready().await;
                        true
                    }
                    _ => false,
                };
                // Signed in `send`, after the wait: a paced Heap push carries a fresh time.
                let mut r = send(&client, req, base).await?;
                r.waited_for_rate = waited;
                r
            }
        };
        on_file(out.len() + 1, total, &result);
        out.push(result);
    }
    Ok(out)
}
/// The table a replay ends with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Files found (named, or under the directories named).
    pub files: usize,
    /// Files left out: their directory names no source.
    pub skipped: usize,
    /// Requests sent (one per file that was not skipped).
    pub pushes: usize,
    pub status_2xx: usize,
    pub status_4xx: usize,
    pub status_5xx: usize,
    /// Answers outside 2xx, 4xx and 5xx.
    pub status_other: usize,
    /// 2xx answers saying the delivery had already been applied.
    pub duplicates: usize,
    /// The sum of `accepted` over the 2xx answers that were not duplicates.
    pub accepted_changes: u64,
    /// `--dry-run`: requests described, not sent.
    pub not_sent: usize,
    /// Requests that waited for the `--rate` limiter.
    pub paced: usize,
}

impl Summary {
    /// Counts what `results` hold.
    pub fn of(results: &[Replayed]) -> Summary {
        let mut s = Summary {
            files: results.len(),
            ..Summary::default()
        };
        for r in results {
            if r.dry_run {
                s.not_sent += 1;
                continue;
            }
            if r.is_skipped() {
                s.skipped += 1;
                continue;
            }
            s.pushes += 1;
            s.paced += usize::from(r.waited_for_rate);
            s.accepted_changes += r.accepted();
            s.duplicates += usize::from(r.is_duplicate());
            match r.status {
                200..=299 => s.status_2xx += 1,
                400..=499 => s.status_4xx += 1,
                500..=599 => s.status_5xx += 1,
                _ => s.status_other += 1,
            }
        }
        s
    }

    /// The rows of the table: label and count.
    pub fn rows(&self) -> Vec<(&'static str, u64)> {
        let mut rows = vec![
            ("files", self.files as u64),
            ("skipped", self.skipped as u64),
            ("pushes sent", self.pushes as u64),
            ("2xx", self.status_2xx as u64),
            ("4xx", self.status_4xx as u64),
            ("5xx", self.status_5xx as u64),
        ];
        if self.status_other > 0 {
            rows.push(("other status", self.status_other as u64));
        }
        rows.push(("duplicates", self.duplicates as u64));
        rows.push(("accepted changes", self.accepted_changes));
        rows.push(("paced by --rate", self.paced as u64));
        if self.not_sent > 0 {
            rows.push(("not sent (--dry-run)", self.not_sent as u64));
        }
        rows
    }

    /// The table as printed: a title, then one `label  count` row each.
    pub fn table(&self) -> String {
        let mut out = String::from("replay summary\n");
        for (label, n) in self.rows() {
            out.push_str(&format!("  {label:<22}{n:>10}\n"));
        }
        out
    }
}

/// `cohort-bridge replay`: replays, prints one line per file on stdout, a
/// progress bar over the files on stderr when stderr is a terminal (plain
/// lines only otherwise), and the summary table on stderr at the end (stdout
/// keeps exactly one line per file, for scripts). Returns the summary.
pub async fn run_cli(
    settings: &Settings,
    url: &str,
    paths: &[PathBuf],
    opts: &Options,
) -> anyhow::Result<Summary> {
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files {msg}",
            )
            .expect("a valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let results = replay_with(settings, url, paths, opts, |done, total, r| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(r.file.display().to_string());
        bar.suspend(|| println!("{}", r.line()));
    })
    .await;
    bar.finish_and_clear();
    let summary = Summary::of(&results?);
    eprint!("{}", summary.table());
    Ok(summary)
}

#[cfg(test)]
mod signing_tests {
    use super::*;
    use crate::config::{ResolvedAuth, Secret};

    #[test]
    fn segment_batches_are_signed_over_the_whole_body() {
        // The batched vector of reference/signature-vectors.json: replay
        // signs the full array (accepted whatever the source's `batches`).
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../reference/signature-vectors.json")).unwrap();
        let v = all["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["platform"] == "segment-webhooks-actions (batching enabled)")
            .unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let secret = Secret::new(v["secret"].as_str().unwrap());
        let auth = ResolvedAuth::SegmentSignature {
            secrets: vec![secret],
            batches: Default::default(),
        };
        let source = Source {
            id: "segment".into(),
            kind: crate::config::SourceKind::Segment,
            destinations: vec![],
            key_field: "userId".into(),
            auth,
            context_kinds: vec![],
        };
        let headers = auth_headers(&source, body);
        assert_eq!(
            headers[1..],
            [(
                "X-Signature".to_string(),
                v["x_signature_if_full_body_signed"]
                    .as_str()
                    .unwrap()
                    .to_string()
            )]
        );
    }
}
