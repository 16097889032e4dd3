//! What keying the graph's source vertices found, kept for their execution
//! and for the provenance: a git ref's commit ([`crate::ops::git`]), an http
//! source's download ([`crate::ops::http`]), every source resolved
//! ([`crate::attest`]'s materials) and the digest of a whole build context.
//! [`crate::worker::LlbWorker`] holds them; the ops fill and read them.

use std::collections::BTreeMap;

use kiln_llb::Digest;
use kiln_snapshot::LayerDraft;

use crate::error::Error;

/// What computing a key left for `execute`.
#[derive(Debug)]
pub struct Download {
    pub(crate) prepared: Prepared,
}

/// What a download left: a fetched file or a revalidation.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// A 200: the downloaded file, ready to commit.
    Fetched(LayerDraft),
    /// A 304: the content is the one recorded, with this digest.
    Revalidated(Digest),
}

/// A ref resolved to a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCommit {
    /// The commit to check out.
    pub commit: String,
    /// The full ref name it came from (`refs/heads/main`), empty for a
    /// commit given by sha.
    pub ref_name: String,
}

/// The sources a solve resolved, recorded while keying: a git source's
/// commit, an http source's content digest (by vertex digest).
#[derive(Debug, Default)]
pub struct Resolved {
    pub git: BTreeMap<Digest, String>,
    pub http: BTreeMap<Digest, Digest>,
}

/// The content digest kiln computes of a whole build context (what COPY
/// sees: `.dockerignore` applied; paths, types, modes, contents, link
/// targets; never times or owners), its `kiln-local://NAME` material.
pub fn context_digest(
    tree: &kiln_context::Tree,
    cache: &mut kiln_context::StatCache,
) -> Result<Digest, Error> {
    let sources = tree.expand(
        "/",
        &kiln_context::ExpandOptions {
            allow_wildcard: false,
            allow_empty_wildcard: false,
            follow_symlinks: false,
        },
    )?;
    let opts = kiln_context::DigestOptions {
        include_ownership: false,
    };
    Ok(tree
        .digest(&sources, &kiln_context::Filter::default(), cache, &opts)?
        .0)
}
