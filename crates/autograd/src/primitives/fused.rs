//! The fused recurrent cells: an LSTM step in two halves and a GRU step, each one op over the
//! gates, keeping its activations for backward. Backward runs the kernels in
//! [`kernels::cells`](crate::kernels::cells); the recorded derivative recomputes the activations
//! from the gates with tape ops, so that they too are differentiated.

use super::{Nodes, Op, Sink};
use crate::float::Float;
use crate::grad_graph::GraphSink;
use crate::kernels::{cells, pool};
use crate::recycle;
use crate::shape::Shape;
use crate::tape::Var;
use crate::tensor::Tensor;
use crate::var_methods::concat;

/// A fused cell.
#[derive(Clone)]
pub(crate) enum Fused<F: Float> {
    /// LSTM, first half: c' = σ(f)⊙c + σ(i)⊙tanh(g) from `gates` [B, 4H] (blocks i f g o) and `c`
    /// [B, H]. `acts` keeps the activated gates, for backward and for `LstmHidden`.
    LstmCell {
        gates: usize,
        c: usize,
        acts: Tensor<F>,
    },
    /// LSTM, second half: h' = σ(o)⊙tanh(c'), from the `LstmCell` node `cell` (c' and σ(o)).
    LstmHidden {
        cell: usize,
        gates: usize,
        tanh_c: Tensor<F>,
    },
    /// GRU: h' = n + z⊙(h - n) from the projections `xp` = x W_ihᵀ + b_ih and
    /// `hp` = h W_hhᵀ + b_hh [B, 3H] (blocks r z n) and `h` [B, H]; `acts` keeps r, z, n.
    GruCell {
        xp: usize,
        hp: usize,
        h: usize,
        acts: Tensor<F>,
    },
}

/// The activated gates an `LstmCell` node keeps.
fn lstm_acts<F: Float>(nodes: &Nodes<F>, cell: usize) -> &[F] {
    match &nodes[cell].op {
        Op::Fused(Fused::LstmCell { acts, .. }) => acts.data(),
        _ => unreachable!("an LstmHidden node reads an LstmCell node"),
    }
}

