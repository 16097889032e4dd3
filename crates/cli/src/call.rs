//! `kiln build --call check|outline|targets` and `--check`: frontend methods
//! run instead of a build, printed as buildx prints them (`printResult` in
//! buildx's `commands/build.go`, BuildKit's `subrequests/{lint,outline,targets}`).
//!
//! Exit codes follow buildx: `check` exits 1 when it found warnings or an
//! error (BuildKit's `result.statuscode`), 0 otherwise; `outline` and
//! `targets` exit 0. `ignorestatus=true` keeps a `check` with warnings at 0.
//!
//! Base images are resolved as BuildKit's frontend resolves them for these
//! methods (so that `UndefinedVar` knows their variables and
//! `InvalidBaseImagePlatform` their platform): from the local image store,
//! else from their registry, the manifest and configuration only (no layer
//! is pulled, nothing enters the store). An image neither has (offline, no
//! such image, no access) is planned unresolved: a check does not fail on
//! it.

use std::io::Write as _;

use anyhow::Context as _;
use base64::Engine as _;
use kiln_frontend::outline::{Outline, Target};
use kiln_frontend::{Diagnostic, ImageResolver, Resolution, SourceFile};
use kiln_llb::Platform;
use serde_json::{Value, json};

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::options::{build_options, read_dockerfile};

/// A `--call` method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Build,
    Check,
    Outline,
    Targets,
}

/// A parsed `--call` value (buildx's `ParseCallFunc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub json: bool,
    pub ignore_status: bool,
}

impl Call {
    /// `--call` (`check`, `outline,format=json`, …) and `--check`.
    pub fn from_args(args: &BuildArgs) -> Result<Call, Failure> {
        let mut call = match args.call.as_deref() {
            Some(v) => Call::parse(v)?,
            None => Call {
                method: Method::Build,
                json: false,
                ignore_status: false,
            },
        };
        if args.check {
            if args.call.is_some() && call.method != Method::Check {
                return Err(Failure::Usage(
                    "--check cannot be combined with --call other than check".into(),
                ));
            }
            call.method = Method::Check;
        }
        Ok(call)
    }

    fn parse(value: &str) -> Result<Call, Failure> {
        let bad = |msg: String| Failure::Usage(format!("--call {value:?}: {msg}"));
        let mut name: Option<&str> = None;
        let mut json = false;
        let mut ignore_status = false;
        for field in value.split(',') {
            match field.split_once('=') {
                Some(("format", "json")) => json = true,
                Some(("format", "" | "text")) => json = false,
                Some(("format", f)) => {
                    return Err(bad(format!("format {f:?} is not supported yet")));
                }
                Some(("ignorestatus", v)) => {
                    ignore_status = match v {
                        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                        _ => return Err(bad(format!("invalid ignorestatus value {v:?}"))),
                    }
                }
                Some(_) => return Err(bad(format!("invalid field {field:?}"))),
                None if name.is_some() => return Err(bad("more than one method".into())),
                None => name = Some(field),
            }
        }
        let method = match name.unwrap_or("build") {
            "build" => Method::Build,
            "check" | "lint" => Method::Check,
            "outline" => Method::Outline,
            "targets" => Method::Targets,
            other => {
                return Err(bad(format!(
                    "method {other:?} is not supported (build, check, outline, targets)"
                )));
            }
        };
        Ok(Call {
            method,
            json,
            ignore_status,
        })
    }
}

/// Flags that make no sense without a build, refused with `--call`/`--check`.
fn reject_build_flags(args: &BuildArgs) -> Result<(), Failure> {
    let mut given = args.build_only();
    given.retain(|f| !matches!(*f, "--call" | "--check"));
    if args.load {
        given.push("--load");
    }
    match given.first() {
        Some(flag) => Err(Failure::Usage(format!(
            "{flag} cannot be used with --call or --check: nothing is built"
        ))),
        None => Ok(()),
    }
}

