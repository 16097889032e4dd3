//! Go binaries: the build information the Go linker embeds (section
//! `.go.buildinfo`, Go 1.18 and later: the Go version and the module
//! information of `runtime/debug.BuildInfo`, as `go version -m` prints
//! it). The main module, each dependency (a replaced one as its
//! replacement) and the standard library (`stdlib`, at the Go version) are
//! packages. Binaries of Go before 1.18 store pointers instead of strings
//! and are not read.

use kiln_attest::purl::Purl;

use crate::scanner::{Package, ScanError, Scanner};
use crate::tree::{Entry, Tree};

const MAGIC: &[u8] = b"\xff Go buildinf:";

#[derive(Debug)]
pub struct Go;

/// The Go version and module information of a `.go.buildinfo` section.
pub fn buildinfo(section: &[u8]) -> Option<(String, String)> {
    // The header is 32-byte aligned at the start of the section.
    let start = (0..section.len().saturating_sub(32))
        .step_by(16)
        .find(|&i| section[i..].starts_with(MAGIC))?;
    let data = &section[start..];
    if data.len() < 32 || data[15] & 2 == 0 {
        return None;
    }
    let (version, rest) = varint_string(&data[32..])?;
    let (modinfo, _) = varint_string(rest)?;
    let mut modinfo = modinfo;
    // The module information is framed by 16-byte sentinels.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    Some((
        String::from_utf8_lossy(version).into_owned(),
        String::from_utf8_lossy(modinfo).into_owned(),
    ))
}

fn varint_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut n: u64 = 0;
    let mut shift = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let len = usize::try_from(n).ok()?;
            let rest = &b[i + 1..];
            return (rest.len() >= len).then(|| (&rest[..len], &rest[len..]));
        }
        shift += 7;
    }
    None
}

/// (path, version) of the main module and each dependency, from the text
/// `runtime/debug.ParseBuildInfo` reads.
pub fn modules(modinfo: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod" | "dep", path, version, ..] => {
                out.push(((*path).to_owned(), (*version).to_owned()))
            }
            ["mod" | "dep", path] => out.push(((*path).to_owned(), String::new())),
            ["=>", path, version, ..] => {
                if let Some(last) = out.last_mut() {
                    *last = ((*path).to_owned(), (*version).to_owned());
                }
            }
            _ => {}
        }
    }
    out
}

impl Scanner for Go {
    fn name(&self) -> &'static str {
        "go"
    }

    fn wants(&self, e: &Entry) -> bool {
        e.is_executable() && e.size >= 64
    }

    fn scan(&self, e: &Entry, tree: &dyn Tree) -> Result<Vec<Package>, ScanError> {
        let Some(f) = tree.open(&e.path)? else {
            return Ok(Vec::new());
        };
        let Some(section) = crate::elf::section(f, ".go.buildinfo", 16 << 20)? else {
            return Ok(Vec::new());
        };
        let Some((go, modinfo)) = buildinfo(&section) else {
            return Ok(Vec::new());
        };
        let pkg = |name: &str, version: &str| Package {
            ecosystem: "golang".to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            purl: {
                let (ns, short) = name.rsplit_once('/').unwrap_or(("", name));
                Purl::new("golang", ns, short, version).to_string()
            },
            evidence: e.path.clone(),
            source: format!(
                "acquired package info from go module information: {}",
                e.path
            ),
            ..Package::default()
        };
        let mut out: Vec<Package> = modules(&modinfo).iter().map(|(p, v)| pkg(p, v)).collect();
        if let Some(v) = go.strip_prefix("go") {
            let mut std = pkg("stdlib", &go);
            std.purl = Purl::new("golang", "", "stdlib", v).to_string();
            out.push(std);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn module_lines() {
        let m = "path\texample.com/hello\nmod\texample.com/hello\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.0\th1:abc=\ndep\texample.com/old\tv1.0.0\th1:x=\n=>\texample.com/new\tv1.1.0\th1:y=\nbuild\t-compiler=gc\n";
        assert_eq!(
            super::modules(m),
            [
                ("example.com/hello".to_owned(), "(devel)".to_owned()),
                ("golang.org/x/text".to_owned(), "v0.3.0".to_owned()),
                ("example.com/new".to_owned(), "v1.1.0".to_owned()),
            ]
        );
    }
}
