//! Garbage collection and `kiln du`: [`kiln_store::gc`], with the worker's
//! cache values (`value::CacheValues`) and error.

pub use kiln_store::gc::{ImageUsage, Plan, PruneOptions, Usage};

use crate::error::Error;
use crate::state::State;
use crate::value::CacheValues;

/// Decides what a prune with `opts` removes ([`kiln_store::gc::plan`]).
pub fn plan(state: &State, opts: PruneOptions) -> Result<Plan, Error> {
    Ok(kiln_store::gc::plan(state, &CacheValues, opts)?)
}

/// `base` extended until the store fits in `limit` bytes
/// ([`kiln_store::gc::fit`]).
pub fn fit(state: &State, opts: PruneOptions, base: Plan, limit: u64) -> Result<Plan, Error> {
    Ok(kiln_store::gc::fit(state, &CacheValues, opts, base, limit)?)
}

/// Applies a plan ([`kiln_store::gc::sweep`]).
pub fn sweep(state: &State, plan: &Plan) -> Result<(), Error> {
    Ok(kiln_store::gc::sweep(state, plan)?)
}

/// `kiln du`'s numbers ([`kiln_store::gc::usage`]).
pub fn usage(state: &State) -> Result<Usage, Error> {
    Ok(kiln_store::gc::usage(state, &CacheValues)?)
}
