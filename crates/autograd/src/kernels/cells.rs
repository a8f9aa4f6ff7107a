//! The element-wise halves of an LSTM and a GRU step, fused: one pass over the gates forward and
//! one backward, instead of a dozen ops that each write a tensor.
//!
//! Rows are batch entries; a gates row holds the gate blocks side by side, H values each.
//! With H = 0 every slice is empty, and each kernel returns at once (its rows of 0 columns
//! could not be chunked).

use crate::float::Float;
use crate::kernels::activation::{self, avx2_copy};
use crate::recycle;

/// σ'(x) from y = σ(x).
#[inline(always)]
fn dsigmoid<F: Float>(y: F) -> F {
    y * (F::ONE - y)
}

/// tanh'(x) from y = tanh(x).
#[inline(always)]
fn dtanh<F: Float>(y: F) -> F {
    F::ONE - y * y
}

avx2_copy! {
    /// LSTM, first half: from `gates` [B, 4H] (i f g o) and `c` [B, H], writes the activated gates
    /// `acts` = [σ(i) σ(f) tanh(g) σ(o)] and `c_next` = σ(f)⊙c + σ(i)⊙tanh(g).
    pub(crate) fn lstm_cell<F: Float>(
        h: usize,
        gates: &[F],
        c: &[F],
        acts: &mut [F],
        c_next: &mut [F],
    ) {
        if h == 0 {
            return;
        }
        let rows = gates.chunks_exact(4 * h).zip(acts.chunks_exact_mut(4 * h));
        for ((pre, act), (c, cn)) in rows.zip(c.chunks_exact(h).zip(c_next.chunks_exact_mut(h))) {
            activation::sigmoid(&pre[..2 * h], &mut act[..2 * h]);
            activation::tanh(&pre[2 * h..3 * h], &mut act[2 * h..3 * h]);
            activation::sigmoid(&pre[3 * h..], &mut act[3 * h..]);
            let (i, f, g) = (&act[..h], &act[h..2 * h], &act[2 * h..3 * h]);
            for ((out, &c), ((&i, &f), &g)) in cn.iter_mut().zip(c).zip(i.iter().zip(f).zip(g)) {
                *out = f * c + i * g;
            }
        }
    }
}

avx2_copy! {
    /// LSTM, second half: `tanh_c` = tanh(c'), `h_next` = σ(o)⊙tanh(c'), with σ(o) read from `acts`.
    pub(crate) fn lstm_hidden<F: Float>(
        h: usize,
        acts: &[F],
        c_next: &[F],
        tanh_c: &mut [F],
        h_next: &mut [F],
    ) {
        if h == 0 {
            return;
        }
        activation::tanh(c_next, tanh_c);
        let rows = acts.chunks_exact(4 * h).zip(tanh_c.chunks_exact(h));
        for ((act, tc), out) in rows.zip(h_next.chunks_exact_mut(h)) {
            for ((out, &o), &tc) in out.iter_mut().zip(&act[3 * h..]).zip(tc) {
                *out = o * tc;
            }
        }
    }
}

avx2_copy! {
    /// Backward of [`lstm_hidden`] given `g` = ∂L/∂h': adds ∂L/∂o (pre-activation) into the o block of
    /// `d_gates` [B, 4H] and returns nothing else; [`lstm_hidden_dc`] gives ∂L/∂c'.
    pub(crate) fn lstm_hidden_dgates<F: Float>(
        h: usize,
        g: &[F],
        acts: &[F],
        tanh_c: &[F],
        d_gates: &mut [F],
    ) {
        if h == 0 {
            return;
        }
        let rows = acts
            .chunks_exact(4 * h)
            .zip(d_gates.chunks_exact_mut(4 * h));
        for ((act, dg), (g, tc)) in rows.zip(g.chunks_exact(h).zip(tanh_c.chunks_exact(h))) {
            // dh'/do = tanh(c')
            for ((d, &o), (&g, &tc)) in dg[3 * h..]
                .iter_mut()
                .zip(&act[3 * h..])
                .zip(g.iter().zip(tc))
            {
                *d += g * tc * dsigmoid(o);
            }
        }
    }
}

avx2_copy! {
    /// Backward of [`lstm_hidden`]: adds ∂L/∂c' = g⊙σ(o)⊙(1 - tanh²(c')) into `d_c_next` [B, H].
    pub(crate) fn lstm_hidden_dc<F: Float>(
        h: usize,
        g: &[F],
        acts: &[F],
        tanh_c: &[F],
        d_c_next: &mut [F],
    ) {
        if h == 0 {
            return;
        }
        let rows = acts.chunks_exact(4 * h).zip(d_c_next.chunks_exact_mut(h));
        for ((act, dc), (g, tc)) in rows.zip(g.chunks_exact(h).zip(tanh_c.chunks_exact(h))) {
            for ((d, &o), (&g, &tc)) in dc.iter_mut().zip(&act[3 * h..]).zip(g.iter().zip(tc)) {
                *d += g * o * dtanh(tc);
            }
        }
    }
}

