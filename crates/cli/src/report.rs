//! A build record as a self-contained HTML page (`kiln builds report`,
//! `kiln build --report FILE`): a timeline of the steps, per stage, whose
//! overlapping bars show what ran in parallel (with a strip of how many
//! steps ran at once), the critical path, cache hits and why each other
//! step ran, layer sizes, transfers, warnings and the error. No script
//! draws it and nothing is fetched: the page is HTML and inline SVG, styled
//! by the template `report.html`; the record itself is embedded as JSON
//! (`<script type="application/json" id="kiln-record">`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::progress::{Outcome, StepSummary};
use crate::records::Record;
use crate::units::human_size;

const TEMPLATE: &str = include_str!("report.html");

/// Left column of the timeline (step names), and the bars' width.
const LABEL_W: f64 = 430.0;
const BARS_W: f64 = 640.0;
const ROW_H: f64 = 20.0;

/// The critical path: from the step that ended last, back through the
/// input that ended last, each time, among the steps that ran (a cache hit
/// takes no time: it is on no path). Ids in build order.
pub fn critical_path(r: &Record) -> Vec<u32> {
    let steps: HashMap<u32, &StepSummary> = r
        .graph_steps()
        .filter(|s| s.end_ms.is_some() && s.start_ms.is_some() && s.outcome != Outcome::Cached)
        .map(|s| (s.id, s))
        .collect();
    let Some(mut cur) = steps.values().max_by_key(|s| (s.end_ms, s.id)).copied() else {
        return Vec::new();
    };
    let mut path = vec![cur.id];
    while let Some(next) = cur
        .deps
        .iter()
        .filter_map(|d| steps.get(d))
        .max_by_key(|s| (s.end_ms, s.id))
    {
        if path.contains(&next.id) {
            break;
        }
        path.push(next.id);
        cur = next;
    }
    path.reverse();
    path
}

/// When each step was running: its span, or for a step of several nodes
/// the spans its nodes ran.
fn running(r: &Record) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for s in r.graph_steps() {
        if !s.runs_ms.is_empty() {
            out.extend(s.runs_ms.iter().copied());
        } else if let (Some(a), Some(b)) = (s.start_ms, s.end_ms) {
            out.push((a, b.max(a)));
        }
    }
    out
}

/// Time edges (+1 a step starts, -1 it ends), in order.
fn edges(r: &Record) -> Vec<(u64, i32)> {
    let mut edges: Vec<(u64, i32)> = running(r)
        .into_iter()
        .flat_map(|(a, b)| [(a, 1), (b, -1)])
        .collect();
    edges.sort_by_key(|&(t, d)| (t, d));
    edges
}

/// Most steps running at once (from their start and end times).
pub fn max_parallel(r: &Record) -> usize {
    let edges = edges(r);
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        cur += d;
        max = max.max(cur);
    }
    usize::try_from(max).unwrap_or(0)
}

/// Text for HTML (element content and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Cached => "cached",
        Outcome::Done => "done",
        Outcome::Error => "error",
        Outcome::Canceled => "canceled",
    }
}

/// `1.234s`, `120ms`.
pub fn ms_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// The step's duration, when it ran.
pub fn step_duration(s: &StepSummary) -> Option<u64> {
    match (s.start_ms, s.end_ms) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    }
}

/// The stage a step is shown under.
fn lane(s: &StepSummary) -> String {
    if s.task {
        return "outputs".to_owned();
    }
    match &s.stage {
        Some(st) if !st.is_empty() => st.clone(),
        _ => "internal".to_owned(),
    }
}

