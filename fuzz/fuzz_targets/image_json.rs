//! Arbitrary bytes as an image configuration, a manifest and an index, as
//! kiln reads them from registries and archives; what parses is written
//! back and parsed again. Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = kiln_oci::ImageConfigFile::from_json(data, "fuzz") {
        let _ = c.platform();
        if let Ok(bytes) = c.to_json() {
            let again = kiln_oci::ImageConfigFile::from_json(&bytes, "fuzz again");
            assert!(again.is_ok(), "a config kiln wrote does not parse");
        }
    }
    if let Ok(m) = serde_json::from_slice::<kiln_oci::Manifest>(data) {
        let _ = serde_json::to_vec(&m);
    }
    if let Ok(i) = serde_json::from_slice::<kiln_oci::Index>(data) {
        let _ = serde_json::to_vec(&i);
    }
});
