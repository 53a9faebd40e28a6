//! How LaunchDarkly segment keys, names and tags are made from a cohort.
//!
//! Keys follow LaunchDarkly's rule for resource keys: letters, digits, `.`,
//! `_` and `-`, starting with a letter or digit. Everything else becomes `-`.

/// Placeholders a destination's `segment_key` / `segment_name` template may use.
pub const PLACEHOLDERS: [&str; 4] = ["source", "cohort_id", "cohort_name", "destination"];

/// LaunchDarkly keys are at most this long.
const MAX_KEY_LEN: usize = 256;

/// Checks that a template only uses known placeholders and balanced braces.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{template:?} has an unclosed '{{'"))?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} in {template:?}; known: {}",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{template:?} has an unmatched '}}'"));
    }
    Ok(())
}

/// The values a template is filled with.
pub struct TemplateVars<'a> {
    pub source: &'a str,
    pub cohort_id: &'a str,
    pub cohort_name: &'a str,
    pub destination: &'a str,
}

/// Fills a template checked by [`check_template`].
pub fn render(template: &str, vars: &TemplateVars<'_>) -> String {
    template
        .replace("{source}", vars.source)
        .replace("{cohort_id}", vars.cohort_id)
        .replace("{cohort_name}", vars.cohort_name)
        .replace("{destination}", vars.destination)
}

/// Turns any text into a valid LaunchDarkly key.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let keep = c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
        let c = if keep { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .trim_end_matches('-');
    let mut key: String = trimmed.chars().take(MAX_KEY_LEN).collect();
    if key.is_empty() {
        key = "segment".into();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("amplitude-prod-12345"), "amplitude-prod-12345");
        assert_eq!(slug("heap/Free Customers!"), "heap-Free-Customers");
        assert_eq!(slug("--x"), "x");
        assert_eq!(slug("日本"), "segment");
        assert_eq!(slug("a..b__c"), "a..b__c");
    }

    #[test]
    fn templates() {
        assert!(check_template("{source}-{cohort_id}").is_ok());
        assert!(check_template("{nope}")
            .unwrap_err()
            .contains("unknown placeholder {nope}"));
        assert!(check_template("{source").is_err());
        assert!(check_template("source}").is_err());
        let v = TemplateVars {
            source: "amp",
            cohort_id: "c1",
            cohort_name: "Power users",
            destination: "prod",
        };
        assert_eq!(render("{source}-{cohort_id}", &v), "amp-c1");
        assert_eq!(
            render("{cohort_name} ({destination})", &v),
            "Power users (prod)"
        );
    }

    proptest! {
        #[test]
        fn slug_is_always_a_valid_key(s in ".{0,300}") {
            let k = slug(&s);
            prop_assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN);
            prop_assert!(k.chars().next().unwrap().is_ascii_alphanumeric());
            prop_assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)));
        }
    }
}