impl<F: Float> Fused<F> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Fused::LstmCell { .. } => "lstm_cell (c')",
            Fused::LstmHidden { .. } => "lstm_cell (h')",
            Fused::GruCell { .. } => "gru_cell",
        }
    }

    inputs_of!(|op| match op {
        Fused::LstmCell { gates, c, .. } => [gates, c].into_iter().collect(),
        Fused::LstmHidden { cell, gates, .. } => [cell, gates].into_iter().collect(),
        Fused::GruCell { xp, hp, h, .. } => [xp, hp, h].into_iter().collect(),
    });

    /// Bytes of the activations kept for backward.
    pub(crate) fn saved_bytes(&self) -> usize {
        match self {
            Fused::LstmCell { acts, .. } | Fused::GruCell { acts, .. } => acts.nbytes(),
            Fused::LstmHidden { tanh_c, .. } => tanh_c.nbytes(),
        }
    }

    /// Drops the activations kept for backward; forward keeps them again.
    pub(crate) fn forget_saved(&mut self) {
        match self {
            Fused::LstmCell { acts, .. } | Fused::GruCell { acts, .. } => {
                *acts = Tensor::zeros(&[0])
            }
            Fused::LstmHidden { tanh_c, .. } => *tanh_c = Tensor::zeros(&[0]),
        }
    }

    /// Computes the value and keeps the activations backward reads. The cell kernels write every
    /// element of their outputs, a band of rows on each thread.
    pub(crate) fn forward(&mut self, nodes: &Nodes<F>) -> Tensor<F> {
        let val = |i: usize| nodes[i].value();
        match self {
            Fused::LstmCell { gates, c, acts } => {
                let (vg, vc) = (val(*gates), val(*c));
                let mut a = recycle::overwritten(vg.numel());
                let mut c_next = recycle::overwritten(vc.numel());
                let (rows, h) = (vc.shape()[0], vc.shape()[1]);
                let (g, c) = (vg.data(), vc.data());
                pool::row_bands(rows, 4 * h, [&mut a, &mut c_next], |r, [a, c_next]| {
                    let (g, c) = (&g[r * 4 * h..][..a.len()], &c[r * h..][..c_next.len()]);
                    cells::lstm_cell(h, g, c, a, c_next);
                });
                *acts = Tensor::new_unchecked(Shape::from_slice(vg.shape()), a);
                Tensor::new_unchecked(Shape::from_slice(vc.shape()), c_next)
            }
            Fused::LstmHidden { cell, tanh_c, .. } => {
                let c_next = val(*cell);
                let mut tc = recycle::overwritten(c_next.numel());
                let mut h_next = recycle::overwritten(c_next.numel());
                let (rows, h) = (c_next.shape()[0], c_next.shape()[1]);
                let (acts, c) = (lstm_acts(nodes, *cell), c_next.data());
                pool::row_bands(rows, h, [&mut tc, &mut h_next], |r, [tc, h_next]| {
                    let (a, c) = (&acts[r * 4 * h..][..4 * tc.len()], &c[r * h..][..tc.len()]);
                    cells::lstm_hidden(h, a, c, tc, h_next);
                });
                let shape = Shape::from_slice(c_next.shape());
                *tanh_c = Tensor::new_unchecked(shape.clone(), tc);
                Tensor::new_unchecked(shape, h_next)
            }
            Fused::GruCell { xp, hp, h, acts } => {
                let (vx, vh) = (val(*xp), val(*h));
                let mut a = recycle::overwritten(vx.numel());
                let mut h_next = recycle::overwritten(vh.numel());
                let (rows, hs) = (vh.shape()[0], vh.shape()[1]);
                let (x, hp, h) = (vx.data(), val(*hp).data(), vh.data());
                pool::row_bands(rows, 3 * hs, [&mut a, &mut h_next], |r, [a, h_next]| {
                    let (x, hp) = (&x[r * 3 * hs..][..a.len()], &hp[r * 3 * hs..][..a.len()]);
                    cells::gru_cell(hs, x, hp, &h[r * hs..][..h_next.len()], a, h_next);
                });
                *acts = Tensor::new_unchecked(Shape::from_slice(vx.shape()), a);
                Tensor::new_unchecked(Shape::from_slice(vh.shape()), h_next)
            }
        }
    }

    /// Adds the inputs' gradients into `sink`, given `g` = ∂L/∂(node `me`'s value). Rows are
    /// independent: the gate gradients run in bands of rows, as forward does.
    pub(crate) fn backward(
        &self,
        me: usize,
        g: &Tensor<F>,
        nodes: &Nodes<F>,
        sink: &mut impl Sink<F>,
    ) {
        let out = &nodes[me].shape;
        let gd = g.data();
        match self {
            // With i f g o the activated gates (`acts`), c' = f⊙c + i⊙g, and "pre" the gate
            // before its activation: d(i pre) = dc'⊙g⊙i(1 - i), d(f pre) = dc'⊙c⊙f(1 - f),
            // d(g pre) = dc'⊙i⊙(1 - g²), dc = dc'⊙f. kernels::cells runs each input's in one
            // pass.
            Fused::LstmCell { gates, c, acts } => {
                let (rows, h) = (nodes[*c].shape[0], nodes[*c].shape[1]);
                let (a, cv) = (acts.data(), nodes[*c].value().data());
                if let Some(dg) = sink.acc(*gates) {
                    pool::row_bands(rows, 4 * h, [dg], |r, [dg]| {
                        let (g, c) = (&gd[r * h..], &cv[r * h..]);
                        cells::lstm_cell_dgates(h, g, &a[r * 4 * h..], c, dg);
                    });
                }
                // One multiply per element: not worth a hand-off.
                if let Some(dc) = sink.acc(*c) {
                    cells::lstm_cell_dc(h, gd, a, dc);
                }
            }
            // h' = o⊙tanh(c'): d(o pre) = dh'⊙tanh(c')⊙o(1 - o), dc' = dh'⊙o⊙(1 - tanh²(c')).
            Fused::LstmHidden {
                cell,
                gates,
                tanh_c,
            } => {
                let (rows, h) = (out[0], out[1]);
                let (a, tc) = (lstm_acts(nodes, *cell), tanh_c.data());
                // Only the o block's h columns a row.
                if let Some(dg) = sink.acc(*gates) {
                    pool::row_bands(rows, h, [dg], |r, [dg]| {
                        let (g, tc) = (&gd[r * h..], &tc[r * h..]);
                        cells::lstm_hidden_dgates(h, g, &a[r * 4 * h..], tc, dg);
                    });
                }
                if let Some(dc) = sink.acc(*cell) {
                    cells::lstm_hidden_dc(h, gd, a, tc, dc);
                }
            }
            // With r z n the activated gates (`acts`) and h' = n + z⊙(h - n):
            // d(n pre) = dh'⊙(1 - z)⊙(1 - n²), d(z pre) = dh'⊙(h - n)⊙z(1 - z),
            // d(r pre) = d(n pre)⊙h_n⊙r(1 - r). Each pre-activation is x_k + h_k, but n's is
            // x_n + r⊙h_n: dxp = d(pre), dhp = d(pre) with its n block times r; dh = dh'⊙z.
            Fused::GruCell { xp, hp, h, acts } => {
                let (rows, hs, a) = (out[0], out[1], acts.data());
                let (hpv, hv) = (nodes[*hp].value().data(), nodes[*h].value().data());
                let mut dxp = recycle::overwritten(a.len());
                pool::row_bands(rows, 3 * hs, [&mut dxp[..]], |r, [d]| {
                    let (g, a, hp) = (&gd[r * hs..], &a[r * 3 * hs..], &hpv[r * 3 * hs..]);
                    cells::gru_dxp(hs, g, a, hp, &hv[r * hs..], d);
                });
                if let Some(d) = sink.acc(*hp) {
                    pool::row_bands(rows, 3 * hs, [d], |r, [d]| {
                        let w = 3 * hs;
                        cells::gru_dhp(hs, &dxp[r * w..], &a[r * w..], d);
                    });
                }
                // One multiply per element: not worth a hand-off.
                if let Some(d) = sink.acc(*h) {
                    cells::gru_dh(hs, gd, a, d);
                }
                sink.add(*xp, Tensor::new_unchecked(nodes[*xp].shape.clone(), dxp));
            }
        }
    }

    /// [`backward`](Fused::backward)'s equations recorded with tape ops, the activations
    /// recomputed from the gates' pre-activations.
    pub(crate) fn derivative<'t>(&self, sink: &mut GraphSink<'t, F>, g: Var<'t, F>) {
        let one_minus = |v: Var<'t, F>| v.affine(-F::ONE, F::ONE);
        match self {
            Fused::LstmCell { gates, c, .. } => {
                let (pre, vc) = (sink.var(*gates), sink.var(*c));
                let h = vc.shape()[1];
                let block = |k: usize| pre.narrow(1, k * h, h);
                let (i, f, gg) = (block(0).sigmoid(), block(1).sigmoid(), block(2).tanh());
                if sink.needs(*gates) {
                    sink.add_window(*gates, 1, 0, g * gg * i * one_minus(i));
                    sink.add_window(*gates, 1, h, g * vc * f * one_minus(f));
                    sink.add_window(*gates, 1, 2 * h, g * i * one_minus(gg * gg));
                }
                if sink.needs(*c) {
                    sink.add(*c, g * f);
                }
            }
            Fused::LstmHidden { cell, gates, .. } => {
                let h = sink.var(*cell).shape()[1];
                let o = sink.var(*gates).narrow(1, 3 * h, h).sigmoid();
                let tc = sink.var(*cell).tanh();
                if sink.needs(*gates) {
                    sink.add_window(*gates, 1, 3 * h, g * tc * o * one_minus(o));
                }
                if sink.needs(*cell) {
                    sink.add(*cell, g * o * one_minus(tc * tc));
                }
            }
            // r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r⊙h_n), h' = n + z⊙(h - n).
            Fused::GruCell { xp, hp, h, .. } => {
                let (vx, vhp, vh) = (sink.var(*xp), sink.var(*hp), sink.var(*h));
                let hs = vh.shape()[1];
                let blocks = |v: Var<'t, F>| [0, 1, 2].map(|k| v.narrow(1, k * hs, hs));
                let ([xr, xz, xn], [hr, hz, hn]) = (blocks(vx), blocks(vhp));
                let (r, z) = ((xr + hr).sigmoid(), (xz + hz).sigmoid());
                let n = (xn + r * hn).tanh();
                let dn = g * one_minus(z) * one_minus(n * n);
                let dz = g * (vh - n) * z * one_minus(z);
                let dr = dn * hn * r * one_minus(r);
                if sink.needs(*xp) {
                    sink.add(*xp, concat(&[dr, dz, dn], 1));
                }
                if sink.needs(*hp) {
                    sink.add(*hp, concat(&[dr, dz, dn * r], 1));
                }
                if sink.needs(*h) {
                    sink.add(*h, g * z);
                }
            }
        }
    }
}
