//! A readable listing of a tar, one line per entry: what the tests compare
//! with their expected files, and a debugging aid.
//!
//! ```text
//! dir  etc/ mode=0755 uid=0 gid=0 mtime=1700000000
//! file etc/passwd mode=0644 uid=0 gid=0 size=12 mtime=1700000000 pax{SCHILY.xattr.user.a=b}
//! link usr/bin/sh -> busybox mode=0777 ...
//! ```
//!
//! Names and values are printed with `escape_ascii` (non-UTF-8 bytes as
//! `\xNN`); long values (over 80 bytes) are abbreviated to their length and
//! first bytes. PAX records are the ones of the entry's own extended header.

use std::fmt::Write as _;
use std::io::{self, Read};

fn esc(b: &[u8]) -> String {
    if b.len() > 80 {
        format!("{}…({} bytes)", b[..40].escape_ascii(), b.len())
    } else {
        b.escape_ascii().to_string()
    }
}

/// Lists the entries of an uncompressed tar (see the module docs).
pub fn tar_listing(tar: impl Read) -> io::Result<String> {
    listing(tar, false)
}

/// [`tar_listing`], with the SHA-256 of each entry's content (`sha256=…`,
/// first 16 hex digits) after its other fields: what tells two layers
/// apart when only a file's bytes differ.
pub fn tar_listing_with_digests(tar: impl Read) -> io::Result<String> {
    listing(tar, true)
}

fn listing(tar: impl Read, digests: bool) -> io::Result<String> {
    let mut out = String::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let mut pax = Vec::new();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                pax.push(format!(
                    "{}={}",
                    esc(ext.key_bytes()),
                    esc(ext.value_bytes())
                ));
            }
        }
        let path = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let h = entry.header();
        let t = h.entry_type();
        let kind = match t.as_byte() {
            b'0' | b'\0' => "file",
            b'1' => "hard",
            b'2' => "link",
            b'3' => "char",
            b'4' => "block",
            b'5' => "dir",
            b'6' => "fifo",
            b'S' => "sparse",
            b'g' => "paxg",
            _ => "other",
        };
        let _ = write!(out, "{kind:<5} {}", esc(&path));
        if let Some(l) = link.filter(|l| !l.is_empty()) {
            let _ = write!(out, " -> {}", esc(&l));
        }
        let _ = write!(
            out,
            " mode={:04o} uid={} gid={}",
            h.mode()?,
            h.uid()?,
            h.gid()?
        );
        if t.is_file() || entry.size() > 0 {
            let _ = write!(out, " size={}", entry.size());
        }
        let _ = write!(out, " mtime={}", h.mtime()?);
        if t.is_character_special() || t.is_block_special() {
            let _ = write!(
                out,
                " dev={},{}",
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0)
            );
        }
        if !pax.is_empty() {
            let _ = write!(out, " pax{{{}}}", pax.join(" "));
        }
        if digests {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            io::copy(&mut entry, &mut h)?;
            let sum = h.finalize();
            let hex: String = sum[..8].iter().map(|b| format!("{b:02x}")).collect();
            let _ = write!(out, " sha256={hex}");
        }
        out.push('\n');
        // Drain the data so the next header is found.
        io::copy(&mut entry, &mut io::sink())?;
    }
    Ok(out)
}
