//! IPv4 subnets and the address arithmetic of a bridge network: its gateway, the next free
//! address for a box, and the hardware address that goes with a box's address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 subnet `ADDR/PREFIX` (the address is its first, host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length (8 to 30: room for a gateway and at least one box).
    pub prefix: u8,
}

impl Subnet {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// The gateway: the subnet's first host address (the bridge's own address).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The lowest host address after the gateway that is not in `used` (none when full).
    pub fn next_free(&self, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let first = u32::from(self.gateway()) + 1;
        let broadcast = u32::from(self.addr) | !self.mask();
        let mut taken: Vec<u32> = used.iter().map(|ip| u32::from(*ip)).collect();
        taken.sort_unstable();
        let mut candidate = first;
        for t in taken {
            if t == candidate {
                candidate += 1;
            } else if t > candidate {
                break;
            }
        }
        (candidate < broadcast).then(|| Ipv4Addr::from(candidate))
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Subnet, String> {
        let bad = || format!("bad subnet {s:?}: expected IPv4 ADDRESS/PREFIX, e.g. 10.89.0.0/24");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "bad subnet {s:?}: the prefix must be between /8 and /30"
            ));
        }
        let subnet = Subnet { addr, prefix };
        if u32::from(addr) & !subnet.mask() != 0 {
            return Err(format!(
                "bad subnet {s:?}: host bits are set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(addr) & subnet.mask())
            ));
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The hardware address of the box interface with address `ip`: locally administered,
/// derived from the address as docker does (so it stays the same across restarts).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:…` of a hardware address.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_allocates() {
        let s: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(s.next_free(&[]), Some(Ipv4Addr::new(10, 88, 0, 2)));
        let used = [Ipv4Addr::new(10, 88, 0, 3), Ipv4Addr::new(10, 88, 0, 2)];
        assert_eq!(s.next_free(&used), Some(Ipv4Addr::new(10, 88, 0, 4)));
        // A freed address is handed out again.
        let used = [Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 4)];
        assert_eq!(s.next_free(&used), Some(Ipv4Addr::new(10, 88, 0, 3)));
        assert!(s.contains(Ipv4Addr::new(10, 88, 255, 1)));
        assert!(!s.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert_eq!(s.to_string(), "10.88.0.0/16");
    }

    #[test]
    fn full_subnet_has_no_free_address() {
        let s: Subnet = "10.1.2.0/30".parse().unwrap();
        assert_eq!(s.next_free(&[]), Some(Ipv4Addr::new(10, 1, 2, 2)));
        assert_eq!(s.next_free(&[Ipv4Addr::new(10, 1, 2, 2)]), None);
    }

    #[test]
    fn rejects_bad_subnets() {
        for bad in [
            "10.88.0.0",
            "10.88.0.1/16",
            "10.88.0.0/31",
            "10.88.0.0/4",
            "x/16",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        let a: Subnet = "10.88.0.0/16".parse().unwrap();
        let b: Subnet = "10.88.5.0/24".parse().unwrap();
        let c: Subnet = "10.89.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
    }

    #[test]
    fn mac_follows_the_address() {
        assert_eq!(
            mac_text(mac_for(Ipv4Addr::new(10, 88, 0, 2))),
            "02:42:0a:58:00:02"
        );
    }
}
