//! `kiln-oci`: the image model, the content store, the local image index and
//! the OCI/Docker archive formats. (Being written: see issue [build].)
