//! The build record: its head (from the flags), what the
//! build found out as it ran, and the record assembled from them and the
//! progress.

use std::path::Path;
use std::time::{Duration, SystemTime};

use kiln_frontend::BuildOptions;
use kiln_llb::Platform;
use kiln_worker::Output;

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::progress::Progress;
use crate::records::Record;

/// What a build found out that its record keeps, filled in as it goes.
#[derive(Default)]
pub(super) struct Found {
    pub(super) explanations: Vec<(String, String)>,
    pub(super) image: Option<crate::records::ImageSummary>,
    /// The graph node that made each layer of the image (bottom first).
    pub(super) layer_nodes: Option<Vec<Option<usize>>>,
    pub(super) bases: Vec<(String, String)>,
    pub(super) warnings: Vec<String>,
    pub(super) lints: Vec<kiln_frontend::Diagnostic>,
    pub(super) iid: Option<String>,
}

/// The parts of the record the flags give (`decided` and `opts`: the
/// outputs and options the flags decided).
pub(super) fn record_head(
    args: &BuildArgs,
    decided: &[Output],
    opts: &BuildOptions,
) -> crate::records::Head {
    let dockerfile = match args.file.as_deref() {
        Some(f) => f.to_owned(),
        None if args.context == "." => "Dockerfile".to_owned(),
        None => Path::new(&args.context)
            .join("Dockerfile")
            .display()
            .to_string(),
    };
    let outputs = args
        .outputs
        .iter()
        .cloned()
        .chain(args.push.then(|| "type=registry (--push)".to_owned()))
        .chain(args.load.then(|| "type=docker (--load)".to_owned()))
        .chain(
            decided
                .iter()
                .filter(|o| args.outputs.is_empty() && o.kind() == "image")
                .map(|o| {
                    if o.names().is_empty() {
                        "type=image (the local store)".to_owned()
                    } else {
                        format!("type=image,name={}", o.names().join(","))
                    }
                }),
        )
        .collect();
    crate::records::Head {
        name: crate::records::build_name(
            &args.context,
            args.file.as_deref(),
            args.target.as_deref(),
        ),
        command: std::env::args().skip(1).collect(),
        context: args.context.clone(),
        dockerfile,
        target: args.target.clone(),
        platforms: opts
            .target_platform
            .iter()
            .map(Platform::format)
            .chain(
                crate::options::target_platforms(args)
                    .unwrap_or_default()
                    .iter()
                    .skip(1)
                    .map(Platform::format),
            )
            .collect(),
        build_args: opts.build_args.clone().into_iter().collect(),
        outputs,
        warnings: Vec::new(),
        bases: Vec::new(),
    }
}

/// The build's record, whatever happened (the picture of a failed build is
/// the one most worth having): the steps as the progress gathered them,
/// each image layer tied to the step that made it, and the outcome.
pub(super) fn assemble(
    progress: &Progress,
    head: crate::records::Head,
    found: &mut Found,
    result: &Result<(), Failure>,
    started: SystemTime,
    took: Duration,
) -> Record {
    let mut gathered = progress.gathered();
    if let (Some(img), Some(nodes)) = (&mut found.image, &found.layer_nodes) {
        for (layer, node) in img.layers.iter_mut().zip(nodes) {
            layer.step = node.and_then(|n| {
                gathered
                    .steps
                    .iter()
                    .find(|s| s.nodes.contains(&n))
                    .map(|s| s.id)
            });
        }
    }
    if gathered.log.is_empty() {
        gathered.log.push_str("(no output)\n");
    }
    let outcome = match result {
        Ok(()) => crate::records::Outcome {
            status: "completed",
            ..Default::default()
        },
        Err(f) => {
            let (code, first, text) = crate::failure::describe(f);
            crate::records::Outcome {
                status: if matches!(f, Failure::Cancelled) {
                    "canceled"
                } else {
                    "error"
                },
                exit_code: code,
                error: Some(first),
                error_report: (text.lines().count() > 1).then_some(text),
            }
        }
    };
    let mut head = head;
    head.bases = std::mem::take(&mut found.bases);
    head.warnings = std::mem::take(&mut found.warnings);
    crate::records::assemble(
        crate::records::new_id(),
        head,
        gathered,
        &found.explanations,
        found.image.take(),
        outcome,
        started,
        took,
    )
}
