//! The subset of Go templates that `docker … --format` is used with:
//! `{{.Field}}`, `{{.A.B}}`, `{{json .}}`, `{{json .Field}}`, the `table`
//! prefix (a header row, columns aligned as Docker's tabwriter does), `\t` and
//! `\n` escapes, and the special values `json` (one JSON object per line) and
//! `table`. Anything else (pipelines, `if`, `range`, functions other than
//! `json`) is refused by name rather than printed wrong.

use serde_json::Value;

/// A parsed `--format`.
#[derive(Debug, Clone)]
pub struct Template {
    table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// `.A.B` (empty path: `.`), printed Go-style or as JSON.
    Field {
        path: Vec<String>,
        json: bool,
    },
}

impl Template {
    /// Parses `format`. `default_table` is the format `table` alone means.
    pub fn parse(format: &str, default_table: &str) -> Result<Template, String> {
        let (table, body) = if format == "table" {
            (true, default_table)
        } else if format == "json" {
            (false, "{{json .}}")
        } else if let Some(rest) = format.strip_prefix("table ") {
            (true, rest)
        } else {
            (false, format)
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("template: unclosed action in {format:?}"))?;
            let action = after[..end]
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            parts.push(parse_action(action)?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { table, parts })
    }

    /// Renders one object.
    pub fn render(&self, v: &Value) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, json } => {
                    let mut cur = v;
                    let mut missing = false;
                    for k in path {
                        match cur.get(k) {
                            Some(x) => cur = x,
                            None => {
                                missing = true;
                                break;
                            }
                        }
                    }
                    if missing {
                        out.push_str(if *json { "null" } else { "<no value>" });
                    } else if *json {
                        out.push_str(&serde_json::to_string(cur).unwrap_or_default());
                    } else {
                        out.push_str(&go_string(cur));
                    }
                }
            }
        }
        out
    }

    /// The header row of a table: each field replaced by its header
    /// (`headers(field)`, default: the field name upper-cased).
    pub fn header(&self, headers: &dyn Fn(&str) -> Option<&'static str>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, .. } => {
                    let name = path.join(".");
                    match headers(&name) {
                        Some(h) => out.push_str(h),
                        None => out.push_str(&name.to_uppercase()),
                    }
                }
            }
        }
        out
    }

    /// Renders `rows` (with a header for tables) to the final text, every
    /// row ending in a newline.
    pub fn render_all(
        &self,
        rows: &[Value],
        headers: &dyn Fn(&str) -> Option<&'static str>,
    ) -> String {
        let mut lines = Vec::new();
        if self.table {
            lines.push(self.header(headers));
        }
        for r in rows {
            lines.push(self.render(r));
        }
        let mut text = lines.join("\n");
        if !lines.is_empty() {
            text.push('\n');
        }
        if self.table { tabwrite(&text) } else { text }
    }
}

fn parse_action(action: &str) -> Result<Part, String> {
    let words: Vec<&str> = action.split_whitespace().collect();
    let path = |w: &str| -> Result<Vec<String>, String> {
        if w == "." {
            return Ok(Vec::new());
        }
        let Some(rest) = w.strip_prefix('.') else {
            return Err(format!(
                "template: {{{{{action}}}}} is not supported (only {{{{.Field}}}} and {{{{json .Field}}}})"
            ));
        };
        let parts: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return Err(format!("template: bad field {w:?}"));
        }
        Ok(parts)
    };
    match words.as_slice() {
        [w] => Ok(Part::Field {
            path: path(w)?,
            json: false,
        }),
        ["json", w] => Ok(Part::Field {
            path: path(w)?,
            json: true,
        }),
        _ => Err(format!(
            "template: {{{{{action}}}}} is not supported (only {{{{.Field}}}}, {{{{json .}}}} and {{{{json .Field}}}})"
        )),
    }
}

/// A value as Go's `fmt` prints it in a template.
fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_string(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Go's `text/tabwriter` as Docker configures it (`minwidth 10, tabwidth 1,
/// padding 3`, padding with spaces): tab-terminated cells are aligned per
/// column across consecutive lines; the text after a line's last tab is not.
pub fn tabwrite(text: &str) -> String {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let columns = lines
        .iter()
        .map(|c| c.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for cells in &lines {
        for (i, c) in cells.iter().enumerate().take(cells.len().saturating_sub(1)) {
            widths[i] = widths[i].max((c.chars().count() + PADDING).max(MIN_WIDTH));
        }
    }
    let mut out = String::new();
    for (n, cells) in lines.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_json_and_tables() {
        let v = serde_json::json!({"Repository": "busybox", "Tag": "latest", "Config": {"Cmd": ["sh", "-c"]}});
        let t = Template::parse("{{.Repository}}:{{.Tag}}", "").unwrap();
        assert_eq!(t.render(&v), "busybox:latest");
        let t = Template::parse("{{json .Config.Cmd}} {{.Config.Cmd}} {{.Nope}}", "").unwrap();
        assert_eq!(t.render(&v), r#"["sh","-c"] [sh -c] <no value>"#);
        let t = Template::parse("json", "").unwrap();
        assert!(t.render(&v).starts_with("{\"Config\""));
        let t = Template::parse("table {{.Repository}}\\t{{.Tag}}", "").unwrap();
        let text = t.render_all(std::slice::from_ref(&v), &|f| {
            (f == "Repository").then_some("REPOSITORY")
        });
        assert_eq!(text, "REPOSITORY   TAG\nbusybox      latest\n");
        assert!(Template::parse("{{range .}}", "").is_err());
        assert!(Template::parse("{{.A | upper}}", "").is_err());
        assert!(Template::parse("{{.A", "").is_err());
    }

    #[test]
    fn tabwriter_pads_to_min_width() {
        assert_eq!(tabwrite("a\tb\nccc\td"), "a         b\nccc       d");
    }
}
