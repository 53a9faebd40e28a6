//! The OpenAPI 3.1 document of the bridge's own HTTP API, served at
//! `GET /openapi.json`.
//!
//! It is generated from the code: each handler's `#[utoipa::path]` (route,
//! parameters, statuses, headers) and the `ToSchema` derives of the types the
//! handlers answer with ([`crate::ingest::Summary`], the error bodies of
//! `super::error`, the operator API's views). [`ApiDoc`] lists the handlers;
//! the test at the bottom reads every route registration under `src/http/`
//! (and `src/app.rs`) and fails when a served route is missing from the
//! document, or the document names a route nothing serves. The integration
//! tests (`tests/it/openapi.rs`) check real answers against the schemas and
//! run schemathesis against a running bridge.

use super::error::{MixpanelEnvelope, NativeError};
use crate::ingest::Summary;
use actix_web::HttpResponse;
use serde::Serialize;
use std::sync::OnceLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document: every route of the main listener.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cohort-bridge",
        description = "Keeps LaunchDarkly big segments in step with analytics-platform cohorts. \
            The receivers take each platform's own pushes (`/v1/webhooks/{source}`), the partner \
            endpoint LaunchDarkly's synced-segment pushes; the operator API (Bearer token) shows \
            links and dead letters and redrives or resyncs them. Receivers authenticate each \
            source as its sender does (shared-secret header, `Heap-Hash`, `X-Signature`, HTTP \
            Basic, Standard Webhooks' `webhook-*` headers): see each operation's description."
    ),
    paths(
        super::webhooks::receive,
        super::partner::receive,
        super::operator_api::list_links,
        super::operator_api::show_link,
        super::operator_api::dead_letters,
        super::operator_api::audit,
        super::operator_api::member,
        super::operator_api::redrive,
        super::operator_api::resync,
        super::operator_api::lifecycle::retire,
        super::operator_api::lifecycle::unfreeze,
        super::operator_api::reconcile::reconcile,
        super::operator_api::overview::overview,
        super::operator_api::page,
        super::operator_api::asset,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        serve,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "receivers", description = "Native receivers: one per configured source."),
        (name = "partner", description = "LaunchDarkly's synced-segment endpoint, reimplemented."),
        (name = "operator", description = "The operator API and page (`server.operator_token_env`)."),
        (name = "ops", description = "Health, readiness, metrics and this document."),
    )
)]
pub struct ApiDoc;

/// The security schemes the operations name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "operator_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The secret named by `server.operator_token_env` \
                         (unset: every operator route answers 404 `operator_api_disabled`).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "partner_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "A `[[partner.tokens]]` secret, raw as LaunchDarkly takes it (`Bearer <token>` is accepted too).",
            ))),
        );
    }
}

/// The JSON text of the document, computed once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document is plain data and always serializes")
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object)))]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// A receiver's 200: the native summary, or Mixpanel's success envelope.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum WebhookAnswer {
    Native(Summary),
    Mixpanel(MixpanelEnvelope),
}

/// A receiver's refusal: native, or Mixpanel's failure envelope.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum WebhookError {
    Native(NativeError),
    Mixpanel(MixpanelEnvelope),
}

/// `/healthz` and a ready `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: HealthStatus,
}

/// What `status` says when the answer is 200.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Ready,
}

/// An unready `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unready {
    pub status: UnreadyStatus,
    /// Why: shutting down, Redis's error, or the evicting memory policy.
    pub reason: String,
}