/// The local store, then the registry's configuration of the image, as a
/// resolver that never fails: an image neither gives is unresolved.
struct ConfigOnly<'a> {
    store: Option<kiln_worker::StoreResolver<'a>>,
    registry: Option<kiln_registry::Client>,
}

impl ImageResolver for ConfigOnly<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Resolution, String> {
        if let Some(Ok(r @ Resolution::Resolved(_))) =
            self.store.as_ref().map(|s| s.resolve(reference, platform))
        {
            return Ok(r);
        }
        Ok(self
            .registry
            .as_ref()
            .and_then(|c| remote_config(c, reference, platform))
            .map_or(Resolution::Unresolved, Resolution::Resolved))
    }
}

/// Largest image configuration read (as `kiln imagetools`).
const CONFIG_LIMIT: u64 = 16 << 20;

/// The image `reference` names for `platform` in its registry: its
/// manifest's digest and its configuration, nothing else fetched.
fn remote_config(
    client: &kiln_registry::Client,
    reference: &str,
    platform: &Platform,
) -> Option<kiln_frontend::ResolvedImage> {
    let r = kiln_reference::Reference::parse_normalized(reference).ok()?;
    let resolved = client.resolve(&r, platform).ok()?;
    let manifest: kiln_oci::Manifest = serde_json::from_slice(&resolved.manifest.bytes).ok()?;
    let bytes = client
        .get_blob_bytes(&r, &manifest.config, CONFIG_LIMIT)
        .ok()?;
    let config: kiln_oci::ImageConfigFile = serde_json::from_slice(&bytes).ok()?;
    Some(kiln_frontend::ResolvedImage {
        digest: Some(resolved.manifest.digest.to_string()),
        has_layers: !manifest.layers.is_empty(),
        config: kiln_worker::image::to_llb(&config),
    })
}

/// Runs `call` (not `Build`) and returns the exit code.
pub fn run(globals: &Globals, args: &BuildArgs, call: &Call) -> Result<u8, Failure> {
    reject_build_flags(args)?;
    let opts = build_options(args, &|k| std::env::var(k).ok())?;
    let file = read_dockerfile(args)?;
    let mut out = String::new();
    let code = match call.method {
        Method::Build => 0,
        Method::Targets => {
            let df = kiln_frontend::parse(&file)?;
            let targets = kiln_frontend::outline::targets(&df);
            if call.json {
                out = json_pretty(&targets_json(&targets, &file))?;
            } else {
                out = targets_text(&targets);
            }
            0
        }
        Method::Outline => {
            let plan = with_resolver(globals, |r| kiln_frontend::plan(&file, &opts, r))?;
            warn_notes(&plan.warnings);
            if call.json {
                out = json_pretty(&outline_json(&plan.outline, &file))?;
            } else {
                out = outline_text(&plan.outline);
            }
            0
        }
        Method::Check => {
            let report = with_resolver(globals, |r| Ok(kiln_frontend::check(&file, &opts, r)))?;
            let (rules, notes): (Vec<Diagnostic>, Vec<Diagnostic>) =
                report.warnings.into_iter().partition(|w| w.rule.is_some());
            warn_notes(&notes);
            if call.json {
                out = json_pretty(&check_json(&rules, report.error.as_ref(), &file))?;
            } else {
                out = check_text(&rules, report.error.is_some(), &file);
            }
            write_stdout(&out)?;
            if let Some(e) = report.error {
                return Err(Failure::Dockerfile(Box::new(e)));
            }
            return Ok(u8::from(!rules.is_empty() && !call.ignore_status));
        }
    };
    write_stdout(&out)?;
    Ok(code)
}

