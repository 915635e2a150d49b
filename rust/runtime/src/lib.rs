//! Executes a TVM-compiled model inside a wasm32 program.
//!
//! The `tvm_model` SCons tool compiles an ONNX model into kernels (a static
//! archive), a static execution plan (JSON) and a weights blob. A program
//! links the archive, hands the plan, the weights and its kernel table to
//! [`Model::new`], and runs it through a [`Session`]:
//!
//! ```ignore
//! let model = Model::new(PLAN, WEIGHTS, KERNELS)?;
//! let mut session = model.session();
//! session.set_input("input", bytes)?;
//! session.run()?;
//! let logits = session.output_f32("logits")?;
//! ```
//!
//! A session allocates its arena once; running it only calls kernels.

mod dtype;
pub mod ffi;
pub mod plan;
#[cfg(feature = "threads")]
pub mod threads;

pub use dtype::DType;
pub use ffi::SafeCall;
pub use plan::Plan;

use ffi::{DLTensor, TVMFFIAny};
use plan::{Arg, Region};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fmt;

/// Every buffer handed to kernels is aligned like TVM's own allocations.
pub const ALIGN: usize = 64;

/// A kernel of the linked archive, found by the name the plan uses.
pub struct Kernel {
    pub name: &'static str,
    pub call: SafeCall,
}

/// Wraps embedded data so that it starts on a kernel-friendly boundary:
/// `static W: &Aligned<[u8; N]> = &Aligned(*include_bytes!("w.bin"));`
#[repr(C, align(64))]
pub struct Aligned<T: ?Sized>(pub T);

#[derive(Debug)]
pub enum Error {
    /// The plan cannot be read or is inconsistent.
    Plan(String),
    /// The plan names a kernel that the program did not link.
    MissingKernel(String),
    /// The weights do not have the size the plan says.
    WeightsSize { expected: usize, got: usize },
    /// No input or output has that name.
    UnknownTensor(String),
    /// Input data of the wrong size.
    InputSize { name: String, expected: usize, got: usize },
    /// The tensor exists but has another element type.
    DType { name: String, expected: DType, got: DType },
    /// A kernel failed; the message is TVM's.
    Kernel { kernel: String, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Plan(m) => write!(f, "invalid model plan: {}", m),
            Error::MissingKernel(k) => write!(f, "kernel '{}' is not linked into this program", k),
            Error::WeightsSize { expected, got } => {
                write!(f, "weights are {} bytes, the plan expects {}", got, expected)
            }
            Error::UnknownTensor(n) => write!(f, "the model has no input or output named '{}'", n),
            Error::InputSize { name, expected, got } => {
                write!(f, "input '{}' needs {} bytes, got {}", name, expected, got)
            }
            Error::DType { name, expected, got } => {
                write!(f, "'{}' holds {}, not {}", name, got, expected)
            }
            Error::Kernel { kernel, message } => write!(f, "kernel '{}' failed: {}", kernel, message),
        }
    }
}

impl std::error::Error for Error {}

/// A zeroed heap buffer with [`ALIGN`] alignment.
struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    fn zeroed(len: usize) -> AlignedBuf {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len.max(1), ALIGN).expect("buffer size overflows")
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with the same layout.
        unsafe { dealloc(self.ptr, Self::layout(self.len)) }
    }
}

