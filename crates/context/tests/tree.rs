//! `Tree` semantics as data: each `testdata/context/tree/<case>/spec`
//! describes a directory, its `.dockerignore` and COPY sources; the test
//! builds the directory, resolves and walks every source, and compares the
//! rendering with `<case>/expected` (`UPDATE_EXPECT=1` regenerates it).
//!
//! Spec lines (`#` comments; paths may use `\xNN` escapes for raw bytes):
//!
//! ```text
//! file <path> [<octal mode> [<content>...]]
//! dir <path> [<octal mode>]
//! symlink <path> <target>
//! fifo <path>
//! ignore <.dockerignore line, verbatim>
//! copy <src> [nofollow] [nowildcard] [noempty] [include=<pat>]... [exclude=<pat>]...
//! ```

use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_context::{DigestOptions, ExpandOptions, Filter, StatCache, Tree};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let dir = kiln_testkit::testdata().join("context/tree");
    let trials = kiln_testkit::case_dirs(&dir)
        .into_iter()
        .map(|case| {
            let name = case
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Trial::test(name, move || run_case(&case))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// `\xNN` escapes to bytes.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && i + 4 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Bytes for the expected file: valid UTF-8 as is (control characters
/// escaped), invalid bytes as `\xNN`.
fn show(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

fn path_of(root: &Path, p: &str) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(&unescape(p)))
}

struct Copy {
    line: String,
    src: Vec<u8>,
    opts: ExpandOptions,
    include: Vec<Vec<u8>>,
    exclude: Vec<Vec<u8>>,
}

fn run_case(case: &Path) -> Result<(), Failed> {
    let spec = fs::read_to_string(case.join("spec"))?;
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("ctx");
    fs::create_dir(&root)?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    let mut ignore = Vec::new();
    let mut copies = Vec::new();
    for (n, line) in spec.lines().enumerate() {
        let err = |m: &str| format!("{}:{}: {m}", case.join("spec").display(), n + 1);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let words: Vec<&str> = rest.split(' ').collect();
        match kind {
            "file" => {
                let p = path_of(&root, words[0]);
                let mode = words
                    .get(1)
                    .map_or(Ok(0o644), |m| u32::from_str_radix(m, 8))?;
                let content = words.get(2..).map(|w| w.join(" ")).unwrap_or_default();
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::write(&p, unescape(&content))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
            }
            "dir" => {
                let p = path_of(&root, words[0]);
                let mode = words
                    .get(1)
                    .map_or(Ok(0o755), |m| u32::from_str_radix(m, 8))?;
                fs::create_dir_all(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
            }
            "symlink" => {
                let p = path_of(&root, words[0]);
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)?;
                }
                let target = unescape(words.get(1).ok_or_else(|| err("symlink needs a target"))?);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &p)?;
            }
            "fifo" => {
                let p = path_of(&root, words[0]);
                nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .map_err(|e| err(&e.to_string()))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
            }
            "ignore" => {
                ignore.extend_from_slice(&unescape(rest));
                ignore.push(b'\n');
            }
            "copy" => {
                let mut c = Copy {
                    line: line.to_owned(),
                    src: unescape(words[0]),
                    opts: ExpandOptions {
                        allow_wildcard: true,
                        allow_empty_wildcard: true,
                        follow_symlinks: true,
                    },
                    include: Vec::new(),
                    exclude: Vec::new(),
                };
                for w in &words[1..] {
                    match *w {
                        "nofollow" => c.opts.follow_symlinks = false,
                        "nowildcard" => c.opts.allow_wildcard = false,
                        "noempty" => c.opts.allow_empty_wildcard = false,
                        w => match w.split_once('=') {
                            Some(("include", p)) => c.include.push(unescape(p)),
                            Some(("exclude", p)) => c.exclude.push(unescape(p)),
                            _ => return Err(err(&format!("unknown copy flag {w}")).into()),
                        },
                    }
                }
                copies.push(c);
            }
            _ => return Err(err(&format!("unknown line kind {kind}")).into()),
        }
    }
    if !ignore.is_empty() {
        let p = root.join(".dockerignore");
        fs::write(&p, &ignore)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
    }

    let tree = Tree::open_context(&root, None)?;
    let mut out = String::new();
    for c in &copies {
        writeln!(out, "{}", c.line)?;
        let filter = match Filter::new(&c.include, &c.exclude) {
            Ok(f) => f,
            Err(e) => {
                writeln!(out, "  error: {e}")?;
                continue;
            }
        };
        let sources = match tree.expand(std::ffi::OsStr::from_bytes(&c.src), &c.opts) {
            Ok(s) => s,
            Err(e) => {
                writeln!(out, "  error: {e}")?;
                continue;
            }
        };
        if sources.is_empty() {
            writeln!(out, "  (no sources)")?;
        }
        for s in &sources {
            writeln!(
                out,
                "  source {} resolved {} ({})",
                show(s.path.as_os_str().as_bytes()),
                show(s.resolved.as_os_str().as_bytes()),
                kiln_context::FileType::of(&s.metadata).name()
            )?;
            match tree.walk(s, &filter) {
                Ok(entries) => {
                    for e in entries {
                        let p = e.path.as_os_str().as_bytes();
                        write!(
                            out,
                            "    {} {} {:04o}",
                            if p.is_empty() {
                                ".".to_owned()
                            } else {
                                show(p)
                            },
                            e.file_type.name(),
                            e.mode & 0o7777
                        )?;
                        if e.file_type == kiln_context::FileType::File {
                            write!(out, " size={}", e.size)?;
                        }
                        if let Some(t) = &e.symlink_target {
                            write!(out, " -> {}", show(t))?;
                        }
                        writeln!(out)?;
                    }
                }
                Err(e) => writeln!(out, "    error: {e}")?,
            }
        }
        let mut cache = StatCache::in_memory();
        match tree.digest(&sources, &filter, &mut cache, &DigestOptions::default()) {
            Ok((d, _)) => writeln!(out, "  digest {d}")?,
            Err(e) => writeln!(out, "  digest error: {e}")?,
        }
    }
    let out = out.replace(&root.display().to_string(), "<root>");
    match kiln_testkit::check(&case.join("expected"), &out) {
        None => Ok(()),
        Some(msg) => Err(msg.into()),
    }
}
