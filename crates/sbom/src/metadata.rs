//! Reading the metadata files scanners share.

use std::collections::BTreeMap;

use crate::tree::Tree;

/// `/etc/os-release` (or `/usr/lib/os-release`) as (`ID`, `VERSION_ID`).
pub fn os_release(tree: &dyn Tree) -> Option<(String, String)> {
    let bytes = tree
        .read("/etc/os-release", 1 << 20)
        .ok()
        .flatten()
        .or_else(|| tree.read("/usr/lib/os-release", 1 << 20).ok().flatten())?;
    let text = String::from_utf8_lossy(&bytes);
    let mut id = String::new();
    let mut version = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
        match k.trim() {
            "ID" => id = v,
            "VERSION_ID" => version = v,
            _ => {}
        }
    }
    (!id.is_empty()).then_some((id, version))
}

/// RFC 822-style stanzas (dpkg's status, apk's db use their own forms):
/// `Key: value` lines with indented continuations, separated by blank lines.
pub(crate) fn stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(k) = &last
                && let Some(v) = cur.get_mut(k)
            {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_owned();
            cur.insert(k.clone(), v.trim().to_owned());
            last = Some(k);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
