//! `auth` of a `[[sources]]` entry → [`ResolvedAuth`]: the scheme's
//! settings checked and its secrets read, once, at startup.

use super::raw::AuthConfig;
use super::secret_source::{read_env, read_secrets, SecretSource};
use super::{Problems, ResolvedAuth, Secret, SegmentBatches};
use std::time::Duration;

pub(super) fn resolve_auth(
    a: &AuthConfig,
    allow_unauthenticated: bool,
    env: &dyn SecretSource,
    p: &mut Problems,
    key: &str,
) -> Option<ResolvedAuth> {
    let before = p.0.len();
    let tolerance = Duration::from_secs(a.tolerance_seconds.unwrap_or(300));
    let secrets = |p: &mut Problems| {
        read_secrets(
            env,
            p,
            key,
            &a.secret_env,
            &a.secret_file,
            "secret_env",
            "secret_file",
        )
    };
    if a.batches.is_some() && a.scheme != "segment-signature" {
        p.add(
            format!("{key}.batches"),
            "only applies to scheme \"segment-signature\"",
        );
    }
    let auth = match a.scheme.as_str() {
        "header" => {
            let header = match &a.header {
                Some(h)
                    if actix_web::http::header::HeaderName::from_bytes(h.as_bytes()).is_ok() =>
                {
                    h.clone()
                }
                Some(h) => {
                    p.add(
                        format!("{key}.header"),
                        format!("{h:?} is not a valid header name"),
                    );
                    String::new()
                }
                None => {
                    p.add(format!("{key}.header"), "is required for scheme \"header\"");
                    String::new()
                }
            };
            ResolvedAuth::Header {
                header,
                secrets: secrets(p),
            }
        }
        "basic" => {
            let username = match &a.username_env {
                Some(n) => read_env(env, p, &format!("{key}.username_env"), n),
                None => {
                    p.add(
                        format!("{key}.username_env"),
                        "is required for scheme \"basic\"",
                    );
                    None
                }
            };
            let passwords = read_secrets(
                env,
                p,
                key,
                &a.password_env,
                &a.password_file,
                "password_env",
                "password_file",
            );
            ResolvedAuth::Basic {
                username: username.unwrap_or_else(|| Secret::new("")),
                passwords,
            }
        }
        "heap-hash" => ResolvedAuth::HeapHash {
            secrets: secrets(p),
            tolerance,
        },
        "segment-signature" => {
            ResolvedAuth::SegmentSignature {
                secrets: secrets(p),
                batches: match a.batches.as_deref() {
                    None | Some("signed") => SegmentBatches::Signed,
                    Some("first-event") => SegmentBatches::FirstEvent,
                    Some(other) => {
                        p.add(
                        format!("{key}.batches"),
                        format!("unknown value {other:?}; known: \"signed\" (default), \"first-event\""),
                    );
                        SegmentBatches::Signed
                    }
                },
            }
        }
        "standard-webhooks" => ResolvedAuth::StandardWebhooks {
            secrets: secrets(p),
            tolerance,
        },
        "none" => {
            if !allow_unauthenticated {
                p.add(
                    format!("{key}.scheme"),
                    "\"none\" accepts anyone's pushes; set allow_unauthenticated = true on the source to allow it",
                );
            }
            ResolvedAuth::None
        }
        other => {
            p.add(
                format!("{key}.scheme"),
                format!("unknown scheme {other:?}; known: header, basic, heap-hash, segment-signature, standard-webhooks, none"),
            );
            return None;
        }
    };
    (p.0.len() == before).then_some(auth)
}
