//! apk versions (`1.36.1-r5`, `2.0_rc3`, `1.2.3a_p1-r0`) and their order, as apk-tools has it:
//! dotted numbers (a component after the first that starts with 0 compares as a decimal
//! fraction), an optional letter, suffixes (`_alpha` < `_beta` < `_pre` < `_rc` < none <
//! `_cvs` < `_svn` < `_git` < `_hg` < `_p`, each with an optional number), and a revision
//! `-rN`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::{PkgError, Result};

/// The suffixes in their order; "none" sits between `rc` and `cvs`.
const PRE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

/// One dotted component: a number, or (after the first, with a leading zero) a fraction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Number(u64),
    Fraction(String),
}

/// A parsed apk version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    text: String,
    parts: Vec<Part>,
    letter: Option<char>,
    /// (rank, number): ranks below 0 are pre-releases, above 0 post-releases.
    suffixes: Vec<(i8, u64)>,
    revision: u64,
}

impl Version {
    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

impl FromStr for Version {
    type Err = PkgError;

    fn from_str(text: &str) -> Result<Version> {
        let bad = || PkgError::BadVersion(text.to_string());
        let (main, revision) = match text.rsplit_once("-r") {
            Some((m, r)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => {
                (m, r.parse().map_err(|_| bad())?)
            }
            _ => (text, 0),
        };
        let mut rest = main;
        let mut parts = Vec::new();
        loop {
            let (num, after) = digits(rest);
            if num.is_empty() {
                return Err(bad());
            }
            let part = if !parts.is_empty() && num.starts_with('0') {
                Part::Fraction(num.to_string())
            } else {
                Part::Number(num.parse().map_err(|_| bad())?)
            };
            parts.push(part);
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None => {
                    rest = after;
                    break;
                }
            }
        }
        let mut letter = None;
        if let Some(c) = rest.chars().next().filter(|c| c.is_ascii_lowercase()) {
            letter = Some(c);
            rest = &rest[1..];
        }
        let mut suffixes = Vec::new();
        while let Some(after) = rest.strip_prefix('_') {
            let name_end = after
                .find(|c: char| !c.is_ascii_lowercase())
                .unwrap_or(after.len());
            let (name, tail) = after.split_at(name_end);
            let rank = if let Some(i) = PRE.iter().position(|s| *s == name) {
                i as i8 - PRE.len() as i8
            } else if let Some(i) = POST.iter().position(|s| *s == name) {
                i as i8 + 1
            } else {
                return Err(bad());
            };
            let (num, tail) = digits(tail);
            let n = if num.is_empty() {
                0
            } else {
                num.parse().map_err(|_| bad())?
            };
            suffixes.push((rank, n));
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(Version {
            text: text.to_string(),
            parts,
            letter,
            suffixes,
            revision,
        })
    }
}

fn cmp_part(a: &Part, b: &Part) -> Ordering {
    match (a, b) {
        (Part::Number(x), Part::Number(y)) => x.cmp(y),
        // A fraction (leading zero) compares digit by digit, as decimals do.
        (Part::Fraction(x), Part::Fraction(y)) => x.cmp(y),
        (Part::Fraction(x), Part::Number(y)) => x.as_str().cmp(y.to_string().as_str()),
        (Part::Number(x), Part::Fraction(y)) => x.to_string().as_str().cmp(y.as_str()),
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        for i in 0..self.parts.len().max(other.parts.len()) {
            match (self.parts.get(i), other.parts.get(i)) {
                (Some(a), Some(b)) => match cmp_part(a, b) {
                    Ordering::Equal => {}
                    o => return o,
                },
                // More components is newer (1.0.1 > 1.0).
                (Some(_), None) => return Ordering::Greater,
                (None, Some(_)) => return Ordering::Less,
                (None, None) => {}
            }
        }
        match self.letter.cmp(&other.letter) {
            Ordering::Equal => {}
            o => return o,
        }
        for i in 0..self.suffixes.len().max(other.suffixes.len()) {
            // A missing suffix ranks as "none": after pre-releases, before post-releases.
            let a = self.suffixes.get(i).copied().unwrap_or((0, 0));
            let b = other.suffixes.get(i).copied().unwrap_or((0, 0));
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        self.revision.cmp(&other.revision)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn orders_like_apk() {
        let ascending = [
            "0.9",
            "1.0_alpha",
            "1.0_alpha2",
            "1.0_beta1",
            "1.0_pre1",
            "1.0_rc1",
            "1.0",
            "1.0-r1",
            "1.0_cvs",
            "1.0_git20240101",
            "1.0_p1",
            "1.0a",
            "1.0.1",
            "1.01",
            "1.1",
            "1.2.3",
            "1.10",
            "2",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert!(v(pair[1]) > v(pair[0]), "{} > {}", pair[1], pair[0]);
        }
        assert_eq!(v("1.36.1-r5").cmp(&v("1.36.1-r5")), Ordering::Equal);
        assert!(v("1.36.1-r10") > v("1.36.1-r9"));
        // A leading zero makes a fraction: 1.05 < 1.1 < 1.5.
        assert!(v("1.05") < v("1.1") && v("1.1") < v("1.5"));
    }

    #[test]
    fn rejects_what_apk_rejects() {
        for bad in [
            "", "a", "1..2", "1.0_foo", "1.0-", "1.0-rx", "1.0 ", "-r1", "1.0A",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
        assert_eq!(v("3.19.1-r0").to_string(), "3.19.1-r0");
    }
}
