//! Truncated conjugate gradient as Hessian-free optimisation uses it (Martens, 2010): minimise
//! the quadratic φ(x) = ½xᵀAx - bᵀx for a symmetric positive definite A known only through
//! products A·v, from a warm start, stopping on Martens' relative-progress rule, and keeping a
//! geometric selection of the iterates to backtrack over.

/// When to stop, and which iterates to keep.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The most iterations (products after the first residual).
    pub max_iterations: usize,
    /// Martens' ε: stop at iteration i once φ fell by less than a fraction k·ε of its value over
    /// the last k = max(10, ⌈i/10⌉) iterations.
    pub progress: f64,
    /// Stop once ‖b - Ax‖ ≤ this × ‖b‖: the system is solved.
    pub residual: f64,
    /// Keep the iterates i = ⌈γʲ⌉ for this γ > 1 (and always the last).
    pub keep_ratio: f64,
}

impl Default for Options {
    /// Martens' values: ε = 5·10⁻⁴, γ = 1.3; at most 50 iterations.
    fn default() -> Self {
        Options {
            max_iterations: 50,
            progress: 5e-4,
            residual: 1e-12,
            keep_ratio: 1.3,
        }
    }
}

/// Why the iteration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The residual fell below its tolerance.
    Solved,
    /// The relative-progress rule fired.
    Stalled,
    /// `max_iterations` were done.
    Limit,
    /// A direction had pᵀAp ≤ 0: A is not positive definite along it (or rounding made it so).
    Curvature,
}

/// One kept point of the iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct Iterate {
    /// Its iteration number; 0 is the starting point.
    pub iteration: usize,
    /// x_i.
    pub x: Vec<f64>,
    /// φ(x_i).
    pub value: f64,
}

/// What [`solve`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    /// The kept iterates in order, the last one last.
    pub iterates: Vec<Iterate>,
    /// Products A·v taken.
    pub products: usize,
    /// Why it ended.
    pub stop: Stop,
}

impl Solution {
    /// The last iterate.
    pub fn last(&self) -> &Iterate {
        self.iterates.last().expect("the start is always kept")
    }
}

/// Minimises φ(x) = ½xᵀAx - bᵀx (solves Ax = b) from `x0`, where `product(v)` is A·v.
///
/// φ at each iterate comes free from the residual: φ(x) = -½ xᵀ(r + b) with r = b - Ax.
pub fn solve(
    mut product: impl FnMut(&[f64]) -> Vec<f64>,
    b: &[f64],
    x0: &[f64],
    options: &Options,
) -> Solution {
    assert_eq!(
        b.len(),
        x0.len(),
        "cg: b has {} entries, x0 {}",
        b.len(),
        x0.len()
    );
    let mut x = x0.to_vec();
    let mut products = 0;
    let mut r = b.to_vec();
    if x.iter().any(|&v| v != 0.0) {
        let ax = product(&x);
        products += 1;
        r.iter_mut().zip(&ax).for_each(|(r, a)| *r -= a);
    }
    let value = |x: &[f64], r: &[f64]| {
        -0.5 * x
            .iter()
            .zip(r)
            .zip(b)
            .map(|((x, r), b)| x * (r + b))
            .sum::<f64>()
    };
    let solved = options.residual * options.residual * dot(b, b);
    let mut values = vec![value(&x, &r)];
    let mut iterates = vec![Iterate {
        iteration: 0,
        x: x.clone(),
        value: values[0],
    }];
    let mut p = r.clone();
    let mut rr = dot(&r, &r);
    let mut keep_next = 1.0f64;
    let mut stop = Stop::Limit;
    if rr <= solved {
        stop = Stop::Solved;
    }
    let mut i = 0;
    while stop == Stop::Limit && i < options.max_iterations {
        let ap = product(&p);
        products += 1;
        let pap = dot(&p, &ap);
        if pap <= 0.0 || !pap.is_finite() {
            stop = Stop::Curvature;
            break;
        }
        i += 1;
        let alpha = rr / pap;
        axpy(alpha, &p, &mut x);
        axpy(-alpha, &ap, &mut r);
        let rr_next = dot(&r, &r);
        let phi = value(&x, &r);
        values.push(phi);
        if rr_next <= solved {
            stop = Stop::Solved;
        } else if stalled(&values, options.progress) {
            stop = Stop::Stalled;
        }
        if i as f64 >= keep_next.ceil() {
            while keep_next.ceil() <= i as f64 {
                keep_next *= options.keep_ratio;
            }
            iterates.push(Iterate {
                iteration: i,
                x: x.clone(),
                value: phi,
            });
        }
        let beta = rr_next / rr;
        rr = rr_next;
        p.iter_mut().zip(&r).for_each(|(p, r)| *p = r + beta * *p);
    }
    if iterates.last().is_some_and(|it| it.iteration != i) {
        iterates.push(Iterate {
            iteration: i,
            x,
            value: values[i],
        });
    }
    Solution {
        iterates,
        products,
        stop,
    }
}

