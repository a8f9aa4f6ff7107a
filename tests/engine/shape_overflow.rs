//! Shapes whose dimensions multiply (or add) past `usize::MAX` are refused where they are made:
//! a typed error from data (`from_vec`, a safetensors file), a panic naming the op and the shape
//! from every op and constructor. None of them may wrap into a small size that a kernel then
//! trusts: before this was checked, `zeros(&[0]).reshape(&[1 << 32, 1 << 32])` was accepted as a
//! tensor of 0 elements, and a matmul on it read out of bounds.
//!
//! Every shape here has zero elements or very few, so nothing large is ever allocated.
#![cfg(target_pointer_width = "64")]

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use rewind::autograd::io::{load_tensors, IoError};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{concat, Tape, Tensor, TensorError};

/// 2³²: two of these multiply to 2⁶⁴, which wraps to 0 in a `usize`.
const BIG: usize = 1 << 32;

/// Runs `f`, expecting a panic, and returns its message.
fn panic_message(f: impl FnOnce()) -> String {
    let err = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn from_vec_with_an_overflowing_shape_is_a_typed_error() {
    let err = Tensor::<f32>::from_vec(vec![], &[BIG, BIG]).unwrap_err();
    assert_eq!(
        err,
        TensorError::TooLarge {
            shape: vec![BIG, BIG]
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot build a tensor of shape [4294967296, 4294967296]: its dimensions multiply past usize::MAX"
    );
}

#[test]
#[should_panic(
    expected = "reshape: shape [4294967296, 4294967296] is too large: its dimensions multiply past usize::MAX"
)]
fn tensor_reshape_to_an_overflowing_shape_panics_with_op_and_shape() {
    Tensor::<f32>::zeros(&[0]).reshape(&[BIG, BIG]);
}

#[test]
#[should_panic(
    expected = "reshape: shape [4294967296, 4294967296] is too large: its dimensions multiply past usize::MAX"
)]
fn var_reshape_to_an_overflowing_shape_panics_before_any_matmul_reads_it() {
    let tape = Tape::<f32>::new();
    let a = tape.constant(Tensor::zeros(&[0])).reshape(&[BIG, BIG]);
    // Were the reshape accepted, this product's bound check would wrap to 0 as well, and the
    // GEMM would read 2⁶⁴ elements from an empty buffer.
    a.matmul(a);
}

#[test]
fn matmul_whose_product_shape_overflows_panics_with_both_operands() {
    let tape = Tape::<f32>::new();
    // Each operand is empty and valid; with k = 0 their product [m, n] has m·n = 2⁶⁴ elements.
    let a = tape.constant(Tensor::zeros(&[BIG, 0]));
    let b = tape.constant(Tensor::zeros(&[0, BIG]));
    assert_eq!(
        panic_message(|| {
            a.matmul(b);
        }),
        "matmul: the result's shape [4294967296, 4294967296] is too large (its dimensions \
         multiply past usize::MAX): lhs [4294967296, 0] vs rhs [0, 4294967296]"
    );
    // Batched: b·m·n = 2²²·2²¹·2²¹.
    let a = tape.constant(Tensor::zeros(&[1 << 22, 1 << 21, 0]));
    let b = tape.constant(Tensor::zeros(&[1 << 22, 0, 1 << 21]));
    assert_eq!(
        panic_message(|| {
            a.matmul(b);
        }),
        "matmul: the result's shape [4194304, 2097152, 2097152] is too large (its dimensions \
         multiply past usize::MAX): lhs [4194304, 2097152, 0] vs rhs [4194304, 0, 2097152]"
    );
    // addmm checks the same product.
    let c = tape.constant(Tensor::zeros(&[1, 1]));
    let (a, b) = (
        tape.constant(Tensor::zeros(&[BIG, 0])),
        tape.constant(Tensor::zeros(&[0, BIG])),
    );
    assert_eq!(
        panic_message(|| {
            c.addmm(a, b);
        }),
        "matmul: the result's shape [4294967296, 4294967296] is too large (its dimensions \
         multiply past usize::MAX): lhs [4294967296, 0] vs rhs [0, 4294967296]"
    );
}

