//! ENV, ARG and LABEL: variables and metadata.

use std::collections::BTreeSet;

use crate::instructions::{ArgDef, KeyValue};
use crate::syntax::Node;

use super::shared::R;
use super::state::OutlineArgInfo;
use super::step::Step;

pub(super) fn env(s: &mut Step, node: &Node, kvs: &[KeyValue]) -> R<()> {
    let mut msg = String::from("ENV");
    for (k, v) in s.expand_pairs(kvs, node.end_line)? {
        s.cx.lint_secret_key("ENV", &k, node);
        msg.push_str(&format!(" {k}={v}"));
        s.st.set_env(&k, &v);
    }
    s.st.commit(msg, false);
    Ok(())
}

pub(super) fn label(s: &mut Step, kvs: &[KeyValue], end: usize) -> R<()> {
    let mut msg = String::from("LABEL");
    for (k, v) in s.expand_pairs(kvs, end)? {
        msg.push_str(&format!(" {k}={v}"));
        s.st.image.labels.insert(k, v);
    }
    s.st.commit(msg, false);
    Ok(())
}

pub(super) fn arg(s: &mut Step, node: &Node, defs: &[ArgDef]) -> R<()> {
    let end = node.end_line;
    let mut commit = Vec::new();
    for def in defs {
        let key = def.key.value.clone();
        s.cx.declared_args.insert(key.clone());
        let build_arg = s.cx.build_arg(&key).map(str::to_owned);
        let inherited =
            build_arg.is_none() && def.default.is_none() && s.cx.global_args.get(&key).is_some();
        let value = if let Some(v) = build_arg {
            Some(v)
        } else if let Some(d) = &def.default {
            Some(s.expand(d, end)?)
        } else {
            s.cx.global_args.get(&key).map(str::to_owned)
        };
        let st = &mut *s.st;
        if !inherited {
            st.outline.args.insert(
                key.clone(),
                OutlineArgInfo {
                    value: value.clone().unwrap_or_default(),
                    description: crate::outline::doc_comment(&node.comments, &key),
                    line: node.start_line,
                    deps: BTreeSet::new(),
                },
            );
        }
        st.outline.used.insert(key.clone());
        if let Some(v) = &value
            && key != "BUILDKIT_SBOM_SCAN_CONTEXT"
            && key != "BUILDKIT_SBOM_SCAN_STAGE"
        {
            st.env.set(&key, v);
        }
        st.build_args.push((key.clone(), value.clone()));
        commit.push(match value {
            Some(v) => format!("{key}={v}"),
            None => key,
        });
    }
    s.st.commit(format!("ARG {}", commit.join(" ")), false);
    Ok(())
}
