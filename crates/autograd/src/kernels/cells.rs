//! The element-wise halves of an LSTM and a GRU step, fused: one pass over the gates forward and
//! one backward, instead of a dozen ops that each write a tensor.
//!
//! Rows are batch entries; a gates row holds the gate blocks side by side, H values each.

use crate::float::Float;
use crate::kernels::activation::avx2_copy;
use crate::kernels::zeroed;

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
        let rows = gates.chunks_exact(4 * h).zip(acts.chunks_exact_mut(4 * h));
        for ((pre, act), (c, cn)) in rows.zip(c.chunks_exact(h).zip(c_next.chunks_exact_mut(h))) {
            F::sigmoid_slice(&pre[..2 * h], &mut act[..2 * h]);
            F::tanh_slice(&pre[2 * h..3 * h], &mut act[2 * h..3 * h]);
            F::sigmoid_slice(&pre[3 * h..], &mut act[3 * h..]);
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
        F::tanh_slice(c_next, tanh_c);
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
        let rows = xp.chunks_exact(3 * hs).zip(hp.chunks_exact(3 * hs));
        let outs = acts
            .chunks_exact_mut(3 * hs)
            .zip(h_next.chunks_exact_mut(hs));
        let mut pre = zeroed(2 * hs);
        for (((x, hp), (act, out)), h) in rows.zip(outs).zip(h.chunks_exact(hs)) {
            let (rz, n) = act.split_at_mut(2 * hs);
            for ((p, &x), &y) in pre.iter_mut().zip(&x[..2 * hs]).zip(&hp[..2 * hs]) {
                *p = x + y;
            }
            F::sigmoid_slice(&pre, rz);
            let (r, z) = rz.split_at(hs);
            let pn = &mut pre[..hs];
            for ((p, &x), (&r, &y)) in pn
                .iter_mut()
                .zip(&x[2 * hs..])
                .zip(r.iter().zip(&hp[2 * hs..]))
            {
                *p = x + r * y;
            }
            F::tanh_slice(pn, n);
            for ((out, &n), (&z, &h)) in out.iter_mut().zip(&*n).zip(z.iter().zip(h)) {
                *out = n + z * (h - n);
            }
        }
    }
}

avx2_copy! {
    /// Backward of [`gru_cell`] given `g` = ∂L/∂h': returns ∂L/∂xp [B, 3H] (each gate's
    /// pre-activation gradient); ∂L/∂hp equals it with the n block multiplied by r
    /// ([`gru_dhp`]), and ∂L/∂h = g⊙z ([`gru_dh`]).
    pub(crate) fn gru_dxp<F: Float>(hs: usize, g: &[F], acts: &[F], hp: &[F], h: &[F]) -> Vec<F> {
        let mut d = zeroed(acts.len());
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
        d
    }
}

avx2_copy! {
    /// ∂L/∂hp from ∂L/∂xp: the r and z blocks are the same, the n block is multiplied by r.
    pub(crate) fn gru_dhp<F: Float>(hs: usize, dxp: &[F], acts: &[F], d_hp: &mut [F]) {
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
        let rows = acts.chunks_exact(3 * hs).zip(d_h.chunks_exact_mut(hs));
        for ((act, d), g) in rows.zip(g.chunks_exact(hs)) {
            for ((d, &z), &g) in d.iter_mut().zip(&act[hs..2 * hs]).zip(g) {
                *d += g * z;
            }
        }
    }
}
