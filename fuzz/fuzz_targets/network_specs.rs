//! Feeds arbitrary text to the `-p` port and subnet parsers (box.toml and the command line):
//! errors are fine, panics are not; what parses prints and parses back the same.
#![no_main]

use box_net::ports::PortMapping;
use box_net::subnet::Subnet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(subnet) = s.parse::<Subnet>() {
        assert_eq!(subnet.to_string().parse::<Subnet>(), Ok(subnet));
        let _ = subnet.next_free(&[subnet.gateway()]);
    }
    if let Ok(p) = s.parse::<PortMapping>() {
        let _ = p.to_string();
        assert!(p.box_port > 0);
    }
});
