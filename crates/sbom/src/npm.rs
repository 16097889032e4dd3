//! npm packages: the `package.json` of every package directory under a
//! `node_modules` (`node_modules/NAME/package.json`,
//! `node_modules/@SCOPE/NAME/package.json`, nested ones too).

use kiln_attest::purl::Purl;

use crate::scanner::{Package, ScanError, Scanner};
use crate::tree::{Entry, Kind, Tree};

#[derive(Debug)]
pub struct Npm;

/// Whether `path` is the manifest of a package directory of a
/// `node_modules`.
fn is_package_manifest(path: &str) -> bool {
    let Some(dir) = path.strip_suffix("/package.json") else {
        return false;
    };
    let parts: Vec<&str> = dir.rsplit('/').take(3).collect();
    match parts.as_slice() {
        [_, "node_modules", ..] => true,
        [_, scope, "node_modules"] => scope.starts_with('@'),
        _ => false,
    }
}

impl Scanner for Npm {
    fn name(&self) -> &'static str {
        "npm"
    }

    fn wants(&self, e: &Entry) -> bool {
        e.kind == Kind::File && is_package_manifest(&e.path)
    }

    fn scan(&self, e: &Entry, tree: &dyn Tree) -> Result<Vec<Package>, ScanError> {
        let Some(bytes) = tree.read(&e.path, 8 << 20)? else {
            return Ok(Vec::new());
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(Vec::new());
        };
        let (Some(name), Some(version)) = (v["name"].as_str(), v["version"].as_str()) else {
            return Ok(Vec::new());
        };
        let license = match &v["license"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => {
                o.get("type").and_then(|t| t.as_str()).map(str::to_owned)
            }
            _ => None,
        };
        let (ns, short) = match name.split_once('/') {
            Some((scope, n)) if scope.starts_with('@') => (scope, n),
            _ => ("", name),
        };
        Ok(vec![Package {
            ecosystem: "npm".to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            purl: Purl::new("npm", ns, short, version).to_string(),
            evidence: e.path.clone(),
            source: format!(
                "acquired package info from installed node module manifest file: {}",
                e.path
            ),
            license,
            ..Package::default()
        }])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifests() {
        for (p, want) in [
            ("/app/node_modules/left-pad/package.json", true),
            ("/app/node_modules/@types/node/package.json", true),
            ("/app/node_modules/a/node_modules/b/package.json", true),
            ("/app/node_modules/a/lib/package.json", false),
            ("/app/package.json", false),
            ("/app/node_modules/package.json", false),
            ("/app/node_modules/scope/x/package.json", false),
        ] {
            assert_eq!(super::is_package_manifest(p), want, "{p}");
        }
    }
}
