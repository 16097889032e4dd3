//! The build record's parts that the build gathers: the head (from the
//! flags and the plan) and what the build found out as it ran.

use std::path::Path;

use kiln_llb::Platform;
use kiln_worker::Output;

use crate::args::BuildArgs;

use super::flags::Plan;

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

/// The parts of the record the flags give.
pub(super) fn record_head(args: &BuildArgs, plan: &Plan) -> crate::records::Head {
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
        .chain(plan.outputs.iter().filter_map(|o| match o {
            Output::Image { names } if args.outputs.is_empty() => Some(if names.is_empty() {
                "type=image (the local store)".to_owned()
            } else {
                format!("type=image,name={}", names.join(","))
            }),
            _ => None,
        }))
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
        platforms: plan
            .opts
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
        build_args: plan.opts.build_args.clone().into_iter().collect(),
        outputs,
        warnings: Vec::new(),
        bases: Vec::new(),
    }
}