fn write_stdout(s: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(s.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    Ok(())
}

/// Warnings that are not lint rules (build args without effect, …) go to
/// stderr as `kiln plan` prints them.
fn warn_notes(warnings: &[Diagnostic]) {
    let notes: Vec<Diagnostic> = warnings
        .iter()
        .filter(|w| w.rule.is_none())
        .cloned()
        .collect();
    crate::plan::print_warnings(&notes);
}

/// Runs `f` with the local store as resolver if there is a store, else
/// offline. Nothing is created or pulled.
fn with_resolver<T>(
    globals: &Globals,
    f: impl FnOnce(&dyn ImageResolver) -> Result<T, Diagnostic>,
) -> Result<T, Failure> {
    // Without a usable registry configuration, the local store alone.
    let registry = crate::registry::client(globals, &[]).ok();
    let dir = crate::store::state_dir(globals.root.as_deref());
    let state = dir
        .join("images")
        .exists()
        .then(|| kiln_worker::State::open(&dir).ok())
        .flatten();
    let Some(state) = state else {
        return Ok(f(&ConfigOnly {
            store: None,
            registry,
        })?);
    };
    // Reading the store: held shared, like a build, so prune waits.
    let _lock = crate::store::lock(&state, kiln_worker::lock::LockKind::Shared)?;
    let log = |_: &str| {};
    let store =
        kiln_worker::StoreResolver::new(&state, None, kiln_worker::PullPolicy::Missing, &log);
    Ok(f(&ConfigOnly {
        store: Some(store),
        registry,
    })?)
}

fn json_pretty(v: &Value) -> Result<String, Failure> {
    let mut s = serde_json::to_string_pretty(v).context("serialising the result")?;
    s.push('\n');
    Ok(s)
}

/// Go's `tabwriter` with minwidth 0, tabwidth 0, the given padding and
/// padding character ' ', for rows of cells (the last cell is not padded).
fn tabwrite(rows: &[Vec<String>], padding: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max(c.chars().count() + padding);
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

/// buildx's `PrintTargets`.
fn targets_text(targets: &[Target]) -> String {
    let mut rows = vec![vec!["TARGET".to_owned(), "DESCRIPTION".to_owned()]];
    for t in targets {
        let name = match (t.name.is_empty(), t.default) {
            (true, true) => "(default)".to_owned(),
            (false, true) => format!("{} (default)", t.name),
            _ => t.name.clone(),
        };
        rows.push(vec![name, t.description.clone()]);
    }
    tabwrite(&rows, 1)
}

/// A `pb.Location` of one line range.
fn location(start: usize, end: usize) -> Value {
    json!({"ranges": [{"start": {"line": start}, "end": {"line": end}}]})
}

fn source(file: &SourceFile) -> String {
    base64::engine::general_purpose::STANDARD.encode(file.text().as_bytes())
}

/// BuildKit's `targets.List` JSON (empty fields omitted, as Go's `omitempty`).
fn targets_json(targets: &[Target], file: &SourceFile) -> Value {
    let list: Vec<Value> = targets
        .iter()
        .map(|t| {
            let mut o = serde_json::Map::new();
            for (k, v) in [
                ("name", &t.name),
                ("description", &t.description),
                ("base", &t.base),
                ("platform", &t.platform),
            ] {
                if !v.is_empty() {
                    o.insert(k.to_owned(), Value::from(v.as_str()));
                }
            }
            if t.default {
                o.insert("default".to_owned(), Value::Bool(true));
            }
            o.insert("location".to_owned(), location(t.start_line, t.end_line));
            Value::Object(o)
        })
        .collect();
    json!({"targets": list, "sources": [source(file)]})
}

/// buildx's `PrintOutline`.
fn outline_text(o: &Outline) -> String {
    let mut out = String::new();
    if !o.name.is_empty() || !o.description.is_empty() {
        let name = if o.name.is_empty() {
            "(default)"
        } else {
            &o.name
        };
        let mut rows = vec![vec!["TARGET:".to_owned(), name.to_owned()]];
        if !o.description.is_empty() {
            rows.push(vec!["DESCRIPTION:".to_owned(), o.description.clone()]);
        }
        out.push_str(&tabwrite(&rows, 1));
        out.push('\n');
    }
    if !o.args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_owned(),
            "VALUE".to_owned(),
            "DESCRIPTION".to_owned(),
        ]];
        for a in &o.args {
            rows.push(vec![a.name.clone(), a.value.clone(), a.description.clone()]);
        }
        out.push_str(&tabwrite(&rows, 3));
        out.push('\n');
    }
    for (title, list) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if list.is_empty() {
            continue;
        }
        let mut rows = vec![vec![title.to_owned(), "REQUIRED".to_owned()]];
        for s in list {
            let req = if s.required { "true" } else { "" };
            rows.push(vec![s.name.clone(), req.to_owned()]);
        }
        out.push_str(&tabwrite(&rows, 3));
        out.push('\n');
    }
    out
}

