//! A step's output, pumped from the helper's pipes.

use std::io::{self, Read};
use std::sync::mpsc;

use crate::api::Stream;

pub(crate) enum Chunk {
    Data(Stream, Vec<u8>),
    Eof,
}

pub(crate) fn pump(mut r: impl Read + Send + 'static, stream: Stream, tx: mpsc::Sender<Chunk>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(Chunk::Data(stream, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(Chunk::Eof);
    });
}
