//! The image-store verbs of a Docker user: `kiln images`, `inspect`,
//! `history`, `tag`, `rmi`, with Docker's columns, `--format` templates
//! ([`crate::gotemplate`]) and messages.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use kiln_llb::Digest;
use kiln_reference::Reference;
use kiln_worker::State;
use kiln_worker::images::{self, Found, ImageSummary};
use kiln_worker::lock::LockKind;
use serde_json::{Value, json};

use crate::args::{HistoryArgs, ImagesArgs, InspectArgs, RmiArgs, TagArgs};
use crate::failure::Failure;
use crate::gotemplate::Template;
use crate::store::{find, find_id, lock, open};
use crate::units::{go_time, now_secs, parse_time};

/// `docker.io/library/busybox:latest` → `("busybox", "latest")`.
pub fn familiar(name: &str) -> (String, String) {
    match kiln_oci::export::familiar_tag(name) {
        Some(rt) => rt,
        None => match name.split_once('@') {
            Some((repo, _)) => (
                kiln_oci::export::familiar_tag(repo).map_or(repo.to_owned(), |(r, _)| r),
                "<none>".to_owned(),
            ),
            None => (name.to_owned(), "<none>".to_owned()),
        },
    }
}

/// go-units `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let hours = (s as f64 / 3600.0 + 0.5) as i64;
    let minutes = s / 60;
    if s < 1 {
        "Less than a second".to_owned()
    } else if s == 1 {
        "1 second".to_owned()
    } else if s < 60 {
        format!("{s} seconds")
    } else if minutes == 1 {
        "About a minute".to_owned()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_owned()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", s / 3600 / 24 / 365)
    }
}

pub use kiln_worker::images::human_size;

fn short_id(id: &Digest, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.hex()[..12].to_owned()
    }
}

fn created_secs(img: &ImageSummary) -> i64 {
    img.config
        .created
        .as_deref()
        .and_then(parse_time)
        .unwrap_or(0)
}

