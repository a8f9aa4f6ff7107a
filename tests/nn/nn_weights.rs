//! Weights as safetensors with PyTorch's state_dict names: a round trip, and every way a file
//! can fail to fit, each an error that names the tensor, never a panic. (The file PyTorch wrote
//! is read in nn_parity.rs.)

use std::fs;
use std::path::PathBuf;

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::nn::{
    load_weights, save_weights, Linear, Lstm, Module, RecurrentConfig, WeightProblem, WeightsError,
};

/// A file in a directory of this test's own (tests run in parallel).
fn scratch(name: &str) -> PathBuf {
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let dir = std::env::temp_dir().join(format!("rewind-weights-{}-{test}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn lstm(seed: u64, hidden: usize) -> Lstm {
    Lstm::new(
        RecurrentConfig::new(5, hidden)
            .num_layers(2)
            .bidirectional(true),
        &mut StdRng::seed_from_u64(seed),
    )
}

#[test]
fn save_then_load_round_trips_every_parameter() {
    let path = scratch("round_trip.safetensors");
    let saved = lstm(1, 4);
    save_weights(&saved, &path).unwrap();
    let mut loaded = lstm(2, 4);
    load_weights(&mut loaded, &path).unwrap();
    for ((name, a), (_, b)) in saved.params().iter().zip(loaded.params()) {
        assert_eq!(a.value(), b.value(), "{name}");
    }
    let names: Vec<String> = saved.params().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"weight_hh_l1_reverse".to_string()));
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let path = scratch("mismatch.safetensors");
    save_weights(&lstm(1, 3), &path).unwrap();
    let mut model = lstm(2, 4);
    let before = model.params()[0].1.value();
    let err = load_weights(&mut model, &path).unwrap_err();
    let WeightsError::Mismatch(problems) = &err else {
        panic!("{err}")
    };
    assert!(problems.contains(&WeightProblem::Shape {
        name: "weight_hh_l0".into(),
        expected: vec![16, 4],
        found: vec![12, 3],
    }));
    assert!(
        err.to_string()
            .contains("`weight_hh_l0` has shape [12, 3], the model expects [16, 4]"),
        "{err}"
    );
    assert_eq!(
        model.params()[0].1.value(),
        before,
        "a failed load changes nothing"
    );

    let mut linear = Linear::<f32>::new(5, 3, &mut StdRng::seed_from_u64(0));
    let err = load_weights(&mut linear, &path).unwrap_err().to_string();
    assert!(
        err.contains("missing `weight` (the model expects [3, 5])"),
        "{err}"
    );
    assert!(err.contains("unexpected `bias_hh_l0` [12]"), "{err}");
}

#[test]
fn a_truncated_or_corrupt_file_is_an_error() {
    let path = scratch("good.safetensors");
    save_weights(&lstm(1, 4), &path).unwrap();
    let bytes = fs::read(&path).unwrap();
    let cut = scratch("truncated.safetensors");
    fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let err = load_weights(&mut lstm(1, 4), &cut).unwrap_err().to_string();
    assert!(err.contains("is not a valid safetensors file"), "{err}");
    let garbage = scratch("garbage.safetensors");
    fs::write(&garbage, b"not a tensor file at all").unwrap();
    assert!(load_weights(&mut lstm(1, 4), &garbage).is_err());
    let empty = scratch("empty.safetensors");
    fs::write(&empty, b"").unwrap();
    assert!(load_weights(&mut lstm(1, 4), &empty).is_err());
    let missing = load_weights(&mut lstm(1, 4), &scratch("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(missing.starts_with("cannot read "), "{missing}");
}

/// Where the child process of [`a_failed_save_leaves_the_previous_file_intact`] saves.
const SAVE_INTO: &str = "REWIND_TEST_SAVE_INTO";

/// A save over an existing file that fails half-way through writing leaves that file as it was
/// and nothing else beside it. The write fails for real: this test binary runs this test again
/// as a child under `ulimit -f 1` (no file past one block of 512 or 1024 bytes; the weights take
/// a few KB), with SIGXFSZ ignored so that the write returns EFBIG instead of killing it.
#[cfg(unix)]
#[test]
fn a_failed_save_leaves_the_previous_file_intact() {
    if let Some(path) = std::env::var_os(SAVE_INTO) {
        let err = save_weights(&lstm(2, 4), &PathBuf::from(path)).unwrap_err();
        assert!(err.to_string().starts_with("cannot write "), "{err}");
        return;
    }
    let path = scratch("kept.safetensors");
    save_weights(&lstm(1, 4), &path).unwrap();
    let before = fs::read(&path).unwrap();
    let child = std::process::Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nn_weights::a_failed_save_leaves_the_previous_file_intact",
        ])
        .args(["--test-threads=1", "--nocapture"])
        .env(SAVE_INTO, &path)
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&child.stdout) + String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "the save under ulimit:\n{output}");
    assert!(
        output.contains("1 passed"),
        "the child ran no test:\n{output}"
    );
    assert!(
        fs::read(&path).unwrap() == before,
        "the earlier file changed"
    );
    let dir: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dir, ["kept.safetensors"], "only the earlier file is left");
}