/// What `status` says when `/readyz` answers 503.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnreadyStatus {
    Unavailable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use syn::visit::Visit;

    /// (METHOD, path) pairs.
    type Routes = BTreeSet<(String, String)>;

    /// Collects route registrations written the actix-web way:
    /// `.route("/p", web::get()...)` on a `ServiceConfig`, an `App` or a
    /// `web::scope("/prefix")` chain, and `web::resource("/p").route(web::get()...)`.
    /// Anything it cannot read (a `web::route()` without a method, a
    /// `.service(handler)` of a macro-routed handler, `web::resource(..).to`)
    /// is reported, so a new style of registration fails the test until the
    /// test reads it.
    #[derive(Default)]
    struct Registrations {
        file: String,
        /// Prefixes of the scopes whose `.service(..)` arguments are being visited.
        scopes: Vec<String>,
        routes: Routes,
        unreadable: Vec<String>,
    }

    /// The last segment of a call's function path: `web::get()` → `get`.
    fn called(
        expr: &syn::Expr,
    ) -> Option<(
        String,
        &syn::punctuated::Punctuated<syn::Expr, syn::Token![,]>,
    )> {
        match expr {
            syn::Expr::Call(c) => match &*c.func {
                syn::Expr::Path(p) => Some((p.path.segments.last()?.ident.to_string(), &c.args)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The expression a method-call chain starts from.
    fn chain_base(mut expr: &syn::Expr) -> &syn::Expr {
        while let syn::Expr::MethodCall(m) = expr {
            expr = &m.receiver;
        }
        expr
    }

    fn string_literal(expr: &syn::Expr) -> Option<String> {
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    }

    /// `web::scope("/p")` or `web::resource("/p")` at the base of a chain:
    /// (which, "/p").
    fn based_on(expr: &syn::Expr) -> Option<(String, String)> {
        let (f, args) = called(chain_base(expr))?;
        if f != "scope" && f != "resource" {
            return None;
        }
        Some((f, string_literal(args.first()?)?))
    }

    /// The method of a `web::get().to(..)`-style route.
    fn method_of(route: &syn::Expr) -> Option<String> {
        let (f, _) = called(chain_base(route))?;
        ["get", "post", "put", "delete", "patch", "head"]
            .contains(&f.as_str())
            .then(|| f.to_uppercase())
    }

    impl Registrations {
        fn unreadable(&mut self, what: &str, node: &impl ToTokens) {
            let text = node.to_token_stream().to_string();
            self.unreadable
                .push(format!("{}: {what}: {text}", self.file));
        }

        fn prefix(&self) -> String {
            self.scopes.concat()
        }

        fn record(&mut self, method: String, path: &str) {
            // `{name:regex}` segments are `{name}` in the document.
            let path = regex::Regex::new(r"\{([^}:]+):[^}]*\}")
                .unwrap()
                .replace_all(&format!("{}{path}", self.prefix()), "{$1}")
                .into_owned();
            self.routes.insert((method, path));
        }
    }

    impl<'ast> Visit<'ast> for Registrations {
        fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
            let is_test = m.attrs.iter().any(|a| {
                a.path().is_ident("cfg") && a.to_token_stream().to_string().contains("test")
            });
            if !is_test {
                syn::visit::visit_item_mod(self, m);
            }
        }

        fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
            for a in &f.attrs {
                let name = a.path().segments.last().map(|s| s.ident.to_string());
                if matches!(
                    name.as_deref(),
                    Some("get" | "post" | "put" | "delete" | "patch" | "route")
                ) {
                    self.unreadable(
                        "a macro-routed handler (register it with .route)",
                        &f.sig.ident,
                    );
                }
            }
            syn::visit::visit_item_fn(self, f);
        }

        fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
            let on = based_on(&call.receiver);
            let method = call.method.to_string();
            match (method.as_str(), call.args.len()) {
                ("route", 2) => {
                    let path = string_literal(&call.args[0]);
                    let m = method_of(&call.args[1]);
                    match (path, m, &on) {
                        (Some(p), Some(m), None) => self.record(m, &p),
                        (Some(p), Some(m), Some((kind, prefix))) if kind == "scope" => {
                            self.record(m, &format!("{prefix}{p}"));
                        }
                        _ => self.unreadable("a route", call),
                    }
                }
                ("route", 1) => match (method_of(&call.args[0]), &on) {
                    (Some(m), Some((kind, p))) if kind == "resource" => {
                        let p = p.clone();
                        self.record(m, &p);
                    }
                    _ => self.unreadable("a route", call),
                },
                ("to", _) if on.as_ref().is_some_and(|(k, _)| k == "resource") => {
                    self.unreadable("a resource for every method", call);
                }
                ("service", _) => {
                    for arg in &call.args {
                        if based_on(arg).is_none() {
                            self.unreadable("a service that is not a scope or resource", arg);
                        }
                    }
                }
                _ => {}
            }
            // The arguments of a scope's `.service(..)` are under its prefix.
            self.visit_expr(&call.receiver);
            let scoped = match (&on, method.as_str()) {
                (Some((kind, p)), "service") if kind == "scope" => Some(p.clone()),
                _ => None,
            };
            if let Some(p) = &scoped {
                self.scopes.push(p.clone());
            }
            for arg in &call.args {
                self.visit_expr(arg);
            }
            if scoped.is_some() {
                self.scopes.pop();
            }
        }
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every route registered under `src/http/` and in `src/app.rs`.
    fn registered() -> (Routes, Vec<String>) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.join("app.rs")];
        rust_files(&root.join("http"), &mut files);
        let mut r = Registrations::default();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            r.file = f.strip_prefix(&root).unwrap().display().to_string();
            r.visit_file(&ast);
        }
        (r.routes, r.unreadable)
    }

    fn documented() -> Routes {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let mut out = Routes::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn every_route_the_bridge_serves_is_in_the_document_and_no_other() {
        let (served, unreadable) = registered();
        assert!(
            unreadable.is_empty(),
            "route registrations this test cannot read (write them as \
             `.route(\"/path\", web::get().to(handler))`, or teach the test):\n{}",
            unreadable.join("\n")
        );
        // The walker itself: it must see the routes everyone knows are there.
        for known in [
            ("POST", "/v1/webhooks/{source}"),
            ("GET", "/v1/operator/links/{link}"),
            ("GET", "/ops"),
            ("GET", "/metrics"),
        ] {
            assert!(
                served.contains(&(known.0.to_string(), known.1.to_string())),
                "the walker missed {known:?}: {served:?}"
            );
        }
        let documented = documented();
        let missing: Vec<_> = served.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "served but not in the OpenAPI document (add a #[utoipa::path] to the handler \
             and list it in ApiDoc's paths): {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            extra.is_empty(),
            "in the OpenAPI document but served by no route: {extra:?}"
        );
    }

    #[test]
    fn the_walker_reads_scopes_resources_and_refuses_what_it_cannot_read() {
        let code = r#"
            fn configure(cfg: &mut web::ServiceConfig) {
                cfg.service(web::scope("/a").route("/b", web::get().to(h))
                        .service(web::scope("/c").route("/d/{id:\\d+}", web::post().to(h))))
                    .service(web::resource("/e").route(web::delete().to(h)))
                    .route("/f", web::route().to(h))
                    .service(handler);
            }
            #[cfg(test)]
            mod tests { fn t() { App::new().route("/only-in-tests", web::get().to(h)); } }
        "#;
        let mut r = Registrations::default();
        r.visit_file(&syn::parse_file(code).unwrap());
        let want: Routes = [("GET", "/a/b"), ("POST", "/a/c/d/{id}"), ("DELETE", "/e")]
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(r.routes, want);
        assert_eq!(r.unreadable.len(), 2, "{:?}", r.unreadable);
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_security_schemes() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["operator_token"]["scheme"], "bearer");
        assert_eq!(schemes["partner_token"]["name"], "Authorization");
        let retry = &doc["paths"]["/v1/webhooks/{source}"]["post"]["responses"]["503"]["headers"];
        assert!(retry.get("Retry-After").is_some(), "{retry}");
    }
}