avx2_copy! {
    /// Backward of [`lstm_cell`] given `g` = ∂L/∂c': adds ∂L/∂(i f g) (pre-activation) into the first
    /// three blocks of `d_gates` [B, 4H].
    pub(crate) fn lstm_cell_dgates<F: Float>(
        h: usize,
        g: &[F],
        acts: &[F],
        c: &[F],
        d_gates: &mut [F],
    ) {
        if h == 0 {
            return;
        }
        let rows = acts
            .chunks_exact(4 * h)
            .zip(d_gates.chunks_exact_mut(4 * h));
        for ((act, dg), (g, c)) in rows.zip(g.chunks_exact(h).zip(c.chunks_exact(h))) {
            let (i, f, gg) = (&act[..h], &act[h..2 * h], &act[2 * h..3 * h]);
            let (di, rest) = dg.split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let dgg = &mut rest[..h];
            // ∂c'/∂i = tanh(g), ∂c'/∂f = c, ∂c'/∂tanh(g) = σ(i)
            for ((d, &i), (&g, &gg)) in di.iter_mut().zip(i).zip(g.iter().zip(gg)) {
                *d += g * gg * dsigmoid(i);
            }
            for ((d, &f), (&g, &c)) in df.iter_mut().zip(f).zip(g.iter().zip(c)) {
                *d += g * c * dsigmoid(f);
            }
            for ((d, &gg), (&g, &i)) in dgg.iter_mut().zip(gg).zip(g.iter().zip(i)) {
                *d += g * i * dtanh(gg);
            }
        }
    }
}

avx2_copy! {
    /// Backward of [`lstm_cell`]: adds ∂L/∂c = g⊙σ(f) into `d_c` [B, H].
    pub(crate) fn lstm_cell_dc<F: Float>(h: usize, g: &[F], acts: &[F], d_c: &mut [F]) {
        if h == 0 {
            return;
        }
        let rows = acts.chunks_exact(4 * h).zip(d_c.chunks_exact_mut(h));
        for ((act, dc), g) in rows.zip(g.chunks_exact(h)) {
            for ((d, &f), &g) in dc.iter_mut().zip(&act[h..2 * h]).zip(g) {
                *d += g * f;
            }
        }
    }
}

avx2_copy! {
    /// GRU: from the input projection `xp` [B, 3H] and hidden projection `hp` [B, 3H] (r z n blocks,
    /// each with its bias) and the state `h` [B, H], writes `acts` = [r z n] and
    /// `h_next` = n + z⊙(h - n), where r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r⊙h_n).
    pub(crate) fn gru_cell<F: Float>(
        hs: usize,
        xp: &[F],
        hp: &[F],
        h: &[F],
        acts: &mut [F],
        h_next: &mut [F],
    ) {
        if hs == 0 {
            return;
        }
        let rows = xp.chunks_exact(3 * hs).zip(hp.chunks_exact(3 * hs));
        let outs = acts
            .chunks_exact_mut(3 * hs)
            .zip(h_next.chunks_exact_mut(hs));
        let mut pre = recycle::scratch(2 * hs, F::ZERO);
        for (((x, hp), (act, out)), h) in rows.zip(outs).zip(h.chunks_exact(hs)) {
            let (rz, n) = act.split_at_mut(2 * hs);
            for ((p, &x), &y) in pre.iter_mut().zip(&x[..2 * hs]).zip(&hp[..2 * hs]) {
                *p = x + y;
            }
            activation::sigmoid(&pre, rz);
            let (r, z) = rz.split_at(hs);
            let pn = &mut pre[..hs];
            for ((p, &x), (&r, &y)) in pn
                .iter_mut()
                .zip(&x[2 * hs..])
                .zip(r.iter().zip(&hp[2 * hs..]))
            {
                *p = x + r * y;
            }
            activation::tanh(pn, n);
            for ((out, &n), (&z, &h)) in out.iter_mut().zip(&*n).zip(z.iter().zip(h)) {
                *out = n + z * (h - n);
            }
        }
    }
}

