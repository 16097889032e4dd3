//! Planning the Dockerfile against the store's image resolver.

use kiln_llb::Platform;

/// An image resolver that remembers whether a resolution failed.
pub(super) struct WatchedResolver<'a> {
    pub(super) inner: &'a dyn kiln_frontend::ImageResolver,
    pub(super) failed: std::cell::Cell<bool>,
}

impl kiln_frontend::ImageResolver for WatchedResolver<'_> {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<kiln_frontend::Resolution, String> {
        let r = self.inner.resolve(reference, platform);
        if r.is_err() {
            self.failed.set(true);
        }
        r
    }
}
