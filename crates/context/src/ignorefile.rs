//! Reading `.dockerignore` files (port of moby/patternmatcher/ignorefile) and
//! finding the one that applies (BuildKit's dockerui rule).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::gostd::{path, utf8};
use crate::resolve::{self, Resolved};

/// Why an ignore file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreFileError {
    /// A line longer than Go's `bufio.Scanner` accepts (64 KiB); BuildKit
    /// fails the build with `bufio.Scanner: token too long`.
    #[error("{path}: line {line} is too long (Go's bufio.Scanner limit is 65535 bytes)")]
    LineTooLong {
        /// The ignore file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The file exists but cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The ignore file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Go's `bufio.MaxScanTokenSize`: a line (without its `\n`) must be shorter.
const MAX_LINE: usize = 64 * 1024;

/// Upstream's `ReadAll`: the patterns of an ignore file, in order.
///
/// Lines are split at `\n` (a `\r` before it is dropped); a UTF-8 BOM is
/// stripped from the first line; lines starting with `#` (at column 0, before
/// any trimming) are comments; the rest is trimmed and skipped when empty. A
/// leading `!` marks an exception and is trimmed again after. The pattern is
/// then cleaned (`filepath.Clean`) and one leading `/` removed, so `/foo` and
/// `foo` are the same pattern. `file` only names the file in errors.
pub fn read_all(data: &[u8], file: &Path) -> Result<Vec<Vec<u8>>, IgnoreFileError> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut line_no = 0;
    while !rest.is_empty() {
        let (mut line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        if line.len() >= MAX_LINE {
            return Err(IgnoreFileError::LineTooLong {
                path: file.to_owned(),
                line: line_no + 1,
            });
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line_no == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        line_no += 1;
        if line.first() == Some(&b'#') {
            continue;
        }
        let mut pattern = utf8::trim_space(line);
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern[0] == b'!';
        if invert {
            pattern = utf8::trim_space(&pattern[1..]);
        }
        let mut p = Vec::with_capacity(pattern.len() + 1);
        if invert {
            p.push(b'!');
        }
        if !pattern.is_empty() {
            let cleaned = path::clean(pattern);
            match cleaned.strip_prefix(b"/") {
                Some(rel) if !rel.is_empty() => p.extend_from_slice(rel),
                _ => p.extend_from_slice(&cleaned),
            }
        }
        out.push(p);
    }
    Ok(out)
}

/// Reads and parses an ignore file.
pub fn read_file(file: &Path) -> Result<Vec<Vec<u8>>, IgnoreFileError> {
    let data = std::fs::read(file).map_err(|source| IgnoreFileError::Read {
        path: file.to_owned(),
        source,
    })?;
    read_all(&data, file)
}

/// The ignore file that applies to a build, as BuildKit's Dockerfile
/// frontend chooses it: `<Dockerfile>.dockerignore` beside the Dockerfile
/// (for `-f path/to/x.Dockerfile`, `path/to/x.Dockerfile.dockerignore`; for
/// the default, `<context>/Dockerfile.dockerignore`) takes precedence over
/// `<context>/.dockerignore`. Each is looked up inside its own directory with
/// symlinks resolved within that directory (BuildKit reads both through its
/// local-source transfer); only a regular file counts. Returns the host path
/// of the file to read.
///
/// `dockerfile` is the `-f` path as the CLI would resolve it (relative to the
/// current directory); `None` means `<context>/Dockerfile`.
pub fn find_ignore_file(context_dir: &Path, dockerfile: Option<&Path>) -> Option<PathBuf> {
    let default;
    let dockerfile = match dockerfile {
        Some(d) => d,
        None => {
            default = context_dir.join("Dockerfile");
            &default
        }
    };
    if let (Some(dir), Some(name)) = (dockerfile.parent(), dockerfile.file_name()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut ignore_name = name.as_bytes().to_vec();
        ignore_name.extend_from_slice(b".dockerignore");
        if let Some(p) = regular_file_in(dir, &ignore_name) {
            return Some(p);
        }
    }
    regular_file_in(context_dir, b".dockerignore")
}

/// `name` inside `root`, symlinks resolved within `root`, if a regular file.
fn regular_file_in(root: &Path, name: &[u8]) -> Option<PathBuf> {
    let mut rel = b"/".to_vec();
    rel.extend_from_slice(name);
    let Resolved { host, .. } = resolve::secure_join_host(root, &rel).ok()?;
    let meta = std::fs::symlink_metadata(&host).ok()?;
    meta.is_file().then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines() {
        let ok = vec![b'a'; MAX_LINE - 1];
        assert_eq!(read_all(&ok, Path::new("x")).map(|v| v.len()).ok(), Some(1));
        let too_long = vec![b'a'; MAX_LINE];
        assert!(matches!(
            read_all(&too_long, Path::new("x")),
            Err(IgnoreFileError::LineTooLong { line: 1, .. })
        ));
    }
}
