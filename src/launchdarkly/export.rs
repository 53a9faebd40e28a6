//! Reading a big segment back: start an export, read its status, download
//! its file and parse it, strictly, in the layout `docs/launchdarkly.md`
//! ("The export file: the layout the bridge assumes") writes down. The
//! layout is LaunchDarkly's documented *import* CSV, because the export's
//! is not documented: anything else is an [`ExportError`], never a guess.

use super::classify::{Attempt, Reply};
use super::client::{error_chain, read_reply_body, LdClient};
use serde_json::Value;
use std::time::Duration;

/// The whole download may take this long (the client's per-request timeout
/// is for small JSON calls; a million-key file takes longer).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The longest context key the parser accepts (LaunchDarkly's keys are far
/// shorter; a longer "key" means the file is not what we think it is).
const MAX_KEY_BYTES: usize = 64 * 1024;

/// Why an export could not be read: the message says what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The status or file does not have the layout the bridge assumes.
    #[error("unexpected export layout: {0}")]
    Layout(String),
    /// LaunchDarkly reports that the export failed.
    #[error("LaunchDarkly reports the export as {0:?}")]
    Failed(String),
}

/// What `GET …/exports/{id}` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportStatus {
    /// Still being prepared (the status text as given).
    Running(String),
    /// Ready: the file's link (`href` as given, maybe relative).
    Completed {
        /// Where the file is.
        href: String,
    },
}

impl ExportStatus {
    /// Reads an `Export` body; see the module docs for the rules.
    pub fn parse(body: &Value) -> Result<ExportStatus, ExportError> {
        let layout = |m: String| Err(ExportError::Layout(m));
        let Some(status) = body.get("status").and_then(Value::as_str) else {
            return layout(format!("export status has no string \"status\": {body}"));
        };
        match status {
            "completed" | "complete" => {}
            "failed" | "error" | "stopped" => return Err(ExportError::Failed(status.into())),
            other => return Ok(ExportStatus::Running(other.into())),
        }
        let Some(links) = body.get("_links").and_then(Value::as_object) else {
            return layout("a completed export has no \"_links\" object".into());
        };
        let link = links.get("file").or_else(|| {
            let others: Vec<&Value> = links
                .iter()
                .filter(|(k, _)| k.as_str() != "self")
                .map(|(_, v)| v)
                .collect();
            (others.len() == 1).then(|| others[0])
        });
        let Some(link) = link else {
            let names: Vec<&String> = links.keys().collect();
            return layout(format!(
                "a completed export's _links name no single file link: {names:?}"
            ));
        };
        if let Some(t) = link.get("type").and_then(Value::as_str) {
            if !is_csv(t) {
                return layout(format!("the export file's type is {t:?}, not text/csv"));
            }
        }
        match link.get("href").and_then(Value::as_str) {
            Some(href) if !href.is_empty() => Ok(ExportStatus::Completed { href: href.into() }),
            _ => layout("the export file's link has no \"href\"".into()),
        }
    }
}

fn is_csv(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("text/csv") || media.eq_ignore_ascii_case("application/octet-stream")
}

/// Parses the export file as it streams in: each record must be exactly one
/// field, the context key; there is no header row. Push-based, so the file
/// is never held whole: [`feed`](ExportKeys::feed) each chunk, then
/// [`finish`](ExportKeys::finish).
#[derive(Debug)]
pub struct ExportKeys {
    reader: csv_core::Reader,
    field: Vec<u8>,
    field_len: usize,
    ends: [usize; 2],
    ends_len: usize,
    records: u64,
}

impl Default for ExportKeys {
    fn default() -> Self {
        ExportKeys {
            reader: csv_core::Reader::new(),
            field: vec![0; 256],
            field_len: 0,
            ends: [0; 2],
            ends_len: 0,
            records: 0,
        }
    }
}

impl ExportKeys {
    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Parses one chunk, appending the keys of the records it completes.
    pub fn feed(&mut self, chunk: &[u8], keys: &mut Vec<String>) -> Result<(), ExportError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.run(chunk, keys)
    }

    /// Ends the file: a last record without a line break is taken.
    pub fn finish(&mut self, keys: &mut Vec<String>) -> Result<(), ExportError> {
        self.run(&[], keys)
    }

    fn run(&mut self, mut input: &[u8], keys: &mut Vec<String>) -> Result<(), ExportError> {
        use csv_core::ReadRecordResult as R;
        loop {
            let (result, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.field[self.field_len..],
                &mut self.ends[self.ends_len..],
            );
            input = &input[nin..];
            self.field_len += nout;
            self.ends_len += nend;
            match result {
                R::InputEmpty => return Ok(()),
                R::End => return Ok(()),
                R::OutputFull => {
                    if self.field.len() >= MAX_KEY_BYTES {
                        return Err(
                            self.error(format!("a field is longer than {MAX_KEY_BYTES} bytes"))
                        );
                    }
                    self.field.resize(self.field.len() * 2, 0);
                }
                R::OutputEndsFull => {
                    return Err(self.error(
                        "it has more than one field (expected only the context key, no header)"
                            .into(),
                    ));
                }
                R::Record => {
                    if self.ends_len != 1 {
                        return Err(self.error(format!(
                            "it has {} fields (expected only the context key, no header)",
                            self.ends_len
                        )));
                    }
                    let bytes = &self.field[..self.ends[0]];
                    let key = std::str::from_utf8(bytes)
                        .map_err(|_| self.error("it is not UTF-8".into()))?;
                    if key.is_empty() {
                        return Err(self.error("its context key is empty".into()));
                    }
                    keys.push(key.to_string());
                    self.records += 1;
                    self.field_len = 0;
                    self.ends_len = 0;
                }
            }
        }
    }

    fn error(&self, why: String) -> ExportError {
        ExportError::Layout(format!(
            "record {} of the export file: {why}",
            self.records + 1
        ))
    }
}

