//! `--call targets` and `--call outline`: what a Dockerfile offers to build,
//! as BuildKit's `ListTargets` and `Dockerfile2Outline` report it.
//!
//! Descriptions are BuildKit's doc comments: the comment line directly above
//! a `FROM … AS name` or an `ARG name` that starts with the name and a space
//! (`# build Compiles the app`), the rest of the line being the description.

use crate::instructions::Dockerfile;

/// One stage, for `--call targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The `AS` name (lowercase), empty for an unnamed stage.
    pub name: String,
    pub description: String,
    /// The last stage: what a build without `--target` builds.
    pub default: bool,
    /// The base as written (`alpine:${VERSION}`).
    pub base: String,
    /// `--platform` as written, or empty.
    pub platform: String,
    pub start_line: usize,
    pub end_line: usize,
}

/// The stages of `df`, in order (BuildKit's `ListTargets`).
pub fn targets(df: &Dockerfile) -> Vec<Target> {
    let last = df.stages.len().saturating_sub(1);
    df.stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s.name.clone().unwrap_or_default();
            Target {
                description: doc_comment(&s.node.comments, &name),
                name,
                default: i == last,
                base: s.base.value.clone(),
                platform: s
                    .platform
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
                start_line: s.node.start_line,
                end_line: s.node.end_line,
            }
        })
        .collect()
}

/// What building the target needs from the caller (`--call outline`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outline {
    /// The target stage's name, empty for an unnamed stage.
    pub name: String,
    pub description: String,
    /// Build arguments the target uses, in Dockerfile order.
    pub args: Vec<OutlineArg>,
    pub secrets: Vec<OutlineMount>,
    pub ssh: Vec<OutlineMount>,
}

/// A build argument in an [`Outline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlineArg {
    pub name: String,
    /// The value the build would use (default or `--build-arg`).
    pub value: String,
    pub description: String,
    /// Line of the ARG instruction.
    pub line: usize,
}

/// A secret or SSH socket a RUN step mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlineMount {
    pub name: String,
    pub required: bool,
    /// Line of the first RUN that mounts it.
    pub line: usize,
}

/// BuildKit's `getDocComment`: the first comment line that starts with
/// `name ` gives the description.
pub fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_comments_need_the_name_and_a_space() {
        let c = vec!["unrelated".to_owned(), "build Compiles it".to_owned()];
        assert_eq!(doc_comment(&c, "build"), "Compiles it");
        assert_eq!(doc_comment(&c, "buil"), "");
        assert_eq!(doc_comment(&c, ""), "");
    }
}
