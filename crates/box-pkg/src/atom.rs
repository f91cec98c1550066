//! Dependency atoms as APKINDEX `D:`, `p:`, `i:` and `/etc/apk/world` write them:
//! `[!]NAME[OP VERSION]` with OP one of `=`, `<`, `<=`, `>`, `>=`, `~` (fuzzy: the version's
//! leading components), and names such as `so:libc.musl-x86_64.so.1`, `cmd:sh`, `pc:zlib`.

use std::fmt;
use std::str::FromStr;

use crate::version::Version;
use crate::{PkgError, Result};

/// How an atom constrains a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `~`: the same leading components (`~1.2` takes 1.2.x).
    Fuzzy,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Fuzzy => "~",
        }
    }
}

/// One dependency (or, with `conflict`, one thing that must not be installed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atom {
    /// `!name`: a conflict.
    pub conflict: bool,
    /// The package or provided name.
    pub name: String,
    /// The version constraint, if any.
    pub constraint: Option<(Op, Version)>,
}

/// Whether `name` is a name apk accepts (printable, no spaces or operators).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>=~!".contains(&b))
}

impl Atom {
    /// Whether a package or provision of `version` satisfies the constraint (a provision
    /// without a version satisfies only an atom without one).
    pub fn accepts(&self, version: Option<&Version>) -> bool {
        let Some((op, want)) = &self.constraint else {
            return true;
        };
        let Some(have) = version else {
            return false;
        };
        match op {
            Op::Eq => have == want,
            Op::Lt => have < want,
            Op::Le => have <= want,
            Op::Gt => have > want,
            Op::Ge => have >= want,
            Op::Fuzzy => {
                let (h, w) = (have.as_str(), want.as_str());
                h == w
                    || h.strip_prefix(w).is_some_and(|rest| {
                        rest.starts_with(['.', '_', '-'])
                            || rest.starts_with(|c: char| c.is_ascii_lowercase())
                    })
            }
        }
    }
}

impl FromStr for Atom {
    type Err = PkgError;

    fn from_str(text: &str) -> Result<Atom> {
        let bad = || PkgError::BadAtom(text.to_string());
        let (conflict, rest) = match text.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let op_at = rest.find(['<', '>', '=', '~']);
        let (name, constraint) = match op_at {
            None => (rest, None),
            Some(i) => {
                let (name, tail) = rest.split_at(i);
                let (op, version) = if let Some(v) = tail.strip_prefix("<=") {
                    (Op::Le, v)
                } else if let Some(v) = tail.strip_prefix(">=") {
                    (Op::Ge, v)
                } else if let Some(v) = tail.strip_prefix("=~").or_else(|| tail.strip_prefix('~')) {
                    (Op::Fuzzy, v)
                } else if let Some(v) = tail.strip_prefix('<') {
                    (Op::Lt, v)
                } else if let Some(v) = tail.strip_prefix('>') {
                    (Op::Gt, v)
                } else if let Some(v) = tail.strip_prefix('=') {
                    (Op::Eq, v)
                } else {
                    return Err(bad());
                };
                (
                    name,
                    Some((op, version.parse::<Version>().map_err(|_| bad())?)),
                )
            }
        };
        if !valid_name(name) {
            return Err(bad());
        }
        Ok(Atom {
            conflict,
            name: name.to_string(),
            constraint,
        })
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.conflict {
            f.write_str("!")?;
        }
        f.write_str(&self.name)?;
        if let Some((op, v)) = &self.constraint {
            write!(f, "{}{v}", op.text())?;
        }
        Ok(())
    }
}

/// A space-separated list of atoms (`D:`, `p:`, `i:`).
pub fn parse_list(text: &str) -> Result<Vec<Atom>> {
    text.split_whitespace().map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Atom {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for text in [
            "busybox",
            "!musl-dev",
            "so:libc.musl-x86_64.so.1",
            "cmd:sh=1.36.1-r5",
            "zlib>=1.2",
            "a<2",
            "a<=2",
            "a>1",
            "a~1.2",
        ] {
            assert_eq!(a(text).to_string(), text);
        }
        assert_eq!(a("a=~1.2").to_string(), "a~1.2");
        assert!(a("!x").conflict);
        let list = parse_list("so:libc.musl-x86_64.so.1 busybox>=1.36 !foo").unwrap();
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn rejects_bad_atoms() {
        for bad in ["", "!", ">1", "a>=", "a>=x", "a!b", "a b"] {
            assert!(bad.parse::<Atom>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn constraints_accept_versions() {
        assert!(a("a").accepts(None) && a("a").accepts(Some(&v("1"))));
        assert!(!a("a>=2").accepts(None));
        assert!(a("a>=1.36").accepts(Some(&v("1.36.1-r5"))));
        assert!(!a("a<1.36").accepts(Some(&v("1.36.1-r5"))));
        assert!(
            a("a=1.0-r1").accepts(Some(&v("1.0-r1"))) && !a("a=1.0").accepts(Some(&v("1.0-r1")))
        );
        assert!(a("a~1.2").accepts(Some(&v("1.2.9-r0"))) && !a("a~1.2").accepts(Some(&v("1.20"))));
    }
}
