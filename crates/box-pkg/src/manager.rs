//! `box pkg`'s operations on one root file system (an environment's `.box/rootfs`): update the
//! indexes, add and delete packages (the world file records what was asked for; the resolver
//! decides what is installed), list, search and describe.

use std::path::PathBuf;

use crate::atom::Atom;
use crate::fetch::{self, Fetch};
use crate::index::Package;
use crate::install;
use crate::{PkgError, Result};

/// A root to manage.
pub struct Root<'a> {
    /// The root directory.
    pub path: PathBuf,
    /// The architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// How to download.
    pub fetch: &'a dyn Fetch,
    /// How to run a package's scripts inside the root.
    pub run_script: &'a crate::scripts::ScriptRunner<'a>,
}

/// What an `add` or `del` changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Packages installed or upgraded (`NAME-VERSION`).
    pub installed: Vec<String>,
    /// Packages removed (`NAME-VERSION`).
    pub removed: Vec<String>,
}

/// The machine's architecture in apk's words.
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

impl Root<'_> {
    fn repositories(&self) -> Vec<String> {
        match std::fs::read_to_string(self.path.join(fetch::REPOSITORIES)) {
            Ok(text) => fetch::parse_repositories(&text),
            Err(_) => fetch::DEFAULT_REPOSITORIES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.path.join(fetch::CACHE)
    }

    fn keys(&self) -> Result<Vec<(String, String)>> {
        let keys = fetch::read_keys(&self.path)?;
        if keys.is_empty() {
            return Err(PkgError::Untrusted(format!(
                "no trusted keys in {}: put the repositories' public keys there",
                self.path.join(fetch::KEYS).display()
            )));
        }
        Ok(keys)
    }

    /// `update`: fetches and verifies every repository's index; the number of packages.
    pub fn update(&self) -> Result<usize> {
        let got = fetch::update(
            &self.repositories(),
            &self.arch,
            &self.keys()?,
            self.fetch,
            &self.cache(),
        )?;
        Ok(got.iter().map(|(_, p)| p.len()).sum())
    }

    /// Every package of every repository (cached indexes, fetched first when missing), with
    /// its repository.
    fn available(&self) -> Result<Vec<(String, Package)>> {
        let keys = self.keys()?;
        let repos = self.repositories();
        let indexes = match fetch::cached(&repos, &self.arch, &keys, &self.cache()) {
            Ok(i) => i,
            Err(PkgError::Unreachable(_)) => {
                fetch::update(&repos, &self.arch, &keys, self.fetch, &self.cache())?
            }
            Err(e) => return Err(e),
        };
        Ok(indexes
            .into_iter()
            .flat_map(|(repo, pkgs)| pkgs.into_iter().map(move |p| (repo.clone(), p)))
            .collect())
    }

    /// Installs what `world` needs and removes what it no longer does.
    fn apply(&self, world: &[Atom]) -> Result<Changes> {
        let available = self.available()?;
        let packages: Vec<Package> = available.iter().map(|(_, p)| p.clone()).collect();
        let plan = crate::resolve::resolve(&packages, world)?;
        let keys = self.keys()?;
        let installed = install::read_installed(&self.path)?;
        let mut changes = Changes::default();
        let mut downloads = Vec::new();
        for &i in &plan {
            let (repo, pkg) = &available[i];
            let same = installed
                .iter()
                .any(|ip| ip.package.name == pkg.name && ip.package.version == pkg.version);
            if same {
                continue;
            }
            let bytes = self.fetch.get(&fetch::package_url(repo, &self.arch, pkg))?;
            changes.installed.push(pkg.file_stem());
            downloads.push((pkg.clone(), bytes));
        }
        install::install(&self.path, &keys, &downloads, world, self.run_script)?;
        let wanted: Vec<&str> = plan.iter().map(|&i| available[i].1.name.as_str()).collect();
        let gone: Vec<String> = install::read_installed(&self.path)?
            .into_iter()
            .filter(|ip| !wanted.contains(&ip.package.name.as_str()))
            .map(|ip| {
                changes.removed.push(ip.package.file_stem());
                ip.package.name
            })
            .collect();
        if !gone.is_empty() {
            install::uninstall(&self.path, &gone, world, self.run_script)?;
        }
        Ok(changes)
    }

    /// `add ATOM…`.
    pub fn add(&self, atoms: &[Atom]) -> Result<Changes> {
        let mut world = install::read_world(&self.path)?;
        for a in atoms {
            world.retain(|w| w.name != a.name);
            world.push(a.clone());
        }
        self.apply(&world)
    }

    /// `del NAME…`: out of the world, then whatever nothing else needs goes.
    pub fn del(&self, names: &[String]) -> Result<Changes> {
        let mut world = install::read_world(&self.path)?;
        for n in names {
            if !world.iter().any(|w| &w.name == n) {
                return Err(PkgError::Unsatisfiable(format!(
                    "{n} was not asked for (box pkg list shows what is installed)"
                )));
            }
        }
        world.retain(|w| !names.contains(&w.name));
        self.apply(&world)
    }

    /// `list`: installed packages.
    pub fn list(&self) -> Result<Vec<Package>> {
        Ok(install::read_installed(&self.path)?
            .into_iter()
            .map(|ip| ip.package)
            .collect())
    }

    /// `search TERM`: packages of the cached indexes whose name contains `term`, newest
    /// version of each name.
    pub fn search(&self, term: &str) -> Result<Vec<Package>> {
        let mut found: Vec<Package> = Vec::new();
        for (_, p) in self.available()? {
            if !p.name.contains(term) {
                continue;
            }
            match found.iter_mut().find(|f| f.name == p.name) {
                Some(f) if f.version < p.version => *f = p,
                Some(_) => {}
                None => found.push(p),
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// `info NAME`: the installed package, else the newest available one.
    pub fn info(&self, name: &str) -> Result<Package> {
        if let Some(p) = self.list()?.into_iter().find(|p| p.name == name) {
            return Ok(p);
        }
        self.search(name)?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| PkgError::Unsatisfiable(format!("no package {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build_apk, key, signed_index};
    use std::collections::HashMap;
    use std::sync::Mutex;

    struct Repo(Mutex<HashMap<String, Vec<u8>>>);

    impl Fetch for Repo {
        fn get(&self, url: &str) -> Result<Vec<u8>> {
            self.0
                .lock()
                .unwrap()
                .get(url)
                .cloned()
                .ok_or_else(|| PkgError::Unreachable(format!("{url}: 404")))
        }
    }

    #[test]
    fn add_with_dependencies_then_delete() {
        let (private, keys) = key();
        let root = std::env::temp_dir().join(format!("box-pkg-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc/apk/keys")).unwrap();
        std::fs::write(root.join("etc/apk/keys").join(&keys[0].0), &keys[0].1).unwrap();
        let repo = "http://repo.test/main";
        std::fs::write(root.join("etc/apk/repositories"), format!("{repo}\n")).unwrap();
        let (app, c_app) = build_apk(&private, "app", "1.0-r0", &[("usr/bin/app", b"app")]);
        let (lib, c_lib) = build_apk(&private, "libx", "2-r0", &[("usr/lib/libx.so", b"x")]);
        let index_text = format!(
            "C:{c_app}\nP:app\nV:1.0-r0\nD:so:libx.so\n\nC:{c_lib}\nP:libx\nV:2-r0\np:so:libx.so=2\n\n"
        );
        let index = signed_index(&private, &index_text);
        let mut files = HashMap::new();
        files.insert(format!("{repo}/x86_64/APKINDEX.tar.gz"), index);
        files.insert(format!("{repo}/x86_64/app-1.0-r0.apk"), app);
        files.insert(format!("{repo}/x86_64/libx-2-r0.apk"), lib);
        let fetch = Repo(Mutex::new(files));
        let r = Root {
            path: root.clone(),
            arch: "x86_64".into(),
            fetch: &fetch,
            run_script: &|_| Ok(()),
        };
        assert_eq!(r.update().unwrap(), 2);
        let changes = r.add(&crate::atom::parse_list("app").unwrap()).unwrap();
        assert_eq!(changes.installed, ["libx-2-r0", "app-1.0-r0"]);
        assert!(root.join("usr/bin/app").exists() && root.join("usr/lib/libx.so").exists());
        assert_eq!(r.list().unwrap().len(), 2);
        assert_eq!(r.info("app").unwrap().version.as_str(), "1.0-r0");
        assert_eq!(r.search("lib").unwrap()[0].name, "libx");
        // Nothing to do the second time.
        assert_eq!(
            r.add(&crate::atom::parse_list("app").unwrap()).unwrap(),
            Changes::default()
        );
        // An unknown package: refused, nothing changed.
        assert!(r.add(&crate::atom::parse_list("nope").unwrap()).is_err());
        assert_eq!(r.list().unwrap().len(), 2);
        // del: app goes, and libx with it (nothing else needs it).
        let changes = r.del(&["app".to_string()]).unwrap();
        assert_eq!(changes.removed.len(), 2, "{changes:?}");
        assert!(!root.join("usr/bin/app").exists() && !root.join("usr/lib/libx.so").exists());
        assert!(r.del(&["app".to_string()]).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
