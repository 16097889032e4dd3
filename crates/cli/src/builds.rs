//! `kiln builds ls|show|logs|rm|report`: the records every build leaves
//! ([`crate::records`]), shown as `docker buildx history` shows its own.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::Failure;
use crate::gotemplate::Template;
use crate::records::{self, Record};

/// `kiln builds`.
#[derive(Debug, Args)]
pub struct BuildsArgs {
    #[command(subcommand)]
    pub command: BuildsCommand,
}

#[derive(Debug, Subcommand)]
pub enum BuildsCommand {
    /// List the build records, newest first (like `docker buildx history ls`).
    Ls(LsArgs),
    /// Show a build: its settings, time, steps (with how long each took,
    /// whether it was cached and why it ran), outputs and image layers
    /// (like `docker buildx history inspect`).
    Show(ShowArgs),
    /// Print a build's output as --progress=plain printed it (like `docker
    /// buildx history logs`).
    Logs(LogsArgs),
    /// Remove build records.
    Rm(RmArgs),
    /// Write a picture of a build, a self-contained HTML page: a timeline of
    /// its steps per stage, the critical path, cache hits and why the other
    /// steps ran, layer sizes.
    Report(ReportArgs),
}

/// `kiln builds ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Output format: table (default), json (one object per line), or a Go
    /// template (`{{.ID}} {{.Name}}`; fields ID, Name, Status, CreatedAt,
    /// Duration, Steps, Cached).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Do not cut names.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only the records that match: status=completed|error|canceled,
    /// status!=…, name=…; repeatable (all must match).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
}

/// A build reference.
const REF_HELP: &str = "A build: its ID (or a unique prefix), or ^N for the Nth build before \
the newest (default: the newest)";

/// `kiln builds show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(value_name = "BUILD", help = REF_HELP)]
    pub reference: Option<String>,
    /// pretty (default) or json (the whole record, with its critical path).
    #[arg(long, value_name = "FORMAT", default_value = "pretty")]
    pub format: String,
}

/// `kiln builds logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[arg(value_name = "BUILD", help = REF_HELP)]
    pub reference: Option<String>,
}

/// `kiln builds rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The builds (IDs, prefixes or ^N).
    #[arg(value_name = "BUILD")]
    pub references: Vec<String>,
    /// Remove every record.
    #[arg(long)]
    pub all: bool,
}

/// `kiln builds report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(value_name = "BUILD", help = REF_HELP)]
    pub reference: Option<String>,
    /// Where the page goes (`-`: stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

fn state_root(root: Option<&Path>) -> PathBuf {
    crate::build::state_dir(root)
}

fn find(root: &Path, reference: Option<&str>) -> Result<Record, Failure> {
    records::find(root, reference).map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))
}

fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `kiln builds …`.
pub fn run(root: Option<&Path>, args: &BuildsArgs) -> Result<(), Failure> {
    let root = state_root(root);
    match &args.command {
        BuildsCommand::Ls(a) => ls(&root, a),
        BuildsCommand::Show(a) => {
            let r = find(&root, a.reference.as_deref())?;
            match a.format.as_str() {
                "pretty" => print(&crate::report::show(&r, a.reference.is_some())),
                "json" => print(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&crate::report::json(&r)).unwrap_or_default()
                )),
                other => {
                    return Err(Failure::Usage(format!(
                        "invalid --format {other:?}: expected pretty or json"
                    )));
                }
            }
            Ok(())
        }
        BuildsCommand::Logs(a) => {
            let r = find(&root, a.reference.as_deref())?;
            let log = records::log(&root, &r.id).map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
            print(&log);
            Ok(())
        }
        BuildsCommand::Rm(a) => rm(&root, a),
        BuildsCommand::Report(a) => {
            let r = find(&root, a.reference.as_deref())?;
            write_report(&r, &a.output)
        }
    }
}

/// Writes the HTML page of `r` to `dest` (`-`: stdout).
pub fn write_report(r: &Record, dest: &Path) -> Result<(), Failure> {
    let page = crate::report::html(r);
    if dest == Path::new("-") {
        print(&page);
        return Ok(());
    }
    std::fs::write(dest, page)
        .map_err(|e| Failure::Other(anyhow::anyhow!("writing {}: {e}", dest.display())))
}

