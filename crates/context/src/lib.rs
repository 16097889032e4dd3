//! `kiln-context`: the build context — .dockerignore with Docker's semantics,
//! COPY source selection, and content hashing with a persistent stat cache.
//! (Being written: see issue [build].)