/// The page.
pub fn html(r: &Record) -> String {
    let critical = critical_path(r);
    let mut body = String::new();
    let (complete, all, cached) = r.counts();
    let pct = (cached * 100).checked_div(all).unwrap_or(0);
    let _ = write!(
        body,
        "<h1>{} <span class=\"badge {}\">{}</span></h1>\n<div class=\"muted mono\">kiln {}</div>\n",
        esc(&r.name),
        esc(&r.status),
        esc(r.status_word()),
        esc(&r.command.join(" "))
    );
    body.push_str("<dl class=\"summary\">\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(body, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    row("Build", format!("<code>{}</code>", esc(&r.id)));
    row("Context", format!("<code>{}</code>", esc(&r.context)));
    row("Dockerfile", format!("<code>{}</code>", esc(&r.dockerfile)));
    if let Some(t) = &r.target {
        row("Target", esc(t));
    }
    if !r.platforms.is_empty() {
        row("Platforms", esc(&r.platforms.join(", ")));
    }
    row("Started", esc(&shown_time(&r.started_at)));
    row("Duration", esc(&ms_text(r.duration_ms)));
    row(
        "Build steps",
        format!("{complete}/{all} ({pct}% cached, {cached} cached)"),
    );
    row("Parallelism", esc(&parallel_text(max_parallel(r))));
    if !critical.is_empty() {
        let total: u64 = critical
            .iter()
            .filter_map(|id| r.steps.iter().find(|s| s.id == *id))
            .filter_map(step_duration)
            .sum();
        let ids: Vec<String> = critical.iter().map(|i| format!("#{i}")).collect();
        row(
            "Critical path",
            format!(
                "{} ({} of steps)",
                esc(&ids.join(" → ")),
                esc(&ms_text(total))
            ),
        );
    }
    if let Some(img) = &r.image {
        row(
            "Image",
            format!(
                "<code>{}</code> {} ({} layers, {})",
                esc(&img.id),
                esc(&img.names.join(", ")),
                img.layers.len(),
                esc(&human_size(img.size))
            ),
        );
    }
    if !r.outputs.is_empty() {
        row(
            "Outputs",
            r.outputs
                .iter()
                .map(|o| format!("<code>{}</code>", esc(o)))
                .collect::<Vec<_>>()
                .join("<br>"),
        );
    }
    body.push_str("</dl>\n");
    if let Some(e) = &r.error {
        let text = r.error_report.as_deref().unwrap_or(e);
        let _ = writeln!(
            body,
            "<h2>Error</h2>\n<pre class=\"error\">{}</pre>",
            esc(text)
        );
    }
    body.push_str(&timeline(r, &critical));
    body.push_str(&steps_table(r, &critical));
    body.push_str(&layers_table(r));
    if !r.transfers.is_empty() {
        body.push_str("<h2>Transfers</h2>\n<table>\n<tr><th>Blob</th><th>Action</th><th class=\"num\">Bytes</th><th class=\"num\">Time</th></tr>\n");
        for t in &r.transfers {
            let _ = writeln!(
                body,
                "<tr><td class=\"mono\">{}</td><td>{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&t.digest),
                esc(&t.action),
                if t.finished { "" } else { " (unfinished)" },
                esc(&human_size(t.bytes)),
                esc(&ms_text(t.end_ms.saturating_sub(t.start_ms)))
            );
        }
        body.push_str("</table>\n");
    }
    if !r.warnings.is_empty() {
        body.push_str("<h2>Warnings</h2>\n<ul>\n");
        for w in &r.warnings {
            let _ = writeln!(body, "<li><code>{}</code></li>", esc(w));
        }
        body.push_str("</ul>\n");
    }
    let record = serde_json::to_string(r)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    TEMPLATE
        .replace(
            "{{title}}",
            &esc(&format!("kiln build {} ({})", r.name, r.id)),
        )
        .replace("{{version}}", &esc(crate::version::SHORT))
        .replace("{{id}}", &esc(&r.id))
        .replace("{{body}}", &body)
        .replace("{{record}}", &record)
}

fn timeline(r: &Record, critical: &[u32]) -> String {
    let mut out = String::from("<h2>Timeline</h2>\n");
    out.push_str(
        "<div class=\"legend\"><span><i style=\"background:var(--done)\"></i>ran</span>\
         <span><i style=\"background:var(--cached)\"></i>cached</span>\
         <span><i style=\"background:var(--error)\"></i>failed</span>\
         <span><i style=\"background:var(--canceled)\"></i>canceled</span>\
         <span><i style=\"background:var(--task)\"></i>output</span>\
         <span><i style=\"background:#fff;border:2px solid var(--critical)\"></i>critical path</span></div>\n",
    );
    let total = r
        .steps
        .iter()
        .filter_map(|s| s.end_ms)
        .max()
        .unwrap_or(0)
        .max(r.duration_ms)
        .max(1) as f64;
    // Lanes in the order their first step appeared.
    let mut lanes: Vec<(String, Vec<&StepSummary>)> = Vec::new();
    for s in &r.steps {
        let l = lane(s);
        match lanes.iter_mut().find(|(n, _)| *n == l) {
            Some((_, v)) => v.push(s),
            None => lanes.push((l, vec![s])),
        }
    }
    for (_, v) in &mut lanes {
        v.sort_by_key(|s| (s.start_ms.or(s.end_ms).unwrap_or(u64::MAX), s.id));
    }
    let rows: usize = lanes.iter().map(|(_, v)| v.len() + 1).sum();
    let par_h = 40.0;
    let height = 28.0 + rows as f64 * ROW_H + par_h + 30.0;
    let width = LABEL_W + BARS_W + 20.0;
    let x = |ms: u64| LABEL_W + ms as f64 / total * BARS_W;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline of the build steps\">"
    );
    // Axis.
    for i in 0..=4 {
        let ms = (total * f64::from(i) / 4.0) as u64;
        let tx = x(ms);
        let _ = writeln!(
            svg,
            "<line class=\"tick\" x1=\"{tx:.1}\" y1=\"16\" x2=\"{tx:.1}\" y2=\"{:.1}\"/><text class=\"ticktext\" x=\"{tx:.1}\" y=\"12\" text-anchor=\"middle\">{}</text>",
            height - 8.0,
            esc(&ms_text(ms))
        );
    }
    let mut y = 28.0;
    for (name, steps) in &lanes {
        let _ = writeln!(
            svg,
            "<text class=\"stage\" x=\"8\" y=\"{:.1}\">{}</text>",
            y + 14.0,
            esc(name)
        );
        y += ROW_H;
        for s in steps {
            let label: String = {
                let n = &s.name;
                if n.chars().count() > 56 {
                    format!("{}…", n.chars().take(55).collect::<String>())
                } else {
                    n.clone()
                }
            };
            let crit = critical.contains(&s.id);
            let kind = if s.task {
                "task"
            } else {
                outcome_word(&s.outcome)
            };
            let (a, b) = match (s.start_ms, s.end_ms) {
                (Some(a), Some(b)) => (a, b),
                (None, Some(b)) => (b, b),
                (Some(a), None) => (a, r.duration_ms.max(a)),
                (None, None) => (0, 0),
            };
            let bx = x(a);
            let bw = (x(b) - bx).max(3.0);
            let title = match (&s.reason, step_duration(s)) {
                (Some(why), Some(d)) => {
                    format!("#{} {} — {} — ran: {why}", s.id, s.name, ms_text(d))
                }
                (None, Some(d)) => format!("#{} {} — {}", s.id, s.name, ms_text(d)),
                _ => format!("#{} {} — {}", s.id, s.name, kind),
            };
            // A step of several nodes: a thin line over its span, a bar
            // for each node that ran.
            let bars: Vec<(f64, f64)> = if s.runs_ms.is_empty() {
                vec![(bx, bw)]
            } else {
                s.runs_ms
                    .iter()
                    .map(|&(a, b)| (x(a), (x(b) - x(a)).max(3.0)))
                    .collect()
            };
            let mut rects = String::new();
            if !s.runs_ms.is_empty() {
                let _ = write!(
                    rects,
                    "<rect class=\"span {kind}\" x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"2\"/>",
                    y + ROW_H / 2.0 - 1.0
                );
            }
            for (rx, rw) in bars {
                let _ = write!(
                    rects,
                    "<rect class=\"bar {kind}{crit}\" x=\"{rx:.1}\" y=\"{by:.1}\" width=\"{rw:.1}\" height=\"{bh:.1}\" rx=\"2\"/>",
                    crit = if crit { " critical" } else { "" },
                    by = y + 4.0,
                    bh = ROW_H - 8.0,
                );
            }
            let _ = writeln!(
                svg,
                "<g class=\"step\" data-step=\"{id}\" data-name=\"{name}\"><title>{title}</title>\
                 <text class=\"label\" x=\"20\" y=\"{ty:.1}\">#{id} {label}</text>{rects}</g>",
                id = s.id,
                name = esc(&s.name),
                title = esc(&title),
                ty = y + 14.0,
                label = esc(&label),
            );
            y += ROW_H;
        }
    }
    // How many steps ran at once, over time.
    let edges = edges(r);
    let max = max_parallel(r).max(1) as f64;
    let base = y + 10.0 + par_h;
    let _ = writeln!(
        svg,
        "<text class=\"stage\" x=\"8\" y=\"{:.1}\">steps running at once (at most {})</text>",
        base - par_h / 2.0,
        max_parallel(r)
    );
    let mut cur = 0i32;
    for w in edges.windows(2) {
        cur += w[0].1;
        if cur > 0 && w[1].0 > w[0].0 {
            let h = f64::from(cur) / max * par_h;
            let _ = writeln!(
                svg,
                "<rect class=\"par\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{cur} at once</title></rect>",
                x(w[0].0),
                base - h,
                (x(w[1].0) - x(w[0].0)).max(0.5)
            );
        }
    }
    svg.push_str("</svg>\n");
    out.push_str("<div class=\"timeline\">\n");
    out.push_str(&svg);
    out.push_str("</div>\n");
    out
}