/// `__metadata__` is the name safetensors keeps for the file's metadata: a tensor of that name
/// made a file no reader can load, and replaced a good one with it. It is refused by name, and
/// the good file stays as it was.
#[test]
fn a_tensor_named_metadata_is_refused_and_the_previous_file_kept() {
    use rewind::autograd::io::{load_tensors, save_tensors, IoError, TensorFile};
    use rewind::autograd::Tensor;
    let path = scratch("metadata.safetensors");
    let mut good = TensorFile::<f32>::default();
    good.tensors.insert("w".into(), Tensor::zeros(&[2]));
    save_tensors(&path, &good).unwrap();
    let before = fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad.tensors
        .insert("__metadata__".into(), Tensor::zeros(&[1]));
    let err = save_tensors(&path, &bad).unwrap_err();
    assert!(matches!(err, IoError::Unwritable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("a tensor is named `__metadata__`"),
        "{err}"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the good file was replaced"
    );
    assert_eq!(load_tensors::<f32>(&path).unwrap(), good);
}

/// `remove_temporaries` removes what a killed `write_atomic` left (a regular file named
/// `.<name>.tmp-` and 16 hex digits) and nothing else of a similar name: not a symlink, not a
/// directory, not a user's `.<name>.tmp-notes`.
#[test]
fn remove_temporaries_removes_only_what_a_killed_write_left() {
    use rewind::autograd::io::remove_temporaries;
    let path = scratch("weights.safetensors");
    let dir = path.parent().unwrap().to_path_buf();
    let left = dir.join(".weights.safetensors.tmp-0123456789abcdef");
    let notes = dir.join(".weights.safetensors.tmp-notes");
    let folder = dir.join(".weights.safetensors.tmp-fedcba9876543210");
    fs::write(&left, b"half a file").unwrap();
    fs::write(&notes, b"mine").unwrap();
    fs::create_dir_all(&folder).unwrap();
    #[cfg(unix)]
    let link = {
        let link = dir.join(".weights.safetensors.tmp-00000000000000aa");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&notes, &link).unwrap();
        link
    };
    remove_temporaries(&path).unwrap();
    assert!(!left.exists(), "the killed write's temporary stays");
    assert!(notes.exists() && folder.is_dir());
    #[cfg(unix)]
    assert!(fs::symlink_metadata(&link).is_ok(), "a symlink was removed");
}

/// Integer tensors (token ids, lengths, masks) are read and written by the same functions as
/// weights: the file scripts/golden_int_tensors.py wrote with PyTorch reads back with each in
/// its own type, a round trip keeps them, and a load of weights refuses an integer tensor by
/// name rather than ignore it.
#[test]
fn integer_tensors_read_and_write_beside_float_ones() {
    use rewind::autograd::io::{load_tensors, save_tensors, IntTensor, Integers};
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/int_tensors.safetensors");
    let file = load_tensors::<f32>(&golden).unwrap();
    let ids = IntTensor::new(Integers::I64(vec![5, 0, 1 << 40, -100, 7, 1]), &[2, 3]).unwrap();
    let lengths = IntTensor::new(Integers::I32(vec![3, 2]), &[2]).unwrap();
    let mask = IntTensor::new(Integers::U8(vec![1, 1, 1, 1, 1, 0]), &[2, 3]).unwrap();
    assert_eq!(file.integers["ids"], ids);
    assert_eq!(file.integers["lengths"], lengths);
    assert_eq!(file.integers["mask"], mask);
    assert_eq!(file.tensors["w"].data(), &[0.5, -1.25]);
    assert_eq!(file.integers["lengths"].values().to_i64(), vec![3, 2]);

    let path = scratch("ints.safetensors");
    save_tensors(&path, &file).unwrap();
    assert_eq!(load_tensors::<f32>(&path).unwrap(), file);

    let mut clash = file.clone();
    clash
        .tensors
        .insert("ids".into(), rewind::autograd::Tensor::zeros(&[1]));
    let err = save_tensors(&path, &clash).unwrap_err().to_string();
    assert!(
        err.contains("`ids` names both a tensor and an integer tensor"),
        "{err}"
    );
    assert!(IntTensor::new(Integers::U8(vec![1, 2]), &[3]).is_err());

    let mut head = Linear::<f32>::new(2, 1, &mut StdRng::seed_from_u64(0));
    let err = load_weights(&mut head, &golden).unwrap_err().to_string();
    assert!(err.contains("`ids` [2, 3] holds integers"), "{err}");
}

/// A projected LSTM (`proj_size(3)`) saves and loads its `weight_hr_l{k}` [P, H] by PyTorch's
/// names, with weight_hh [4H, P] and the second layer's weight_ih [4H, D·P]; the file of the same
/// stack without a projection does not fit it, and the error names each difference.
#[test]
fn a_projected_lstm_round_trips_and_refuses_an_unprojected_file() {
    let config = RecurrentConfig::new(5, 4)
        .num_layers(2)
        .bidirectional(true)
        .proj_size(3);
    let path = scratch("projected.safetensors");
    let saved = Lstm::new(config, &mut StdRng::seed_from_u64(1));
    save_weights(&saved, &path).unwrap();
    let loaded = Lstm::<f32>::load(config, &path).unwrap();
    for ((name, a), (_, b)) in saved.params().iter().zip(loaded.params()) {
        assert_eq!(a.value(), b.value(), "{name}");
    }
    let shape = |name: &str| {
        let params = saved.params();
        let (_, p) = params.iter().find(|(n, _)| n == name).unwrap();
        p.shape().to_vec()
    };
    assert_eq!(shape("weight_hr_l1_reverse"), [3, 4]);
    assert_eq!(shape("weight_hh_l1"), [16, 3]);
    assert_eq!(shape("weight_ih_l1"), [16, 6]);

    save_weights(&lstm(1, 4), &path).unwrap();
    let err = Lstm::<f32>::load(config, &path).unwrap_err();
    let WeightsError::Mismatch(problems) = &err else {
        panic!("{err}")
    };
    assert!(problems.contains(&WeightProblem::Missing {
        name: "weight_hr_l0".into(),
        expected: vec![3, 4],
    }));
    assert!(problems.contains(&WeightProblem::Shape {
        name: "weight_hh_l0".into(),
        expected: vec![16, 3],
        found: vec![16, 4],
    }));
}
