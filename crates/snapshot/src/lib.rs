//! `kiln-snapshot`: layer directories, overlayfs mounts, and conversion between
//! overlay diffs and OCI layer tars. (Being written: see issue [build].)