fn steps_table(r: &Record, critical: &[u32]) -> String {
    let mut out = String::from(
        "<h2>Steps</h2>\n<table id=\"steps\">\n<tr><th>#</th><th>Step</th><th>Stage</th><th>Outcome</th>\
         <th class=\"num\">Start</th><th class=\"num\">Duration</th><th class=\"num\">Layer</th><th>Why it ran</th></tr>\n",
    );
    for s in &r.steps {
        let crit = critical.contains(&s.id);
        let why = match (&s.outcome, &s.reason) {
            (_, Some(w)) => esc(w),
            (Outcome::Cached, None) => "<span class=\"muted\">cache hit</span>".to_owned(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "<tr data-step=\"{id}\"{cls}><td class=\"num\">{id}</td><td class=\"mono\">{name}{err}</td><td>{stage}</td>\
             <td><span class=\"outcome {o}\">{o}</span></td><td class=\"num\">{start}</td><td class=\"num\">{dur}</td>\
             <td class=\"num\">{size}</td><td>{why}</td></tr>",
            id = s.id,
            cls = if crit { " class=\"critical\"" } else { "" },
            name = esc(&s.name),
            err = s
                .error
                .as_ref()
                .map(|e| format!("<br><span class=\"outcome error\">{}</span>", esc(e)))
                .unwrap_or_default(),
            stage = esc(&lane(s)),
            o = outcome_word(&s.outcome),
            start = s.start_ms.or(s.end_ms).map(ms_text).unwrap_or_default(),
            dur = step_duration(s).map(ms_text).unwrap_or_default(),
            size = s.layer_size.map(human_size).unwrap_or_default(),
        );
    }
    out.push_str("</table>\n");
    out
}

fn layers_table(r: &Record) -> String {
    let Some(img) = &r.image else {
        return String::new();
    };
    let mut out = String::from(
        "<h2>Image layers</h2>\n<table id=\"layers\">\n<tr><th>#</th><th>Created by</th><th class=\"num\">Size</th><th>Step</th></tr>\n",
    );
    for (i, l) in img.layers.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            i + 1,
            esc(&l.created_by),
            esc(&human_size(l.size)),
            l.step
                .map(|s| format!("#{s}"))
                .unwrap_or_else(|| "base image".to_owned())
        );
    }
    out.push_str("</table>\n");
    out
}

