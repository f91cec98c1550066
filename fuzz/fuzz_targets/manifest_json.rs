//! Feeds arbitrary bytes to the manifest, index and config parsers and the reference and
//! digest grammars: errors are fine, panics are not.
#![no_main]

use box_image::image::{config_diff_ids, parse_config, parse_index, parse_manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_manifest(data);
    let _ = parse_index(data);
    if let Ok(c) = parse_config(data) {
        let _ = config_diff_ids(&c);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<box_image::reference::Reference>();
        let _ = s.parse::<box_image::digest::Digest>();
    }
});
