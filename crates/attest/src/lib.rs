//! `kiln-attest`: build attestations as data, in BuildKit's formats, so
//! that the tools that read BuildKit's read kiln's
//! (`docker buildx imagetools inspect --format '{{json .Provenance}}'`,
//! scanners, policy engines).
//!
//! * [`statement`]: in-toto statements (a predicate about subjects named by
//!   digest);
//! * [`slsa`] and [`provenance`]: SLSA provenance v0.2 (BuildKit 0.13's
//!   shape) and v1 (current BuildKit's), made from a [`provenance::BuildRecord`]
//!   with `mode=min|max`, secrets left out, and read back as a
//!   [`provenance::Recipe`] by `kiln verify`;
//! * [`layout`]: attestation manifests and the image index that carries them
//!   (BuildKit's attestation storage), written through a [`layout::BlobSink`],
//!   and buildx's `--annotation` syntax;
//! * [`purl`]: package URLs with packageurl-go's escaping;
//! * [`verification`]: kiln's own predicate, `https://kiln.dev/verification/v1`,
//!   for what `kiln verify` checked about a rebuild (`--statement`).
//!
//! # Invariant
//!
//! This crate is pure data: no filesystem, network, clock, environment or
//! process (its `clippy.toml` forbids them; `.ci/check-deps` checks it pulls
//! in no crate that does I/O). Times, digests and file contents come in as
//! values.

pub mod layout;
pub mod provenance;
pub mod purl;
pub mod slsa;
pub mod statement;
pub mod verification;

pub use layout::{Annotations, BlobSink, Descriptor, ImageEntry, OciPlatform};
pub use provenance::{BuildRecord, Mode, Options, Recipe, SlsaVersion};
pub use statement::{Statement, Subject};
