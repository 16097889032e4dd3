//! The attributes of an `-o` value, as the cli's parser read them (its
//! `k=v` syntax, names normalised, values checked): what each output's
//! `parse` builds itself from.

use std::path::{Path, PathBuf};

use kiln_oci::Compression;

use super::exporter::Output;
use super::file::STDOUT;
use crate::attest::StatementNames;

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
    /// `platform-split=` and `attestation-prefix=`.
    pub files: FileAttrs,
}

/// The attributes of the outputs that write files (`type=local`,
/// `type=tar`): BuildKit's `CreateFSOpts` of `exporter/local`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttrs {
    /// `platform-split=`: `Some(true)` puts even a single-platform result
    /// in its platform's directory, `Some(false)` merges every platform
    /// into one; not given, a multi-platform result is split.
    pub platform_split: Option<bool>,
    /// `attestation-prefix=`: put before the name of each statement file.
    pub attestation_prefix: String,
}

impl FileAttrs {
    /// Whether none is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether a result of one platform (`multi`: of several) is split
    /// into a directory per platform, as BuildKit's `UsePlatformSplit`.
    pub fn split(&self, multi: bool) -> bool {
        self.platform_split.unwrap_or(multi)
    }

    /// The names of the statement files (`platform`: the platform's
    /// directory name, when platforms share a directory).
    pub fn names<'a>(&'a self, platform: Option<&'a str>) -> StatementNames<'a> {
        StatementNames {
            prefix: &self.attestation_prefix,
            platform,
        }
    }
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

    /// The refusal of an `attestation-prefix=` that names a directory.
    pub(crate) fn statement_prefix(&self) -> Result<(), String> {
        if self.files.attestation_prefix.contains('/') {
            return Err(not_yet(format!(
                "--output type={}: attestation-prefix with a / (statement files in a directory)",
                self.kind
            )));
        }
        Ok(())
    }

    /// The refusal of `platform-split`/`attestation-prefix` by an output
    /// that writes an image, not files.
    pub(crate) fn no_file_attrs(&self) -> Result<(), String> {
        if !self.files.is_empty() {
            return Err(format!(
                "--output type={}: platform-split and attestation-prefix apply to \
                 type=local and type=tar",
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
