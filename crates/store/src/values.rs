//! The build cache's values as the store sees them. The solver's cache
//! (`<root>/cache`) maps keys to values that kiln-worker writes; garbage
//! collection and `kiln check` only need the snapshots a value names, and the
//! worker says which ([`CacheValues`]), so the store does not know its types.

/// Reads the values of the build cache for the store.
pub trait CacheValues {
    /// The snapshot layers (their ids) the cache value `bytes` names (none
    /// for a value that names none), or why it does not decode.
    fn layers(&self, bytes: &[u8]) -> Result<Vec<String>, String>;
}
