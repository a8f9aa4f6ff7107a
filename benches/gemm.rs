//! f32 GEMM kernel comparison (`matrixmultiply` vs `gemm`, 1 and 2 threads) on the shapes an RNN training step hits.
//!
//! Every benchmark computes `C[m,n] = A[m,k] · B[k,n]` (or `C += A·B` for the
//! accumulating cases) on dense row-major buffers; "transposed" operands are
//! stored transposed and read by stride, as an autodiff engine does for `x·Wᵀ`
//! and `dGᵀ·X`.
//!
//! Kernels measured in one process:
//! - `mm_tN`: `matrixmultiply::sgemm`. Its thread count is fixed once per
//!   process by the `MATMUL_NUM_THREADS` environment variable (with the crate's
//!   `threading` feature; without it, always 1), so run the benchmark once per
//!   thread count. `N` in the label is read from that variable (`auto` if unset).
//! - `gemm_t1`: `gemm::gemm` with `Parallelism::None`.
//! - `gemm_t2`: `gemm::gemm` with `Parallelism::Rayon(2)`.
//!
//! ```text
//! MATMUL_NUM_THREADS=1 cargo bench --features compare-gemm --bench gemm
//! MATMUL_NUM_THREADS=2 cargo bench --features compare-gemm --bench gemm -- mm_t2   # only matrixmultiply
//! ```
//!
//! After criterion's own report, a compact table of GFLOP/s (from criterion's
//! median time per iteration, `2·m·n·k / median`) is printed for everything
//! that ran in this process.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use gemm::Parallelism;

/// How an operand lives in its dense row-major buffer.
#[derive(Clone, Copy)]
enum Store {
    /// `rows × cols` row-major: unit column stride.
    RowMajor,
    /// Stored as the row-major transpose (`cols × rows`): unit row stride.
    Transposed,
}

impl Store {
    /// (row stride, column stride) in elements of a logical `rows × cols` matrix.
    fn strides(self, rows: usize, cols: usize) -> (isize, isize) {
        match self {
            Store::RowMajor => (cols as isize, 1),
            Store::Transposed => (1, rows as isize),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Store::RowMajor => "",
            Store::Transposed => "T",
        }
    }
}

/// One GEMM problem `C[m,n] (+)= A[m,k] · B[k,n]`.
struct Shape {
    /// What the shape stands for in the RNN engine.
    role: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a: Store,
    b: Store,
    /// `true`: `C += A·B` (beta = 1); `false`: `C = A·B` (beta = 0).
    accumulate: bool,
}

impl Shape {
    const fn new(role: &'static str, m: usize, k: usize, n: usize) -> Self {
        Shape {
            role,
            m,
            k,
            n,
            a: Store::RowMajor,
            b: Store::RowMajor,
            accumulate: false,
        }
    }

    const fn bt(mut self) -> Self {
        self.b = Store::Transposed;
        self
    }

    /// Benchmark group name, e.g. `32x256x1024_BT` (M×K×N, `AT`/`BT` = stored
    /// transposed, `_acc` = beta 1).
    fn name(&self) -> String {
        let mut s = format!("{}x{}x{}", self.m, self.k, self.n);
        if !matches!((self.a, self.b), (Store::RowMajor, Store::RowMajor)) {
            s.push('_');
            if matches!(self.a, Store::Transposed) {
                s.push_str(&format!("A{}", self.a.tag()));
            }
            if matches!(self.b, Store::Transposed) {
                s.push_str(&format!("B{}", self.b.tag()));
            }
        }
        if self.accumulate {
            s.push_str("_acc");
        }
        s
    }

    fn flops(&self) -> u64 {
        2 * (self.m * self.n * self.k) as u64
    }

    /// Large problems get fewer, single-iteration samples.
    fn is_large(&self) -> bool {
        self.flops() >= 1 << 31
    }
}

