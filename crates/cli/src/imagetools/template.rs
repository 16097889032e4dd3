//! `imagetools inspect --format`: the template actions buildx's users use,
//! over `.Name`, `.Manifest`, `.Image`, `.Provenance` and `.SBOM`.

use std::collections::BTreeMap;

use kiln_llb::Platform;
use kiln_oci::Descriptor;
use kiln_reference::Reference;
use kiln_registry::Client;
use serde_json::{Map, Value};

use super::descriptor::{CONFIG_LIMIT, desc_str, is_index_type, is_manifest_type, platform_string};
use super::gojson::{GoJson, go_descriptor, go_image, go_string_map, omit_empty_str};
use crate::failure::Failure;

/// `--format`: the actions buildx's templates are used with.
pub(super) fn format_template(
    client: &Client,
    reference: &Reference,
    name: &str,
    top: &kiln_registry::FetchedManifest,
    v: &Value,
    format: &str,
) -> Result<String, Failure> {
    let manifest = if is_index_type(&top.media_type) {
        let mut fields = vec![
            (
                "schemaVersion".to_owned(),
                GoJson::Num(v["schemaVersion"].as_u64().unwrap_or(0).to_string()),
            ),
            ("mediaType".to_owned(), omit_empty_str(&top.media_type)),
            ("digest".to_owned(), GoJson::Str(top.digest.to_string())),
            ("size".to_owned(), GoJson::Num(top.bytes.len().to_string())),
        ];
        fields.push((
            "manifests".to_owned(),
            GoJson::Arr(
                v["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .map(go_descriptor)
                    .collect(),
            ),
        ));
        let ann = v["annotations"].as_object().cloned().unwrap_or_default();
        fields.push(("annotations".to_owned(), go_string_map(&ann)));
        GoJson::Obj(fields)
    } else {
        let mut d = Map::new();
        d.insert("mediaType".into(), Value::String(top.media_type.clone()));
        d.insert("digest".into(), Value::String(top.digest.to_string()));
        d.insert("size".into(), Value::from(top.bytes.len() as u64));
        go_descriptor(&d)
    };
    let mut image: Option<GoJson> = None;
    let mut image_fn = || -> Result<GoJson, Failure> {
        if let Some(i) = &image {
            return Ok(i.clone());
        }
        let configs = image_configs(client, reference, top, v)?;
        let i = if configs.len() == 1 {
            configs.into_values().next().unwrap_or(GoJson::Null)
        } else {
            GoJson::Obj(configs.into_iter().collect())
        };
        image = Some(i.clone());
        Ok(i)
    };
    let mut out = String::new();
    // Written as given: buildx does not read `\n` or `\t` as escapes.
    let mut rest = format.to_owned();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = rest[start + 2..].to_owned();
        let Some(end) = after.find("}}") else {
            return Err(Failure::Usage(format!(
                "template: unclosed action in {format:?}"
            )));
        };
        let action = after[..end].trim();
        match action {
            ".Name" => out.push_str(name),
            "json .Name" => out.push_str(&GoJson::Str(name.to_owned()).indent()),
            "json .Manifest" => out.push_str(&manifest.indent()),
            "json .Image" => out.push_str(&image_fn()?.indent()),
            "json .Provenance" | "json .SBOM" => {
                let a = attestation_stubs(client, reference, top, v)?;
                let stubs = if action == "json .Provenance" {
                    a.provenance
                } else {
                    a.sbom
                };
                let value = if a.platforms > 1 {
                    GoJson::Obj(stubs.into_iter().collect())
                } else {
                    stubs
                        .into_values()
                        .next()
                        .unwrap_or(GoJson::Obj(Vec::new()))
                };
                out.push_str(&value.indent());
            }
            "json ." => {
                let mut fields = vec![("name".to_owned(), GoJson::Str(name.to_owned()))];
                fields.push(("manifest".to_owned(), manifest.clone()));
                let i = image_fn()?;
                if !matches!(i, GoJson::Null) {
                    fields.push(("image".to_owned(), i));
                }
                out.push_str(&GoJson::Obj(fields).indent());
            }
            other => {
                return Err(Failure::Usage(format!(
                    "--format {{{{{other}}}}} is not supported yet (kiln knows {{{{.Name}}}}, \
                     {{{{.Manifest}}}}, {{{{json .Name}}}}, {{{{json .Manifest}}}}, \
                     {{{{json .Image}}}}, {{{{json .Provenance}}}}, {{{{json .SBOM}}}} \
                     and {{{{json .}}}})"
                )));
            }
        }
        rest = after[end + 2..].to_owned();
    }
    out.push_str(&rest);
    // buildx writes the template's output as it is, without a newline.
    Ok(out)
}

