//! The build's clock and `SOURCE_DATE_EPOCH`: the exporters' epoch
//! attributes and the epoch the build uses.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::output;
use crate::progress::Mode;

use super::after::note;

pub(super) fn now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// The exporters' `source-date-epoch=` and `rewrite-timestamp=`: one
/// setting for every output, since kiln makes a build's layers once.
pub(super) fn export_epoch(args: &BuildArgs) -> Result<output::EpochAttrs, Failure> {
    let mut all = Vec::new();
    for spec in &args.outputs {
        let a = output::epoch_attrs(spec)?;
        if !all.contains(&a) {
            all.push(a);
        }
    }
    match all.as_slice() {
        [] => Ok(output::EpochAttrs::default()),
        [one] => Ok(*one),
        _ => Err(Failure::Usage(
            "outputs with different source-date-epoch or rewrite-timestamp attributes are not supported yet"
                .to_owned(),
        )),
    }
}

/// The build's `SOURCE_DATE_EPOCH` (creation times, the layers' mtime
/// clamp) and whether the manifests mark the layers as rewritten to it:
/// the plan's epoch (`--build-arg`, the environment, or the Dockerfile's
/// `ARG SOURCE_DATE_EPOCH=…` default) unless the exporter's
/// `source-date-epoch=N` replaces it; `source-date-epoch=` (empty) leaves
/// the exporter without one, so nothing is marked, as in BuildKit.
pub(super) fn build_epoch(
    attrs: output::EpochAttrs,
    planned: Option<i64>,
    mode: Mode,
) -> (Option<i64>, bool) {
    let (sde, exporter) = match attrs.source_date_epoch {
        Some(Some(n)) => (Some(n), Some(n)),
        Some(None) => (planned, None),
        None => (planned, planned),
    };
    if attrs.rewrite_timestamp && exporter.is_none() {
        // BuildKit's warning.
        note(
            mode,
            "WARNING: rewrite-timestamp is specified, but no source-date-epoch was found",
        );
    }
    (sde, attrs.rewrite_timestamp && exporter.is_some())
}