fn rm(root: &Path, a: &RmArgs) -> Result<(), Failure> {
    if a.all != a.references.is_empty() {
        return Err(Failure::Usage(
            "kiln builds rm needs BUILD… or --all (not both)".to_owned(),
        ));
    }
    let doomed: Vec<Record> = if a.all {
        records::list(root)
    } else {
        let mut v = Vec::new();
        for r in &a.references {
            v.push(find(root, Some(r))?);
        }
        v
    };
    let mut out = String::new();
    for r in doomed {
        if records::remove(root, &r.id) {
            out.push_str(&format!("{}\n", r.id));
        }
    }
    print(&out);
    Ok(())
}

/// A filter of `ls`: field, wanted equal, value.
fn parse_filter(f: &str) -> Result<(String, bool, String), Failure> {
    let bad = || {
        Failure::Usage(format!(
            "invalid filter {f:?}: expected status=…, status!=… or name=…"
        ))
    };
    let (k, eq, v) = if let Some((k, v)) = f.split_once("!=") {
        (k, false, v)
    } else if let Some((k, v)) = f.split_once('=') {
        (k, true, v)
    } else {
        return Err(bad());
    };
    if !matches!(k, "status" | "name") {
        return Err(bad());
    }
    Ok((k.to_owned(), eq, v.to_owned()))
}

fn ls(root: &Path, a: &LsArgs) -> Result<(), Failure> {
    let filters = a
        .filters
        .iter()
        .map(|f| parse_filter(f))
        .collect::<Result<Vec<_>, _>>()?;
    let all = records::list(root);
    let now = crate::images::now_secs();
    let shown: Vec<&Record> = all
        .iter()
        .filter(|r| {
            filters.iter().all(|(k, eq, v)| {
                let have = match k.as_str() {
                    "status" => &r.status,
                    _ => &r.name,
                };
                have.eq_ignore_ascii_case(v) == *eq
            })
        })
        .collect();
    let mut rows = Vec::new();
    for r in &shown {
        let created = crate::images::parse_time(&r.started_at).unwrap_or(now);
        let (complete, total, cached) = r.counts();
        let name = if a.no_trunc || a.format.is_some() || r.name.chars().count() <= 36 {
            r.name.clone()
        } else {
            // buildx's trimBeginning: keep the end.
            let tail: String = {
                let chars: Vec<char> = r.name.chars().collect();
                chars[chars.len() - 35..].iter().collect()
            };
            format!("…{tail}")
        };
        rows.push(serde_json::json!({
            "ID": r.id,
            "Name": name,
            "Status": r.status_word(),
            "CreatedAt": format!("{} ago", crate::images::human_duration(now - created)),
            "StartedAt": r.started_at,
            "CompletedAt": r.completed_at,
            "Duration": crate::progress_tty::human_duration(std::time::Duration::from_millis(r.duration_ms)),
            "Steps": format!("{complete}/{total}"),
            "Cached": cached,
        }));
    }
    if a.format.as_deref() == Some("json") {
        let mut out = String::new();
        for r in &shown {
            let (complete, total, cached) = r.counts();
            out.push_str(
                &serde_json::json!({
                    "ref": r.id,
                    "name": r.name,
                    "status": r.status,
                    "created_at": r.started_at,
                    "completed_at": r.completed_at,
                    "duration_ms": r.duration_ms,
                    "total_steps": total,
                    "completed_steps": complete,
                    "cached_steps": cached,
                })
                .to_string(),
            );
            out.push('\n');
        }
        print(&out);
        return Ok(());
    }
    let t = Template::parse(
        a.format.as_deref().unwrap_or("table"),
        "{{.ID}}\t{{.Name}}\t{{.Status}}\t{{.CreatedAt}}\t{{.Duration}}",
    )
    .map_err(Failure::Usage)?;
    let headers = |f: &str| -> Option<&'static str> {
        Some(match f {
            "ID" => "BUILD ID",
            "Name" => "NAME",
            "Status" => "STATUS",
            "CreatedAt" => "CREATED AT",
            "Duration" => "DURATION",
            "Steps" => "STEPS",
            "Cached" => "CACHED",
            _ => return None,
        })
    };
    print(&t.render_all(&rows, &headers));
    Ok(())
}
