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
    let get = method == Method::GET;
    let post = method == Method::POST;
    let (route, ok, p) = match parts.as_slice() {
        ["api", "v2", "segments", p, e] => (Route::Create, post, [*p, *e, "", ""]),
        ["api", "v2", "segments", p, e, k] => (Route::Get, get, [*p, *e, *k, ""]),
        ["api", "v2", "segments", p, e, k, "contexts" | "users"] => {
            (Route::Contexts, post, [*p, *e, *k, ""])
        }
        ["api", "v2", "segments", p, e, k, "contexts" | "users", c] => {
            (Route::GetContext, get, [*p, *e, *k, *c])
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
        let t = parse(&Method::DELETE, "/api/v2/segments/p/e/k");
        assert!(t.wrong_method && t.route.is_none());
        assert_eq!(parse(&Method::GET, "/api/v2/flags").route(), Route::Unknown);
    }
}