/// The shapes measured, grouped by what they are in the RNN engine.
fn shapes() -> Vec<Shape> {
    let mut v = Vec::new();
    // Per-step recurrent products h·Wᵀ at batch 32: W stored [N,K] (BT) and plain [K,N].
    for (k, n) in [(256, 1024), (128, 512), (512, 2048), (1024, 4096)] {
        v.push(Shape::new("step", 32, k, n).bt());
        v.push(Shape::new("step", 32, k, n));
    }
    // Per-step weight-gradient accumulation dW += dGᵀ·X, dG stored [32,1024].
    v.push(Shape {
        a: Store::Transposed,
        accumulate: true,
        ..Shape::new("wgrad", 1024, 32, 256)
    });
    // Input projection hoisted over T·B = 2048 rows, and the readout.
    for (k, n) in [(65, 1024), (256, 1024), (256, 65)] {
        v.push(Shape::new("hoisted", 2048, k, n));
        v.push(Shape::new("hoisted", 2048, k, n).bt());
    }
    // Peak reference: large squares.
    v.push(Shape::new("square", 1024, 1024, 1024));
    v.push(Shape::new("square", 2048, 2048, 2048));
    v
}

/// Which kernel runs the product.
#[derive(Clone, Copy)]
enum Kernel {
    MatrixMultiply,
    Gemm(Parallelism),
}

impl Kernel {
    fn label(self) -> String {
        match self {
            Kernel::MatrixMultiply => {
                let t = std::env::var("MATMUL_NUM_THREADS").unwrap_or_default();
                let t = t.trim();
                format!("mm_t{}", if t.is_empty() { "auto" } else { t })
            }
            Kernel::Gemm(Parallelism::None) => "gemm_t1".into(),
            Kernel::Gemm(Parallelism::Rayon(n)) => format!("gemm_t{n}"),
        }
    }
}

/// Operand buffers of one shape and their strides.
struct Problem {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    /// (row, column) strides of A and B.
    sa: (isize, isize),
    sb: (isize, isize),
}

/// Deterministic values in [-1, 1) (64-bit LCG), so no `rand` dependency is needed.
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

impl Problem {
    fn new(s: &Shape) -> Self {
        Problem {
            a: fill(s.m * s.k, 1),
            b: fill(s.k * s.n, 2),
            c: vec![0.0; s.m * s.n],
            sa: s.a.strides(s.m, s.k),
            sb: s.b.strides(s.k, s.n),
        }
    }

    /// Logical element (i, j) of A / B.
    fn a_at(&self, i: usize, j: usize) -> f32 {
        self.a[i * self.sa.0 as usize + j * self.sa.1 as usize]
    }
    fn b_at(&self, i: usize, j: usize) -> f32 {
        self.b[i * self.sb.0 as usize + j * self.sb.1 as usize]
    }

    /// One product with `kernel`: `C = A·B`, or `C += A·B` if `s.accumulate`.
    fn run(&mut self, s: &Shape, kernel: Kernel) {
        let (m, k, n) = (s.m, s.k, s.n);
        let (rsa, csa) = self.sa;
        let (rsb, csb) = self.sb;
        let (a, b, c) = (self.a.as_ptr(), self.b.as_ptr(), self.c.as_mut_ptr());
        match kernel {
            // SAFETY: A holds m·k, B k·n and C m·n elements, and the strides
            // from `Store::strides` keep every (i, j) access inside them; C
            // does not alias A or B.
            Kernel::MatrixMultiply => unsafe {
                let beta = if s.accumulate { 1.0 } else { 0.0 };
                matrixmultiply::sgemm(
                    m, k, n, 1.0, a, rsa, csa, b, rsb, csb, beta, c, n as isize, 1,
                );
            },
            // SAFETY: as above. Note gemm's convention is
            // `dst = alpha·dst + beta·lhs·rhs`, with dst only read if `read_dst`,
            // and (column, row) stride order.
            Kernel::Gemm(par) => unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c,
                    1,
                    n as isize,
                    s.accumulate,
                    a,
                    csa,
                    rsa,
                    b,
                    csb,
                    rsb,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            },
        }
    }

    /// Checks a sample of C entries against a naive dot product after one run.
    fn check(&mut self, s: &Shape, kernel: Kernel) {
        let c0 = fill(s.m * s.n, 3);
        self.c.copy_from_slice(&c0);
        self.run(s, kernel);
        let tol = 1e-5 * s.k as f32 + 1e-4;
        for t in 0..64 {
            let (i, j) = ((t * 7919 + 13) % s.m, (t * 104_729 + 5) % s.n);
            let dot: f32 = (0..s.k).map(|p| self.a_at(i, p) * self.b_at(p, j)).sum();
            let want = if s.accumulate {
                c0[i * s.n + j] + dot
            } else {
                dot
            };
            let got = self.c[i * s.n + j];
            assert!(
                (got - want).abs() <= tol * (1.0 + want.abs()),
                "{} {}: C[{i},{j}] = {got}, expected {want}",
                s.name(),
                kernel.label()
            );
        }
        self.c.fill(0.0);
    }
}