enum Weights {
    /// Embedded data that is already aligned: used in place, never copied.
    Borrowed(&'static [u8]),
    Owned(AlignedBuf),
}

impl Weights {
    fn new(data: &'static [u8]) -> Weights {
        if data.as_ptr() as usize % ALIGN == 0 {
            Weights::Borrowed(data)
        } else {
            let mut buf = AlignedBuf::zeroed(data.len());
            buf.bytes_mut().copy_from_slice(data);
            Weights::Owned(buf)
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Weights::Borrowed(b) => b,
            Weights::Owned(buf) => buf.bytes(),
        }
    }
}

/// A compiled model: its plan, weights and kernels, checked against each
/// other once. Create any number of [`Session`]s from it.
pub struct Model {
    plan: Plan,
    weights: Weights,
    /// Indexed like `plan.kernels`.
    calls: Vec<SafeCall>,
}

impl Model {
    pub fn new(plan_json: &str, weights: &'static [u8], kernels: &[Kernel]) -> Result<Model, Error> {
        let plan = Plan::parse(plan_json)?;
        if weights.len() != plan.weights_size {
            return Err(Error::WeightsSize { expected: plan.weights_size, got: weights.len() });
        }
        let calls = plan
            .kernels
            .iter()
            .map(|name| {
                kernels
                    .iter()
                    .find(|k| k.name == name)
                    .map(|k| k.call)
                    .ok_or_else(|| Error::MissingKernel(name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Model { plan, weights: Weights::new(weights), calls })
    }

    fn call_of(&self, kernel: &str) -> SafeCall {
        // Plan validation guarantees every step's kernel is declared.
        let index = self.plan.kernels.iter().position(|k| k == kernel).unwrap_or(0);
        self.calls[index]
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Names, element types and shapes of the inputs, in the graph's order.
    pub fn inputs(&self) -> Vec<TensorInfo<'_>> {
        self.infos(&self.plan.inputs)
    }

    pub fn outputs(&self) -> Vec<TensorInfo<'_>> {
        self.infos(&self.plan.outputs)
    }

    fn infos<'a>(&'a self, bindings: &'a [plan::Binding]) -> Vec<TensorInfo<'a>> {
        bindings
            .iter()
            .map(|b| {
                let t = &self.plan.tensors[b.tensor];
                TensorInfo { name: &b.name, dtype: t.dtype, shape: &t.shape }
            })
            .collect()
    }

    pub fn session(&self) -> Session<'_> {
        Session::new(self)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TensorInfo<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [i64],
}

/// One model's working memory: the arena, and the DLTensors and argument
/// arrays of every step, built once and reused by every run.
pub struct Session<'m> {
    model: &'m Model,
    arena: AlignedBuf,
    // Kernels get raw pointers into these three; they are never resized
    // after construction, so the pointers stay valid for the session's life.
    _shapes: Vec<Vec<i64>>,
    #[allow(dead_code)] tensors: Vec<DLTensor>, // read only through those pointers
    steps: Vec<(SafeCall, Vec<TVMFFIAny>)>,
}

impl<'m> Session<'m> {
    fn new(model: &'m Model) -> Session<'m> {
        let plan = &model.plan;
        let mut arena = AlignedBuf::zeroed(plan.arena_size);
        let mut shapes: Vec<Vec<i64>> = plan.tensors.iter().map(|t| t.shape.clone()).collect();
        let arena_ptr = arena.bytes_mut().as_mut_ptr();
        let weights_ptr = model.weights.bytes().as_ptr() as *mut u8;
        let mut tensors: Vec<DLTensor> = plan
            .tensors
            .iter()
            .zip(shapes.iter_mut())
            .map(|(spec, shape)| {
                let base = match spec.region {
                    Region::Arena => arena_ptr,
                    // Kernels never write their read-only inputs.
                    Region::Weights => weights_ptr,
                };
                DLTensor {
                    // SAFETY: the plan was validated: offset + size lies inside the region.
                    data: unsafe { base.add(spec.offset) } as *mut _,
                    device: ffi::CPU,
                    ndim: shape.len() as i32,
                    dtype: spec.dtype.to_dl(),
                    shape: shape.as_mut_ptr(),
                    strides: std::ptr::null_mut(),
                    byte_offset: 0,
                }
            })
            .collect();
        let tensors_ptr = tensors.as_mut_ptr();
        let steps = plan
            .steps
            .iter()
            .map(|step| {
                let args = step
                    .args
                    .iter()
                    .map(|arg| match *arg {
                        // SAFETY: tensor indices were validated.
                        Arg::Tensor(i) => TVMFFIAny::tensor(unsafe { tensors_ptr.add(i) }),
                        Arg::Int(v) => TVMFFIAny::int(v),
                    })
                    .collect();
                (model.call_of(&step.kernel), args)
            })
            .collect();
        Session { model, arena, _shapes: shapes, tensors, steps }
    }

    fn find(&self, bindings: &[plan::Binding], name: &str) -> Result<usize, Error> {
        bindings
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.tensor)
            .ok_or_else(|| Error::UnknownTensor(name.to_string()))
    }