/// Martens' rule on φ(x_0), …, φ(x_i): with k = max(10, ⌈i/10⌉), stop when i > k, φ(x_i) < 0
/// and (φ(x_i) - φ(x_{i-k})) / φ(x_i) < k·ε.
fn stalled(values: &[f64], epsilon: f64) -> bool {
    let i = values.len() - 1;
    let k = 10.max(i.div_ceil(10));
    let now = values[i];
    i > k && now < 0.0 && (now - values[i - k]) / now < k as f64 * epsilon
}

/// Σ aᵢbᵢ.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// y ← y + a·x.
pub fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A = MᵀM + I for a fixed M with entries in [-1, 1]: symmetric positive definite, n × n.
    fn spd(n: usize) -> Vec<Vec<f64>> {
        let m: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| ((i * 7 + j * 13 + 3) % 11) as f64 / 5.0 - 1.0)
                    .collect()
            })
            .collect();
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        let mtm: f64 = (0..n).map(|k| m[k][i] * m[k][j]).sum();
                        mtm + if i == j { 1.0 } else { 0.0 }
                    })
                    .collect()
            })
            .collect()
    }

    fn times(a: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
        a.iter().map(|row| dot(row, v)).collect()
    }

    #[test]
    fn solves_an_spd_system_to_1e_10() {
        let a = spd(8);
        let truth: Vec<f64> = (0..8).map(|i| i as f64 - 3.5).collect();
        let b = times(&a, &truth);
        let solution = solve(|v| times(&a, v), &b, &[0.0; 8], &Options::default());
        assert_eq!(solution.stop, Stop::Solved);
        let error = solution
            .last()
            .x
            .iter()
            .zip(&truth)
            .map(|(x, t)| (x - t).abs())
            .fold(0.0, f64::max);
        assert!(error < 1e-10, "max error {error:e}");
    }

    #[test]
    fn each_kept_value_is_half_xax_minus_bx() {
        let a = spd(6);
        let b: Vec<f64> = (0..6).map(|i| (i as f64).sin()).collect();
        let x0 = vec![0.5; 6];
        let solution = solve(|v| times(&a, v), &b, &x0, &Options::default());
        for it in &solution.iterates {
            let direct = 0.5 * dot(&it.x, &times(&a, &it.x)) - dot(&b, &it.x);
            assert!(
                (it.value - direct).abs() < 1e-12,
                "iteration {}",
                it.iteration
            );
        }
    }

    #[test]
    fn keeps_the_start_the_geometric_iterates_and_the_last() {
        // A diagonal with 60 distinct eigenvalues takes 60 iterations to solve exactly, so 25 are
        // cut short by the limit; the relative-progress rule is off.
        let n = 60;
        let options = Options {
            max_iterations: 25,
            progress: 0.0,
            ..Options::default()
        };
        let solution = solve(
            |v| {
                v.iter()
                    .enumerate()
                    .map(|(i, x)| (1.0 + i as f64) * x)
                    .collect()
            },
            &vec![1.0; n],
            &vec![0.0; n],
            &options,
        );
        let kept: Vec<usize> = solution.iterates.iter().map(|it| it.iteration).collect();
        // ⌈1.3ʲ⌉ = 1, 2, 2, 3, 3, 4, 5, 7, 9, 11, 14, 18, 24, …
        assert_eq!(kept, [0, 1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 24, 25]);
        assert_eq!(solution.stop, Stop::Limit);
        assert_eq!(solution.products, 25);
    }

    #[test]
    fn relative_progress_stops_a_slow_iteration() {
        // 200 eigenvalues spread over three decades: exact CG needs 200 iterations, but φ stops
        // improving much sooner, and the rule ends the iteration there.
        let n = 200;
        let solution = solve(
            |v| {
                v.iter()
                    .enumerate()
                    .map(|(i, x)| 10f64.powf(3.0 * i as f64 / n as f64) * x)
                    .collect()
            },
            &vec![1.0; n],
            &vec![0.0; n],
            &Options {
                max_iterations: n,
                ..Options::default()
            },
        );
        assert_eq!(solution.stop, Stop::Stalled);
        assert!(solution.last().iteration < n / 2);
        let values: Vec<f64> = solution.iterates.iter().map(|it| it.value).collect();
        assert!(
            values.windows(2).all(|w| w[1] < w[0]),
            "φ falls at every kept iterate: {values:?}"
        );
    }

    #[test]
    fn a_start_at_the_solution_takes_one_product() {
        let a = spd(5);
        let truth = vec![1.0, -2.0, 0.5, 3.0, 0.0];
        let b = times(&a, &truth);
        let solution = solve(|v| times(&a, v), &b, &truth, &Options::default());
        assert_eq!((solution.stop, solution.products), (Stop::Solved, 1));
        assert_eq!(solution.last().iteration, 0);
    }
}
