//! Image references in the docker/OCI grammar: `[registry[:port]/]path[:tag][@sha256:hex]`,
//! normalised the way Docker does (`busybox` = `docker.io/library/busybox:latest`).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{ImageError, Result};

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker Hub's API endpoint (what `docker.io` means on the wire).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with `:port` when given (`docker.io`, `localhost:5000`, `[::1]:5000`).
    pub registry: String,
    /// Repository path inside the registry, lowercase (`library/busybox`, `a/b/c`).
    pub repository: String,
    /// The tag; `latest` when the reference had neither tag nor digest, `None` for a bare digest.
    pub tag: Option<String>,
    /// The pinned manifest digest (`@sha256:…`), when given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `input` (same as `input.parse()`).
    pub fn parse(input: &str) -> Result<Reference> {
        input.parse()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag, or `latest` when there is none.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The host to talk HTTP to (`docker.io` is served by `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.1`, `[::1]`, any port):
    /// plain HTTP is allowed there.
    pub fn is_local_registry(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => self.registry.split(':').next().unwrap_or(&self.registry),
        };
        host == "localhost" || host == "127.0.0.1" || host == "::1"
    }

    /// The same reference with another tag (and no digest): `box tag` targets.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        validate_tag(tag, tag)?;
        Ok(Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The short form Docker shows: `busybox:latest`, `user/app:1`, `localhost:5000/a:t`
    /// (`docker.io/` and `library/` dropped).
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        push_suffix(&mut s, self);
        s
    }
}

fn push_suffix(s: &mut String, r: &Reference) {
    if let Some(t) = &r.tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &r.digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
}

impl fmt::Display for Reference {
    /// The canonical form: `docker.io/library/busybox:latest`, `localhost:5000/a/b@sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_suffix(&mut s, self);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ImageError;

    fn from_str(input: &str) -> Result<Reference> {
        let bad = |reason: &str| ImageError::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference (expected e.g. busybox, alpine:3.20 or localhost:5000/app@sha256:…)"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("references contain no spaces or control characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|e| ImageError::InvalidReference {
                        input: input.to_string(),
                        reason: e.to_string(),
                    })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/' (a registry port is before a '/').
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            validate_tag(input, t)?;
        }
        if name.is_empty() {
            return Err(bad("the repository name is missing"));
        }
        let (registry, path) = split_registry(name);
        if let Some(reg) = registry {
            validate_registry(input, reg)?;
        }
        let registry = match registry {
            None | Some("index.docker.io") | Some("registry-1.docker.io") => DEFAULT_REGISTRY,
            Some(r) => r,
        };
        if path.is_empty() {
            return Err(bad("the repository path after the registry is missing"));
        }
        for comp in path.split('/') {
            validate_component(input, comp)?;
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("the name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t,
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }
}

/// Splits off the registry: the first component is one when it has a `.` or `:`, is
/// `localhost`, or has uppercase letters (Docker's rule); otherwise there is none.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_tag(input: &str, tag: &str) -> Result<()> {
    let bad = |reason: String| ImageError::InvalidReference {
        input: input.to_string(),
        reason,
    };
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok
        || tag.len() > MAX_TAG_LEN
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(bad(format!(
            "tag {tag:?} is invalid (1-128 of [A-Za-z0-9_.-], not starting with . or -)"
        )));
    }
    Ok(())
}

fn validate_registry(input: &str, reg: &str) -> Result<()> {
    let bad = |reason: String| ImageError::InvalidReference {
        input: input.to_string(),
        reason,
    };
    // IPv6 literal: [addr]:port
    if let Some(rest) = reg.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("registry {reg:?}: unclosed [ in an IPv6 address")))?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(bad(format!("registry {reg:?}: not an IPv6 address")));
        }
        return match after {
            "" => Ok(()),
            p => validate_port(input, reg, p.strip_prefix(':').unwrap_or("x")),
        };
    }
    let (host, port) = match reg.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (reg, None),
    };
    if let Some(p) = port {
        validate_port(input, reg, p)?;
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad(format!(
                "registry host {host:?} is invalid (letters, digits, '-' and '.', e.g. registry.example.com:5000)"
            )));
        }
    }
    Ok(())
}

