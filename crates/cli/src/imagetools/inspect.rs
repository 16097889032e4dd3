//! `kiln imagetools inspect`: buildx's text layout, the raw manifest, or a
//! `--format` template (`template.rs`).

use std::io::Write as _;

use kiln_llb::Digest;
use kiln_reference::Reference;
use serde_json::Value;

use super::descriptor::{desc_str, is_index_type, parse_named, platform_string};
use super::template::format_template;
use crate::args::ImagetoolsInspectArgs;
use crate::failure::Failure;
use crate::globals::Globals;

pub(super) fn inspect(globals: &Globals, args: &ImagetoolsInspectArgs) -> Result<(), Failure> {
    if args.format.is_some() && args.raw {
        return Err(Failure::Usage(
            "format and raw cannot be used together".to_owned(),
        ));
    }
    let reference = parse_named(&args.name)?.with_default_tag();
    let client = crate::registry::client(globals, &[])?;
    let top = client.get_manifest(&reference)?;
    let mut out = std::io::stdout().lock();
    if args.raw {
        let _ = out.write_all(&top.bytes);
        return Ok(());
    }
    let v: Value = serde_json::from_slice(&top.bytes)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{reference}: invalid manifest: {e}")))?;
    let text = match args.format.as_deref() {
        None => listing(&reference, &top.media_type, &top.digest, &v),
        Some(f) if f.starts_with("{{.Manifest") => {
            listing(&reference, &top.media_type, &top.digest, &v)
        }
        Some(f) => format_template(&client, &reference, &args.name, &top, &v, f)?,
    };
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

/// buildx's text layout of a manifest or index.
pub(super) fn listing(
    reference: &Reference,
    media_type: &str,
    digest: &Digest,
    v: &Value,
) -> String {
    let mut out = String::new();
    let mut w = TabWriter::default();
    w.line("Name:", &reference.to_string());
    w.line("MediaType:", media_type);
    w.line("Digest:", &digest.to_string());
    out.push_str(&w.flush());
    if !is_index_type(media_type) {
        return out;
    }
    w.line("", "");
    w.line("Manifests:", "");
    out.push_str(&w.flush());
    let name = reference.name();
    let tagged = match reference.tag() {
        Some(t) => format!("{name}:{t}"),
        None => name,
    };
    for (i, m) in v["manifests"].as_array().into_iter().flatten().enumerate() {
        let Value::Object(m) = m else { continue };
        if i != 0 {
            w.line("", "");
        }
        w.line("  Name:", &format!("{tagged}@{}", desc_str(m, "digest")));
        w.line("  MediaType:", desc_str(m, "mediaType"));
        let Some(Value::Object(p)) = m.get("platform") else {
            continue;
        };
        w.line("  Platform:", &platform_string(m).unwrap_or_default());
        let osv = desc_str(p, "os.version");
        if !osv.is_empty() {
            w.line("  OSVersion:", osv);
        }
        if let Some(Value::Array(f)) = p.get("os.features")
            && !f.is_empty()
        {
            let f: Vec<&str> = f.iter().filter_map(Value::as_str).collect();
            w.line("  OSFeatures:", &f.join(", "));
        }
        if let Some(Value::Array(u)) = m.get("urls")
            && !u.is_empty()
        {
            let u: Vec<&str> = u.iter().filter_map(Value::as_str).collect();
            w.line("  URLs:", &u.join(", "));
        }
        if let Some(Value::Object(a)) = m.get("annotations")
            && !a.is_empty()
        {
            w.line("  Annotations:", "");
            out.push_str(&w.flush());
            let mut w2 = TabWriter::default();
            for (k, v) in a {
                w2.line(&format!("    {k}:"), v.as_str().unwrap_or_default());
            }
            out.push_str(&w2.flush());
        }
    }
    out.push_str(&w.flush());
    out
}

/// Go's `text/tabwriter` as buildx configures it (`minwidth 0, tabwidth 0,
/// padding 1`, spaces, no flags), for lines of one cell and a trailing
/// text: cells are padded to the widest cell since the last flush plus one.
#[derive(Debug, Default)]
struct TabWriter {
    lines: Vec<(String, String)>,
}

impl TabWriter {
    fn line(&mut self, cell: &str, rest: &str) {
        self.lines.push((cell.to_owned(), rest.to_owned()));
    }

    fn flush(&mut self) -> String {
        let width = self
            .lines
            .iter()
            .map(|(c, _)| c.chars().count())
            .max()
            .unwrap_or(0)
            + 1;
        let mut out = String::new();
        for (c, r) in self.lines.drain(..) {
            out.push_str(&c);
            out.push_str(&" ".repeat(width - c.chars().count()));
            out.push_str(&r);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_pads_cells() {
        let mut w = TabWriter::default();
        w.line("Name:", "a");
        w.line("MediaType:", "b");
        w.line("", "");
        assert_eq!(w.flush(), "Name:      a\nMediaType: b\n           \n");
    }
}
