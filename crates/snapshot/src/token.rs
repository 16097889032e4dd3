//! Random names: layer ids and temporary files.

use std::io;

/// The characters of layer ids and random names.
pub(crate) const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `n` random characters of `[a-z0-9]`, from the kernel's random source.
pub(crate) fn random_token(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(io::Error::from)?;
    }
    // 252 = 7 * 36: reject the top values to keep the distribution uniform.
    let mut out = String::with_capacity(n);
    let mut pool = bytes;
    loop {
        for &b in &pool {
            if b < 252 {
                out.push(ID_ALPHABET[(b % 36) as usize] as char);
                if out.len() == n {
                    return Ok(out);
                }
            }
        }
        pool = vec![0u8; n];
        rustix::rand::getrandom(&mut pool, rustix::rand::GetRandomFlags::empty())
            .map_err(io::Error::from)?;
    }
}
