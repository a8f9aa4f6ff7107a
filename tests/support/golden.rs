//! Golden data: the safetensors files the scripts/golden_*.py scripts wrote into tests/data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rewind::autograd::io::{load_tensors, TensorFile};
use rewind::autograd::{Float, Tensor};

/// The path of `tests/data/{name}`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The golden file `tests/data/{name}`, which `scripts/{script}` wrote.
pub fn load<F: Float>(name: &str, script: &str) -> TensorFile<F> {
    load_tensors(&data(name)).unwrap_or_else(|e| panic!("golden data from scripts/{script}: {e:?}"))
}

/// The tensor `name` of a golden file; the test fails if it lacks it.
pub fn tensor<F: Float>(g: &TensorFile<F>, name: &str) -> Tensor<F> {
    g.tensors
        .get(name)
        .unwrap_or_else(|| panic!("golden data lacks {name}"))
        .clone()
}

/// Row `i` of a [T, ...] tensor: step `i` of a trajectory.
pub fn row<F: Float>(t: &Tensor<F>, i: usize) -> Tensor<F> {
    let inner = t.shape()[1..].to_vec();
    let n: usize = inner.iter().product();
    Tensor::from_vec(t.data()[i * n..(i + 1) * n].to_vec(), &inner).unwrap()
}

/// A golden file's case configurations: the JSON a script stored for case `case` as the
/// metadata entry `case.{case}`, flat and written with sorted keys.
pub trait Cases {
    /// The golden file's metadata.
    fn metadata(&self) -> &BTreeMap<String, String>;

    /// A field of the case's configuration, as text.
    fn field(&self, case: &str, name: &str) -> String {
        let json = &self.metadata()[&format!("case.{case}")];
        let start = json
            .find(&format!("\"{name}\": "))
            .unwrap_or_else(|| panic!("{case} lacks {name}"));
        let rest = &json[start + name.len() + 4..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].trim_matches('"').to_string()
    }

    /// A boolean field.
    fn flag(&self, case: &str, name: &str) -> bool {
        self.field(case, name) == "true"
    }

    /// A whole-number field.
    fn number(&self, case: &str, name: &str) -> usize {
        self.field(case, name).parse().unwrap()
    }
}
