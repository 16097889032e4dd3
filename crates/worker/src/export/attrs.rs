//! The attributes of an `-o` value, as the cli's parser read them (its
//! `k=v` syntax, names normalised, values checked): what each output's
//! `parse` builds itself from.

use std::path::{Path, PathBuf};

use kiln_oci::Compression;

use super::exporter::Output;
use super::file::STDOUT;

/// An output's parser: builds it from the attributes, or says why not (a
/// usage error).
pub type Parse = fn(Attrs) -> Result<Output, String>;

/// The attributes of one `-o` value.
#[derive(Debug, Clone)]
pub struct Attrs {
    /// `type=` (`local` when not given).
    pub kind: String,
    /// `dest=`.
    pub dest: Option<PathBuf>,
    /// `tar=` (default true).
    pub tar: bool,
    /// `-t` and `name=`, normalised, each once.
    pub names: Vec<String>,
    /// `compression=` and `compression-level=`.
    pub compression: Compression,
    /// `force-compression=true`.
    pub force_compression: bool,
    /// `push=true`.
    pub push: bool,
    /// `registry.insecure=true`.
    pub insecure: bool,
    /// `oci-mediatypes=`, when given.
    pub oci_types: Option<bool>,
    /// `source-date-epoch=` or `rewrite-timestamp=true` was given.
    pub epoch: bool,
}

/// `what is not supported yet`.
pub(crate) fn not_yet(what: String) -> String {
    format!("{what} is not supported yet")
}

impl Attrs {
    /// `dest=`, which this output needs.
    pub(crate) fn dest(&self) -> Result<PathBuf, String> {
        self.dest
            .clone()
            .ok_or_else(|| format!("--output type={} needs dest=PATH", self.kind))
    }

    /// Whether `dest=-` (standard output).
    pub(crate) fn to_stdout(&self) -> bool {
        self.dest.as_deref() == Some(Path::new(STDOUT))
    }

    /// The refusal of `dest=-` by an output that writes no archive.
    pub(crate) fn not_to_stdout(&self) -> Result<(), String> {
        if self.to_stdout() {
            return Err(format!(
                "--output type={}: dest=- (stdout) needs an archive output (tar, oci, docker)",
                self.kind
            ));
        }
        Ok(())
    }

    /// The refusal of `source-date-epoch`/`rewrite-timestamp` by an output
    /// that writes files, not an image.
    pub(crate) fn no_epoch(&self) -> Result<(), String> {
        if self.epoch {
            return Err(not_yet(format!(
                "--output type={} with source-date-epoch or rewrite-timestamp",
                self.kind
            )));
        }
        Ok(())
    }
}