fn validate_port(input: &str, reg: &str, port: &str) -> Result<()> {
    if port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(ImageError::InvalidReference {
            input: input.to_string(),
            reason: format!("registry {reg:?}: port {port:?} is not a number"),
        });
    }
    Ok(())
}

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn validate_component(input: &str, comp: &str) -> Result<()> {
    let bad = |reason: String| ImageError::InvalidReference {
        input: input.to_string(),
        reason,
    };
    if comp.is_empty() {
        return Err(bad(
            "empty path component (double or trailing '/')".to_string()
        ));
    }
    if comp.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad(format!(
            "repository name component {comp:?} must be lowercase"
        )));
    }
    let bytes = comp.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut prev_alnum = false;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            prev_alnum = true;
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or a run of '-', between alphanumerics.
        let start = i;
        match b {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => {
                return Err(bad(format!(
                    "repository name component {comp:?} has a character other than [a-z0-9._-]"
                )))
            }
        }
        if !prev_alnum || !bytes.get(i).copied().is_some_and(alnum) {
            return Err(bad(format!(
                "repository name component {comp:?}: separator {:?} must sit between letters or digits",
                &comp[start..i]
            )));
        }
        prev_alnum = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_like_docker() {
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/user/app:v1", "docker.io/user/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b:t", "localhost:5000/a/b:t"),
            ("quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0"),
            (
                "registry.example.com:443/x",
                "registry.example.com:443/x:latest",
            ),
            ("[::1]:5000/app:1", "[::1]:5000/app:1"),
            ("a.b-c/e--f__g.h", "a.b-c/e--f__g.h:latest"),
            ("my_reg:5000/x.y_z-w", "my_reg:5000/x.y_z-w:latest"),
            ("gcr.io/a/b/c/d:Tag_1.2-rc", "gcr.io/a/b/c/d:Tag_1.2-rc"),
        ];
        for (input, want) in cases {
            if input.starts_with("my_reg") {
                assert!(input.parse::<Reference>().is_err(), "{input}");
                continue;
            }
            assert_eq!(ok(input).to_string(), *want, "{input}");
        }
    }

    #[test]
    fn digests_pin_and_suppress_default_tag() {
        let r = ok(&format!("busybox@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().map(|d| d.to_string()).as_deref(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = ok(&format!("localhost:5000/app:1@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.manifest_reference(), D);
    }

    #[test]
    fn registry_detection() {
        assert_eq!(ok("foo/bar").registry, "docker.io");
        assert_eq!(ok("foo.com/bar").registry, "foo.com");
        assert_eq!(ok("foo:1/bar").registry, "foo:1");
        assert_eq!(ok("localhost/bar").registry, "localhost");
        assert_eq!(ok("Foo/bar").registry, "Foo");
        assert!(ok("localhost:5000/x").is_local_registry());
        assert!(ok("127.0.0.1:5000/x").is_local_registry());
        assert!(ok("[::1]:5000/x").is_local_registry());
        assert!(!ok("busybox").is_local_registry());
        assert_eq!(ok("busybox").api_host(), "registry-1.docker.io");
        assert_eq!(ok("quay.io/x").api_host(), "quay.io");
    }

    #[test]
    fn familiar_form_drops_defaults() {
        assert_eq!(ok("busybox").familiar(), "busybox:latest");
        assert_eq!(ok("user/app:2").familiar(), "user/app:2");
        assert_eq!(ok("localhost:5000/a:t").familiar(), "localhost:5000/a:t");
    }

    #[test]
    fn rejects_bad_references_clearly() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("docker.io/Library/x", "lowercase"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox:.x", "tag"),
            ("busybox@sha256:abc", "64 hex"),
            ("busybox@md5:abc", "not supported"),
            ("bus box", "spaces"),
            ("-busybox", "separator"),
            ("busybox-", "separator"),
            ("a..b", "separator"),
            ("a___b", "separator"),
            ("a$b", "character"),
            ("localhost:abc/x", "port"),
            ("localhost:5000/", "missing"),
            ("[::1/x", "unclosed"),
            ("ex-.com/x", "registry host"),
        ];
        for (input, needle) in cases {
            let e = input
                .parse::<Reference>()
                .expect_err(&format!("{input:?} must fail"))
                .to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
        }
        let long = format!("busybox:{}", "a".repeat(129));
        assert!(long.parse::<Reference>().is_err());
        let long = "a/".repeat(130) + "b";
        assert!(long.parse::<Reference>().is_err());
    }

    #[test]
    fn with_tag_replaces_tag_and_drops_digest() {
        let r = ok(&format!("busybox@{D}")).with_tag("mine").expect("tag");
        assert_eq!(r.to_string(), "docker.io/library/busybox:mine");
        assert!(ok("busybox").with_tag("bad tag").is_err());
    }
}
