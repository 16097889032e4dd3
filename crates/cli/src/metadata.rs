//! `--metadata-file` (buildx's keys plus `kiln.base-images`) and the checks
//! of outputs that stream to stdout.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::Context as _;
use kiln_llb::Digest;
use kiln_oci::MediaTypes;
use kiln_worker::{BuildResult, Output, State};
use serde_json::{Value, json};

use crate::failure::Failure;

fn to_stdout(o: &Output) -> bool {
    o.dest() == Some(Path::new(kiln_worker::export::STDOUT))
}

/// Refuses what cannot work with an output on stdout: two of them, `-q`
/// (which prints the image ID there), or stdout being a terminal.
pub fn check_stdout(outputs: &[Output], quiet: bool) -> Result<(), Failure> {
    let n = outputs.iter().filter(|o| to_stdout(o)).count();
    if n == 0 {
        return Ok(());
    }
    if n > 1 {
        return Err(Failure::Usage(
            "--output: only one output can go to stdout (dest=-)".into(),
        ));
    }
    if quiet {
        return Err(Failure::Usage(
            "--quiet prints the image ID on stdout, where the output goes (dest=-); use --iidfile"
                .into(),
        ));
    }
    if std::io::stdout().is_terminal() {
        return Err(Failure::Usage(
            "refusing to write the output archive to a terminal: redirect stdout or give dest=FILE"
                .into(),
        ));
    }
    Ok(())
}

/// Writes the `--metadata-file` of a build: `containerimage.config.digest`,
/// `containerimage.digest` and `containerimage.descriptor` (the pushed
/// manifest, else the manifest of the first archive output, else the Docker-media-type manifest the image
/// store would have), `image.name`, and `kiln.base-images` (each `FROM` image
/// as resolved, with its manifest digest or image ID).
pub fn write(
    path: &Path,
    state: &State,
    res: &BuildResult,
    names: &[String],
    bases: &[(String, Digest)],
) -> Result<(), Failure> {
    let mut m = serde_json::Map::new();
    if !res.platform_images.is_empty() {
        // A multi-platform build: the index its outputs wrote (if any) and
        // every platform's image, as BuildKit's exporter response has no
        // single config for it.
        if let Some(desc) = res.manifests.first() {
            m.insert(
                "containerimage.digest".into(),
                json!(desc.digest.to_string()),
            );
            m.insert(
                "containerimage.descriptor".into(),
                serde_json::to_value(desc).context("encoding the descriptor")?,
            );
        }
        let images: Vec<serde_json::Value> = res
            .platform_images
            .iter()
            .map(|(p, img)| json!({"platform": p.format(), "config.digest": img.id.to_string()}))
            .collect();
        m.insert("kiln.platform-images".into(), json!(images));
        if !names.is_empty() {
            m.insert("image.name".into(), json!(names.join(",")));
        }
    } else if let Some(img) = &res.image {
        m.insert(
            "containerimage.config.digest".into(),
            json!(img.id.to_string()),
        );
        let desc = match res.manifests.first() {
            Some(d) => d.clone(),
            None => {
                kiln_worker::archive::export_image(state, &img.id, Vec::new(), MediaTypes::Docker)
                    .map_err(|e| Failure::Other(anyhow::Error::new(e)))?
                    .manifest
            }
        };
        m.insert(
            "containerimage.digest".into(),
            json!(desc.digest.to_string()),
        );
        m.insert(
            "containerimage.descriptor".into(),
            serde_json::to_value(&desc).context("encoding the descriptor")?,
        );
        if !names.is_empty() {
            m.insert("image.name".into(), json!(names.join(",")));
        }
    }
    m.insert(
        "kiln.base-images".into(),
        Value::Array(
            bases
                .iter()
                .map(|(r, d)| json!({"ref": r, "digest": d.to_string()}))
                .collect(),
        ),
    );
    let mut text = serde_json::to_string_pretty(&Value::Object(m)).context("encoding")?;
    text.push('\n');
    std::fs::write(path, text)
        .with_context(|| format!("writing --metadata-file {}", path.display()))?;
    Ok(())
}