/// Median of the per-iteration times (seconds) of the last `n` samples,
/// which are criterion's measurement samples (warm-up calls come first).
fn median_of_last(times: &[f64], n: usize) -> Option<f64> {
    if times.len() < n || n == 0 {
        return None;
    }
    let mut last = times[times.len() - n..].to_vec();
    last.sort_by(f64::total_cmp);
    Some(if n % 2 == 1 {
        last[n / 2]
    } else {
        0.5 * (last[n / 2 - 1] + last[n / 2])
    })
}

/// One table row: shape, kernel label, GFLOP/s.
type Row = (String, String, f64);

/// Runs every kernel on every shape, returning the median GFLOP/s of what ran.
fn bench_all(c: &mut Criterion) -> Vec<Row> {
    let kernels = [
        Kernel::MatrixMultiply,
        Kernel::Gemm(Parallelism::None),
        Kernel::Gemm(Parallelism::Rayon(2)),
    ];
    let mut rows = Vec::new();
    for s in shapes() {
        let mut p = Problem::new(&s);
        for k in kernels {
            p.check(&s, k);
        }
        let name = s.name();
        let mut group = c.benchmark_group(&name);
        group.throughput(Throughput::Elements(s.flops())); // criterion's "elem/s" = FLOP/s
        let samples = if s.is_large() {
            group
                .sampling_mode(SamplingMode::Flat)
                .measurement_time(Duration::from_secs(4));
            10
        } else {
            group.measurement_time(Duration::from_secs(2));
            20
        };
        group
            .sample_size(samples)
            .warm_up_time(Duration::from_secs(1));
        for k in kernels {
            let label = k.label();
            let mut per_iter = Vec::new();
            group.bench_function(&label, |bencher| {
                bencher.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(&mut p).run(&s, k);
                    }
                    let elapsed = start.elapsed();
                    per_iter.push(elapsed.as_secs_f64() / iters as f64);
                    elapsed
                })
            });
            p.c.fill(0.0);
            if let Some(t) = median_of_last(&per_iter, samples) {
                rows.push((
                    format!("{:<8}{name}", s.role),
                    label,
                    s.flops() as f64 / t * 1e-9,
                ));
            }
        }
        group.finish();
    }
    rows
}

/// Prints rows as a shape × kernel table, plus peak and fraction-of-peak lines.
fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    let mut cols: Vec<&str> = Vec::new();
    let mut shapes: Vec<&str> = Vec::new();
    for (s, k, _) in rows {
        if !cols.contains(&k.as_str()) {
            cols.push(k);
        }
        if !shapes.contains(&s.as_str()) {
            shapes.push(s);
        }
    }
    let get = |s: &str, k: &str| rows.iter().find(|r| r.0 == s && r.1 == k).map(|r| r.2);
    println!("\nGFLOP/s (2·M·N·K / median time), shape = M x K x N, T = stored transposed");
    print!("{:<30}", "shape");
    for k in &cols {
        print!("{k:>12}");
    }
    println!();
    for s in &shapes {
        print!("{s:<30}");
        for k in &cols {
            match get(s, k) {
                Some(g) => print!("{g:>12.1}"),
                None => print!("{:>12}", "-"),
            }
        }
        println!();
    }
    let peak = rows
        .iter()
        .filter(|r| r.0.starts_with("square"))
        .max_by(|x, y| x.2.total_cmp(&y.2));
    if let Some((ps, pk, peak)) = peak {
        println!("peak (best large square in this run): {peak:.1} GFLOP/s = {pk} on {ps}");
        let step = "32x256x1024_BT";
        for k in &cols {
            if let Some(g) = rows
                .iter()
                .find(|r| r.0.ends_with(step) && r.1 == *k)
                .map(|r| r.2)
            {
                println!(
                    "  {k:<10} on {step}: {g:>7.1} GFLOP/s = {:>5.1}% of peak",
                    100.0 * g / peak
                );
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rows = bench_all(&mut c);
    c.final_summary();
    print_table(&rows);
}
