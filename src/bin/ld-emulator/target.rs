//! Maps a LaunchDarkly request path and method to the route it addresses
//! and its path parameters (percent-decoded).

use crate::faults::Route;
use hyper::Method;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Target {
    pub route: Option<Route>,
    /// The path has a known shape but the method is not served there.
    pub wrong_method: bool,
    pub project: String,
    pub environment: String,
    pub key: String,
    pub context_key: String,
    /// The export id of the export routes.
    pub export_id: String,
}

impl Target {
    pub fn route(&self) -> Route {
        self.route.unwrap_or(Route::Unknown)
    }
}

pub fn parse(method: &Method, path: &str) -> Target {
    let parts: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let m = |want: Method, route: Route| (route, *method == want);
    let (route, ok, p) = match parts.as_slice() {
        ["api", "v2", "segments", p, e] => {
            let (r, ok) = if *method == Method::GET {
                m(Method::GET, Route::List)
            } else {
                m(Method::POST, Route::Create)
            };
            (r, ok, [*p, *e, "", "", ""])
        }
        ["api", "v2", "segments", p, e, k] => {
            let (r, ok) = match *method {
                Method::PATCH => m(Method::PATCH, Route::Patch),
                Method::DELETE => m(Method::DELETE, Route::Delete),
                _ => m(Method::GET, Route::Get),
            };
            (r, ok, [*p, *e, *k, "", ""])
        }
        ["api", "v2", "segments", p, e, k, "contexts" | "users"] => {
            let (r, ok) = m(Method::POST, Route::Contexts);
            (r, ok, [*p, *e, *k, "", ""])
        }
        ["api", "v2", "segments", p, e, k, "contexts" | "users", c] => {
            let (r, ok) = m(Method::GET, Route::GetContext);
            (r, ok, [*p, *e, *k, *c, ""])
        }
        ["api", "v2", "segments", p, e, k, "exports"] => {
            let (r, ok) = m(Method::POST, Route::CreateExport);
            (r, ok, [*p, *e, *k, "", ""])
        }
        ["api", "v2", "segments", p, e, k, "exports", id] => {
            let (r, ok) = m(Method::GET, Route::GetExport);
            (r, ok, [*p, *e, *k, "", *id])
        }
        ["api", "v2", "segments", p, e, k, "exports", id, "file"] => {
            let (r, ok) = m(Method::GET, Route::ExportFile);
            (r, ok, [*p, *e, *k, "", *id])
        }
        _ => return Target::default(),
    };
    Target {
        route: ok.then_some(route),
        wrong_method: !ok,
        project: p[0].to_string(),
        environment: p[1].to_string(),
        key: p[2].to_string(),
        context_key: p[3].to_string(),
        export_id: p[4].to_string(),
    }
}

/// Decodes `%XX` escapes; invalid escapes are kept literally and invalid
/// UTF-8 is replaced, since a bad key should 404, not crash.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes() {
        let t = parse(&Method::POST, "/api/v2/segments/p/e");
        assert_eq!(
            (t.route, t.project.as_str(), t.environment.as_str()),
            (Some(Route::Create), "p", "e")
        );
        let t = parse(&Method::POST, "/api/v2/segments/p/e/k/users");
        assert_eq!((t.route, t.key.as_str()), (Some(Route::Contexts), "k"));
        let t = parse(&Method::GET, "/api/v2/segments/p/e/k/contexts/a%40b.c%2");
        assert_eq!(
            (t.route, t.context_key.as_str()),
            (Some(Route::GetContext), "a@b.c%2")
        );
        let t = parse(&Method::PUT, "/api/v2/segments/p/e/k");
        assert!(t.wrong_method && t.route.is_none());
        assert_eq!(
            parse(&Method::DELETE, "/api/v2/segments/p/e/k").route,
            Some(Route::Delete)
        );
        assert_eq!(
            parse(&Method::GET, "/api/v2/segments/p/e").route,
            Some(Route::List)
        );
        let t = parse(&Method::GET, "/api/v2/segments/p/e/k/exports/x1/file");
        assert_eq!(
            (t.route, t.export_id.as_str()),
            (Some(Route::ExportFile), "x1")
        );
        assert_eq!(parse(&Method::GET, "/api/v2/flags").route(), Route::Unknown);
    }
}
