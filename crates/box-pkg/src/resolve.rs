//! Which packages to install for a request (`/etc/apk/world`): every atom satisfied by a
//! package of that name or by one that provides the name (`so:`, `cmd:`, `pc:` and virtual
//! names), the packages' own dependencies likewise, no conflict (`!name`) violated, and
//! `install_if` packages added once everything they wait for is in. Candidates are tried in
//! apk's order of preference (the name itself before providers, then provider priority, then
//! the highest version), going back to the next one when a choice leads nowhere.

use std::collections::{BTreeMap, HashMap};

use crate::atom::Atom;
use crate::index::Package;
use crate::version::Version;
use crate::{PkgError, Result};

/// How deep dependencies may nest before the request is refused (a loop in an index).
const MAX_DEPTH: usize = 256;

struct Resolver<'a> {
    available: &'a [Package],
    /// Name or provided name → (package index, the version it is provided at).
    providers: HashMap<&'a str, Vec<(usize, Option<&'a Version>)>>,
    /// Package name → chosen package index.
    chosen: BTreeMap<String, usize>,
    /// Chosen package indices in the order their dependencies were met (dependencies first).
    order: Vec<usize>,
    /// Conflicts of the request and of the chosen packages.
    conflicts: Vec<Atom>,
}

impl<'a> Resolver<'a> {
    fn new(available: &'a [Package]) -> Resolver<'a> {
        let mut providers: HashMap<&str, Vec<(usize, Option<&Version>)>> = HashMap::new();
        for (i, p) in available.iter().enumerate() {
            providers
                .entry(&p.name)
                .or_default()
                .push((i, Some(&p.version)));
            for prov in &p.provides {
                let v = prov.constraint.as_ref().map(|(_, v)| v);
                providers.entry(&prov.name).or_default().push((i, v));
            }
        }
        Resolver {
            available,
            providers,
            chosen: BTreeMap::new(),
            order: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    /// Whether a chosen package satisfies `atom` (by name or by what it provides).
    fn satisfied(&self, atom: &Atom) -> bool {
        self.providers.get(atom.name.as_str()).is_some_and(|list| {
            list.iter().any(|(i, v)| {
                self.chosen.get(&self.available[*i].name) == Some(i) && atom.accepts(*v)
            })
        })
    }

    /// Whether package `i` matches a conflict, or one of its conflicts matches a choice.
    fn clashes(&self, i: usize) -> bool {
        let p = &self.available[i];
        let hits = |c: &Atom, pkg: &Package| {
            (c.name == pkg.name && c.accepts(Some(&pkg.version)))
                || pkg.provides.iter().any(|prov| {
                    prov.name == c.name && c.accepts(prov.constraint.as_ref().map(|(_, v)| v))
                })
        };
        self.conflicts.iter().any(|c| hits(c, p))
            || p.depends
                .iter()
                .filter(|d| d.conflict)
                .any(|c| self.chosen.values().any(|&j| hits(c, &self.available[j])))
    }

    /// The packages that could satisfy `atom`, best first.
    fn candidates(&self, atom: &Atom) -> Vec<usize> {
        let mut list: Vec<(usize, bool)> = self
            .providers
            .get(atom.name.as_str())
            .map(|l| {
                l.iter()
                    .filter(|(_, v)| atom.accepts(*v))
                    .map(|(i, _)| (*i, self.available[*i].name == atom.name))
                    .collect()
            })
            .unwrap_or_default();
        list.sort_by(|(a, a_named), (b, b_named)| {
            let (pa, pb) = (&self.available[*a], &self.available[*b]);
            b_named
                .cmp(a_named)
                .then(pb.provider_priority.cmp(&pa.provider_priority))
                .then(pb.version.cmp(&pa.version))
        });
        let mut seen = Vec::new();
        list.into_iter()
            .map(|(i, _)| i)
            .filter(|i| {
                let new = !seen.contains(i);
                seen.push(*i);
                new
            })
            .collect()
    }

    /// Meets `atom`, choosing packages; on failure nothing of this call stays chosen.
    fn require(&mut self, atom: &Atom, depth: usize, why: &str) -> std::result::Result<(), String> {
        if self.satisfied(atom) {
            return Ok(());
        }
        if depth > MAX_DEPTH {
            return Err(format!("dependencies nest deeper than {MAX_DEPTH} ({why})"));
        }
        let candidates = self.candidates(atom);
        if candidates.is_empty() {
            return Err(format!("nothing provides {atom} ({why})"));
        }
        let mut last = String::new();
        for i in candidates {
            let p = &self.available[i];
            // Another version of this name is chosen already: this one cannot be had too.
            if self.chosen.contains_key(&p.name) || self.clashes(i) {
                last = format!("{} conflicts with what is chosen ({why})", p.file_stem());
                continue;
            }
            let saved = (self.chosen.clone(), self.order.len(), self.conflicts.len());
            self.chosen.insert(p.name.clone(), i);
            self.conflicts
                .extend(p.depends.iter().filter(|d| d.conflict).cloned());
            let via = format!("{} needs it", p.file_stem());
            let deps: Vec<Atom> = p.depends.iter().filter(|d| !d.conflict).cloned().collect();
            let mut ok = Ok(());
            for d in &deps {
                ok = self.require(d, depth + 1, &via);
                if ok.is_err() {
                    break;
                }
            }
            match ok {
                Ok(()) => {
                    self.order.push(i);
                    return Ok(());
                }
                Err(e) => {
                    last = e;
                    self.chosen = saved.0;
                    self.order.truncate(saved.1);
                    self.conflicts.truncate(saved.2);
                }
            }
        }
        Err(last)
    }

    /// Adds the packages whose `install_if` atoms are all met, until none is left to add.
    fn install_ifs(&mut self) -> std::result::Result<(), String> {
        loop {
            let ready: Vec<usize> = (0..self.available.len())
                .filter(|&i| {
                    let p = &self.available[i];
                    !p.install_if.is_empty()
                        && !self.chosen.contains_key(&p.name)
                        && p.install_if.iter().all(|a| self.satisfied(a))
                })
                .collect();
            let Some(&i) = ready.first() else {
                return Ok(());
            };
            let p = &self.available[i];
            let atom = Atom {
                conflict: false,
                name: p.name.clone(),
                constraint: Some((crate::atom::Op::Eq, p.version.clone())),
            };
            self.require(&atom, 0, "install_if")?;
        }
    }
}

/// The packages (indices into `available`, dependencies before the packages that need them)
/// that satisfy `world`.
pub fn resolve(available: &[Package], world: &[Atom]) -> Result<Vec<usize>> {
    let mut r = Resolver::new(available);
    r.conflicts
        .extend(world.iter().filter(|a| a.conflict).cloned());
    for atom in world.iter().filter(|a| !a.conflict) {
        r.require(atom, 0, "requested")
            .map_err(PkgError::Unsatisfiable)?;
    }
    r.install_ifs().map_err(PkgError::Unsatisfiable)?;
    Ok(r.order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atom::parse_list;
    use crate::index::parse;

    const INDEX: &str = "\
P:musl\nV:1.2.4-r4\np:so:libc.musl-x86_64.so.1=1\n\n\
P:busybox\nV:1.36.1-r5\nD:so:libc.musl-x86_64.so.1\np:cmd:sh=1.36.1-r5\n\n\
P:busybox\nV:1.35.0-r0\nD:so:libc.musl-x86_64.so.1\n\n\
P:zlib\nV:1.3-r2\nD:so:libc.musl-x86_64.so.1\np:so:libz.so.1=1.3\n\n\
P:curl\nV:8.5.0-r0\nD:so:libz.so.1 libcurl=8.5.0-r0\n\n\
P:libcurl\nV:8.5.0-r0\nD:so:libz.so.1\n\n\
P:curl-doc\nV:8.5.0-r0\ni:curl=8.5.0-r0 docs\n\n\
P:docs\nV:1-r0\n\n\
P:dash\nV:0.5-r0\np:cmd:sh=0.5\nk:1\n\n\
P:grumpy\nV:1-r0\nD:!busybox\n\n\
P:broken\nV:1-r0\nD:missing-lib\n\n";

    fn names(pkgs: &[Package], order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| pkgs[i].file_stem()).collect()
    }

    fn world(text: &str) -> Vec<Atom> {
        parse_list(text).unwrap()
    }

    #[test]
    fn dependencies_first_highest_version_and_providers() {
        let pkgs = parse(INDEX).unwrap();
        let got = names(&pkgs, &resolve(&pkgs, &world("curl")).unwrap());
        assert_eq!(
            got,
            [
                "musl-1.2.4-r4",
                "zlib-1.3-r2",
                "libcurl-8.5.0-r0",
                "curl-8.5.0-r0"
            ]
        );
        let got = names(&pkgs, &resolve(&pkgs, &world("busybox")).unwrap());
        assert_eq!(got, ["musl-1.2.4-r4", "busybox-1.36.1-r5"]);
        let got = names(&pkgs, &resolve(&pkgs, &world("busybox<1.36")).unwrap());
        assert_eq!(got, ["musl-1.2.4-r4", "busybox-1.35.0-r0"]);
        // cmd:sh: busybox's provision (same priority 0) loses to dash's priority 1.
        let got = names(&pkgs, &resolve(&pkgs, &world("cmd:sh")).unwrap());
        assert_eq!(got, ["dash-0.5-r0"]);
        // Already satisfied by a chosen package: not chosen twice.
        let got = names(&pkgs, &resolve(&pkgs, &world("busybox cmd:sh")).unwrap());
        assert_eq!(got, ["musl-1.2.4-r4", "busybox-1.36.1-r5"]);
    }

    #[test]
    fn install_if_conflicts_and_errors() {
        let pkgs = parse(INDEX).unwrap();
        let got = names(&pkgs, &resolve(&pkgs, &world("curl docs")).unwrap());
        assert!(got.contains(&"curl-doc-8.5.0-r0".to_string()), "{got:?}");
        let got = names(&pkgs, &resolve(&pkgs, &world("curl")).unwrap());
        assert!(!got.contains(&"curl-doc-8.5.0-r0".to_string()), "{got:?}");
        // grumpy refuses busybox.
        let e = resolve(&pkgs, &world("busybox grumpy")).unwrap_err();
        assert!(e.to_string().contains("conflicts"), "{e}");
        let e = resolve(&pkgs, &world("busybox !busybox")).unwrap_err();
        assert!(e.to_string().contains("conflicts"), "{e}");
        let e = resolve(&pkgs, &world("broken")).unwrap_err();
        assert!(
            e.to_string().contains("nothing provides missing-lib"),
            "{e}"
        );
        let e = resolve(&pkgs, &world("nope")).unwrap_err();
        assert!(
            e.to_string().contains("nothing provides nope (requested)"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_choice_falls_back_to_the_next_candidate() {
        // The newest app needs a library nobody has; the older one works.
        let idx = "P:app\nV:2-r0\nD:libnew\n\nP:app\nV:1-r0\nD:libold\n\nP:libold\nV:1-r0\n\n";
        let pkgs = parse(idx).unwrap();
        let got = names(&pkgs, &resolve(&pkgs, &world("app")).unwrap());
        assert_eq!(got, ["libold-1-r0", "app-1-r0"]);
    }

    #[test]
    fn dependency_loops_end() {
        let idx = "P:a\nV:1\nD:b\n\nP:b\nV:1\nD:a\n\n";
        let pkgs = parse(idx).unwrap();
        let got = names(&pkgs, &resolve(&pkgs, &world("a")).unwrap());
        assert_eq!(got, ["b-1", "a-1"]);
    }
}
