//! `kiln plan`: the build graph, printed without running it.

use std::io::Write as _;

use anyhow::Context as _;
use kiln_frontend::{Offline, Severity};

use crate::args::{BuildArgs, PlanArgs, PlanFormat};
use crate::failure::Failure;
use crate::options::{build_options, read_dockerfile, reject_unsupported};

fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

pub fn print_warnings(warnings: &[kiln_frontend::Diagnostic]) {
    let mut err = std::io::stderr().lock();
    for w in warnings {
        debug_assert_eq!(w.severity, Severity::Warning);
        let _ = writeln!(err, "warning: {}", w.render());
    }
}

/// Plans the build the flags describe, offline: base images are not looked up.
fn plan_from(args: &BuildArgs) -> Result<kiln_frontend::Plan, Failure> {
    reject_unsupported(args)?;
    let opts = build_options(args, &env_var)?;
    let file = read_dockerfile(args)?;
    let mut plan = kiln_frontend::plan(&file, &opts, &Offline)?;
    // `--platform a,b`: the graph of every platform, merged as the build
    // merges them (the stages listed are the first platform's).
    for p in crate::options::target_platforms(args)?.iter().skip(1) {
        let o = kiln_frontend::BuildOptions {
            target_platform: Some(p.clone()),
            ..opts.clone()
        };
        let other = kiln_frontend::plan(&file, &o, &Offline)?;
        plan.definition.graph.merge(&other.definition.graph);
    }
    print_warnings(&plan.warnings);
    Ok(plan)
}

pub fn run(args: &PlanArgs) -> Result<(), Failure> {
    if let Some(flag) = args.build.build_only().first() {
        return Err(Failure::Usage(format!(
            "{flag} applies to kiln build, not kiln plan"
        )));
    }
    let plan = plan_from(&args.build)?;
    let def = &plan.definition;
    let out = match args.format {
        PlanFormat::Text => def.render_text(),
        PlanFormat::Json => {
            let mut s =
                serde_json::to_string_pretty(&def.render_json()).context("serialising the plan")?;
            s.push('\n');
            s
        }
        PlanFormat::Dot => def.render_dot(),
        PlanFormat::Llb => def.render_llb(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .or_else(|e| {
            // A closed pipe (`kiln plan … | head`) is not an error.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(e)
            }
        })
        .context("writing the plan")?;
    Ok(())
}
