//! RUN for another architecture: QEMU user emulation through the kernel's
//! binfmt_misc.
//!
//! kiln does not start QEMU itself: a handler registered in
//! `/proc/sys/fs/binfmt_misc` makes the kernel run a foreign ELF binary
//! through its interpreter. It must carry the `F` (fix-binary) flag, so the
//! kernel opened the interpreter when it was registered and it works inside
//! a step's root filesystem, which does not contain it. Debian's
//! `qemu-user-static` registers such handlers (`qemu-aarch64`, `qemu-arm`,
//! `qemu-riscv64`, …) through binfmt-support's `update-binfmts` or
//! systemd-binfmt. What is missing is reported before the step runs, with
//! what to do about it. Steps for this machine's architecture (and i386 on
//! amd64) never need emulation.

use std::path::Path;

use kiln_llb::Platform;

/// Where binfmt_misc is mounted.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Why a step for another architecture cannot run.
#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    #[error(
        "RUN for {platform} needs QEMU user emulation, but binfmt_misc is not mounted at {dir}: \
         mount it (`mount -t binfmt_misc binfmt_misc {dir}`), then install Debian's \
         qemu-user-static (`apt-get install qemu-user-static`), which registers the handlers \
         (or `update-binfmts --enable` if it is installed)"
    )]
    NotMounted { platform: String, dir: String },
    #[error(
        "RUN for {platform} needs QEMU user emulation, and no binfmt_misc handler for {machine} \
         is registered ({path} does not exist): install Debian's qemu-user-static \
         (`apt-get install qemu-user-static`; if it is installed, `update-binfmts --enable \
         qemu-{machine}`)"
    )]
    Missing {
        platform: String,
        machine: &'static str,
        path: String,
    },
    #[error(
        "RUN for {platform} needs QEMU user emulation, and the binfmt_misc handler {path} is \
         disabled: enable it (`update-binfmts --enable qemu-{machine}`, or `echo 1 > {path}`)"
    )]
    Disabled {
        platform: String,
        machine: &'static str,
        path: String,
    },
    #[error(
        "RUN for {platform} needs QEMU user emulation, and the binfmt_misc handler {path} lacks \
         the F (fix-binary) flag (flags: {flags:?}), so its interpreter {interpreter} cannot be \
         found inside the step's filesystem: install Debian's qemu-user-static, whose handlers \
         have it"
    )]
    NoFixBinary {
        platform: String,
        path: String,
        flags: String,
        interpreter: String,
    },
    #[error("RUN for {platform}: kiln knows no QEMU emulator for the architecture {arch:?}")]
    Unknown { platform: String, arch: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// QEMU's name of the machine of `p` (the `qemu-<name>` binfmt handler).
pub fn qemu_machine(p: &Platform) -> Option<&'static str> {
    Some(match p.architecture.as_str() {
        "amd64" => "x86_64",
        "386" => "i386",
        "arm64" => "aarch64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "ppc64le" => "ppc64le",
        "ppc64" => "ppc64",
        "s390x" => "s390x",
        "mips64le" => "mips64el",
        "mips64" => "mips64",
        "mipsle" => "mipsel",
        "mips" => "mips",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Whether `host` runs binaries of `target` itself.
pub fn runs_natively(host: &Platform, target: &Platform) -> bool {
    host.architecture == target.architecture
        || (host.architecture == "amd64" && target.architecture == "386")
}

/// A registered handler, as its `/proc/sys/fs/binfmt_misc/<name>` file
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
}

/// Parses a handler file (`enabled`, `interpreter …`, `flags: …`, …).
pub fn parse_handler(text: &str) -> Handler {
    let mut h = Handler {
        enabled: false,
        interpreter: String::new(),
        flags: String::new(),
    };
    for line in text.lines() {
        if line == "enabled" {
            h.enabled = true;
        } else if let Some(i) = line.strip_prefix("interpreter ") {
            h.interpreter = i.to_owned();
        } else if let Some(f) = line.strip_prefix("flags:") {
            h.flags = f.trim().to_owned();
        }
    }
    h
}

/// Checks that RUN for `target` can run on this machine (`host`), with
/// binfmt_misc mounted at `dir`.
pub fn check_in(dir: &Path, host: &Platform, target: &Platform) -> Result<(), EmulationError> {
    if runs_natively(host, target) {
        return Ok(());
    }
    let platform = target.format();
    let machine = qemu_machine(target).ok_or_else(|| EmulationError::Unknown {
        platform: platform.clone(),
        arch: target.architecture.clone(),
    })?;
    if !dir.join("status").exists() {
        return Err(EmulationError::NotMounted {
            platform,
            dir: dir.display().to_string(),
        });
    }
    let path = dir.join(format!("qemu-{machine}"));
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EmulationError::Missing {
                platform,
                machine,
                path: shown,
            });
        }
        Err(source) => {
            return Err(EmulationError::Io {
                path: shown,
                source,
            });
        }
    };
    let h = parse_handler(&text);
    if !h.enabled {
        return Err(EmulationError::Disabled {
            platform,
            machine,
            path: shown,
        });
    }
    if !h.flags.contains('F') {
        return Err(EmulationError::NoFixBinary {
            platform,
            path: shown,
            flags: h.flags,
            interpreter: h.interpreter,
        });
    }
    Ok(())
}

/// [`check_in`] on this machine.
pub fn check(target: &Platform) -> Result<(), EmulationError> {
    check_in(Path::new(BINFMT_MISC), &Platform::host(), target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn native_platforms_need_nothing() {
        let none = Path::new("/nonexistent/binfmt_misc");
        check_in(none, &p("linux/amd64"), &p("linux/amd64")).unwrap();
        check_in(none, &p("linux/amd64"), &p("linux/386")).unwrap();
        check_in(none, &p("linux/arm64"), &p("linux/arm64")).unwrap();
    }

    #[test]
    fn handlers_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let host = p("linux/amd64");
        let err = check_in(dir.path(), &host, &p("linux/arm64")).unwrap_err();
        assert!(matches!(err, EmulationError::NotMounted { .. }), "{err}");
        assert!(err.to_string().contains("mount -t binfmt_misc"), "{err}");
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let err = check_in(dir.path(), &host, &p("linux/arm64")).unwrap_err();
        assert!(err.to_string().contains("qemu-user-static"), "{err}");
        assert!(err.to_string().contains("qemu-aarch64"), "{err}");
        let handler = |enabled: &str, flags: &str| {
            format!(
                "{enabled}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\n"
            )
        };
        let file = dir.path().join("qemu-aarch64");
        std::fs::write(&file, handler("disabled", "PF")).unwrap();
        let err = check_in(dir.path(), &host, &p("linux/arm64")).unwrap_err();
        assert!(matches!(err, EmulationError::Disabled { .. }), "{err}");
        std::fs::write(&file, handler("enabled", "P")).unwrap();
        let err = check_in(dir.path(), &host, &p("linux/arm64")).unwrap_err();
        assert!(matches!(err, EmulationError::NoFixBinary { .. }), "{err}");
        std::fs::write(&file, handler("enabled", "PF")).unwrap();
        check_in(dir.path(), &host, &p("linux/arm64")).unwrap();
        // arm/v7 is QEMU's `arm`, which is not registered here.
        let err = check_in(dir.path(), &host, &p("linux/arm/v7")).unwrap_err();
        assert!(err.to_string().contains("qemu-arm "), "{err}");
        let err = check_in(dir.path(), &host, &p("linux/sparc64")).unwrap_err();
        assert!(matches!(err, EmulationError::Unknown { .. }), "{err}");
    }
}
