//! `kiln-executor`: runs a process in fresh Linux namespaces on an overlayfs
//! root. (Being written: see issue [build].)
