//! A debugging and differential-testing tool.
//!
//! ```text
//! layer-tar write DIR [CLAMP] > layer.tar   # write_layer_tar
//! layer-tar list FILE                       # tar_listing
//! layer-tar unpack FILE DIR                 # unpack_layer
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result: Result<(), Box<dyn std::error::Error>> = (|| {
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["write", dir, rest @ ..] => {
                let clamp = rest.first().map(|c| c.parse()).transpose()?;
                let stdout = io::stdout().lock();
                let stats = kiln_snapshot::write_layer_tar(
                    Path::new(dir),
                    stdout,
                    &kiln_snapshot::TarOptions { mtime_clamp: clamp },
                )?;
                eprintln!("{} entries, {} bytes", stats.entries, stats.bytes);
            }
            ["list", file] => {
                let listing = kiln_snapshot::tar_listing(File::open(file)?)?;
                io::stdout().write_all(listing.as_bytes())?;
            }
            ["unpack", file, dir] => {
                let stats = kiln_snapshot::unpack_layer(File::open(file)?, Path::new(dir))?;
                eprintln!("{stats:?}");
            }
            _ => {
                return Err(
                    "usage: layer-tar write DIR [CLAMP] | list FILE | unpack FILE DIR".into(),
                );
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layer-tar: {e}");
            ExitCode::FAILURE
        }
    }
}
