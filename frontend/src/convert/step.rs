//! One stage being dispatched: the split borrow. A [`Step`] holds the stage
//! (`&mut Stage`), the shared planning state (`&mut Shared`) and read access
//! to every other stage (the ones `COPY --from`, `RUN --mount from=` and
//! `FROM <stage>` read, all dispatched before it), so that the instruction
//! families (`copy`, `run`, `env`, …) edit one stage without indexing into
//! the list of stages.

use std::collections::BTreeSet;

use kiln_llb::op::{Chown, IdOrName, Op};
use kiln_llb::{Digest, VertexMeta};

use crate::diagnostic::Diagnostic;
use crate::instructions::{CmdLine, KeyValue};
use crate::syntax::{Node, Word};

use super::shared::{R, Shared};
use super::state::{Overlay, Stage, default_shell};

/// The stages other than the one being dispatched.
pub(super) struct Others<'s> {
    before: &'s [Stage],
    after: &'s [Stage],
}

impl<'s> Others<'s> {
    /// Stage `j`; `None` for the stage being dispatched itself.
    pub fn get(&self, j: usize) -> Option<&'s Stage> {
        let n = self.before.len();
        match j.cmp(&n) {
            std::cmp::Ordering::Less => self.before.get(j),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => self.after.get(j - n - 1),
        }
    }
}

/// Stage `i` for writing, the others for reading.
pub(super) fn split(stages: &mut [Stage], i: usize) -> Option<(&mut Stage, Others<'_>)> {
    let (before, rest) = stages.split_at_mut(i);
    let (st, after) = rest.split_first_mut()?;
    Some((
        st,
        Others {
            before: &*before,
            after: &*after,
        },
    ))
}

pub(super) struct Step<'s, 'a> {
    pub cx: &'s mut Shared<'a>,
    pub st: &'s mut Stage,
    pub others: Others<'s>,
}

impl Step<'_, '_> {
    pub fn err_at(&self, offset: usize, end_line: usize, msg: impl Into<String>) -> Diagnostic {
        self.cx.err_at(offset, end_line, msg)
    }

    pub fn err_node(&self, node: &Node, msg: impl Into<String>) -> Diagnostic {
        self.cx.err_node(node, msg)
    }

    pub fn lint(&mut self, w: Diagnostic) {
        self.cx.lint(w);
    }

    pub fn add(&mut self, op: Op, inputs: Vec<Digest>, meta: VertexMeta) -> R<Digest> {
        self.cx.add(op, inputs, meta)
    }

    /// The step name with BuildKit's `[stage 2/5] ` prefix (counts the step).
    pub fn prefix(&mut self, text: &str, onbuild: bool) -> String {
        self.cx.prefix(self.st, text, onbuild)
    }

    pub fn meta(&self, name: String, node: Option<&Node>) -> VertexMeta {
        self.cx.meta(self.st, name, node)
    }

    /// Substitution in one word with the stage's current variables.
    pub fn expand(&mut self, w: &Word, end_line: usize) -> R<String> {
        let p = self
            .cx
            .lex
            .process_word(&w.value, &self.st.env)
            .map_err(|e| self.cx.err_at(w.offset, end_line, e.to_string()))?;
        if !p.unmatched.is_empty() {
            self.cx
                .report_undefined(self.st, w.offset, end_line, &p.unmatched);
        }
        Ok(p.result)
    }

    pub fn expand_opt(&mut self, w: &Option<Word>, end: usize) -> R<Option<Word>> {
        w.as_ref()
            .map(|w| {
                Ok(Word {
                    value: self.expand(w, end)?,
                    offset: w.offset,
                })
            })
            .transpose()
    }

    pub fn expand_words(&mut self, ws: &[Word], end: usize) -> R<Vec<Word>> {
        ws.iter()
            .map(|w| {
                Ok(Word {
                    value: self.expand(w, end)?,
                    offset: w.offset,
                })
            })
            .collect()
    }

    /// Expands the keys and values of ENV/LABEL pairs. All of an instruction
    /// sees the variables as they were before it (`ENV a=1 b=$a` reads the old
    /// `a`).
    pub fn expand_pairs(&mut self, kvs: &[KeyValue], end: usize) -> R<Vec<(String, String)>> {
        kvs.iter()
            .map(|kv| Ok((self.expand(&kv.key, end)?, self.expand(&kv.value, end)?)))
            .collect()
    }

    /// Reports the variables a substitution did not find (`UndefinedVar`).
    pub fn report_undefined(&mut self, offset: usize, end: usize, unmatched: &BTreeSet<String>) {
        self.cx.report_undefined(self.st, offset, end, unmatched);
    }

    /// The instruction text as progress shows it, first word uppercased. RUN
    /// keeps quotes and unknown variables (`raw`); COPY, ADD and WORKDIR are
    /// shown after plain substitution, as BuildKit shows them.
    pub fn display_text(&self, text: &str, mask: &[(String, String)], raw: bool) -> String {
        let mut lex = self.cx.lex;
        lex.raw_quotes = raw;
        lex.skip_unset_env = raw;
        let env = Overlay {
            top: mask,
            base: &self.st.env,
        };
        let processed = lex
            .process_word(text, &env)
            .map(|p| p.result)
            .unwrap_or_else(|_| text.to_owned());
        match processed.split_once(' ') {
            Some((first, rest)) => format!("{} {rest}", first.to_uppercase()),
            None => processed.to_uppercase(),
        }
    }

    /// A command line with the stage's shell prepended for the shell form.
    pub fn with_shell(&self, line: &CmdLine) -> Vec<String> {
        if !line.prepend_shell {
            return line.args.clone();
        }
        let shell = &self.st.image.shell;
        let mut out = if shell.is_empty() {
            default_shell(&self.st.image)
        } else {
            shell.clone()
        };
        out.push(line.args.join(" "));
        out
    }
}

/// `--chown` / USER as a file-op owner: `user[:group]`, names or ids.
pub(super) fn chown(user: &str) -> Option<Chown> {
    if user.is_empty() {
        return None;
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    Some(Chown {
        user: IdOrName::parse(u),
        group: g.map(IdOrName::parse),
    })
}

/// The inputs of a vertex being built; the same digest gets one index.
#[derive(Default)]
pub(super) struct Inputs(pub Vec<Digest>);

impl Inputs {
    pub fn index(&mut self, d: Digest) -> u32 {
        let pos = match self.0.iter().position(|x| *x == d) {
            Some(p) => p,
            None => {
                self.0.push(d);
                self.0.len() - 1
            }
        };
        u32::try_from(pos).unwrap_or(u32::MAX)
    }
}
