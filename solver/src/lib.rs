//! `kiln-solver`: runs a DAG of opaque operations in parallel, caching each one
//! under a key derived from its definition and its inputs' keys. It knows
//! nothing of Dockerfiles or Linux. (Being written: see issue [build].)
