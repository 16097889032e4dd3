//! The snapshotters by name: what a process told a name (the RUN helper,
//! in its request) mounts with.

use std::sync::Arc;

use crate::native::Native;
use crate::overlay::Overlayfs;
use crate::snapshotter::Snapshotter;

/// The snapshotter whose [`name`](Snapshotter::name) is `name`, if any.
pub fn snapshotter_named(name: &str) -> Option<Arc<dyn Snapshotter>> {
    let all: [Arc<dyn Snapshotter>; 3] = [
        Arc::new(Overlayfs),
        Arc::new(Native::mounted()),
        Arc::new(Native::unmounted()),
    ];
    all.into_iter().find(|s| s.name() == name)
}
