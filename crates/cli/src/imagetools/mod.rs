//! `kiln imagetools create` and `kiln imagetools inspect`: buildx's
//! `imagetools`, for images that already sit in a registry.
//!
//! `create` makes an index (a manifest list when every entry is a Docker
//! manifest, as buildx) from single-platform images and from other indexes,
//! named by tag, by digest or as descriptors, in one or several
//! repositories, and pushes it under every `-t`. Nothing goes through the
//! local store and no layer is downloaded: manifests are fetched, a
//! manifest's config only when its platform is not known from an index, and
//! blobs reach another repository by a cross-repository mount (or, where the
//! registry refuses the mount or the repository is on another registry,
//! streamed from one registry into the other). The index bytes are those
//! buildx writes for the same sources (Go's `json.MarshalIndent` of the
//! OCI structs, field order, `omitempty` and HTML escaping included), so the
//! same sources give the same digest with either tool.
//!
//! `inspect` prints buildx's text layout (Go's `tabwriter`, trailing spaces
//! included), the raw manifest (`--raw`), or a `--format` template over
//! `.Name`, `.Manifest` and `.Image`.
//!
//! Deliberate differences from buildx 0.13: annotations of a manifest entry
//! are listed sorted by key (buildx prints them in Go's random map order);
//! `--annotation` on a result that is a Docker manifest list is refused
//! (buildx drops it silently); a `manifest-descriptor[PLATFORM]:`
//! annotation skips entries without a platform (buildx crashes on them);
//! two sources for one platform give a warning (buildx keeps both silently,
//! as kiln does).

mod annotation;
mod combine;
mod create;
mod descriptor;
mod gojson;
mod inspect;
mod source;
mod template;

use crate::args::{ImagetoolsArgs, ImagetoolsCommand};
use crate::failure::Failure;
use crate::globals::Globals;

pub fn run(globals: &Globals, args: &ImagetoolsArgs) -> Result<(), Failure> {
    match &args.command {
        ImagetoolsCommand::Create(a) => create::create(globals, a),
        ImagetoolsCommand::Inspect(a) => inspect::inspect(globals, a),
    }
}
