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
        }
    }

    /// Sends one request and records what came back.
    async fn send(
        file: PathBuf,
        source: String,
        req: reqwest::RequestBuilder,
        base: &str,
    ) -> anyhow::Result<Replayed> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("sending {} to {base}", file.display()))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Ok(Replayed {
            file,
            source,
            status,
            body,
        })
    }
}

/// Replays every file, in order, and returns what each got back.
pub async fn replay(
    settings: &Settings,
    url: &str,
    paths: &[PathBuf],
    source: Option<&str>,
) -> anyhow::Result<Vec<Replayed>> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let base = url.trim_end_matches('/');
    let mut out = Vec::new();
    for (file, explicit) in collect(paths)? {
        if source.is_none() {
            match partner_target(settings, &file) {
                None => {}
                Some(Err(e)) if !explicit => {
                    out.push(Replayed::skipped(file, e));
                    continue;
                }
                Some(Err(e)) => return Err(e),
                Some(Ok((key, token))) => {
                    let body = std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    let req = client
                        .post(format!("{base}/api/v2/segment-targets/{key}"))
                        .header("Content-Type", "application/json")
                        .header("Authorization", token)
                        .body(body);
                    let source = crate::config::partner_source_id(&key);
                    out.push(Replayed::send(file, source, req, base).await?);
                    continue;
                }
            }
        }
        let src = match source_for(settings, &file, source) {
            Ok(s) => s,
            Err(e) if !explicit => {
                out.push(Replayed::skipped(file, e));
                continue;
            }
            Err(e) => return Err(e),
        };
        let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let mut req = client
            .post(format!("{base}/v1/webhooks/{}", src.id))
            .body(body.clone());
        for (k, v) in auth_headers(&src, &body) {
            req = req.header(k, v);
        }
        out.push(Replayed::send(file, src.id.clone(), req, base).await?);
    }
    Ok(out)
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
