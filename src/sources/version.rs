//! [`Version`]: the order of a change, in ms, checked at the edge.
//!
//! The store keeps a member's version in Redis, where the Lua scripts read it
//! as a double (`store/scripts/member.lua` packs it in base 36): every
//! integer below 2^53 is exact there, and none above is. A version is also
//! never negative (the scripts' "no version yet" is below every real one).
//! So a parser turns whatever time its sender gives into a `Version` or a
//! [`ParseError`] (400) that names the field; past the parsers, a version is
//! always in range.

use super::ParseError;
use std::fmt;

/// A change's version: milliseconds, `0 ≤ ms < 2^53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(i64);

impl Version {
    /// 2^53 (9007199254740992): the first integer a double does not hold
    /// exactly next to its neighbour. Versions stay below it.
    pub const LIMIT_MS: i64 = 1 << 53;

    /// The version `ms`, if it is in range.
    pub const fn from_ms(ms: i64) -> Option<Version> {
        if ms >= 0 && ms < Self::LIMIT_MS {
            Some(Version(ms))
        } else {
            None
        }
    }

    /// The version `ms` read from `field`, or the 400 that names it.
    pub fn of_field(ms: i64, field: impl Into<String>) -> Result<Version, ParseError> {
        Version::from_ms(ms).ok_or_else(|| ParseError::VersionOutOfRange {
            field: field.into(),
            ms,
        })
    }

    /// Milliseconds.
    pub const fn ms(self) -> i64 {
        self.0
    }

    /// Milliseconds in base 36, lowercase: the form the want hash stores
    /// (see `store/scripts/apply.lua`).
    pub fn base36(self) -> String {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut n = self.0.unsigned_abs();
        let mut out = [0u8; 16];
        let mut i = out.len();
        loop {
            i -= 1;
            out[i] = DIGITS[(n % 36) as usize];
            n /= 36;
            if n == 0 {
                break;
            }
        }
        String::from_utf8_lossy(&out[i..]).into_owned()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_reads_back_as_the_same_milliseconds() {
        for ms in [0, 1, 35, 36, 1_767_225_600_000, Version::LIMIT_MS - 1] {
            let v = Version::from_ms(ms).unwrap();
            assert_eq!(i64::from_str_radix(&v.base36(), 36), Ok(ms));
        }
        assert_eq!(Version::from_ms(36).unwrap().base36(), "10");
        assert_eq!(Version::from_ms(0).unwrap().base36(), "0");
    }

    #[test]
    fn range_is_zero_to_below_two_to_the_53() {
        assert_eq!(Version::from_ms(0).map(Version::ms), Some(0));
        assert_eq!(
            Version::from_ms(9_007_199_254_740_991).map(Version::ms),
            Some(9_007_199_254_740_991)
        );
        assert_eq!(Version::from_ms(9_007_199_254_740_992), None);
        assert_eq!(Version::from_ms(i64::MAX), None);
        assert_eq!(Version::from_ms(-1), None);
        assert_eq!(Version::from_ms(i64::MIN), None);
    }

    #[test]
    fn out_of_range_names_the_field() {
        let err = Version::of_field(-5, "timestamp").unwrap_err();
        assert_eq!(
            err,
            ParseError::VersionOutOfRange {
                field: "timestamp".into(),
                ms: -5
            }
        );
        assert!(err.to_string().starts_with("timestamp "), "{err}");
        assert!(Version::of_field(1 << 53, "version")
            .unwrap_err()
            .to_string()
            .contains("version"));
        assert_eq!(Version::of_field(7, "x").map(Version::ms), Ok(7));
    }
}
