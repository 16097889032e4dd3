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

impl Platform {
    /// The platform with containerd's normalisation (`platforms.Normalize`)
    /// applied to its OS, architecture and variant: for platforms read from
    /// an image index or configuration, which are kept as written.
    pub fn normalized(&self) -> Platform {
        let mut p = Platform::new(&self.os, &self.architecture, &self.variant);
        p.os_version = self.os_version.clone();
        p
    }

    /// The platforms a machine of this platform runs, best first: containerd's
    /// `platformVector` (what `platforms.Only` matches, in its order). An
    /// amd64/vN machine runs amd64/vN…v1, then 386; arm/vN runs arm/vN…v5;
    /// arm64 (v8 when no variant is given) runs the arm64 variants it
    /// includes (v9 includes v8.5 and below), then arm/v8…v5. An arm64
    /// variant containerd does not know runs nothing.
    pub fn compatible(&self) -> Vec<Platform> {
        let p = self.normalized();
        let with = |arch: &str, variant: &str| {
            let mut q = Platform::new(&p.os, arch, variant);
            q.os_version = p.os_version.clone();
            q
        };
        let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        let mut out = vec![p.clone()];
        match p.architecture.as_str() {
            "amd64" => {
                if let Some(n) = level(&p.variant).filter(|n| *n > 1) {
                    out.extend((1..n).rev().map(|k| with("amd64", &format!("v{k}"))));
                }
                out.push(with("386", ""));
            }
            "arm" => {
                if let Some(n) = level(&p.variant).filter(|n| *n > 5) {
                    out.extend((5..n).rev().map(|k| with("arm", &format!("v{k}"))));
                }
            }
            "arm64" => {
                let variant = if p.variant.is_empty() {
                    "v8"
                } else {
                    p.variant.as_str()
                };
                out.clear();
                // containerd's arm64variantToVersion: (major, highest minor).
                let versions: &[(u32, u32)] = match variant {
                    "v8" | "v8.0" => &[(8, 0)],
                    "v8.1" => &[(8, 1)],
                    "v8.2" => &[(8, 2)],
                    "v8.3" => &[(8, 3)],
                    "v8.4" => &[(8, 4)],
                    "v8.5" => &[(8, 5)],
                    "v8.6" => &[(8, 6)],
                    "v8.7" => &[(8, 7)],
                    "v8.8" => &[(8, 8)],
                    "v8.9" => &[(8, 9)],
                    "v9" | "v9.0" => &[(9, 0), (8, 5)],
                    "v9.1" => &[(9, 1), (8, 6)],
                    "v9.2" => &[(9, 2), (8, 7)],
                    "v9.3" => &[(9, 3), (8, 8)],
                    "v9.4" => &[(9, 4), (8, 9)],
                    "v9.5" => &[(9, 5), (8, 9)],
                    "v9.6" => &[(9, 6), (8, 9)],
                    "v9.7" => &[(9, 7), (8, 9)],
                    _ => return out,
                };
                for &(major, top) in versions {
                    for minor in (0..=top).rev() {
                        let v = if minor == 0 {
                            format!("v{major}")
                        } else {
                            format!("v{major}.{minor}")
                        };
                        out.push(with("arm64", &v));
                    }
                }
                // All of them run 32-bit arm/v8 and below.
                out.extend((5..=8).rev().map(|k| with("arm", &format!("v{k}"))));
            }
            _ => {}
        }
        out
    }