#[test]
#[should_panic(
    expected = "zeros: shape [4294967296, 4294967296] is too large: its dimensions multiply past usize::MAX"
)]
fn zeros_with_an_overflowing_shape_panics() {
    Tensor::<f32>::zeros(&[BIG, BIG]);
}

#[test]
fn every_constructor_refuses_an_overflowing_shape() {
    let shape = [BIG, BIG, 3];
    let refused = |op: &str| {
        format!(
            "{op}: shape [4294967296, 4294967296, 3] is too large: its dimensions multiply past \
             usize::MAX"
        )
    };
    let mut rng = StdRng::seed_from_u64(0);
    assert_eq!(
        panic_message(|| drop(Tensor::<f32>::full(&shape, 2.0))),
        refused("full")
    );
    assert_eq!(
        panic_message(|| drop(Tensor::<f64>::ones(&shape))),
        refused("ones")
    );
    assert_eq!(
        panic_message(|| drop(Tensor::<f32>::uniform(&shape, -1.0, 1.0, &mut rng))),
        refused("uniform")
    );
    assert_eq!(
        panic_message(|| drop(Tensor::<f32>::normal(&shape, 0.0, 1.0, &mut rng))),
        refused("normal")
    );
}

/// A zero-sized axis makes the element count 0, but the other axes still multiply to 2⁶⁴, and a
/// kernel that works around one axis (a sum, a softmax) multiplies exactly those: such a shape
/// is refused, so that every product of a tensor's dimensions fits in a `usize`.
#[test]
fn a_zero_sized_axis_does_not_excuse_the_others_overflowing() {
    assert_eq!(
        Tensor::<f32>::from_vec(vec![], &[0, BIG, BIG]).unwrap_err(),
        TensorError::TooLarge {
            shape: vec![0, BIG, BIG]
        }
    );
    assert_eq!(
        panic_message(|| drop(Tensor::<f32>::zeros(&[BIG, 0, BIG]))),
        "zeros: shape [4294967296, 0, 4294967296] is too large: its dimensions multiply past usize::MAX"
    );
    // The largest shapes that fit are fine, with or without a zero.
    assert_eq!(Tensor::<f32>::zeros(&[0, BIG, BIG - 1]).numel(), 0);
    assert_eq!(
        Tensor::<f32>::zeros(&[usize::MAX, 0]).shape(),
        &[usize::MAX, 0]
    );
}

#[test]
fn narrow_with_a_start_near_usize_max_panics_with_the_true_range() {
    let tape = Tape::<f32>::new();
    let x = tape.constant(Tensor::zeros(&[4]));
    // start + len is 2⁶⁴ + 1, which wraps to 1 and used to pass as inside [0, 4).
    assert_eq!(
        panic_message(|| {
            x.narrow(0, usize::MAX, 2);
        }),
        "narrow: range 18446744073709551615..18446744073709551617 out of bounds along axis 0 of shape [4]"
    );
}

#[test]
fn concat_whose_joined_axis_overflows_panics() {
    let tape = Tape::<f32>::new();
    let a = tape.constant(Tensor::zeros(&[1 << 63, 0]));
    // The sizes along axis 0 add to 2⁶⁴, which wraps to 0.
    assert_eq!(
        panic_message(|| {
            concat(&[a, a], 0);
        }),
        "concat: the sizes along axis 0 add past usize::MAX: [9223372036854775808, 0] and [9223372036854775808, 0]"
    );
    // The sum fits, but the result's other axis makes it too large.
    let b = tape.constant(Tensor::zeros(&[1 << 31, 0, BIG]));
    assert_eq!(
        panic_message(|| {
            concat(&[b, b], 0);
        }),
        "concat: the result's shape [4294967296, 0, 4294967296] is too large (its dimensions \
         multiply past usize::MAX): joining 2 inputs along axis 0"
    );
}

#[test]
fn broadcast_whose_result_overflows_panics_with_both_operands() {
    let tape = Tape::<f32>::new();
    let a = tape.constant(Tensor::zeros(&[BIG, 1, 0]));
    let b = tape.constant(Tensor::zeros(&[1, BIG, 0]));
    assert_eq!(
        panic_message(|| {
            let _ = a + b;
        }),
        "add: the result's shape [4294967296, 4294967296, 0] is too large (its dimensions \
         multiply past usize::MAX): lhs [4294967296, 1, 0] vs rhs [1, 4294967296, 0]"
    );
}