impl LdClient {
    /// `POST …/{segment}/exports`: starts an export. The attempt, and the
    /// export id (the last path element of `Location`) on a 2xx.
    pub async fn start_export(
        &self,
        project: &str,
        environment: &str,
        segment: &str,
    ) -> (Attempt, Option<String>) {
        let url = self.url(&[project, environment, segment, "exports"]);
        match self.http.post(url).send().await {
            Ok(resp) => {
                let id = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| l.split('?').next())
                    .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
                    .filter(|id| !id.is_empty())
                    .map(str::to_string);
                let (reply, _) = read_reply_body(resp).await;
                (Attempt::Replied(reply), id)
            }
            Err(e) => (transport(&e), None),
        }
    }

    /// `GET …/{segment}/exports/{id}`: the attempt and the `Export` JSON.
    pub async fn get_export(
        &self,
        project: &str,
        environment: &str,
        segment: &str,
        id: &str,
    ) -> (Attempt, Option<Value>) {
        self.get_json(self.url(&[project, environment, segment, "exports", id]))
            .await
    }

    /// `GET href`: the export file, as a response whose body the caller
    /// streams. A relative `href` is resolved against `base_url` and sent
    /// with the token; an absolute one on another origin (a signed storage
    /// URL) is fetched without it, so the token never leaves LaunchDarkly.
    /// `Err` carries the reply of a non-2xx answer, or the transport error.
    pub async fn download_export(&self, href: &str) -> Result<reqwest::Response, Attempt> {
        let url = self
            .base
            .join(href)
            .map_err(|e| Attempt::NotSent(format!("export file link {href:?}: {e}")))?;
        let same_origin = url.origin() == self.base.origin();
        let request = if same_origin {
            self.http.get(url)
        } else {
            reqwest::Client::new().get(url)
        };
        match request.timeout(DOWNLOAD_TIMEOUT).send().await {
            Ok(resp) if resp.status().is_success() => {
                let ct = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if is_csv(ct) {
                    Ok(resp)
                } else {
                    let reply = Reply::status_only(
                        resp.status().as_u16(),
                        format!("unexpected export layout: the file's Content-Type is {ct:?}, not text/csv"),
                    );
                    Err(Attempt::Replied(reply))
                }
            }
            Ok(resp) => Err(Attempt::Replied(read_reply_body(resp).await.0)),
            Err(e) => Err(transport(&e)),
        }
    }
}

fn transport(e: &reqwest::Error) -> Attempt {
    if e.is_timeout() {
        Attempt::TimedOut
    } else if e.is_connect() {
        Attempt::NotSent(error_chain(e))
    } else {
        Attempt::Transport(error_chain(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_all(chunks: &[&[u8]]) -> Result<Vec<String>, ExportError> {
        let mut p = ExportKeys::default();
        let mut keys = Vec::new();
        for c in chunks {
            p.feed(c, &mut keys)?;
        }
        p.finish(&mut keys)?;
        Ok(keys)
    }

    #[test]
    fn keys_split_across_chunks_quoted_and_without_a_last_line_break() {
        let keys = parse_all(&[b"alpha\r\nbe", b"ta\n\"a,\"\"b\"\"\"\n\ngam", b"ma"]).unwrap();
        assert_eq!(keys, vec!["alpha", "beta", "a,\"b\"", "gamma"]);
        assert_eq!(parse_all(&[b""]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_second_column_or_header_is_refused_naming_the_record() {
        let e = parse_all(&[b"contextKey,contextKind\r\nu1,user\r\n"]).unwrap_err();
        assert!(e.to_string().contains("record 1"), "{e}");
        assert!(
            e.to_string().contains("more than one field") || e.to_string().contains("2 fields"),
            "{e}"
        );
        let e = parse_all(&[b"a\nb,c\n"]).unwrap_err();
        assert!(e.to_string().contains("record 2"), "{e}");
        assert!(parse_all(&[b"\xff\xfe\n"]).is_err());
    }

    #[test]
    fn status_is_read_strictly() {
        let done = json!({"status": "completed", "_links": {"self": {"href": "/x"}, "file": {"href": "/x/file", "type": "text/csv"}}});
        assert_eq!(
            ExportStatus::parse(&done),
            Ok(ExportStatus::Completed {
                href: "/x/file".into()
            })
        );
        let other = json!({"status": "complete", "_links": {"self": {"href": "/x"}, "download": {"href": "https://s3/x"}}});
        assert_eq!(
            ExportStatus::parse(&other),
            Ok(ExportStatus::Completed {
                href: "https://s3/x".into()
            })
        );
        assert_eq!(
            ExportStatus::parse(&json!({"status": "in_progress"})),
            Ok(ExportStatus::Running("in_progress".into()))
        );
        assert!(matches!(
            ExportStatus::parse(&json!({"status": "failed"})),
            Err(ExportError::Failed(_))
        ));
        let json_file = json!({"status": "completed", "_links": {"file": {"href": "/f", "type": "application/json"}}});
        assert!(matches!(
            ExportStatus::parse(&json_file),
            Err(ExportError::Layout(_))
        ));
        assert!(matches!(
            ExportStatus::parse(&json!({"status": "completed"})),
            Err(ExportError::Layout(_))
        ));
        assert!(matches!(
            ExportStatus::parse(&json!({})),
            Err(ExportError::Layout(_))
        ));
    }
}
