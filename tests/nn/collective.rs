//! The collective layer between threads (`rewind::nn::collective`), and a data-parallel run
//! across its ranks: N ranks × B/N lanes give the updates of one process over all B lanes.

use std::thread;
use std::time::{Duration, Instant};

use rewind::autograd::Param;
use rewind::nn::collective::{broadcast_params, Collective, CollectiveError, ThreadRank, Threads};
use rewind::nn::{Bptt, Carry, LstmCell, Module, Strategy, Stream};
use rewind::optim::{clip_grad_norm, Adam, Optimizer};

use crate::bptt_driver::{Tiny, VOCAB};

/// Runs `body(rank)` on one thread per rank of a group of `size` and returns what each gave, in
/// rank order.
fn on_ranks<T: Send>(
    size: usize,
    timeout: Duration,
    body: impl Fn(ThreadRank) -> T + Sync,
) -> Vec<T> {
    let ranks = Threads::group(size, timeout);
    thread::scope(|s| {
        let handles: Vec<_> = ranks
            .into_iter()
            .map(|rank| s.spawn(|| body(rank)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

const PATIENT: Duration = Duration::from_secs(60);

/// Values whose f32 sum depends on the order they are added in (1e8 absorbs a 1 added after it,
/// not one added before), so that a sum out of rank order shows.
fn values_of(rank: usize) -> Vec<f32> {
    vec![
        [1e8, 1.0, -1e8, 3.0, 0.5][rank % 5],
        rank as f32 * 0.25 - 1.0,
        (rank as f32 + 1.0).recip(),
    ]
}

/// An all-reduce leaves the sum in rank order (rank 0's values, plus rank 1's, …) on every rank,
/// bit for bit, in f32 and f64, with more ranks than cores; a broadcast copies the root's values;
/// a scalar all-reduce sums scalars.
#[test]
fn an_all_reduce_is_the_sum_in_rank_order_on_every_rank() {
    for size in [1, 2, 3, 5] {
        let mut want = values_of(0);
        for r in 1..size {
            want.iter_mut().zip(values_of(r)).for_each(|(w, v)| *w += v);
        }
        let got = on_ranks(size, PATIENT, |rank| {
            let mut v = values_of(rank.rank());
            rank.all_reduce_f32(&mut v).unwrap();
            let mut w: Vec<f64> = values_of(rank.rank()).iter().map(|&x| x as f64).collect();
            rank.all_reduce_f64(&mut w).unwrap();
            let mut b = vec![rank.rank() as f64; 4];
            rank.broadcast_f64(&mut b, size - 1).unwrap();
            let s = rank.all_reduce_scalar(rank.rank() as f64 + 1.0).unwrap();
            (v, w, b, s)
        });
        for (r, (v, w, b, s)) in got.iter().enumerate() {
            assert_eq!(v, &want, "{size} ranks: rank {r}'s f32 sum");
            let want64: f64 = (0..size).map(|q| values_of(q)[1] as f64).sum();
            assert_eq!(w[1], want64, "{size} ranks: rank {r}'s f64 sum");
            assert_eq!(
                b,
                &vec![(size - 1) as f64; 4],
                "{size} ranks: rank {r}'s broadcast"
            );
            assert_eq!(*s, (size * (size + 1) / 2) as f64, "{size} ranks: scalar");
        }
    }
}

/// A rank that fails (its thread panics, dropping its handle) stops every other rank's
/// operation with an error naming it, long before the timeout.
#[test]
fn a_rank_that_fails_stops_the_others_with_its_rank() {
    let start = Instant::now();
    let got = on_ranks(3, PATIENT, |rank| {
        if rank.rank() == 1 {
            drop(rank);
            return None;
        }
        let mut v = [1.0f32; 3];
        Some(rank.all_reduce_f32(&mut v))
    });
    assert!(start.elapsed() < Duration::from_secs(10));
    for r in [0, 2] {
        assert_eq!(
            got[r],
            Some(Err(CollectiveError::RankLeft { rank: 1 })),
            "rank {r}"
        );
    }
    let message = CollectiveError::RankLeft { rank: 1 }.to_string();
    assert!(message.contains("rank 1"), "{message}");
}

/// A rank that never arrives makes the others give up after the timeout, naming it; none waits
/// forever.
#[test]
fn a_rank_that_never_arrives_is_named_after_the_timeout() {
    let timeout = Duration::from_millis(300);
    let got = on_ranks(3, timeout, |rank| {
        if rank.rank() == 2 {
            thread::sleep(Duration::from_secs(2));
            return None;
        }
        let mut v = [1.0f64; 2];
        let start = Instant::now();
        let outcome = rank.all_reduce_f64(&mut v);
        Some((outcome, start.elapsed()))
    });
    // The rank that gave up waited the whole timeout; the other was told then, having waited
    // from its own (later or earlier) arrival.
    let mut gave_up = Vec::new();
    for r in [0, 1] {
        let (outcome, waited) = got[r].clone().unwrap();
        match outcome {
            Err(CollectiveError::Timeout { rank, missing, .. }) => {
                assert_eq!(missing, vec![2], "rank {r}");
                gave_up.push(rank);
                if rank == r {
                    assert!(waited >= timeout, "rank {r} gave up after {waited:?}");
                }
            }
            other => panic!("rank {r}: {other:?}"),
        }
        assert!(
            waited < Duration::from_secs(2),
            "rank {r} waited {waited:?}"
        );
    }
    assert!(gave_up[0] == gave_up[1] && gave_up[0] < 2, "{gave_up:?}");
    let message = CollectiveError::Timeout {
        rank: 0,
        waited: timeout,
        missing: vec![2],
    }
    .to_string();
    assert!(message.contains("[2]"), "{message}");
}

/// Ranks that call different operations at once (an all-reduce beside a broadcast, other
/// roots, other precisions) are refused, every one, with an error naming both calls.
#[test]
fn ranks_calling_different_operations_are_refused() {
    type Call = fn(&ThreadRank) -> Result<(), CollectiveError>;
    let pairs: [(Call, Call); 3] = [
        (
            |r| r.all_reduce_f32(&mut [1.0; 3]),
            |r| r.broadcast_f32(&mut [1.0; 3], 0),
        ),
        (
            |r| r.broadcast_f64(&mut [1.0; 3], 0),
            |r| r.broadcast_f64(&mut [1.0; 3], 1),
        ),
        (
            |r| r.all_reduce_f32(&mut [1.0; 3]),
            |r| r.all_reduce_f64(&mut [1.0; 3]),
        ),
    ];
    for (i, (first, second)) in pairs.into_iter().enumerate() {
        let got = on_ranks(2, PATIENT, |rank| match rank.rank() {
            0 => first(&rank),
            _ => second(&rank),
        });
        for (r, outcome) in got.iter().enumerate() {
            match outcome {
                Err(e @ CollectiveError::Disagree { .. }) => {
                    assert!(e.to_string().contains("where another rank called"), "{e}")
                }
                other => panic!("pair {i}, rank {r}: {other:?}"),
            }
        }
    }
}

/// Ranks that pass buffers of different lengths (different models) are refused, every one.
#[test]
fn buffers_of_different_lengths_are_refused() {
    let got = on_ranks(2, PATIENT, |rank| {
        let mut v = vec![1.0f32; 3 + rank.rank()];
        rank.all_reduce_f32(&mut v)
    });
    for (r, outcome) in got.iter().enumerate() {
        assert!(
            matches!(
                outcome,
                Err(CollectiveError::Mismatch {
                    len: 4,
                    expected: 3,
                    ..
                }) | Err(CollectiveError::Mismatch {
                    len: 3,
                    expected: 4,
                    ..
                })
            ),
            "rank {r}: {outcome:?}"
        );
    }
}

const LANES: usize = 6;

/// The two-layer character LSTM of the driver's tests, in f64.
type Model = Tiny<LstmCell<f64>, f64>;

/// Every weight of `model`, in order.
fn weights(model: &Model) -> Vec<f64> {
    model
        .params()
        .iter()
        .flat_map(|(_, p)| p.value().data().to_vec())
        .collect()
}

fn whole_stream() -> Stream {
    let tokens: Vec<usize> = (0..LANES * 251)
        .map(|i| (i * i + 3 * i + i / 7) % VOCAB)
        .collect();
    Stream::new(tokens, LANES)
}

const UPDATES: usize = 50;

/// `UPDATES` updates of training (truncated BPTT over 5 steps, clip 1, Adam 0.01) of lanes
/// `lanes` of the whole stream on rank `rank` (or over all lanes on one tape with `None`): the
/// loss of each update and the weights after the last.
fn train(rank: Option<(&ThreadRank, std::ops::Range<usize>)>) -> (Vec<f64>, Vec<f64>) {
    let seed = rank.as_ref().map_or(0, |(r, _)| r.rank() as u64);
    let mut model = Model::seeded(seed);
    let mut stream = whole_stream();
    if let Some((r, lanes)) = &rank {
        // Every rank starts from rank 0's weights.
        let params: Vec<&Param<f64>> = model.params().into_iter().map(|(_, p)| p).collect();
        broadcast_params(*r, &params, 0).unwrap();
        stream = stream.select_lanes(lanes.clone());
    }
    let mut driver = Bptt::new(
        Strategy::Truncated { k: 5 },
        Carry::zeros(&model.rnn, stream.lanes()),
        9,
    );
    let mut opt = Adam::new(0.01);
    let mut losses = Vec::new();
    while losses.len() < UPDATES {
        let update = match &rank {
            Some((r, _)) => {
                let params: Vec<&Param<f64>> = model.params().into_iter().map(|(_, p)| p).collect();
                driver
                    .step_across(&mut stream, *r, &params, 2, |t, c, s, run| {
                        model.loss(t, c, s, run)
                    })
                    .unwrap()
            }
            None => driver.step(&mut stream, |t, c, s, run| model.loss(t, c, s, run)),
        };
        let mut update = update.expect("the stream holds more updates");
        losses.push(update.loss);
        clip_grad_norm(&mut update.grads, 1.0);
        opt.step(&mut model, &update.grads);
    }
    (losses, weights(&model))
}

/// Data parallelism across ranks: N ranks, each with B/N of the lanes, its own model (started
/// from rank 0's weights by a broadcast) and its own carried state, and the gradients
/// all-reduced once per update, give the same losses and weights after 50 updates (clipped,
/// Adam) as one process over all B lanes on one tape, to 1e-12 in f64, for N = 1, 2, 3 (3 ranks
/// of 2 shards each on a 2-core machine), and every rank holds the same weights, bit for bit.
#[test]
fn n_ranks_with_b_over_n_lanes_each_train_as_one_process_with_b_lanes() {
    let (want_losses, want_weights) = train(None);
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + y.abs());
    for size in [1, 2, 3] {
        let per = LANES / size;
        let got = on_ranks(size, PATIENT, |rank| {
            let lanes = rank.rank() * per..(rank.rank() + 1) * per;
            train(Some((&rank, lanes)))
        });
        for (r, (losses, weights)) in got.iter().enumerate() {
            for (u, (l, w)) in losses.iter().zip(&want_losses).enumerate() {
                assert!(
                    close(*l, *w),
                    "{size} ranks, rank {r}, update {u}: {l} vs {w}"
                );
            }
            for (i, (x, y)) in weights.iter().zip(&want_weights).enumerate() {
                assert!(
                    close(*x, *y),
                    "{size} ranks, rank {r}, weight {i}: {x} vs {y}"
                );
            }
            assert_eq!(weights, &got[0].1, "{size} ranks: rank {r} against rank 0");
        }
    }
}