/// `kiln builds show`: the record in buildx's `history inspect` layout,
/// then its steps, outputs and layers.
pub fn show(r: &Record, named: bool) -> String {
    let mut out = String::new();
    let mut head = vec![("Name", r.name.clone())];
    if !named {
        head.push(("Ref", r.id.clone()));
    }
    head.push(("Context", r.context.clone()));
    head.push(("Dockerfile", r.dockerfile.clone()));
    if let Some(t) = &r.target {
        head.push(("Target", t.clone()));
    }
    if !r.platforms.is_empty() {
        head.push(("Platforms", r.platforms.join(", ")));
    }
    out.push_str(&tabbed(&kv(&head)));
    out.push('\n');
    let (complete, all, cached) = r.counts();
    let pct = (cached * 100).checked_div(all).unwrap_or(0);
    let mut times = vec![
        ("Started", shown_time(&r.started_at)),
        (
            "Duration",
            crate::units::human_duration(std::time::Duration::from_millis(r.duration_ms)),
        ),
    ];
    match r.status.as_str() {
        "error" => times.push(("Error", r.error.clone().unwrap_or_default())),
        "canceled" => times.push(("Status", "Canceled".to_owned())),
        _ => {}
    }
    times.push(("Build Steps", format!("{complete}/{all} ({pct}% cached)")));
    let critical = critical_path(r);
    if !critical.is_empty() {
        let ids: Vec<String> = critical.iter().map(|i| format!("#{i}")).collect();
        times.push(("Critical Path", ids.join(" -> ")));
    }
    times.push(("Parallelism", parallel_text(max_parallel(r))));
    out.push_str(&tabbed(&kv(&times)));
    out.push('\n');
    if !r.build_args.is_empty() {
        out.push_str(&tabbed(&table(
            &["BUILD ARG", "VALUE"],
            &r.build_args
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect::<Vec<_>>(),
        )));
        out.push('\n');
    }
    if !r.bases.is_empty() {
        out.push_str("Materials:\n");
        out.push_str(&tabbed(&table(
            &["REFERENCE", "DIGEST"],
            &r.bases
                .iter()
                .map(|(a, b)| vec![a.clone(), b.clone()])
                .collect::<Vec<_>>(),
        )));
        out.push('\n');
    }
    out.push_str("Steps:\n");
    let rows: Vec<Vec<String>> = r
        .steps
        .iter()
        .map(|s| {
            vec![
                format!("#{}", s.id),
                s.name.clone(),
                outcome_word(&s.outcome).to_owned(),
                step_duration(s).map(ms_text).unwrap_or_default(),
                s.layer_size.map(human_size).unwrap_or_default(),
                match (&s.outcome, &s.reason) {
                    (_, Some(w)) => w.clone(),
                    (Outcome::Cached, None) => "cache hit".to_owned(),
                    _ => String::new(),
                },
            ]
        })
        .collect();
    out.push_str(&tabbed(&table(
        &["ID", "STEP", "STATUS", "DURATION", "LAYER", "WHY"],
        &rows,
    )));
    out.push('\n');
    if !r.outputs.is_empty() {
        out.push_str("Outputs:\n");
        for o in &r.outputs {
            let _ = writeln!(out, "{o}");
        }
        out.push('\n');
    }
    if let Some(img) = &r.image {
        let _ = writeln!(
            out,
            "Image: {} ({}, {})",
            img.id,
            img.platform,
            human_size(img.size)
        );
        let rows: Vec<Vec<String>> = img
            .layers
            .iter()
            .map(|l| {
                vec![
                    l.step
                        .map(|s| format!("#{s}"))
                        .unwrap_or_else(|| "base".to_owned()),
                    human_size(l.size),
                    l.created_by.chars().take(60).collect(),
                ]
            })
            .collect();
        out.push_str(&tabbed(&table(&["STEP", "SIZE", "CREATED BY"], &rows)));
        out.push('\n');
    }
    if !r.warnings.is_empty() {
        out.push_str("Warnings:\n");
        for w in &r.warnings {
            let _ = writeln!(out, " - {w}");
        }
        out.push('\n');
    }
    if let Some(rep) = &r.error_report {
        out.push_str(rep.trim_end());
        out.push_str("\n\n");
    }
    let _ = writeln!(out, "Print build logs: kiln builds logs {}", r.id);
    let _ = writeln!(
        out,
        "Picture of the build: kiln builds report {} -o build.html",
        r.id
    );
    out
}

