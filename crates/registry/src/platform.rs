//! Picking an index entry for a platform, as containerd's `platforms.Only`
//! does (BuildKit pulls with it): the entries a machine of the wanted
//! platform can run, best first. Normalisation and the order of compatible
//! platforms are `kiln_llb::Platform`'s (`normalized`, `compatible`, `rank`),
//! the one implementation of containerd's rules in kiln.

use kiln_llb::Platform;
use kiln_oci::Descriptor;

/// The best entry of an index for `want` (attestation manifests, whose
/// platform is `unknown/unknown`, never match).
pub fn select<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    entries
        .iter()
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            want.rank(p).map(|r| (r, d))
        })
        .min_by_key(|(r, _)| *r)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::BlobInfo;

    /// An index entry for a platform as a registry writes it (not normalised).
    fn entry(n: u8, os: &str, arch: &str, variant: &str) -> Descriptor {
        let mut d = Descriptor::new(
            "application/vnd.oci.image.manifest.v1+json",
            BlobInfo {
                digest: kiln_llb::Digest::from_bytes([n; 32]),
                size: 1,
            },
        );
        d.platform = Some(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.into(),
            os_version: String::new(),
        });
        d
    }

    fn chosen(entries: &[Descriptor], want: &str) -> Option<u8> {
        let want: Platform = want.parse().unwrap();
        select(entries, &want).map(|d| d.digest.as_bytes()[0])
    }

    #[test]
    fn picks_like_containerd() {
        let index = [
            entry(1, "linux", "amd64", ""),
            entry(2, "linux", "arm64", "v8"),
            entry(3, "linux", "arm", "v7"),
            entry(4, "linux", "arm", "v6"),
            entry(5, "unknown", "unknown", ""),
        ];
        assert_eq!(chosen(&index, "linux/amd64"), Some(1));
        // arm64 and arm64/v8 are the same platform (containerd drops v8).
        assert_eq!(chosen(&index, "linux/arm64"), Some(2));
        assert_eq!(chosen(&index, "linux/arm64/v8"), Some(2));
        assert_eq!(chosen(&index, "linux/aarch64"), Some(2));
        assert_eq!(chosen(&index, "linux/arm/v7"), Some(3));
        assert_eq!(chosen(&index, "linux/arm/v6"), Some(4));
        assert_eq!(chosen(&index, "linux/arm/v5"), None);
        assert_eq!(chosen(&index, "windows/amd64"), None);
        // An index that writes arm64 without a variant serves arm64/v8.
        let plain = [entry(6, "linux", "arm64", "")];
        assert_eq!(chosen(&plain, "linux/arm64/v8"), Some(6));
        // An arm64 machine falls back to 32-bit arm; arm/v7 to v6.
        let arm32 = [
            entry(7, "linux", "arm", "v7"),
            entry(8, "linux", "arm", "v6"),
        ];
        assert_eq!(chosen(&arm32, "linux/arm64"), Some(7));
        assert_eq!(chosen(&arm32[1..], "linux/arm/v7"), Some(8));
        // amd64 runs 386 images, as containerd's Only(linux/amd64).
        let x86 = [entry(9, "linux", "386", "")];
        assert_eq!(chosen(&x86, "linux/amd64"), Some(9));
    }
}
