//! The index `imagetools create` makes of its sources, byte for byte as
//! buildx's `Combine` makes it.

use std::collections::BTreeMap;

use kiln_llb::Digest;
use kiln_oci::media;
use serde_json::{Map, Value};

use super::annotation::Annotation;
use super::descriptor::{desc_str, is_index_type, platform_string};
use super::gojson::{GoJson, go_descriptor, go_string_map};
use super::source::Resolved;
use crate::failure::Failure;

/// The index buildx's `Combine` makes of `srcs`: its bytes and media type.
/// A single index source with no annotations is kept as it is.
pub(super) fn combine(
    srcs: &[Resolved],
    annotations: &[Annotation],
    warn: &dyn Fn(&str),
) -> Result<(Vec<u8>, Map<String, Value>), Failure> {
    if srcs.len() == 1 && annotations.is_empty() {
        let t = desc_str(&srcs[0].desc, "mediaType");
        if is_index_type(t) {
            return Ok((srcs[0].bytes.clone(), srcs[0].desc.clone()));
        }
    }
    let mut descs: Vec<Map<String, Value>> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |d: Map<String, Value>| {
        let digest = desc_str(&d, "digest").to_owned();
        match at.get(&digest) {
            Some(&i) => {
                let old = &mut descs[i];
                if desc_str(old, "mediaType").is_empty()
                    && let Some(t) = d.get("mediaType")
                {
                    old.insert("mediaType".into(), t.clone());
                }
                if let Some(p) = d.get("platform") {
                    old.insert("platform".into(), p.clone());
                }
                let mut ann = match old.remove("annotations") {
                    Some(Value::Object(a)) => a,
                    _ => Map::new(),
                };
                if let Some(Value::Object(a)) = d.get("annotations") {
                    for (k, v) in a {
                        ann.insert(k.clone(), v.clone());
                    }
                }
                old.insert("annotations".into(), Value::Object(ann));
            }
            None => {
                at.insert(digest, descs.len());
                descs.push(d);
            }
        }
    };
    for s in srcs {
        let t = desc_str(&s.desc, "mediaType");
        if is_index_type(t) {
            let idx: Value = serde_json::from_slice(&s.bytes)
                .map_err(|e| Failure::Other(anyhow::anyhow!("{}: invalid index: {e}", s.repo)))?;
            for m in idx["manifests"].as_array().into_iter().flatten() {
                if let Value::Object(m) = m {
                    add(m.clone());
                }
            }
        } else {
            add(s.desc.clone());
        }
    }
    // Two images for one platform: kept, as buildx does; a client picks the
    // first.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for d in &descs {
        if let Some(p) = platform_string(d)
            && p != "unknown/unknown"
        {
            let digest = desc_str(d, "digest").to_owned();
            if let Some(first) = seen.get(&p) {
                warn(&format!(
                    "warning: two images for {p} ({first} and {digest}): both are kept, clients pick the first"
                ));
            } else {
                seen.insert(p, digest);
            }
        }
    }
    let docker = descs
        .iter()
        .filter(|d| desc_str(d, "mediaType").starts_with("application/vnd.docker."))
        .count();
    let media_type = if docker == descs.len() {
        media::DOCKER_MANIFEST_LIST
    } else {
        media::OCI_INDEX
    };
    let mut index_annotations = Map::new();
    if !annotations.is_empty() && media_type == media::DOCKER_MANIFEST_LIST {
        return Err(Failure::Usage(
            "--annotation: every source is a Docker manifest, so the result is a Docker \
             manifest list, which has no annotations (buildx drops them; push the sources \
             with OCI media types)"
                .to_owned(),
        ));
    }
    for a in annotations {
        match a.kind.as_str() {
            "index" => {
                index_annotations.insert(a.key.clone(), Value::String(a.value.clone()));
            }
            _ => {
                for d in descs.iter_mut() {
                    let applies = match &a.platform {
                        None => true,
                        Some(p) => platform_string(d).as_deref() == Some(p.as_str()),
                    };
                    let mut ann = match d.remove("annotations") {
                        Some(Value::Object(x)) => x,
                        _ => Map::new(),
                    };
                    if applies {
                        ann.insert(a.key.clone(), Value::String(a.value.clone()));
                    }
                    d.insert("annotations".into(), Value::Object(ann));
                }
            }
        }
    }
    let index = GoJson::Obj(vec![
        ("schemaVersion".into(), GoJson::Num("2".into())),
        ("mediaType".into(), GoJson::Str(media_type.into())),
        (
            "manifests".into(),
            GoJson::Arr(descs.iter().map(go_descriptor).collect()),
        ),
        ("annotations".into(), go_string_map(&index_annotations)),
    ]);
    let bytes = index.indent().into_bytes();
    let mut desc = Map::new();
    desc.insert("mediaType".into(), Value::String(media_type.into()));
    desc.insert(
        "digest".into(),
        Value::String(Digest::of(&bytes).to_string()),
    );
    desc.insert("size".into(), Value::from(bytes.len() as u64));
    Ok((bytes, desc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_reference::Reference;

    fn resolved(desc: Value, bytes: &[u8]) -> Resolved {
        let Value::Object(desc) = desc else {
            unreachable!()
        };
        Resolved {
            repo: Reference::parse_normalized("registry.test/a/b").unwrap(),
            desc,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn combine_keeps_attestations_and_flattens_indexes() {
        let d = |s: &[u8]| Digest::of(s).to_string();
        let image = |p: &str, x: &[u8]| {
            serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d(x), "size": 10,
                "platform": {"os": "linux", "architecture": p}})
        };
        let attestation = serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d(b"att"),
            "size": 20, "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.digest": d(b"amd"),
                            "vnd.docker.reference.type": "attestation-manifest"}});
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
            "manifests": [image("amd64", b"amd"), attestation]});
        let index_bytes = serde_json::to_vec(&index).unwrap();
        let srcs = [
            resolved(
                serde_json::json!({"mediaType": media::OCI_INDEX, "digest": d(&index_bytes),
                    "size": index_bytes.len()}),
                &index_bytes,
            ),
            resolved(image("arm64", b"arm"), b"arm"),
        ];
        let warned = std::cell::RefCell::new(Vec::new());
        let (bytes, desc) =
            combine(&srcs, &[], &|w| warned.borrow_mut().push(w.to_owned())).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let digests: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, [d(b"amd"), d(b"att"), d(b"arm")]);
        assert_eq!(
            v["manifests"][1]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(desc_str(&desc, "mediaType"), media::OCI_INDEX);
        assert_eq!(desc_str(&desc, "digest"), Digest::of(&bytes).to_string());
        assert!(warned.borrow().is_empty(), "{:?}", warned.borrow());
        // The same image twice is one entry; two images for one platform are
        // both kept, with a warning.
        let twice = [
            resolved(image("arm64", b"arm"), b"arm"),
            resolved(image("arm64", b"arm"), b"arm"),
            resolved(image("arm64", b"arm2"), b"arm2"),
        ];
        let (bytes, _) = combine(&twice, &[], &|w| warned.borrow_mut().push(w.to_owned())).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(warned.borrow().len(), 1);
        // A single index and no annotations: its bytes unchanged.
        let (same, _) = combine(&srcs[..1], &[], &|_| {}).unwrap();
        assert_eq!(same, index_bytes);
    }
}
