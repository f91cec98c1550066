//! Feeds arbitrary text to the APKINDEX, installed-database, triggers, dependency-atom and
//! version parsers, resolves a request against whatever index parsed, and writes back whatever
//! database parsed: errors are fine, panics and endless loops are not.
#![no_main]

use box_pkg::atom::Atom;
use box_pkg::version::Version;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = s.parse::<Version>() {
        assert_eq!(v.cmp(&v), std::cmp::Ordering::Equal);
    }
    if let Ok(a) = s.parse::<Atom>() {
        assert_eq!(a.to_string().parse::<Atom>().map(|b| b.name), Ok(a.name.clone()));
    }
    if let Ok(pkgs) = box_pkg::index::parse(s) {
        if let Some(first) = pkgs.first() {
            let want: Atom = first.name.parse().unwrap_or(Atom {
                conflict: false,
                name: first.name.clone(),
                constraint: None,
            });
            let _ = box_pkg::resolve::resolve(&pkgs, &[want]);
        }
    }
    if let Ok(mut db) = box_pkg::installed::parse(s) {
        box_pkg::installed::parse_triggers(&mut db, s);
        let _ = box_pkg::installed::write(&db);
        let _ = box_pkg::installed::write_triggers(&db);
    }
});
