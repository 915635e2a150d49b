//! The execution plan the `tvm_model` SCons tool writes beside the kernels:
//! every tensor has a fixed place in one arena or in the weights blob, and
//! the steps are kernel calls in order.

use crate::dtype::DType;
use crate::Error;
use serde::Deserialize;

pub const FORMAT: u32 = 1;

#[derive(Debug, Deserialize)]
pub struct Plan {
    pub format: u32,
    pub arena_size: usize,
    pub weights_size: usize,
    pub kernels: Vec<String>,
    pub tensors: Vec<TensorSpec>,
    pub inputs: Vec<Binding>,
    pub outputs: Vec<Binding>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
pub struct TensorSpec {
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub region: Region,
    pub offset: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Arena,
    Weights,
}

/// A named model input or output and the tensor that holds it.
#[derive(Debug, Deserialize)]
pub struct Binding {
    pub name: String,
    pub tensor: usize,
}

#[derive(Debug, Deserialize)]
pub struct Step {
    pub kernel: String,
    pub args: Vec<Arg>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arg {
    Tensor(usize),
    Int(i64),
}

impl TensorSpec {
    pub fn num_elements(&self) -> usize {
        self.shape.iter().map(|&d| d.max(0) as usize).product()
    }

    pub fn nbytes(&self) -> usize {
        self.num_elements() * self.dtype.size()
    }
}

impl Plan {
    pub fn parse(json: &str) -> Result<Plan, Error> {
        let plan: Plan = serde_json::from_str(json).map_err(|e| Error::Plan(e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// Checks every index and extent once, so that running the plan needs no
    /// checks and can never touch memory outside its buffers.
    fn validate(&self) -> Result<(), Error> {
        if self.format != FORMAT {
            return Err(Error::Plan(format!("plan format {} (this runtime reads {})", self.format, FORMAT)));
        }
        for (i, t) in self.tensors.iter().enumerate() {
            let limit = match t.region {
                Region::Arena => self.arena_size,
                Region::Weights => self.weights_size,
            };
            let end = t.offset.checked_add(t.nbytes());
            if t.shape.iter().any(|&d| d < 0) || end.map_or(true, |end| end > limit) {
                return Err(Error::Plan(format!("tensor {} lies outside its region", i)));
            }
        }
        let tensor_ok = |i: usize| i < self.tensors.len();
        for b in self.inputs.iter().chain(&self.outputs) {
            if !tensor_ok(b.tensor) {
                return Err(Error::Plan(format!("'{}' names tensor {} of {}", b.name, b.tensor, self.tensors.len())));
            }
        }
        for input in &self.inputs {
            if self.tensors[input.tensor].region != Region::Arena {
                return Err(Error::Plan(format!("input '{}' is not in the arena", input.name)));
            }
        }
        for step in &self.steps {
            if !self.kernels.contains(&step.kernel) {
                return Err(Error::Plan(format!("step calls undeclared kernel '{}'", step.kernel)));
            }
            for arg in &step.args {
                if let Arg::Tensor(i) = *arg {
                    if !tensor_ok(i) {
                        return Err(Error::Plan(format!("kernel '{}' gets tensor {} of {}", step.kernel, i, self.tensors.len())));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const SMALL: &str = r#"{"format":1,"arena_size":128,"weights_size":64,"kernels":["relu"],
      "tensors":[{"dtype":"float32","shape":[4],"region":"arena","offset":0},
                 {"dtype":"float32","shape":[4],"region":"arena","offset":64}],
      "inputs":[{"name":"x","tensor":0}],"outputs":[{"name":"y","tensor":1}],
      "steps":[{"kernel":"relu","args":[{"tensor":0},{"tensor":1},{"int":3}]}]}"#;

    #[test]
    fn parses_a_valid_plan() {
        let plan = Plan::parse(SMALL).unwrap();
        assert_eq!(plan.tensors[1].nbytes(), 16);
        assert!(matches!(plan.steps[0].args[2], Arg::Int(3)));
    }

    #[test]
    fn rejects_a_tensor_outside_the_arena() {
        let bad = SMALL.replace("\"offset\":64", "\"offset\":120");
        assert!(matches!(Plan::parse(&bad), Err(Error::Plan(m)) if m.contains("outside")));
    }

    #[test]
    fn rejects_an_unknown_kernel() {
        let bad = SMALL.replace("\"kernel\":\"relu\"", "\"kernel\":\"gelu\"");
        assert!(Plan::parse(&bad).is_err());
    }
}
