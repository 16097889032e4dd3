//! A section of an ELF executable, read with `object` from the file in
//! parts (a binary may be hundreds of megabytes; only its headers and the
//! section are read).

use std::fs::File;
use std::io::{self, Read as _};

use object::{Object as _, ObjectSection as _};

/// The bytes of section `name` of the ELF file `f` (at most `limit`), if
/// `f` is an ELF file with that section.
pub(crate) fn section(mut f: File, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut magic = [0u8; 4];
    if f.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
        return Ok(None);
    }
    let cache = object::ReadCache::new(f);
    let Ok(file) = object::File::parse(&cache) else {
        return Ok(None);
    };
    let Some(s) = file.section_by_name(name) else {
        return Ok(None);
    };
    if s.size() > limit {
        return Ok(None);
    }
    Ok(s.data().ok().map(<[u8]>::to_vec))
}
