//! Byte progress of blob transfers, for whoever shows it.
//!
//! A [`Client`](crate::Client) given a sink ([`Client::with_progress`](crate::Client::with_progress))
//! reports every blob it downloads or uploads: [`TransferState::Started`]
//! (with the blob's size), [`TransferState::Moving`] as bytes go (at most
//! once per read buffer), and [`TransferState::Finished`] once the blob is
//! verified (downloads) or accepted by the registry (uploads). A retried
//! transfer starts again from `Started`. The worker's exports use the same
//! type ([`Direction::Write`]) for archives they write.

use std::sync::Arc;

use kiln_llb::Digest;

/// Which way a blob moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a registry into the content store.
    Download,
    /// From the content store to a registry.
    Upload,
    /// Into an archive or layout an output writes.
    Write,
}

impl Direction {
    /// `download`, `upload`, `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
            Direction::Write => "write",
        }
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// It began (again, after a retry): `current` is 0.
    Started,
    /// `current` bytes have moved.
    Moving,
    /// It is complete: `current` is the number of bytes moved.
    Finished,
}

/// One progress report of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The blob (for [`Direction::Write`], the digest of what is written,
    /// when it is known, else of its name).
    pub digest: Digest,
    pub direction: Direction,
    /// Its size in bytes; 0 when unknown.
    pub total: u64,
    /// Bytes moved so far.
    pub current: u64,
    pub state: TransferState,
}

/// Receives transfer reports, from any thread.
pub type ProgressSink = Arc<dyn Fn(&Transfer) + Send + Sync>;

/// A reader that reports the bytes read through it.
pub(crate) struct CountingReader<R> {
    pub inner: R,
    pub sink: ProgressSink,
    pub template: Transfer,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.template.current += n as u64;
            self.template.state = TransferState::Moving;
            (self.sink)(&self.template);
        }
        Ok(n)
    }
}