    /// Copies raw little-endian bytes into the named input.
    pub fn set_input(&mut self, name: &str, data: &[u8]) -> Result<(), Error> {
        let index = self.find(&self.model.plan.inputs, name)?;
        let spec = &self.model.plan.tensors[index];
        if data.len() != spec.nbytes() {
            return Err(Error::InputSize { name: name.to_string(), expected: spec.nbytes(), got: data.len() });
        }
        self.arena.bytes_mut()[spec.offset..spec.offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    pub fn set_input_f32(&mut self, name: &str, data: &[f32]) -> Result<(), Error> {
        self.check_dtype(&self.model.plan.inputs, name, DType::Float(32))?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.set_input(name, &bytes)
    }

    fn check_dtype(&self, bindings: &[plan::Binding], name: &str, expected: DType) -> Result<(), Error> {
        let got = self.model.plan.tensors[self.find(bindings, name)?].dtype;
        if got != expected {
            return Err(Error::DType { name: name.to_string(), expected, got });
        }
        Ok(())
    }

    /// Runs every step of the plan in order.
    pub fn run(&mut self) -> Result<(), Error> {
        (0..self.steps.len()).try_for_each(|index| self.run_step(index))
    }

    /// How many steps the plan has; [`Session::run`] runs them in order.
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// Runs one step of the plan alone, so that a profiler can time each
    /// kernel inside a real inference, with the caches as the earlier steps
    /// left them. Steps read what earlier steps wrote: run them in order.
    pub fn run_step(&mut self, index: usize) -> Result<(), Error> {
        let step = self.model.plan.steps.get(index).ok_or_else(|| {
            Error::Plan(format!("no step {} (the plan has {})", index, self.steps.len()))
        })?;
        let (call, args) = &self.steps[index];
        let mut result = TVMFFIAny::none();
        // SAFETY: arguments point at live DLTensors over validated buffers,
        // and the kernel checked ranks, shapes and dtypes when it was built.
        let status = unsafe { call(std::ptr::null_mut(), args.as_ptr(), args.len() as i32, &mut result) };
        if status != 0 {
            let message = ffi::take_last_error().unwrap_or_else(|| format!("status {}", status));
            return Err(Error::Kernel { kernel: step.kernel.clone(), message });
        }
        Ok(())
    }

    /// The raw little-endian bytes of the named output.
    pub fn output(&self, name: &str) -> Result<&[u8], Error> {
        let spec = &self.model.plan.tensors[self.find(&self.model.plan.outputs, name)?];
        let region = match spec.region {
            Region::Arena => self.arena.bytes(),
            Region::Weights => self.model.weights.bytes(),
        };
        Ok(&region[spec.offset..spec.offset + spec.nbytes()])
    }

    pub fn output_f32(&self, name: &str) -> Result<Vec<f32>, Error> {
        self.check_dtype(&self.model.plan.outputs, name, DType::Float(32))?;
        Ok(self
            .output(name)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::ffi::c_void;

    // A stand-in kernel with TVM's calling convention: y[i] = max(x[i], 0).
    unsafe extern "C" fn relu(_: *mut c_void, args: *const TVMFFIAny, n: i32, _: *mut TVMFFIAny) -> i32 {
        if n != 2 {
            ffi::TVMFFIErrorSetRaisedFromCStrParts(b"TypeError\0".as_ptr() as _, std::ptr::null(), 0);
            return -1;
        }
        let x = &*((*args).value as usize as *const DLTensor);
        let y = &*((*args.add(1)).value as usize as *const DLTensor);
        let len = *x.shape as usize;
        for i in 0..len {
            *(y.data as *mut f32).add(i) = (*(x.data as *const f32).add(i)).max(0.0);
        }
        0
    }

    static KERNELS: &[Kernel] = &[Kernel { name: "relu", call: relu }];
    static NO_WEIGHTS: &Aligned<[u8; 0]> = &Aligned([]);

    fn plan(args: &str) -> String {
        format!(
            r#"{{"format":1,"arena_size":128,"weights_size":0,"kernels":["relu"],
            "tensors":[{{"dtype":"float32","shape":[4],"region":"arena","offset":0}},
                       {{"dtype":"float32","shape":[4],"region":"arena","offset":64}}],
            "inputs":[{{"name":"x","tensor":0}}],"outputs":[{{"name":"y","tensor":1}}],
            "steps":[{{"kernel":"relu","args":[{}]}}]}}"#,
            args
        )
    }

    #[test]
    fn runs_a_plan() {
        let model = Model::new(&plan(r#"{"tensor":0},{"tensor":1}"#), &NO_WEIGHTS.0, KERNELS).unwrap();
        let mut s = model.session();
        s.set_input_f32("x", &[-1.0, 2.0, -3.0, 4.0]).unwrap();
        s.run().unwrap();
        assert_eq!(s.output_f32("y").unwrap(), vec![0.0, 2.0, 0.0, 4.0]);
    }

    #[test]
    fn runs_a_plan_step_by_step() {
        let model = Model::new(&plan(r#"{"tensor":0},{"tensor":1}"#), &NO_WEIGHTS.0, KERNELS).unwrap();
        let mut s = model.session();
        s.set_input_f32("x", &[-1.0, 2.0, -3.0, 4.0]).unwrap();
        assert_eq!(s.step_count(), 1);
        s.run_step(0).unwrap();
        assert_eq!(s.output_f32("y").unwrap(), vec![0.0, 2.0, 0.0, 4.0]);
        assert_eq!(s.run_step(1).unwrap_err().to_string(), "invalid model plan: no step 1 (the plan has 1)");
    }

    #[test]
    fn kernel_errors_become_errors() {
        let model = Model::new(&plan(r#"{"tensor":0}"#), &NO_WEIGHTS.0, KERNELS).unwrap();
        let err = model.session().run().unwrap_err();
        assert_eq!(err.to_string(), "kernel 'relu' failed: TypeError:");
    }

    #[test]
    fn missing_kernels_and_bad_inputs_are_reported() {
        assert!(matches!(Model::new(&plan(""), &NO_WEIGHTS.0, &[]), Err(Error::MissingKernel(_))));
        let model = Model::new(&plan(r#"{"tensor":0},{"tensor":1}"#), &NO_WEIGHTS.0, KERNELS).unwrap();
        let mut s = model.session();
        assert!(matches!(s.set_input("x", &[0; 3]), Err(Error::InputSize { .. })));
        assert!(matches!(s.set_input("z", &[]), Err(Error::UnknownTensor(_))));
    }
}
