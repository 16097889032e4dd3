//! The image a build made: its summary for the build record (with the
//! graph node that made each layer), the lines that say it was written,
//! and its ID.

use kiln_llb::{Digest, Vertex};
use kiln_solver::Dag;
use kiln_worker::image::Committed;
use kiln_worker::{BuildResult, State};

use crate::progress::Progress;
use crate::records::{ImageSummary, LayerSummary};

/// The record's summary of image `img`, named `names`, and the node of
/// `dag` that made each of its layers (bottom first), found from the
/// build's `target` node.
pub(super) fn summary(
    state: &State,
    img: &Committed,
    names: &[String],
    dag: &Dag<Vertex>,
    target: Option<usize>,
) -> (ImageSummary, Option<Vec<Option<usize>>>) {
    let sizes = kiln_worker::images::layer_sizes(state, &img.id, &img.config);
    let made_by: Vec<String> = img
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone())
        .collect();
    let layers: Vec<LayerSummary> = img
        .config
        .rootfs
        .diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| LayerSummary {
            diff_id: d.to_string(),
            size: sizes.get(i).copied().unwrap_or(0),
            created_by: made_by.get(i).cloned().unwrap_or_default(),
            step: None,
        })
        .collect();
    let layer_nodes = target.and_then(|t| {
        crate::records::layer_steps(dag, t, layers.len(), &|n| u32::try_from(n).ok())
            .map(|v| v.into_iter().map(|n| n.map(|n| n as usize)).collect())
    });
    let image = ImageSummary {
        id: img.id.to_string(),
        names: names.to_vec(),
        platform: img.config.platform().format(),
        size: layers.iter().map(|l| l.size).sum(),
        layers,
    };
    (image, layer_nodes)
}

/// The progress lines of the export: each image written, and the index.
pub(super) fn say_written(progress: &Progress, res: &BuildResult, img: &Committed) {
    let t = progress.task("exporting to image");
    if res.platform_images.is_empty() {
        t.line(&format!("writing image {} done", img.id));
    } else {
        for (p, img) in &res.platform_images {
            t.line(&format!("writing image {} for {} done", img.id, p.format()));
        }
        for m in &res.manifests {
            t.line(&format!("writing image index {} done", m.digest));
        }
    }
    t.done();
}

/// The build's image ID (`--iidfile`, `-q`): a multi-platform build's is
/// its index's digest (as buildx's), when an output wrote one.
pub(super) fn id(res: &BuildResult, img: &Committed) -> Digest {
    match (res.platform_images.is_empty(), res.manifests.first()) {
        (false, Some(index)) => index.digest,
        _ => img.id,
    }
}