    /// How well an image for `have` suits a machine of this platform, as
    /// containerd's `platforms.Only(self)` orders it: its position among
    /// [`Platform::compatible`] (0 is an exact match), `None` when it cannot
    /// run here. Both sides are normalised; OS versions are compared for
    /// Windows only, as containerd's `windowsVersionMatcher` does.
    pub fn rank(&self, have: &Platform) -> Option<usize> {
        let have = have.normalized();
        if have.os == "windows" && !windows_compatible(&self.os_version, &have.os_version) {
            return None;
        }
        self.compatible().iter().position(|c| {
            c.os == have.os && c.architecture == have.architecture && c.variant == have.variant
        })
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

/// containerd's `windowsVersionMatcher`: whether a Windows machine of
/// version `host` runs an image of version `image` (`major.minor.build[.rev]`).
/// Either unknown matches; otherwise major and minor must be equal, and the
/// build too before LTSC 2022 (20348), while a newer host runs images from
/// the LTSC release it follows up to its own build.
fn windows_compatible(host: &str, image: &str) -> bool {
    let parse = |v: &str| -> Option<(u8, u8, u16)> {
        if v.matches('.').count() < 2 {
            return None;
        }
        let mut parts = v.splitn(4, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let build = parts.next()?.parse().ok()?;
        Some((major, minor, build))
    };
    let host = parse(host).filter(|h| *h != (0, 0, 0));
    let (Some(host), false) = (host, image.is_empty()) else {
        return true;
    };
    let image = parse(image).unwrap_or((0, 0, 0));
    if host.0 != image.0 || host.1 != image.1 {
        return false;
    }
    const LTSC: [u16; 2] = [20348, 26100];
    if host.2 < LTSC[0] {
        return host.2 == image.2;
    }
    let supported = LTSC
        .iter()
        .rev()
        .find(|l| host.2 > **l)
        .copied()
        .unwrap_or(LTSC[0]);
    supported <= image.2 && image.2 <= host.2
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

    /// containerd's `normalizeArch` for arm64: `v8` (and `8`, `v8.0`) is the
    /// default and is dropped, `v9` is kept.
    #[test]
    fn arm64_variants() {
        for s in [
            "linux/arm64",
            "linux/arm64/v8",
            "linux/arm64/8",
            "linux/aarch64/v8.0",
        ] {
            let plat: Platform = s.parse().unwrap();
            assert_eq!(plat, Platform::new("linux", "arm64", ""), "{s}");
            assert_eq!(plat.format(), "linux/arm64", "{s}");
        }
        assert_eq!(p("linux/arm64/v9.0"), "linux/arm64/v9");
        assert_eq!(p("linux/arm64/v8.2"), "linux/arm64/v8.2");
        // As written in an index (not normalised), then normalised.
        let raw = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: "v8".into(),
            os_version: String::new(),
        };
        assert_eq!(raw.normalized(), Platform::new("linux", "arm64", ""));
    }

    fn names(p: &str) -> Vec<String> {
        p.parse::<Platform>()
            .unwrap()
            .compatible()
            .iter()
            .map(Platform::format)
            .collect()
    }

    /// containerd's `platformVector`, in order.
    #[test]
    fn compatible_platforms() {
        assert_eq!(names("linux/amd64"), ["linux/amd64", "linux/386"]);
        assert_eq!(
            names("linux/amd64/v3"),
            [
                "linux/amd64/v3",
                "linux/amd64/v2",
                "linux/amd64",
                "linux/386"
            ]
        );
        assert_eq!(
            names("linux/arm/v7"),
            ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
        );
        let arm32 = [
            "linux/arm/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/arm/v5",
        ];
        let mut want = vec!["linux/arm64"];
        want.extend(arm32);
        assert_eq!(names("linux/arm64"), want);
        assert_eq!(names("linux/arm64/v8"), want);
        let mut want = vec![
            "linux/arm64/v9",
            "linux/arm64/v8.5",
            "linux/arm64/v8.4",
            "linux/arm64/v8.3",
            "linux/arm64/v8.2",
            "linux/arm64/v8.1",
            "linux/arm64",
        ];
        want.extend(arm32);
        assert_eq!(names("linux/arm64/v9"), want);
        assert!(names("linux/arm64/v7").is_empty());
        assert_eq!(names("linux/riscv64"), ["linux/riscv64"]);
    }

    /// The table of containerd's `TestOnly` (containerd/platforms
    /// compare_test.go): what `Only(platform)` matches and what it does not.
    #[test]
    fn containerd_only_table() {
        let table: &[(&str, &[&str], &[&str])] = &[
            (
                "linux/amd64",
                &["linux/amd64", "linux/386"],
                &[
                    "linux/amd64/v2",
                    "linux/arm/v7",
                    "linux/arm64",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "linux/amd64/v2",
                &[
                    "linux/amd64",
                    "linux/amd64/v1",
                    "linux/amd64/v2",
                    "linux/386",
                ],
                &[
                    "linux/amd64/v3",
                    "linux/amd64/v4",
                    "linux/arm/v7",
                    "linux/arm64",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "linux/386",
                &["linux/386"],
                &[
                    "linux/amd64",
                    "linux/arm/v7",
                    "linux/arm64",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "windows/amd64",
                &["windows/amd64", "windows(10.0.17763)/amd64"],
                &["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"],
            ),
            (
                "linux/arm/v8",
                &[
                    "linux/arm",
                    "linux/arm/v5",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                ],
                &[
                    "linux/amd64",
                    "linux/arm/v4",
                    "linux/arm64",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "linux/arm/v7",
                &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
                &[
                    "linux/amd64",
                    "linux/arm/v4",
                    "linux/arm/v8",
                    "linux/arm64",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "linux/arm/v6",
                &["linux/arm/v5", "linux/arm/v6"],
                &[
                    "linux/amd64",
                    "linux/arm",
                    "linux/arm/v4",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "linux/arm/v5",
                &["linux/arm/v5"],
                &[
                    "linux/amd64",
                    "linux/arm",
                    "linux/arm/v4",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "linux/arm/v4",
                &["linux/arm/v4"],
                &[
                    "linux/amd64",
                    "linux/arm",
                    "linux/arm/v5",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "linux/arm64/v9",
                &[
                    "linux/arm",
                    "linux/arm/v5",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "linux/arm64/v8",
                    "linux/arm64/v8.1",
                    "linux/arm64/v8.2",
                    "linux/arm64/v8.3",
                    "linux/arm64/v8.4",
                    "linux/arm64/v8.5",
                    "linux/arm64/v9",
                    "linux/arm64/v9.0",
                ],
                &[
                    "linux/amd64",
                    "linux/arm/v4",
                    "windows/amd64",
                    "windows/arm",
                    "linux/arm64/v8.6",
                ],
            ),
            (
                "linux/arm64/v8.1",
                &[
                    "linux/arm",
                    "linux/arm/v5",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "linux/arm64/v8",
                    "linux/arm64/v8.1",
                ],
                &[
                    "linux/amd64",
                    "linux/arm/v4",
                    "linux/arm/v9",
                    "linux/arm64/v9",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
            (
                "linux/arm64",
                &[
                    "linux/arm",
                    "linux/arm/v5",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "linux/arm64/v8",
                ],
                &[
                    "linux/amd64",
                    "linux/arm/v4",
                    "linux/arm/v9",
                    "linux/arm64/v9",
                    "windows/amd64",
                    "windows/arm",
                ],
            ),
        ];
        for (want, yes, no) in table {
            let want: Platform = want.parse().unwrap();
            for have in *yes {
                let have: Platform = have.parse().unwrap();
                assert!(want.rank(&have).is_some(), "{want} should run {have}");
            }
            for have in *no {
                let have: Platform = have.parse().unwrap();
                assert!(want.rank(&have).is_none(), "{want} should not run {have}");
            }
        }
    }

    #[test]
    fn ranks() {
        let plat = |s: &str| s.parse::<Platform>().unwrap();
        let raw = |arch: &str, variant: &str| Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.into(),
            os_version: String::new(),
        };
        let arm64 = plat("linux/arm64");
        assert_eq!(arm64.rank(&raw("arm64", "v8")), Some(0));
        assert_eq!(arm64.rank(&raw("arm64", "")), Some(0));
        assert_eq!(arm64.rank(&raw("aarch64", "")), Some(0));
        assert_eq!(plat("linux/arm64/v8").rank(&raw("arm64", "")), Some(0));
        assert_eq!(arm64.rank(&raw("arm", "v7")), Some(2));
        assert_eq!(arm64.rank(&raw("arm64", "v9")), None);
        assert_eq!(plat("linux/amd64").rank(&raw("x86_64", "")), Some(0));
        assert_eq!(plat("linux/amd64").rank(&raw("386", "")), Some(1));
        assert_eq!(plat("linux/amd64").rank(&raw("amd64", "v2")), None);
        assert_eq!(plat("linux/arm/v7").rank(&raw("arm", "v6")), Some(1));
        assert_eq!(plat("linux/arm/v6").rank(&raw("arm", "v7")), None);
        assert_eq!(plat("linux/amd64").rank(&plat("windows/amd64")), None);
    }

    /// containerd's Windows OS version matching (BuildKit's
    /// testPlatformWithOSVersion picks an index entry by it).
    #[test]
    fn windows_os_versions() {
        let plat = |s: &str| s.parse::<Platform>().unwrap();
        let want = plat("windows(1.2.3)/bar");
        assert_eq!(want.rank(&plat("windows(1.2.3)/bar")), Some(0));
        assert_eq!(want.rank(&plat("windows(1.1.0)/bar")), None);
        assert_eq!(want.rank(&plat("windows/bar")), Some(0));
        assert_eq!(
            plat("windows/amd64").rank(&plat("windows(10.0.17763)/amd64")),
            Some(0)
        );
        let ltsc2019 = plat("windows(10.0.17763.1)/amd64");
        assert_eq!(ltsc2019.rank(&plat("windows(10.0.17763.5)/amd64")), Some(0));
        assert_eq!(ltsc2019.rank(&plat("windows(10.0.20348.1)/amd64")), None);
        // A 2025 host runs LTSC 2025 images and newer up to its own build.
        let host = plat("windows(10.0.26200)/amd64");
        assert_eq!(host.rank(&plat("windows(10.0.26100)/amd64")), Some(0));
        assert_eq!(host.rank(&plat("windows(10.0.20348)/amd64")), None);
        // Linux never compares OS versions.
        assert_eq!(
            plat("linux/amd64").rank(&plat("linux(5.1.0)/amd64")),
            Some(0)
        );
    }
}
