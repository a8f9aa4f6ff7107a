//! The instruction sets a kernel may be compiled for, and the widest one this process takes: the
//! CPU's, capped by the environment variable `REWIND_SIMD`.

use std::sync::OnceLock;

/// The instruction sets a kernel may be compiled for, narrowest first. A kernel takes the widest
/// path that both the CPU and the environment variable `REWIND_SIMD` allow (see [`simd`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Simd {
    /// The baseline target's instructions (SSE2 on x86_64): what every fallback runs.
    Scalar,
    /// AVX2 and FMA: the activation slices, the fused cell kernels and the packed small-row GEMM
    /// in 8-lane vectors.
    Avx2,
    /// AVX-512F: the packed small-row GEMM in 16-lane vectors, and the activation slices in
    /// sixteen f32 lanes.
    Avx512,
}

impl Simd {
    /// Every path, narrowest first.
    pub(crate) const ALL: [Simd; 3] = [Simd::Scalar, Simd::Avx2, Simd::Avx512];

    /// The name `REWIND_SIMD` takes for this path.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Simd::Scalar => "scalar",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    fn parse(name: &str) -> Option<Simd> {
        Simd::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// The widest path this CPU runs.
fn detected() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return if has!("avx512f") {
                Simd::Avx512
            } else {
                Simd::Avx2
            };
        }
    }
    Simd::Scalar
}

/// The CPU's widest path and the cap `REWIND_SIMD` puts on it (`Avx512` when unset or empty),
/// read once. Any other value panics: a typo must not quietly test the wide paths again.
fn limits() -> (Simd, Simd) {
    static LIMITS: OnceLock<(Simd, Simd)> = OnceLock::new();
    *LIMITS.get_or_init(|| {
        let cap = match std::env::var_os("REWIND_SIMD") {
            None => Simd::Avx512,
            Some(v) if v.is_empty() => Simd::Avx512,
            Some(v) => v.to_str().and_then(Simd::parse).unwrap_or_else(|| {
                panic!("REWIND_SIMD is {v:?}; expected avx512, avx2 or scalar (or unset)")
            }),
        };
        (detected(), cap)
    })
}

/// The widest instruction set the kernels take in this process, as `REWIND_SIMD` names it:
/// `"avx512"`, `"avx2"` or `"scalar"` (the CPU's, capped by `REWIND_SIMD`). Benchmarks print it so
/// that a table says which path it measured.
pub fn kernel_path() -> &'static str {
    simd().name()
}

/// The widest path a kernel may take here: the CPU's, capped by `REWIND_SIMD`, and in this
/// crate's tests narrowed further on one thread by [`for_each_simd`].
pub(crate) fn simd() -> Simd {
    let (cpu, cap) = limits();
    let widest = cpu.min(cap);
    #[cfg(test)]
    if let Some(forced) = FORCED.get() {
        return forced.min(widest);
    }
    widest
}

#[cfg(test)]
thread_local! {
    /// The path [`for_each_simd`] is running on this thread.
    static FORCED: std::cell::Cell<Option<Simd>> = const { std::cell::Cell::new(None) };
}

/// Runs `check` on this thread once for each of `paths` that this process may take, in the
/// order given, with [`simd`] returning that path; then prints which paths ran and why any did
/// not. The line goes to stderr uncaptured, so a run on a CPU without AVX-512 says so instead of
/// passing silently.
#[cfg(test)]
pub(crate) fn for_each_simd(test: &str, paths: &[Simd], mut check: impl FnMut(Simd)) {
    use std::io::Write;
    struct Unforce;
    impl Drop for Unforce {
        fn drop(&mut self) {
            FORCED.set(None);
        }
    }
    let _unforce = Unforce;
    let (cpu, cap) = limits();
    let (allowed, skipped): (Vec<Simd>, Vec<Simd>) =
        paths.iter().partition(|&&s| s <= cpu.min(cap));
    for &s in &allowed {
        FORCED.set(Some(s));
        check(s);
    }
    let names = |paths: &[Simd]| {
        paths
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut line = format!("{test}: ran {}", names(&allowed));
    if !skipped.is_empty() {
        let why = if cap < cpu {
            format!("REWIND_SIMD={}", cap.name())
        } else {
            "not on this CPU".to_string()
        };
        line += &format!("; skipped {} ({why})", names(&skipped));
    }
    // One write, so that the line is not split by the harness's own output.
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    // Under `REWIND_SIMD=scalar` (as CI reruns these tests) the path printed must be "scalar".
    #[test]
    fn kernel_path_is_never_wider_than_the_cpu_or_rewind_simd() {
        let path = Simd::parse(kernel_path()).expect("a path's own name parses");
        let (cpu, cap) = limits();
        assert!(
            path <= cpu && path <= cap,
            "{path:?} with cpu {cpu:?}, cap {cap:?}"
        );
        assert_eq!(path, cpu.min(cap));
    }

    #[test]
    fn rewind_simd_names_each_path() {
        assert_eq!(Simd::parse("avx512"), Some(Simd::Avx512));
        assert_eq!(Simd::parse("AVX2"), Some(Simd::Avx2));
        assert_eq!(Simd::parse(" scalar\n"), Some(Simd::Scalar));
        assert_eq!(Simd::parse("avx"), None);
        assert_eq!(Simd::parse("sse2"), None);
    }

    /// Whatever `REWIND_SIMD` this process was started with caps the path taken (CI runs the
    /// kernel tests again under `scalar` and `avx2`).
    #[test]
    fn the_environment_caps_the_path() {
        let cap = std::env::var("REWIND_SIMD")
            .ok()
            .and_then(|v| Simd::parse(&v))
            .unwrap_or(Simd::Avx512);
        assert_eq!(simd(), detected().min(cap));
        for_each_simd("the_environment_caps_the_path", &Simd::ALL, |s| {
            assert!(s <= cap);
            assert_eq!(simd(), s);
        });
    }
}
