//! OCI platforms (`linux/arm64`, `linux/arm/v7`) with containerd's parsing and
//! normalisation rules, so that `--platform` and `FROM --platform` mean what they
//! mean to Docker.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An OCI platform. Always normalised: `aarch64` is stored as `arm64`, `linux/arm`
/// as `linux/arm/v7`, and so on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_version: String,
}

/// Why a platform string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParsePlatformError {
    #[error("invalid platform {0:?}: wildcards are not allowed")]
    Wildcard(String),
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64")]
    Malformed(String),
}

impl Platform {
    /// A normalised platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: normalize_os(os),
            architecture,
            variant,
            os_version: String::new(),
        }
    }

    /// The platform of the machine kiln runs on, as Go's `runtime.GOARCH` would
    /// name it.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, "")
    }

    /// `os/arch[/variant]`, as containerd's `platforms.Format`.
    pub fn format(&self) -> String {
        let os = if self.os.is_empty() {
            "unknown"
        } else {
            &self.os
        };
        let mut s = format!("{os}/{}", self.architecture);
        if !self.variant.is_empty() {
            s.push('/');
            s.push_str(&self.variant);
        }
        s
    }

    /// Like [`Platform::format`] but with the OS version, as `platforms.FormatAll`.
    pub fn format_all(&self) -> String {
        if self.os_version.is_empty() {
            return self.format();
        }
        let mut s = format!("{}({})/{}", self.os, self.os_version, self.architecture);
        if !self.variant.is_empty() {
            s.push('/');
            s.push_str(&self.variant);
        }
        s
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format_all())
    }
}

impl FromStr for Platform {
    type Err = ParsePlatformError;

    /// Parses like containerd's `platforms.Parse` followed by `Normalize`: a lone
    /// OS gets the host architecture, a lone architecture gets the `linux` OS.
    fn from_str(s: &str) -> Result<Platform, ParsePlatformError> {
        if s.contains('*') {
            return Err(ParsePlatformError::Wildcard(s.to_owned()));
        }
        let malformed = || ParsePlatformError::Malformed(s.to_owned());
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        // The OS part may carry a version: `windows(10.0.17763)`.
        let (os, os_version) = match parts[0].split_once('(') {
            Some((os, rest)) => {
                let version = rest.strip_suffix(')').ok_or_else(malformed)?;
                if !version
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                {
                    return Err(malformed());
                }
                (os, version)
            }
            None => (parts[0], ""),
        };
        if !valid(os) || !parts[1..].iter().all(|p| valid(p)) {
            return Err(malformed());
        }
        let mut p = match parts.len() {
            1 if is_known_os(&os.to_ascii_lowercase()) => {
                let host = Platform::host();
                Platform::new(os, &host.architecture, &host.variant)
            }
            1 if !os_version.is_empty() => return Err(malformed()),
            1 => Platform::new("linux", os, ""),
            2 => Platform::new(os, parts[1], ""),
            3 => Platform::new(os, parts[1], parts[2]),
            _ => return Err(malformed()),
        };
        p.os_version = os_version.to_owned();
        Ok(p)
    }
}

fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
            | "macos"
    )
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        return "darwin".to_owned();
    }
    os
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let (a, v): (&str, &str) = match arch.as_str() {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { &variant }),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" | "v8.0" => "",
                "9" | "9.0" | "v9.0" => "v9",
                other => other,
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7",
                "5" => "v5",
                "6" => "v6",
                "8" => "v8",
                other => other,
            },
        ),
        other => (other, &variant),
    };
    (a.to_owned(), v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        match s.parse::<Platform>() {
            Ok(p) => p.format_all(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn parse_and_normalise() {
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6"), "linux/arm/v6");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("Linux/ARM64"), "linux/arm64");
        assert_eq!(p("arm64"), "linux/arm64");
        assert_eq!(p("riscv64"), "linux/riscv64");
        assert_eq!(p("linux/386"), "linux/386");
        assert_eq!(p("linux/i386"), "linux/386");
        assert_eq!(p("windows(10.0.17763)/amd64"), "windows(10.0.17763)/amd64");
        assert!(p("linux").starts_with("linux/"));
        assert!(p("").starts_with("error"));
        assert!(p("linux/").starts_with("error"));
        assert!(p("linux/*").starts_with("error"));
        assert!(p("a/b/c/d").starts_with("error"));
        assert!(p("linux/am d64").starts_with("error"));
    }
}