avx2_copy! {
    /// Backward of [`gru_cell`] given `g` = ∂L/∂h': writes ∂L/∂xp [B, 3H] (each gate's
    /// pre-activation gradient) into every element of `d`; ∂L/∂hp equals it with the n block
    /// multiplied by r ([`gru_dhp`]), and ∂L/∂h = g⊙z ([`gru_dh`]).
    pub(crate) fn gru_dxp<F: Float>(hs: usize, g: &[F], acts: &[F], hp: &[F], h: &[F], d: &mut [F]) {
        if hs == 0 {
            return;
        }
        let rows = acts.chunks_exact(3 * hs).zip(hp.chunks_exact(3 * hs));
        let ins = g.chunks_exact(hs).zip(h.chunks_exact(hs));
        for (((act, hp), d), (g, h)) in rows.zip(d.chunks_exact_mut(3 * hs)).zip(ins) {
            let (r, z, n) = (&act[..hs], &act[hs..2 * hs], &act[2 * hs..]);
            let (dr, rest) = d.split_at_mut(hs);
            let (dz, dn) = rest.split_at_mut(hs);
            // h' = n + z⊙(h - n): ∂h'/∂n = 1 - z, ∂h'/∂z = h - n; n = tanh(·): × (1 - n²)
            for ((dn, &n), (&z, &g)) in dn.iter_mut().zip(n).zip(z.iter().zip(g)) {
                *dn = g * (F::ONE - z) * dtanh(n);
            }
            for ((dz, &z), ((&n, &h), &g)) in dz.iter_mut().zip(z).zip(n.iter().zip(h).zip(g)) {
                *dz = g * (h - n) * dsigmoid(z);
            }
            // n's pre-activation has r⊙h_n: ∂/∂r = h_n
            for ((dr, &r), (&dn, &hn)) in dr.iter_mut().zip(r).zip(dn.iter().zip(&hp[2 * hs..])) {
                *dr = dn * hn * dsigmoid(r);
            }
        }
    }
}

avx2_copy! {
    /// ∂L/∂hp from ∂L/∂xp: the r and z blocks are the same, the n block is multiplied by r.
    pub(crate) fn gru_dhp<F: Float>(hs: usize, dxp: &[F], acts: &[F], d_hp: &mut [F]) {
        if hs == 0 {
            return;
        }
        let rows = dxp.chunks_exact(3 * hs).zip(acts.chunks_exact(3 * hs));
        for ((dx, act), d) in rows.zip(d_hp.chunks_exact_mut(3 * hs)) {
            for (d, &dx) in d[..2 * hs].iter_mut().zip(&dx[..2 * hs]) {
                *d += dx;
            }
            for ((d, &dn), &r) in d[2 * hs..].iter_mut().zip(&dx[2 * hs..]).zip(&act[..hs]) {
                *d += dn * r;
            }
        }
    }
}