/// BuildKit's `outline.Outline` JSON.
fn outline_json(o: &Outline, file: &SourceFile) -> Value {
    let mut m = serde_json::Map::new();
    if !o.name.is_empty() {
        m.insert("name".into(), Value::from(o.name.as_str()));
    }
    if !o.description.is_empty() {
        m.insert("description".into(), Value::from(o.description.as_str()));
    }
    if !o.args.is_empty() {
        let args: Vec<Value> = o
            .args
            .iter()
            .map(|a| {
                let mut v = json!({"name": a.name});
                if !a.description.is_empty() {
                    v["description"] = Value::from(a.description.as_str());
                }
                if !a.value.is_empty() {
                    v["value"] = Value::from(a.value.as_str());
                }
                v["location"] = location(a.line, a.line);
                v
            })
            .collect();
        m.insert("args".into(), Value::Array(args));
    }
    for (key, list) in [("secrets", &o.secrets), ("ssh", &o.ssh)] {
        if list.is_empty() {
            continue;
        }
        let items: Vec<Value> = list
            .iter()
            .map(|s| {
                let mut v = json!({"name": s.name});
                if s.required {
                    v["required"] = Value::Bool(true);
                }
                v["location"] = location(s.line, s.line);
                v
            })
            .collect();
        m.insert(key.into(), Value::Array(items));
    }
    m.insert("sources".into(), json!([source(file)]));
    Value::Object(m)
}

/// buildx's text for `--call check`: the count, then each warning with its
/// rule, link, message and source excerpt (BuildKit's `Warning.PrintTo`).
fn check_text(rules: &[Diagnostic], failed: bool, file: &SourceFile) -> String {
    let mut out = String::new();
    match rules.len() {
        0 if !failed => out.push_str("Check complete, no warnings found.\n"),
        0 => {}
        1 => out.push_str("Check complete, 1 warning has been found!\n"),
        n => out.push_str(&format!("Check complete, {n} warnings have been found!\n")),
    }
    for w in rules {
        out.push_str(&format!("\nWARNING: {}", w.rule.unwrap_or_default()));
        if let Some(url) = w.url {
            out.push_str(&format!(" - {url}"));
        }
        out.push_str(&format!("\n{}\n", w.message));
        if let Some(loc) = &w.location {
            out.push_str(&source_excerpt(file, loc.line, loc.end_line));
        }
    }
    if failed && !rules.is_empty() {
        out.push('\n');
    }
    out
}

