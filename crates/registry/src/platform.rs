//! Picking an index entry for a platform, as containerd's default matcher
//! does: same OS and architecture (names normalised: `x86_64` is `amd64`,
//! `aarch64` is `arm64`), and a variant the wanted one can run — an arm/v7
//! machine runs v7, v6 and v5 images, in that order of preference; arm64
//! without a variant is v8.

use kiln_llb::Platform;
use kiln_oci::Descriptor;

fn normalize(p: &Platform) -> (String, String, String) {
    let os = p.os.to_ascii_lowercase();
    let arch = p.architecture.to_ascii_lowercase();
    let mut variant = p.variant.to_ascii_lowercase();
    let arch = match arch.as_str() {
        "x86_64" | "x86-64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        "armhf" => {
            variant = "v7".to_owned();
            "arm".to_owned()
        }
        "armel" => {
            variant = "v6".to_owned();
            "arm".to_owned()
        }
        "i386" | "i686" => "386".to_owned(),
        _ => arch,
    };
    match (arch.as_str(), variant.as_str()) {
        ("arm64", "" | "8") => variant = "v8".to_owned(),
        ("arm", "") => variant = "v7".to_owned(),
        ("amd64", "v1") => variant = String::new(),
        (_, v) if v.len() == 1 && v.chars().all(|c| c.is_ascii_digit()) => {
            variant = format!("v{v}");
        }
        _ => {}
    }
    (os, arch, variant)
}

/// How well an image for `have` suits a machine that is `want`: `None` when
/// it cannot run there, lower is better.
pub fn rank(want: &Platform, have: &Platform) -> Option<u32> {
    let (wo, wa, wv) = normalize(want);
    let (ho, ha, hv) = normalize(have);
    if wo != ho || wa != ha {
        return None;
    }
    if wv == hv {
        return Some(0);
    }
    if wa == "arm" {
        let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        return match (level(&wv), level(&hv)) {
            (Some(w), Some(h)) if h < w => Some(w - h),
            _ => None,
        };
    }
    if wv.is_empty() {
        // No variant asked for: any, the unqualified one first.
        return Some(1);
    }
    None
}

/// The best entry of an index for `want` (attestation manifests, whose
/// platform is `unknown/unknown`, never match).
pub fn select<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    entries
        .iter()
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            rank(want, p).map(|r| (r, d))
        })
        .min_by_key(|(r, _)| *r)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        let parts: Vec<&str> = s.split('/').collect();
        Platform::new(
            parts.first().copied().unwrap_or_default(),
            parts.get(1).copied().unwrap_or_default(),
            parts.get(2).copied().unwrap_or_default(),
        )
    }

    #[test]
    fn ranks() {
        assert_eq!(rank(&p("linux/amd64"), &p("linux/amd64")), Some(0));
        assert_eq!(rank(&p("linux/amd64"), &p("linux/x86_64")), Some(0));
        assert_eq!(rank(&p("linux/arm64"), &p("linux/arm64/v8")), Some(0));
        assert_eq!(rank(&p("linux/arm64/v8"), &p("linux/aarch64")), Some(0));
        assert_eq!(rank(&p("linux/arm/v7"), &p("linux/arm/v7")), Some(0));
        assert_eq!(rank(&p("linux/arm/v7"), &p("linux/arm/v6")), Some(1));
        assert_eq!(rank(&p("linux/arm/v6"), &p("linux/arm/v7")), None);
        assert_eq!(rank(&p("linux/amd64"), &p("linux/arm64")), None);
        assert_eq!(rank(&p("linux/amd64"), &p("windows/amd64")), None);
        assert_eq!(rank(&p("linux/amd64"), &p("unknown/unknown")), None);
    }
}
