//! The member value encoding: a member's value in a cohort's want hash, read
//! from Rust (the operator API, tests). Scripts read and write it through
//! `scripts/member.lua`.
//!
//! `"<version>!<pending><desired><states>"`, with the version in base 36.

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
    /// Decodes a member value; `None` for anything else.
    pub fn parse(v: &str) -> Option<MemberValue> {
        let (version, rest) = v.split_once('!')?;
        let version_ms = i64::from_str_radix(version, 36).ok()?;
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

    /// Whether the link of slot `slot` (0-based) still has to write the
    /// member: its state there is unknown, or differs from the desired one
    /// (never when dead-lettered); a slot past the end reads as out
    /// (`needs_write` in `member.lua`).
    pub fn needs_write(&self, slot: usize) -> bool {
        match self.states.as_bytes().get(slot).copied().unwrap_or(b'o') {
            b'u' => true,
            b'd' => false,
            s => s != if self.desired { b'i' } else { b'o' },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_values_decode() {
        let v = MemberValue::parse("mhxk2c0w!11iu").unwrap();
        assert_eq!(v.version_ms, i64::from_str_radix("mhxk2c0w", 36).unwrap());
        assert!(v.pending && v.desired);
        assert_eq!(v.states, "iu");
        let out = MemberValue::parse("0!00").unwrap();
        assert_eq!(out.version_ms, 0);
        assert!(!out.pending && !out.desired);
        assert_eq!(out.states, "");
        assert!(v.needs_write(1) && !v.needs_write(0));
        assert!(!out.needs_write(0) && MemberValue::parse("0!01").unwrap().needs_write(3));
        assert!(!MemberValue::parse("0!11d").unwrap().needs_write(0));
        for bad in ["", "x", "12", "1!", "!11", "1700000000000|00o", "zz|11"] {
            assert_eq!(MemberValue::parse(bad), None, "{bad:?}");
        }
    }
}