#[test]
fn index_select_whose_result_overflows_panics() {
    let tape = Tape::<f32>::new();
    let x = tape.constant(Tensor::zeros(&[1, 0, 1 << 62]));
    assert_eq!(
        panic_message(|| {
            x.index_select(&[0; 4]);
        }),
        "index_select: the result's shape [4, 0, 4611686018427387904] is too large (its \
         dimensions multiply past usize::MAX): 4 rows of shape [1, 0, 4611686018427387904]"
    );
}

#[test]
fn lstm_cell_gate_width_that_overflows_is_a_shape_mismatch() {
    let tape = Tape::<f32>::new();
    // 4·H with H = 2⁶² wraps to 0, which used to match gates of width 0.
    let gates = tape.constant(Tensor::zeros(&[0, 0]));
    let c = tape.constant(Tensor::zeros(&[0, 1 << 62]));
    assert_eq!(
        panic_message(|| {
            gates.lstm_cell(c);
        }),
        "lstm_cell: expected gates [B, 4·H] and a state [B, H]: gates [0, 0] vs state [0, 4611686018427387904]"
    );
}

/// A file in a directory of this test's own (tests run in parallel).
fn scratch(name: &str) -> PathBuf {
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let dir = std::env::temp_dir().join(format!("rewind-overflow-{}-{test}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A safetensors file holding one F32 tensor `w` of the declared shape and no data: an 8-byte
/// little-endian header length, then the JSON header.
fn file_declaring(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,0]}}}}"#,
        dims.join(",")
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// Loads a file declaring `shape`, expecting it to be refused as corrupt; returns the reason.
fn load_refused(shape: &[usize]) -> String {
    let path = scratch("huge.safetensors");
    fs::write(&path, file_declaring(shape)).unwrap();
    match load_tensors::<f32>(&path) {
        Err(IoError::Corrupt { reason, .. }) => reason,
        other => panic!("{shape:?}: expected a corrupt-file error, got {other:?}"),
    }
}

#[test]
fn safetensors_file_declaring_a_huge_shape_is_an_error() {
    // The safetensors crate itself refuses a shape whose element count overflows.
    load_refused(&[BIG, BIG]);
    // [0, 2³², 2³²] holds 0 bytes, which the crate accepts, so the engine must refuse it.
    assert_eq!(
        load_refused(&[0, BIG, BIG]),
        "tensor `w`: cannot build a tensor of shape [0, 4294967296, 4294967296]: its dimensions \
         multiply past usize::MAX"
    );
}

/// An empty tensor prints as PyTorch prints it, `tensor([], size=(…))`, without walking its axes:
/// one of them may be huge, and listing its 2³² indices would take 32 GiB.
#[test]
fn an_empty_tensor_with_a_huge_axis_prints_its_shape() {
    assert_eq!(
        Tensor::<f32>::zeros(&[BIG, 0]).to_string(),
        "tensor([], size=(4294967296, 0))"
    );
    // torch.zeros(0), torch.zeros(2, 0, 3, dtype=torch.float64)
    assert_eq!(Tensor::<f32>::zeros(&[0]).to_string(), "tensor([])");
    assert_eq!(
        Tensor::<f64>::zeros(&[2, 0, 3]).to_string(),
        "tensor([], size=(2, 0, 3), dtype=torch.float64)"
    );
}

#[test]
fn a_parameter_with_an_empty_axis_gets_an_empty_gradient() {
    // Per-step products stack their weight gradients by row width; a width of 0 must not divide.
    use rewind::autograd::Param;
    for shape in [[3, 0], [0, 3]] {
        let w = Param::named("w", Tensor::<f64>::zeros(&shape));
        let tape = Tape::new();
        let x = tape.constant(Tensor::<f64>::ones(&[2, 3]));
        let wv = tape.param(&w);
        let y = if shape[0] == 3 {
            x.matmul(wv)
        } else {
            x.matmul(wv.t())
        };
        let g = y.sum().backward();
        assert_eq!(g[&w].shape(), &shape);
    }
}
