//! A member's value in a cohort's want hash, read from Rust (the operator
//! API, tests). Scripts read and write it through `scripts/member.lua`.
//!
//! `"<version>!<pending><desired><states>"` with the version in base 36, or
//! `"<version>|..."` with a decimal version as earlier releases wrote it.

/// One decoded member value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    /// The order of the member's last change (ms).
    pub version_ms: i64,
    /// Its last change still awaits a LaunchDarkly write.
    pub pending: bool,
    /// Should be in the segment.
    pub desired: bool,
    /// Per destination slot, what LaunchDarkly has: `i`, `o`, `u` or `d`.
    pub states: String,
}

impl MemberValue {
    /// Decodes either encoding; `None` for anything else.
    pub fn parse(v: &str) -> Option<MemberValue> {
        let at = v.find(['!', '|'])?;
        let radix = if v.as_bytes()[at] == b'!' { 36 } else { 10 };
        let version_ms = i64::from_str_radix(&v[..at], radix).ok()?;
        let rest = v.get(at + 1..)?;
        let mut chars = rest.chars();
        let pending = chars.next()? == '1';
        let desired = chars.next()? == '1';
        Some(MemberValue {
            version_ms,
            pending,
            desired,
            states: chars.as_str().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_decode() {
        let b36 = MemberValue::parse("mhxk2c0w!11iu").unwrap();
        assert_eq!(b36.version_ms, i64::from_str_radix("mhxk2c0w", 36).unwrap());
        assert!(b36.pending && b36.desired);
        assert_eq!(b36.states, "iu");
        let dec = MemberValue::parse("1700000000000|00o").unwrap();
        assert_eq!(dec.version_ms, 1_700_000_000_000);
        assert!(!dec.pending && !dec.desired);
        assert_eq!(dec.states, "o");
        for bad in ["", "x", "12", "zz|", "1!", "!11"] {
            assert_eq!(MemberValue::parse(bad), None, "{bad:?}");
        }
    }
}