/// BuildKit's `errdefs.Source.Print`: the lines `start..=end` marked `>>>`,
/// with two lines of context on each side (four in all for a one-line
/// range, shifted to one side at the file's ends).
fn source_excerpt(file: &SourceFile, start: usize, end: usize) -> String {
    let lines: Vec<&str> = file.text().split('\n').collect();
    let end = end.max(start).min(lines.len());
    if start < 1 || start > lines.len() {
        return String::new();
    }
    let (marked_start, marked_end) = (start, end);
    let (mut from, mut to) = (start, end);
    let pad = if to == from { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if from > 1 {
            from -= 1;
            p += 1;
        }
        if to != lines.len() {
            to += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{}:{marked_start}\n--------------------\n", file.name());
    for n in from..=to {
        let mark = if (marked_start..=marked_end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {n:>3} | {mark} {}\n", lines[n - 1]));
    }
    out.push_str("--------------------\n");
    out
}

/// BuildKit's `lint.LintResults` JSON.
fn check_json(rules: &[Diagnostic], error: Option<&Diagnostic>, file: &SourceFile) -> Value {
    let warnings: Vec<Value> = rules
        .iter()
        .map(|w| {
            let rule = w.rule.unwrap_or_default();
            let mut v = json!({"ruleName": rule});
            if let Some(r) = kiln_frontend::lint::Rule::from_name(rule) {
                v["description"] = Value::from(r.description());
            }
            if let Some(url) = w.url {
                v["url"] = Value::from(url);
            }
            v["detail"] = Value::from(w.message.as_str());
            if let Some(loc) = &w.location {
                let mut l = location(loc.line, loc.end_line);
                l["sourceIndex"] = Value::from(0);
                v["location"] = l;
            }
            v
        })
        .collect();
    let mut out = json!({
        "warnings": warnings,
        "sources": [{"filename": file.name(), "language": "Dockerfile", "data": source(file)}],
    });
    if let Some(e) = error {
        let mut err = json!({"message": e.message});
        if let Some(loc) = &e.location {
            err["location"] = location(loc.line, loc.end_line);
        }
        out["buildError"] = err;
    }
    out
}

/// Where `kiln build` prints lint warnings: after the build, as buildx's
/// `printWarnings` does (`N warnings found`, one short line each).
pub fn print_build_warnings(warnings: &[Diagnostic], quiet: bool) {
    let rules: Vec<&Diagnostic> = warnings.iter().filter(|w| w.rule.is_some()).collect();
    if rules.is_empty() || quiet {
        return;
    }
    let mut err = std::io::stderr().lock();
    let count = if rules.len() == 1 {
        "1 warning found".to_owned()
    } else {
        format!("{} warnings found", rules.len())
    };
    let _ = writeln!(err, "\n {count} (use kiln build --check to expand):");
    for w in rules {
        let mut short = format!("{}: {}", w.rule.unwrap_or_default(), w.message);
        if let Some(line) = w.line() {
            short.push_str(&format!(" (line {line})"));
        }
        let _ = writeln!(err, " - {short}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_values_parse_like_buildx() {
        let c = Call::parse("outline,format=json").unwrap();
        assert_eq!(c.method, Method::Outline);
        assert!(c.json);
        assert_eq!(Call::parse("lint").unwrap().method, Method::Check);
        assert!(
            Call::parse("check,ignorestatus=true")
                .unwrap()
                .ignore_status
        );
        assert!(Call::parse("bogus").is_err());
        assert!(Call::parse("check,outline").is_err());
        assert!(Call::parse("check,format=yaml").is_err());
    }

    #[test]
    fn excerpt_pads_like_buildkit() {
        let f = SourceFile::new("Dockerfile", "a\nb\nc\nd\ne\nf\n");
        assert_eq!(
            source_excerpt(&f, 3, 3),
            "Dockerfile:3\n--------------------\n   1 |     a\n   2 |     b\n   3 | >>> c\n   4 |     d\n   5 |     e\n--------------------\n"
        );
        // At the top, the context goes below.
        assert_eq!(
            source_excerpt(&f, 1, 1),
            "Dockerfile:1\n--------------------\n   1 | >>> a\n   2 |     b\n   3 |     c\n--------------------\n"
        );
    }

    #[test]
    fn tabwriter_pads_all_but_the_last_cell() {
        let rows = vec![
            vec!["TARGET".to_owned(), "DESCRIPTION".to_owned()],
            vec!["a (default)".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            tabwrite(&rows, 1),
            "TARGET      DESCRIPTION\na (default) x\n"
        );
    }
}
