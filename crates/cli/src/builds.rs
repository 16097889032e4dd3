//! `kiln builds ls|show|logs|rm|report`: the records every build leaves
//! ([`crate::records`]), shown as `docker buildx history` shows its own.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::args::{BuildsArgs, BuildsCommand, LsArgs, RmArgs};
use crate::failure::Failure;
use crate::gotemplate::Template;
use crate::records::{self, Record};

fn state_root(root: Option<&Path>) -> PathBuf {
    crate::store::state_dir(root)
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
    let now = crate::units::now_secs();
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
        let created = crate::units::parse_time(&r.started_at).unwrap_or(now);
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
            "Duration": crate::units::human_duration(std::time::Duration::from_millis(r.duration_ms)),
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
