//! The instructions that only edit the image configuration: CMD,
//! ENTRYPOINT, SHELL, HEALTHCHECK, EXPOSE, VOLUME, STOPSIGNAL, MAINTAINER
//! and ONBUILD.

use kiln_llb::Healthcheck as LlbHealthcheck;

use crate::duration::go_duration_string;
use crate::expose as ports;
use crate::instructions::{CmdLine, Healthcheck};
use crate::lint;
use crate::quote::{go_list, go_quote_list};
use crate::signal;
use crate::syntax::{Node, Word};

use super::shared::R;
use super::step::Step;

pub(super) fn maintainer(s: &mut Step, w: &Word) -> R<()> {
    s.st.image.author = w.value.clone();
    s.st.commit(format!("MAINTAINER {}", w.value), false);
    Ok(())
}

pub(super) fn onbuild(s: &mut Step, expr: &str) -> R<()> {
    s.st.image.on_build.push(expr.to_owned());
    Ok(())
}

pub(super) fn cmd(s: &mut Step, line: &CmdLine) -> R<()> {
    let args = s.with_shell(line);
    let st = &mut *s.st;
    st.image.cmd = Some(args.clone());
    // BuildKit marks every CMD (exec or shell form) as escaped, for
    // compatibility with Docker's image spec.
    st.image.args_escaped = true;
    st.cmd_set = true;
    st.commit(format!("CMD {}", go_quote_list(&args)), false);
    Ok(())
}

pub(super) fn entrypoint(s: &mut Step, line: &CmdLine) -> R<()> {
    let args = if line.args.is_empty() && !line.prepend_shell {
        Vec::new()
    } else {
        s.with_shell(line)
    };
    let st = &mut *s.st;
    st.image.entrypoint = if args.is_empty() {
        None
    } else {
        Some(args.clone())
    };
    if !st.cmd_set {
        st.image.cmd = None;
    }
    st.commit(format!("ENTRYPOINT {}", go_quote_list(&args)), false);
    Ok(())
}

pub(super) fn healthcheck(s: &mut Step, h: &Healthcheck) -> R<()> {
    let hc = match h {
        Healthcheck::None => LlbHealthcheck {
            test: vec!["NONE".to_owned()],
            ..LlbHealthcheck::default()
        },
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => LlbHealthcheck {
            test: test.clone(),
            interval: nanos(*interval),
            timeout: nanos(*timeout),
            start_period: nanos(*start_period),
            start_interval: nanos(*start_interval),
            retries: *retries,
        },
    };
    let text = format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&hc.test),
        go_duration_string(hc.interval),
        go_duration_string(hc.timeout),
        go_duration_string(hc.start_period),
        go_duration_string(hc.start_interval),
        hc.retries
    );
    s.st.image.healthcheck = Some(hc);
    s.st.commit(text, false);
    Ok(())
}

pub(super) fn expose(s: &mut Step, node: &Node, words: &[Word]) -> R<()> {
    let end = node.end_line;
    let mut out = Vec::new();
    for p in words {
        let expanded =
            s.cx.lex
                .process_words(&p.value, &s.st.env)
                .map_err(|e| s.err_at(p.offset, end, e.to_string()))?;
        for w in expanded {
            for (rule, msg) in lint::expose_findings(&w) {
                let d = rule.at_node(s.cx.file, node, msg);
                s.lint(d);
            }
            let specs = ports::parse_port(&w).map_err(|e| s.err_at(p.offset, end, e))?;
            out.extend(specs);
        }
    }
    for p in &out {
        s.st.image.exposed_ports.insert(p.clone());
    }
    s.st.commit(format!("EXPOSE {}", go_list(&out)), false);
    Ok(())
}

pub(super) fn volume(s: &mut Step, vs: &[Word], end: usize) -> R<()> {
    let vs = s.expand_words(vs, end)?;
    let mut list = Vec::new();
    for v in vs {
        if v.value.is_empty() {
            return Err(s.err_at(v.offset, end, "VOLUME specified can not be an empty string"));
        }
        s.st.image.volumes.insert(v.value.clone());
        list.push(v.value);
    }
    s.st.commit(format!("VOLUME {}", go_list(&list)), false);
    Ok(())
}

pub(super) fn stop_signal(s: &mut Step, w: &Word, end: usize) -> R<()> {
    let sig = s.expand(w, end)?;
    signal::check(&sig).map_err(|e| s.err_at(w.offset, end, e))?;
    s.st.image.stop_signal = sig.clone();
    s.st.commit(format!("STOPSIGNAL {sig}"), false);
    Ok(())
}

pub(super) fn shell(s: &mut Step, sh: &[String]) -> R<()> {
    s.st.image.shell = sh.to_vec();
    s.st.commit(format!("SHELL {}", go_list(sh)), false);
    Ok(())
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