/// `at most 3 steps at once`.
fn parallel_text(n: usize) -> String {
    match n {
        0 => "no step ran".to_owned(),
        1 => "one step at a time".to_owned(),
        n => format!("at most {n} steps at once"),
    }
}

fn tabbed(s: &str) -> String {
    crate::gotemplate::tabwrite(s)
}

/// `2026-12-06T18:51:48.989528482Z` → `2026-12-06 18:51:48 UTC`.
pub fn shown_time(t: &str) -> String {
    match (t.get(..10), t.get(11..19)) {
        (Some(d), Some(h)) if t.ends_with('Z') => format!("{d} {h} UTC"),
        _ => t.to_owned(),
    }
}

/// `Key:\tvalue` lines, aligned.
fn kv(rows: &[(&str, String)]) -> String {
    let mut s = String::new();
    for (k, v) in rows {
        let _ = writeln!(s, "{k}:\t{v}");
    }
    s
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = header.join("\t");
    s.push('\n');
    for r in rows {
        s.push_str(&r.join("\t"));
        s.push('\n');
    }
    s
}

/// The record as `kiln builds show --format json` prints it.
pub fn json(r: &Record) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "critical_path".to_owned(),
            serde_json::json!(critical_path(r)),
        );
        o.insert(
            "max_parallel".to_owned(),
            serde_json::json!(max_parallel(r)),
        );
    }
    v
}

