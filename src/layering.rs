//! The layering rule, as a test: a module may only name (`crate::` paths)
//! modules on a lower line of [`LAYERS`]; modules on the same line may not
//! name each other. `ARCHITECTURE.md` explains the order.
//!
//! The scanner reads every `.rs` file under `src/` (not `src/main.rs` nor
//! `src/bin/`, which sit above the library), drops comments, doc comments and
//! string literals, and collects each `crate::<module>` it finds: in `use`
//! lines, in `use crate::{a, b::c}` groups (over several lines too) and in
//! inline paths such as `crate::clock::now_ms()`. Test code inside a module
//! counts like any other code of that module.

use std::path::Path;

/// Top to bottom. A new top-level module must be given a line here.
const LAYERS: &[&[&str]] = &[
    &["app"],
    &["http", "replay"],
    &["operator", "flush"],
    &["reconcile"],
    &["ingest"],
    &["store"],
    &["sources"],
    &["verify"],
    &["launchdarkly"],
    &["config"],
    &["naming", "metrics", "clock", "telemetry", "layering"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|line| line.contains(&module))
}

/// `src/store/mod.rs` → `store`, `src/clock.rs` → `clock`; `None` for the
/// crate root and for what sits above the library.
fn module_of(relative: &str) -> Option<&str> {
    let relative = relative.strip_prefix("src/").unwrap_or(relative);
    if relative == "lib.rs" || relative == "main.rs" || relative.starts_with("bin/") {
        return None;
    }
    Some(match relative.split_once('/') {
        Some((dir, _)) => dir,
        None => relative.strip_suffix(".rs").unwrap_or(relative),
    })
}

/// The source with comments and string/char literals blanked out (newlines
/// kept, so line numbers still hold).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    blank(&mut out, ' ');
                    i += 1;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    blank(&mut out, ' ');
                    i += 1;
                    if depth == 0 {
                        blank(&mut out, ' ');
                        i += 1;
                        break;
                    }
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br#"…"#: skip to the quote followed by as many #.
            let open = chars[i..].iter().position(|&c| c == '"').unwrap_or(0);
            for _ in 0..=open {
                blank(&mut out, ' ');
            }
            i += open + 1;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        blank(&mut out, ' ');
                    }
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            blank(&mut out, ' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, ' ');
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            blank(&mut out, ' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            blank(&mut out, ' ');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    blank(&mut out, ' ');
                    i += 1;
                }
                blank(&mut out, ' ');
                i += 1;
            }
            blank(&mut out, ' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `i` a raw string starts (`r"`, `r#"`, `br"` …, not inside an
/// identifier): how many `#` it uses.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && is_ident(chars[i - 1]) {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some(hashes)
}

