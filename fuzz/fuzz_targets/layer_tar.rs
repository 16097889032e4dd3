//! Arbitrary bytes as a layer tar, unpacked (whiteouts converted) into a
//! fresh directory, then as an `ADD` archive, then the unpacked tree written
//! back as a layer tar. Nothing may panic, and nothing may be written
//! outside the directory (checked: the parent holds only it).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tmp) = tempfile::tempdir() else { return };
    let layer = tmp.path().join("layer");
    let extract = tmp.path().join("extract");
    if std::fs::create_dir(&layer).is_err() || std::fs::create_dir(&extract).is_err() {
        return;
    }
    let _ = kiln_snapshot::unpack_layer(data, &layer, kiln_snapshot::WhiteoutFormat::Device);
    let _ = kiln_snapshot::extract_archive(
        data,
        &extract,
        &kiln_snapshot::ExtractOptions::default(),
    );
    let _ = kiln_snapshot::write_layer_tar(
        &layer,
        std::io::sink(),
        &kiln_snapshot::TarOptions { mtime_clamp: None },
    );
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    assert_eq!(names, ["extract", "layer"], "something was written beside the target");
});
