//! `kiln check`: [`kiln_store::check`], with the worker's cache values
//! (`value::CacheValues`) and error.

pub use kiln_store::check::{Problem, Report};

use crate::error::Error;
use crate::state::State;
use crate::value::CacheValues;

/// Checks the state directory; with `repair`, repairs it
/// ([`kiln_store::check::check`]).
pub fn check(state: &State, repair: bool) -> Result<Report, Error> {
    Ok(kiln_store::check::check(state, &CacheValues, repair)?)
}