/// `'x'` or `'\n'` rather than a lifetime `'a`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `crate::<module>` in `source`, as (1-based line, module).
fn references(source: &str) -> Vec<(usize, String)> {
    let code = code_only(source);
    let chars: Vec<char> = code.chars().collect();
    let newlines: Vec<usize> = (0..chars.len()).filter(|&k| chars[k] == '\n').collect();
    let line_at = |i: usize| 1 + newlines.partition_point(|&k| k < i);
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&chars, i, "crate::") {
        i = at + "crate::".len();
        let before = at.checked_sub(1).map(|k| chars[k]);
        if before.is_some_and(|c| is_ident(c) || c == '$') {
            continue;
        }
        let mut j = skip_space(&chars, i);
        if chars.get(j) == Some(&'{') {
            // A group: the first identifier of each top-level item.
            let mut depth = 0;
            let mut expect_item = true;
            while j < chars.len() {
                match chars[j] {
                    '{' => {
                        depth += 1;
                        expect_item = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_item = true,
                    c if is_ident(c) && expect_item && depth == 1 => {
                        let (name, end) = ident(&chars, j);
                        found.push((line_at(j), name));
                        expect_item = false;
                        j = end;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else {
            j = skip_space(&chars, j);
            let (name, _) = ident(&chars, j);
            if !name.is_empty() {
                found.push((line_at(at), name));
            }
        }
    }
    found
}

fn find(chars: &[char], from: usize, needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().collect();
    (from..chars.len().saturating_sub(needle.len() - 1))
        .find(|&k| chars[k..k + needle.len()] == needle[..])
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

fn ident(chars: &[char], start: usize) -> (String, usize) {
    let end = start + chars[start..].iter().take_while(|&&c| is_ident(c)).count();
    (chars[start..end].iter().collect(), end)
}

/// What is wrong with `source`, the file `file` of `module`, one line each.
fn violations(file: &str, module: &str, source: &str) -> Vec<String> {
    let Some(own) = layer_of(module) else {
        return vec![format!(
            "{file}: module `{module}` has no line in LAYERS (src/layering.rs): place it"
        )];
    };
    let mut problems = Vec::new();
    for (line, target) in references(source) {
        if target == module || target == "self" {
            continue;
        }
        match layer_of(&target) {
            None => problems.push(format!(
                "{file}:{line}: `{module}` names `crate::{target}`, which has no line in LAYERS (src/layering.rs)"
            )),
            Some(theirs) if theirs < own => problems.push(format!(
                "{file}:{line}: `{module}` imports `{target}`, which sits above it"
            )),
            Some(theirs) if theirs == own => problems.push(format!(
                "{file}:{line}: `{module}` imports `{target}`, which sits on the same line"
            )),
            Some(_) => {}
        }
    }
    problems
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_points_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut problems = Vec::new();
    for path in files {
        let relative = path
            .strip_prefix(root)
            .expect("under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        let Some(module) = module_of(&relative) else {
            continue;
        };
        let source = std::fs::read_to_string(&path).expect("readable source");
        problems.extend(violations(&relative, module, &source));
    }
    assert!(
        problems.is_empty(),
        "imports that do not point down (see ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

mod scanner {
    use super::*;

    #[test]
    fn an_upward_import_is_reported_with_file_line_and_both_modules() {
        let src = "use std::fmt;\nuse crate::sources::SourceKind;\n";
        let found = violations("src/config/mod.rs", "config", src);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("src/config/mod.rs:2:"), "{found:?}");
        assert!(found[0].contains("`config`") && found[0].contains("`sources`"));
    }

    #[test]
    fn a_downward_import_is_not_reported() {
        let src =
            "use crate::config::Source;\nuse crate::verify;\nfn f() { crate::clock::now_ms(); }\n";
        assert!(violations("src/sources/mod.rs", "sources", src).is_empty());
    }

    #[test]
    fn an_import_of_the_own_module_is_not_reported() {
        let src = "use crate::store::keys;\n";
        assert!(violations("src/store/mod.rs", "store", src).is_empty());
    }

    #[test]
    fn modules_on_the_same_line_may_not_import_each_other() {
        let found = violations("src/flush/mod.rs", "flush", "use crate::operator;\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("same line"), "{found:?}");
    }

    #[test]
    fn a_grouped_use_is_seen_item_by_item() {
        let src =
            "use crate::{\n    config::Source,\n    http::{ops, Application},\n    clock,\n};\n";
        assert_eq!(
            references(src),
            vec![
                (2, "config".to_string()),
                (3, "http".to_string()),
                (4, "clock".to_string())
            ]
        );
        let found = violations("src/store/mod.rs", "store", src);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("src/store/mod.rs:3:") && found[0].contains("`http`"));
    }

    #[test]
    fn an_inline_path_is_seen() {
        let src = "fn f() {\n    if crate::http::ops::evicts(&p) {}\n}\n";
        let found = violations("src/store/mod.rs", "store", src);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("src/store/mod.rs:2:"), "{found:?}");
    }

    #[test]
    fn comments_doc_comments_and_strings_are_ignored() {
        let src = concat!(
            "//! Unlike crate::http, this module …\n",
            "/// See crate::http::Application.\n",
            "// use crate::http;\n",
            "/* crate::http /* nested crate::app */ crate::http */\n",
            "const A: &str = \"use crate::http;\";\n",
            "const B: &str = r#\"crate::http \"quoted\" \"#;\n",
            "const C: char = '\"'; fn g<'a>(x: &'a str) {}\n",
            "pub(crate) fn h() {}\n",
            "macro_rules! m { () => { $crate::http::x() } }\n",
        );
        assert_eq!(references(src), vec![]);
    }

    #[test]
    fn code_after_a_comment_or_string_is_still_seen() {
        let src = "let s = \"a\\\"b\"; /* c */ crate::http::x();\n";
        assert_eq!(references(src), vec![(1, "http".to_string())]);
    }

    #[test]
    fn a_module_without_a_line_is_a_failure() {
        let found = violations("src/newthing.rs", "newthing", "use crate::clock;\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("no line in LAYERS"), "{found:?}");
        let found = violations("src/store/mod.rs", "store", "use crate::newthing;\n");
        assert!(found[0].contains("`crate::newthing`"), "{found:?}");
    }

    #[test]
    fn files_map_to_their_top_level_module() {
        assert_eq!(module_of("src/store/scripts.rs"), Some("store"));
        assert_eq!(module_of("src/clock.rs"), Some("clock"));
        assert_eq!(module_of("src/lib.rs"), None);
        assert_eq!(module_of("src/main.rs"), None);
        assert_eq!(module_of("src/bin/ld-emulator/state.rs"), None);
    }
}