avx2_copy! {
    /// ∂L/∂h += g⊙z.
    pub(crate) fn gru_dh<F: Float>(hs: usize, g: &[F], acts: &[F], d_h: &mut [F]) {
        if hs == 0 {
            return;
        }
        let rows = acts.chunks_exact(3 * hs).zip(d_h.chunks_exact_mut(hs));
        for ((act, d), g) in rows.zip(g.chunks_exact(hs)) {
            for ((d, &z), &g) in d.iter_mut().zip(&act[hs..2 * hs]).zip(g) {
                *d += g * z;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::{for_each_simd, Simd};
    use crate::tensor::zeroed;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Batch and hidden size: 19 leaves a ragged tail after every vector width.
    const B: usize = 3;
    const H: usize = 19;

    /// One LSTM step's and one GRU step's inputs, and the gradients the backward kernels add to.
    struct Inputs<F> {
        gates: Vec<F>,
        c: Vec<F>,
        g: Vec<F>,
        d_gates: Vec<F>,
        d_c_next: Vec<F>,
        d_c: Vec<F>,
        xp: Vec<F>,
        hp: Vec<F>,
        h: Vec<F>,
        d_hp: Vec<F>,
        d_h: Vec<F>,
    }

    fn inputs<F: Float>() -> Inputs<F> {
        let mut rng = StdRng::seed_from_u64(5);
        let mut rand = |len: usize| -> Vec<F> {
            (0..len)
                .map(|_| F::from_f64(rng.random_range(-3.0..3.0)))
                .collect()
        };
        Inputs {
            gates: rand(B * 4 * H),
            c: rand(B * H),
            g: rand(B * H),
            d_gates: rand(B * 4 * H),
            d_c_next: rand(B * H),
            d_c: rand(B * H),
            xp: rand(B * 3 * H),
            hp: rand(B * 3 * H),
            h: rand(B * H),
            d_hp: rand(B * 3 * H),
            d_h: rand(B * H),
        }
    }

    /// Every output of every kernel, forward and backward: LSTM acts, c', tanh c', h', ∂gates,
    /// ∂c', ∂c, then GRU acts, h', ∂xp, ∂hp, ∂h.
    fn every_output<F: Float>(x: &Inputs<F>) -> Vec<Vec<F>> {
        let (mut acts, mut c_next) = (zeroed(B * 4 * H), zeroed(B * H));
        lstm_cell(H, &x.gates, &x.c, &mut acts, &mut c_next);
        let (mut tanh_c, mut h_next) = (zeroed(B * H), zeroed(B * H));
        lstm_hidden(H, &acts, &c_next, &mut tanh_c, &mut h_next);
        let (mut d_gates, mut d_c_next, mut d_c) =
            (x.d_gates.clone(), x.d_c_next.clone(), x.d_c.clone());
        lstm_hidden_dgates(H, &x.g, &acts, &tanh_c, &mut d_gates);
        lstm_hidden_dc(H, &x.g, &acts, &tanh_c, &mut d_c_next);
        lstm_cell_dgates(H, &x.g, &acts, &x.c, &mut d_gates);
        lstm_cell_dc(H, &x.g, &acts, &mut d_c);

        let (mut gru_acts, mut gru_h_next) = (zeroed(B * 3 * H), zeroed(B * H));
        gru_cell(H, &x.xp, &x.hp, &x.h, &mut gru_acts, &mut gru_h_next);
        let mut dxp = zeroed(B * 3 * H);
        gru_dxp(H, &x.g, &gru_acts, &x.hp, &x.h, &mut dxp);
        let (mut d_hp, mut d_h) = (x.d_hp.clone(), x.d_h.clone());
        gru_dhp(H, &dxp, &gru_acts, &mut d_hp);
        gru_dh(H, &x.g, &gru_acts, &mut d_h);

        let lstm = [acts, c_next, tanh_c, h_next, d_gates, d_c_next, d_c];
        let gru = [gru_acts, gru_h_next, dxp, d_hp, d_h];
        lstm.into_iter().chain(gru).collect()
    }

    /// c', h' of the LSTM and h' of the GRU against their equations, evaluated in f64.
    fn check_forward<F: Float>(x: &Inputs<F>, out: &[Vec<F>], tol: f64) {
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let close = |got: F, want: f64, what: &str| {
            assert!(
                (got.to_f64() - want).abs() <= tol,
                "{what}: {got} vs {want}"
            );
        };
        for (b, j) in (0..B).flat_map(|b| (0..H).map(move |j| (b, j))) {
            let gate = |q: usize| x.gates[b * 4 * H + q * H + j].to_f64();
            let c_next =
                sigmoid(gate(1)) * x.c[b * H + j].to_f64() + sigmoid(gate(0)) * gate(2).tanh();
            close(out[1][b * H + j], c_next, "LSTM c'");
            close(
                out[3][b * H + j],
                sigmoid(gate(3)) * c_next.tanh(),
                "LSTM h'",
            );

            let xp = |q: usize| x.xp[b * 3 * H + q * H + j].to_f64();
            let hp = |q: usize| x.hp[b * 3 * H + q * H + j].to_f64();
            let (r, z) = (sigmoid(xp(0) + hp(0)), sigmoid(xp(1) + hp(1)));
            let n = (xp(2) + r * hp(2)).tanh();
            close(
                out[8][b * H + j],
                n + z * (x.h[b * H + j].to_f64() - n),
                "GRU h'",
            );
        }
    }

    fn bits<F: Float>(v: &[F]) -> Vec<u64> {
        v.iter().map(|x| x.to_f64().to_bits()).collect()
    }

    /// Each path the CPU allows computes, bit for bit, what the scalar path computes, in f32 and
    /// f64; the scalar path's forward values follow the equations.
    #[test]
    fn every_path_of_the_cell_kernels_equals_the_scalar_path() {
        let (x32, x64) = (inputs::<f32>(), inputs::<f64>());
        let mut runs = Vec::new();
        for_each_simd(
            "every_path_of_the_cell_kernels_equals_the_scalar_path",
            &[Simd::Avx2, Simd::Scalar],
            |s| {
                runs.push((s, every_output(&x32), every_output(&x64)));
            },
        );
        let (scalar, out32, out64) = runs.pop().expect("the scalar path always runs");
        assert_eq!(scalar, Simd::Scalar);
        check_forward(&x32, &out32, 1e-6);
        check_forward(&x64, &out64, 1e-14);
        for (s, got32, got64) in &runs {
            for (k, (got, want)) in got32.iter().zip(&out32).enumerate() {
                assert_eq!(bits(got), bits(want), "f32 output {k} on {s:?}");
            }
            for (k, (got, want)) in got64.iter().zip(&out64).enumerate() {
                assert_eq!(bits(got), bits(want), "f64 output {k} on {s:?}");
            }
        }
    }
}