/// Go's `path.Match` (`*`, `?`, `[…]`; `*` and `?` do not match `/`).
pub fn path_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && n[0] != '/' && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|&c| c == ']') else {
                    return false;
                };
                let Some(&c) = n.first() else { return false };
                let mut class = &p[1..end];
                let negate = class.first() == Some(&'^');
                if negate {
                    class = &class[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && m(&p[end + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && m(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

/// One `--filter` of `kiln images`.
#[derive(Debug)]
enum Filter {
    Dangling(bool),
    Reference(String),
    Before(i64),
    Since(i64),
    Label(String, Option<String>),
}

fn parse_filters(state: &State, filters: &[String]) -> Result<Vec<Filter>, Failure> {
    let mut out = Vec::new();
    for f in filters {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            Failure::Usage(format!("bad format of filter {f:?} (expected name=value)"))
        })?;
        let created_of = |v: &str| -> Result<i64, Failure> {
            let id = find_id(state, v)?;
            let c = kiln_worker::image::load_config(state, &id)
                .map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
            Ok(c.created.as_deref().and_then(parse_time).unwrap_or(0))
        };
        out.push(match k {
            "dangling" => match v {
                "true" | "1" => Filter::Dangling(true),
                "false" | "0" => Filter::Dangling(false),
                _ => {
                    return Err(Failure::Usage(format!(
                        "invalid filter 'dangling={v}' (expected true or false)"
                    )));
                }
            },
            "reference" => Filter::Reference(v.to_owned()),
            "before" => Filter::Before(created_of(v)?),
            "since" => Filter::Since(created_of(v)?),
            "label" => match v.split_once('=') {
                Some((k, v)) => Filter::Label(k.to_owned(), Some(v.to_owned())),
                None => Filter::Label(v.to_owned(), None),
            },
            other => {
                return Err(Failure::Usage(format!(
                    "invalid filter '{other}' (supported: dangling, reference, before, since, label)"
                )));
            }
        });
    }
    Ok(out)
}

/// `reference=` as Docker matches it: the familiar `repo:tag`, or the
/// familiar repository alone.
fn reference_matches(pattern: &str, name: &str) -> bool {
    let (repo, tag) = familiar(name);
    path_match(pattern, &format!("{repo}:{tag}")) || path_match(pattern, &repo)
}

fn headers(field: &str) -> Option<&'static str> {
    Some(match field {
        "ID" => "IMAGE ID",
        "Repository" => "REPOSITORY",
        "Tag" => "TAG",
        "Digest" => "DIGEST",
        "CreatedSince" => "CREATED",
        "CreatedAt" => "CREATED AT",
        "Size" => "SIZE",
        "CreatedBy" => "CREATED BY",
        "Comment" => "COMMENT",
        "Platform" => "PLATFORM",
        _ => return None,
    })
}

fn template(format: Option<&str>, default_table: &str) -> Result<Template, Failure> {
    Template::parse(format.unwrap_or("table"), default_table).map_err(Failure::Usage)
}

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
}

/// `kiln images`.
pub fn images(root: Option<&Path>, args: &ImagesArgs) -> Result<(), Failure> {
    let state = open(root)?;
    let mut filters = parse_filters(&state, &args.filters)?;
    if let Some(r) = &args.reference {
        filters.push(Filter::Reference(r.clone()));
    }
    let list = images::list(&state).map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
    let now = now_secs();
    let mut rows = Vec::new();
    for img in &list {
        let created = created_secs(img);
        let keep_image = filters.iter().all(|f| match f {
            Filter::Dangling(d) => img.names.is_empty() == *d,
            Filter::Before(t) => created < *t,
            Filter::Since(t) => created > *t,
            Filter::Label(k, v) => match img.config.config.labels.get(k) {
                None => false,
                Some(x) => v.as_ref().is_none_or(|v| v == x),
            },
            Filter::Reference(_) => true,
        });
        if !keep_image {
            continue;
        }
        let names: Vec<Option<&String>> = if img.names.is_empty() {
            vec![None]
        } else {
            img.names.iter().map(Some).collect()
        };
        for name in names {
            if let Some(Filter::Reference(_)) = filters.iter().find(|f| {
                matches!(f, Filter::Reference(p) if !name.is_some_and(|n| reference_matches(p, n)))
            }) {
                continue;
            }
            let (repo, tag) =
                name.map_or(("<none>".to_owned(), "<none>".to_owned()), |n| familiar(n));
            let digest = img
                .manifests
                .first()
                .map_or("<none>".to_owned(), ToString::to_string);
            rows.push(json!({
                "ID": short_id(&img.id, args.no_trunc),
                "Repository": repo,
                "Tag": tag,
                "Digest": digest,
                "CreatedAt": go_time(created),
                "CreatedSince": format!("{} ago", human_duration(now - created)),
                "Size": human_size(img.size),
                "Platform": img.config.platform().format(),
                "Containers": "N/A",
            }));
        }
    }
    if args.quiet {
        let mut seen = Vec::new();
        for r in &rows {
            let id = r["ID"].as_str().unwrap_or_default().to_owned();
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        print(&seen.iter().map(|s| format!("{s}\n")).collect::<String>());
        return Ok(());
    }
    let default = if args.digests {
        "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let t = template(args.format.as_deref(), default)?;
    print(&t.render_all(&rows, &headers));
    Ok(())
}

/// The `kiln inspect` object of an image: Docker's fields, plus the
/// manifest when the store knows one.
fn inspect_object(state: &State, id: &Digest) -> Result<Value, Failure> {
    let fail = |e: kiln_worker::Error| Failure::Other(anyhow::anyhow!("{e}"));
    let config = kiln_worker::image::load_config(state, id).map_err(fail)?;
    let names = state
        .images
        .names_of(id)
        .map_err(|e| Failure::Other(e.into()))?;
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    let mut manifest = Value::Null;
    for n in &names {
        let (repo, tag) = familiar(n);
        if tag != "<none>" {
            repo_tags.push(format!("{repo}:{tag}"));
        }
        if let Ok(Some(r)) = state.images.get(n)
            && let Some(m) = r.manifest
        {
            let d = format!("{repo}@{m}");
            if !repo_digests.contains(&d) {
                repo_digests.push(d);
            }
            if manifest.is_null()
                && let Ok(bytes) = state.content.read(&m)
            {
                manifest = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            }
        }
    }
    let size = images::image_size(state, id, &config);
    let cfg = serde_json::to_value(&config).context("encoding the configuration")?;
    let mut obj = json!({
        "Id": id.to_string(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": config.history.last().map(|h| h.comment.clone()).unwrap_or_default(),
        "Created": config.created.clone().unwrap_or_default(),
        "Author": config.author,
        "Config": cfg.get("config").cloned().unwrap_or(json!({})),
        "Architecture": cfg.get("architecture").cloned().unwrap_or(json!("")),
        "Os": cfg.get("os").cloned().unwrap_or(json!("")),
        "Size": size,
        "VirtualSize": size,
        "RootFS": {
            "Type": "layers",
            "Layers": config.rootfs.diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
    });
    if let Some(v) = cfg.get("variant") {
        obj["Variant"] = v.clone();
    }
    if !manifest.is_null() {
        obj["Manifest"] = manifest;
    }
    Ok(obj)
}

/// `kiln inspect`.
pub fn inspect(root: Option<&Path>, args: &InspectArgs) -> Result<(), Failure> {
    let state = open(root)?;
    let t = args
        .format
        .as_deref()
        .map(|f| Template::parse(f, "").map_err(Failure::Usage))
        .transpose()?;
    let mut objects = Vec::new();
    let mut missing = Vec::new();
    for r in &args.images {
        match find(&state, r) {
            Ok(f) => {
                let id = match f {
                    Found::Name(_, r) => r.id,
                    Found::Id(id) => id,
                };
                objects.push(inspect_object(&state, &id)?);
            }
            Err(_) => missing.push(r.clone()),
        }
    }
    match &t {
        Some(t) => print(
            &objects
                .iter()
                .map(|o| format!("{}\n", t.render(o)))
                .collect::<String>(),
        ),
        None => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&objects, &mut ser).context("encoding")?;
            buf.push(b'\n');
            print(&String::from_utf8_lossy(&buf));
        }
    }
    if !missing.is_empty() {
        return Err(Failure::Other(anyhow::anyhow!(
            "No such image: {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// Docker's `Ellipsis`: at most `n` characters, the last one `…`.
fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// `kiln history`.
pub fn history(root: Option<&Path>, args: &HistoryArgs) -> Result<(), Failure> {
    let state = open(root)?;
    let id = find_id(&state, &args.image)?;
    let config = kiln_worker::image::load_config(&state, &id)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
    let sizes = images::layer_sizes(&state, &id, &config);
    let now = now_secs();
    let mut rows = Vec::new();
    let mut layer = 0;
    for h in &config.history {
        let size = if h.empty_layer {
            0
        } else {
            layer += 1;
            sizes.get(layer - 1).copied().unwrap_or(0)
        };
        let created = h.created.as_deref().and_then(parse_time).unwrap_or(0);
        let by = h.created_by.replace('\t', " ");
        rows.push(json!({
            "ID": "<missing>",
            "CreatedAt": if args.human { go_time(created) } else { h.created.clone().unwrap_or_default() },
            "CreatedSince": if args.human { format!("{} ago", human_duration(now - created)) } else { h.created.clone().unwrap_or_default() },
            "CreatedBy": if args.no_trunc { by } else { ellipsis(&by, 45) },
            "Size": if args.human { human_size(size) } else { size.to_string() },
            "Comment": h.comment,
        }));
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["ID"] = json!(short_id(&id, args.no_trunc));
    }
    if args.quiet {
        print(
            &rows
                .iter()
                .map(|r| format!("{}\n", r["ID"].as_str().unwrap_or_default()))
                .collect::<String>(),
        );
        return Ok(());
    }
    let t = template(
        args.format.as_deref(),
        "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
    )?;
    let headers = |f: &str| {
        if f == "ID" { Some("IMAGE") } else { headers(f) }
    };
    print(&t.render_all(&rows, &headers));
    Ok(())
}

/// `kiln tag`.
pub fn tag(root: Option<&Path>, args: &TagArgs) -> Result<(), Failure> {
    let state = open(root)?;
    let _lock = lock(&state, LockKind::Shared)?;
    let target = Reference::parse_normalized(&args.target)
        .map_err(|e| Failure::Usage(format!("invalid reference format {:?}: {e}", args.target)))?;
    if target.digest().is_some() {
        return Err(Failure::Usage(format!(
            "invalid reference format {:?}: a tag cannot contain a digest",
            args.target
        )));
    }
    let target = target.with_default_tag().to_string();
    let (id, manifest, platforms) = match find(&state, &args.source)? {
        Found::Name(n, r) => (
            r.id,
            r.manifest,
            state
                .images
                .platforms_of(&n)
                .map_err(|e| Failure::Other(e.into()))?,
        ),
        Found::Id(id) => (id, None, Default::default()),
    };
    let image = kiln_oci::ImageRef { id, manifest };
    let ids: Vec<Digest> = std::iter::once(id)
        .chain(platforms.values().map(|r| r.id))
        .collect();
    images::naming(&state, &ids, |ix| {
        if platforms.is_empty() {
            ix.set(&target, image)?;
        } else {
            // A multi-platform name: the new name gets every platform's image.
            let all: Vec<(String, kiln_oci::ImageRef)> = platforms.into_iter().collect();
            ix.set_platforms(&target, &all, image)?;
        }
        Ok(())
    })
    .map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
    Ok(())
}

/// `kiln rmi`.
pub fn rmi(root: Option<&Path>, args: &RmiArgs) -> Result<(), Failure> {
    let state = open(root)?;
    let _lock = lock(&state, LockKind::Shared)?;
    let mut errors = Vec::new();
    let mut out = String::new();
    for r in &args.images {
        let found = match find(&state, r) {
            Ok(f) => f,
            Err(Failure::Other(e)) => {
                errors.push(format!("{e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        match images::remove(&state, &found, args.force) {
            Ok(removed) => {
                for n in &removed.untagged {
                    let (repo, tag) = familiar(n);
                    if tag == "<none>" {
                        out.push_str(&format!("Untagged: {repo}\n"));
                    } else {
                        out.push_str(&format!("Untagged: {repo}:{tag}\n"));
                    }
                }
                if let Some(d) = removed.deleted {
                    out.push_str(&format!("Deleted: {d}\n"));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    print(&out);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::Other(anyhow::anyhow!(
            "{}",
            errors.join("\nerror: ")
        )))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn docker_times() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(3 * 365 * 86400), "3 years");
        assert_eq!(parse_time("2020-09-13T12:26:40Z"), Some(1_600_000_000));
        assert_eq!(
            parse_time("2020-09-13T14:26:40.123+02:00"),
            Some(1_600_000_000)
        );
        assert_eq!(go_time(1_600_000_000), "2020-09-13 12:26:40 +0000 UTC");
    }

    use super::*;

    #[test]
    fn path_match_is_go_path_match() {
        assert!(path_match("busy*", "busybox:latest"));
        assert!(!path_match("*", "library/busybox"));
        assert!(path_match("a?c:[0-9]", "abc:1"));
        assert!(!path_match("a?c:[^0-9]", "abc:1"));
    }
}