/// Steps per lane, for tests of the layout.
#[allow(dead_code)]
fn lanes_of(r: &Record) -> BTreeMap<String, Vec<u32>> {
    let mut m: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for s in &r.steps {
        m.entry(lane(s)).or_default().push(s.id);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: u32, deps: Vec<u32>, start: u64, end: u64, outcome: Outcome) -> StepSummary {
        StepSummary {
            id,
            name: format!("[s {id}/9] RUN x"),
            stage: Some(if id.is_multiple_of(2) { "a" } else { "b" }.to_owned()),
            location: None,
            deps,
            start_ms: (outcome != Outcome::Cached).then_some(start),
            end_ms: Some(end),
            outcome,
            error: None,
            reason: None,
            layer_size: None,
            log_lines: 0,
            runs_ms: vec![],
            task: false,
            nodes: vec![],
        }
    }

    fn record(steps: Vec<StepSummary>) -> Record {
        serde_json::from_value(serde_json::json!({
            "version": 1, "id": "x", "name": "n", "command": [], "context": ".",
            "dockerfile": "Dockerfile", "started_at": "", "completed_at": "",
            "duration_ms": 100, "status": "completed", "exit_code": 0,
        }))
        .map(|mut r: Record| {
            r.steps = steps;
            r
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn critical_path_follows_the_last_input() {
        // 1 (cached: on no path) feeds 2 and 3, which run in parallel; 4
        // needs both.
        let r = record(vec![
            step(1, vec![], 0, 1, Outcome::Cached),
            step(2, vec![1], 2, 50, Outcome::Done),
            step(3, vec![1], 2, 80, Outcome::Done),
            step(4, vec![2, 3], 81, 90, Outcome::Done),
        ]);
        assert_eq!(critical_path(&r), vec![3, 4]);
        assert_eq!(max_parallel(&r), 2);
        assert_eq!(lanes_of(&r).get("a"), Some(&vec![2, 4]));
        let page = html(&r);
        for id in 1..=4 {
            assert!(page.contains(&format!("<g class=\"step\" data-step=\"{id}\"")));
            assert!(page.contains(&format!("<tr data-step=\"{id}\"")));
        }
        assert!(!page.contains("{{"), "a placeholder is left");
    }

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
