//! The snapshotters by name: what a process told a name (the RUN helper,
//! in its request) mounts with.

use std::sync::Arc;

use crate::native::Native;
use crate::overlay::Overlayfs;
use crate::snapshotter::Snapshotter;
use crate::whiteout::WhiteoutFormat;

/// The snapshotter whose [`name`](Snapshotter::name) is `name`, if any,
/// recording deletions as `whiteouts` where it writes them itself (see
/// [`Snapshotter::whiteouts`]).
pub fn snapshotter_named(name: &str, whiteouts: WhiteoutFormat) -> Option<Arc<dyn Snapshotter>> {
    let all: [Arc<dyn Snapshotter>; 3] = [
        Arc::new(Overlayfs),
        Arc::new(Native::mounted(whiteouts)),
        Arc::new(Native::unmounted(whiteouts)),
    ];
    all.into_iter().find(|s| s.name() == name)
}
