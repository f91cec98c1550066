//! Signal names as runc accepts them: `KILL`, `SIGKILL`, `kill` or `9`.

use std::str::FromStr;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// Parses a signal given by name (with or without SIG, any case) or number.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || Error::Config {
        what: "signal".into(),
        why: format!("{s:?} is not a signal name or number (e.g. TERM, SIGKILL, 9)"),
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse() {
        for s in ["KILL", "SIGKILL", "kill", "9"] {
            assert_eq!(parse_signal(s).expect(s), Signal::SIGKILL);
        }
        assert_eq!(parse_signal("term").expect("term"), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
