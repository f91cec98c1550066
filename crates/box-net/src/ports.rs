//! Published ports: `-p [IP:][HOSTPORT:]BOXPORT[/tcp|udp]` as docker writes them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A transport protocol a port is published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "tcp" | "" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(format!("unknown protocol {other:?}: use tcp or udp")),
        }
    }
}

/// One published port. A host port of 0 means "any free port", chosen when the box is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it is published on (none: every address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The port inside the box.
    pub box_port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl PortMapping {
    /// Whether the two mappings would take the same host port.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

fn port(text: &str, what: &str, spec: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "bad -p {spec:?}: {what} {text:?} is not a port (1-65535); ranges are not supported"
        )),
    }
}

impl FromStr for PortMapping {
    type Err = String;
    fn from_str(spec: &str) -> Result<PortMapping, String> {
        let (ports, proto) = match spec.rsplit_once('/') {
            Some((p, proto)) => (
                p,
                proto.parse().map_err(|e| format!("bad -p {spec:?}: {e}"))?,
            ),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, boxp) = match parts.as_slice() {
            [b] => (None, None, *b),
            [h, b] => (None, Some(*h), *b),
            [ip, h, b] => (Some(*ip), (!h.is_empty()).then_some(*h), *b),
            _ => {
                return Err(format!(
                    "bad -p {spec:?}: expected [IP:][HOSTPORT:]BOXPORT[/tcp|udp] (IPv6 hosts are \
                     not supported)"
                ))
            }
        };
        let host_ip = match ip {
            None | Some("") | Some("0.0.0.0") => None,
            Some(ip) => Some(
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| format!("bad -p {spec:?}: {ip:?} is not an IPv4 address"))?,
            ),
        };
        Ok(PortMapping {
            host_ip,
            host_port: match host {
                Some(h) => port(h, "host port", spec)?,
                None => 0,
            },
            box_port: port(boxp, "box port", spec)?,
            proto,
        })
    }
}

impl fmt::Display for PortMapping {
    /// docker's `box port` form: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        write!(
            f,
            "{}/{} -> {}:{}",
            self.box_port, self.proto, ip, self.host_port
        )
    }
}

impl PortMapping {
    /// docker ps's form: `0.0.0.0:8080->80/tcp`.
    pub fn ps_text(&self) -> String {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        format!("{ip}:{}->{}/{}", self.host_port, self.box_port, self.proto)
    }
}

/// A free host port for `proto` on `ip`, chosen by the kernel (for `-p BOXPORT` and `-P`).
pub fn free_port(ip: Option<Ipv4Addr>, proto: Proto) -> std::io::Result<u16> {
    let addr = (ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    match proto {
        Proto::Tcp => Ok(std::net::TcpListener::bind(addr)?.local_addr()?.port()),
        Proto::Udp => Ok(std::net::UdpSocket::bind(addr)?.local_addr()?.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.box_port, p.proto),
            (None, 8080, 80, Proto::Tcp)
        );
        let p: PortMapping = "127.0.0.1:8080:80/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.proto, Proto::Udp);
        let p: PortMapping = "80".parse().unwrap();
        assert_eq!(p.host_port, 0);
        let p: PortMapping = "127.0.0.1::80".parse().unwrap();
        assert_eq!((p.host_port, p.box_port), (0, 80));
        assert_eq!(
            "8080:80".parse::<PortMapping>().unwrap().to_string(),
            "80/tcp -> 0.0.0.0:8080"
        );
        assert_eq!(
            "127.0.0.1:53:5353/udp"
                .parse::<PortMapping>()
                .unwrap()
                .ps_text(),
            "127.0.0.1:53->5353/udp"
        );
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "x",
            "0:80",
            "8080:70000",
            "1.2.3:8080:80",
            "80/sctp",
            "8000-8010:80",
            "a:b:c:d",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn clashes() {
        let a: PortMapping = "8080:80".parse().unwrap();
        let b: PortMapping = "127.0.0.1:8080:81".parse().unwrap();
        let c: PortMapping = "8080:80/udp".parse().unwrap();
        assert!(a.clashes_with(&b) && !a.clashes_with(&c));
    }
}
