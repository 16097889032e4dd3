//! Merge ops (`COPY --link`): the inputs' layer stacks, concatenated. No
//! I/O, so no context: only the inputs.

use kiln_llb::op::MergeOp;
use kiln_solver::Resolved;

use crate::error::{Error, InternalError, Unsupported};
use crate::value::Value;

/// The layers of `m`'s inputs, in its order.
pub(crate) fn execute(m: &MergeOp, inputs: &[Resolved<Value>]) -> Result<Value, Error> {
    let mut layers = Vec::new();
    for i in &m.inputs {
        let input = inputs
            .get(*i as usize)
            .ok_or_else(|| InternalError::MissingInput {
                user: "merge".to_owned(),
                index: *i,
            })?;
        match &input.value {
            Value::Fs { layers: l } => layers.extend(l.iter().cloned()),
            Value::Context { name } => {
                return Err(Unsupported::MergeContext { name: name.clone() }.into());
            }
        }
    }
    Ok(Value::Fs { layers })
}