/// What buildx's loader finds for `.Provenance` and `.SBOM`: per platform
/// image, `{"SLSA": predicate}` and `{"SPDX": first, "AdditionalSPDXs":
/// [rest]}` from the in-toto layers of the attestation manifests that name
/// the image (`vnd.docker.reference.digest`); images without them are
/// left out. `platforms` counts the images (buildx prints a map by
/// platform when there are several, else the one stub or `{}`).
pub(super) struct AttestationStubs {
    platforms: usize,
    provenance: BTreeMap<String, GoJson>,
    sbom: BTreeMap<String, GoJson>,
}

pub(super) const IN_TOTO: &str = "application/vnd.in-toto+json";
pub(super) const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

pub(super) fn attestation_stubs(
    client: &Client,
    reference: &Reference,
    top: &kiln_registry::FetchedManifest,
    v: &Value,
) -> Result<AttestationStubs, Failure> {
    let mut out = AttestationStubs {
        platforms: 1,
        provenance: BTreeMap::new(),
        sbom: BTreeMap::new(),
    };
    if !is_index_type(&top.media_type) {
        return Ok(out);
    }
    let entries: Vec<&Map<String, Value>> = v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter(|m| is_manifest_type(desc_str(m, "mediaType")))
        .collect();
    let refers = |m: &Map<String, Value>| -> Option<String> {
        let ann = m.get("annotations").and_then(Value::as_object)?;
        ["com.docker.reference.digest", "vnd.docker.reference.digest"]
            .iter()
            .find_map(|k| ann.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let mut images: BTreeMap<String, String> = BTreeMap::new();
    let mut refs: BTreeMap<String, Vec<&Map<String, Value>>> = BTreeMap::new();
    for m in &entries {
        match refers(m) {
            Some(d) => refs.entry(d).or_default().push(m),
            None => {
                let p = match platform_string(m) {
                    Some(s) => s.parse::<Platform>().map(|p| p.format()).unwrap_or(s),
                    None => {
                        let child = client.get_manifest_in(reference, desc_str(m, "digest"))?;
                        let c: Value = serde_json::from_slice(&child.bytes).unwrap_or_default();
                        let config: Descriptor = serde_json::from_value(c["config"].clone())
                            .map_err(|e| {
                                Failure::Other(anyhow::anyhow!(
                                    "{reference}: invalid manifest config: {e}"
                                ))
                            })?;
                        let c = client.get_blob_bytes(reference, &config, CONFIG_LIMIT)?;
                        let c: Value = serde_json::from_slice(&c).unwrap_or_default();
                        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                        Platform::new(&s("os"), &s("architecture"), &s("variant")).format()
                    }
                };
                images.insert(p, desc_str(m, "digest").to_owned());
            }
        }
    }
    out.platforms = images.len();
    for (platform, digest) in &images {
        let mut slsa = None;
        let mut spdx: Vec<GoJson> = Vec::new();
        for att in refs.get(digest).into_iter().flatten() {
            let child = client.get_manifest_in(reference, desc_str(att, "digest"))?;
            let m: Value = serde_json::from_slice(&child.bytes).map_err(|e| {
                Failure::Other(anyhow::anyhow!("{reference}: invalid manifest: {e}"))
            })?;
            for layer in m["layers"].as_array().into_iter().flatten() {
                let kind = layer["annotations"]["in-toto.io/predicate-type"]
                    .as_str()
                    .unwrap_or_default();
                let is_slsa = kind.starts_with("https://slsa.dev/provenance/");
                if layer["mediaType"] != IN_TOTO || !(is_slsa || kind == PREDICATE_SPDX) {
                    continue;
                }
                if is_slsa && slsa.is_some() {
                    continue;
                }
                let desc: Descriptor = serde_json::from_value(layer.clone()).map_err(|e| {
                    Failure::Other(anyhow::anyhow!("{reference}: invalid layer: {e}"))
                })?;
                let b = client.get_blob_bytes(reference, &desc, 64 << 20)?;
                let statement: Value = serde_json::from_slice(&b).map_err(|e| {
                    Failure::Other(anyhow::anyhow!(
                        "{reference}: invalid in-toto statement: {e}"
                    ))
                })?;
                let predicate = GoJson::from_value(&statement["predicate"]);
                if is_slsa {
                    slsa = Some(predicate);
                } else {
                    spdx.push(predicate);
                }
            }
        }
        if let Some(p) = slsa {
            out.provenance
                .insert(platform.clone(), GoJson::Obj(vec![("SLSA".to_owned(), p)]));
        }
        if !spdx.is_empty() {
            let first = spdx.remove(0);
            let rest = if spdx.is_empty() {
                GoJson::Omit
            } else {
                GoJson::Arr(spdx)
            };
            out.sbom.insert(
                platform.clone(),
                GoJson::Obj(vec![
                    ("SPDX".to_owned(), first),
                    ("AdditionalSPDXs".to_owned(), rest),
                ]),
            );
        }
    }
    Ok(out)
}

/// The image configs of an image or index, by platform (attestation
/// manifests left out, as buildx's loader does).
pub(super) fn image_configs(
    client: &Client,
    reference: &Reference,
    top: &kiln_registry::FetchedManifest,
    v: &Value,
) -> Result<BTreeMap<String, GoJson>, Failure> {
    let mut out = BTreeMap::new();
    let mut one = |bytes: &[u8], platform: Option<String>| -> Result<(), Failure> {
        let m: Value = serde_json::from_slice(bytes)
            .map_err(|e| Failure::Other(anyhow::anyhow!("{reference}: invalid manifest: {e}")))?;
        let config: Descriptor = serde_json::from_value(m["config"].clone()).map_err(|e| {
            Failure::Other(anyhow::anyhow!("{reference}: invalid manifest config: {e}"))
        })?;
        let c = client.get_blob_bytes(reference, &config, CONFIG_LIMIT)?;
        let c: Value = serde_json::from_slice(&c)
            .map_err(|e| Failure::Other(anyhow::anyhow!("{reference}: invalid config: {e}")))?;
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
        let p = platform
            .unwrap_or_else(|| Platform::new(s("os"), s("architecture"), s("variant")).format());
        out.insert(p, go_image(&c));
        Ok(())
    };
    if is_index_type(&top.media_type) {
        for m in v["manifests"].as_array().into_iter().flatten() {
            let Some(m) = m.as_object() else { continue };
            let ann = m.get("annotations").and_then(Value::as_object);
            let attestation = ann.is_some_and(|a| {
                a.contains_key("vnd.docker.reference.digest")
                    || a.contains_key("com.docker.reference.digest")
            });
            if attestation || !is_manifest_type(desc_str(m, "mediaType")) {
                continue;
            }
            let child = client.get_manifest_in(reference, desc_str(m, "digest"))?;
            let p =
                platform_string(m).map(|s| s.parse::<Platform>().map(|p| p.format()).unwrap_or(s));
            one(&child.bytes, p)?;
        }
    } else {
        one(&top.bytes, None)?;
    }
    Ok(out)
}
