//! 09 · Data parallelism: N ranks train one model. Each rank reads its own lanes of the text
//! (`Stream::select_lanes`) and carries its own lanes' state; once per update the ranks add up
//! their gradients with one all-reduce (`Bptt::step_across`), so every rank takes the same
//! update, the one a single process over all the lanes would take. BPTT is unchanged: each rank
//! backpropagates through its own unrolled lanes, and the sum over lanes simply runs across ranks.
//!
//! Checked: after 30 clipped Adam updates every rank's weights equal one process's over all 12
//! lanes, to 1e-12 in f64 (the sums only run in another order).
//! Builds on `06-truncated-bptt.rs`. Next: the studies (docs/studies.md).
//!
//! Run: `cargo run --example 09-data-parallel -- [RANKS]` (ranks as threads; default 3), or, with
//! an MPI library installed, ranks as processes:
//! `cargo build --features mpi --example 09-data-parallel` then
//! `mpirun -np 3 target/debug/examples/09-data-parallel --mpi`.

use std::time::Duration;

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::nn::collective::{broadcast_params, Collective, Threads};
use rewind::nn::{
    nested, Bptt, Carry, Chunk, ChunkLoss, Embedding, Linear, Lstm, RecurrentConfig, Run,
    StackState, Strategy, Stream,
};
use rewind::optim::{clip_grad_norm, Adam, Optimizer};
use rewind::prelude::*;

const LANES: usize = 12;
const UPDATES: usize = 30;

/// Embedding, a 2-layer LSTM and a readout over the text's characters.
struct CharModel {
    embed: Embedding<f64>,
    lstm: Lstm<f64>,
    head: Linear<f64>,
}

impl CharModel {
    /// The chunk's summed cross-entropy and the state after it.
    fn loss<'t>(
        &self,
        tape: &'t Tape<f64>,
        chunk: &Chunk,
        state: StackState<'t, f64>,
        run: &Run<'_, f64>,
    ) -> (ChunkLoss<'t, f64>, StackState<'t, f64>) {
        let x = self
            .embed
            .forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
        let out = self.lstm.forward_with(tape, x, Some(state), run);
        let logits = self.head.forward(tape, out.output);
        let vocab = logits.shape()[2];
        (
            chunk.cross_entropy(logits.reshape(&[chunk.steps * chunk.lanes, vocab])),
            out.state,
        )
    }
}

impl Module<f64> for CharModel {
    fn params(&self) -> Vec<(String, &Param<f64>)> {
        let mut all = nested("embed", self.embed.params());
        all.extend(nested("lstm", self.lstm.params()));
        all.extend(nested("head", self.head.params()));
        all
    }
}

/// Trains on lanes `mine` of the text, with `across` summing the ranks' gradients (`None`: one
/// process, every lane on one tape). Returns the weights after the last update.
/// `talk`: print the loss every 10 updates.
fn train(
    text: &[usize],
    vocab: usize,
    mine: std::ops::Range<usize>,
    across: Option<&dyn Collective>,
    talk: bool,
) -> Vec<f64> {
    // Each rank draws its own weights; a broadcast then starts every rank from rank 0's.
    let mut rng = StdRng::seed_from_u64(across.map_or(0, |c| c.rank() as u64));
    let config = RecurrentConfig::new(8, 32).num_layers(2);
    let mut model = CharModel {
        embed: Embedding::init(vocab, 8, &mut rng),
        lstm: Lstm::init(config, &mut rng),
        head: Linear::init(32, vocab, &mut rng),
    };
    let mut stream = Stream::new(text.to_vec(), LANES).select_lanes(mine);
    let mut driver = Bptt::new(
        Strategy::Truncated { k: 16 },
        Carry::zeros(&model.lstm, stream.lanes()),
        0,
    );
    let mut adam = Adam::new(0.01);
    for update in 0..UPDATES {
        let params: Vec<&Param<f64>> = model.params().into_iter().map(|(_, p)| p).collect();
        if update == 0 {
            if let Some(c) = across {
                broadcast_params(c, &params, 0).expect("the ranks reach each other");
            }
        }
        let step = match across {
            Some(c) => driver
                .step_across(&mut stream, c, &params, 1, |t, ch, st, r| {
                    model.loss(t, ch, st, r)
                })
                .expect("the ranks reach each other"),
            None => driver.step(&mut stream, |t, ch, st, r| model.loss(t, ch, st, r)),
        };
        let mut step = step.expect("the text holds 30 updates");
        if update % 10 == 0 && talk {
            println!(
                "update {update:>2}: loss {:.4} nats/char over {} targets",
                step.loss, step.targets
            );
        }
        clip_grad_norm(&mut step.grads, 1.0);
        adam.step(&mut model, &step.grads);
    }
    model
        .params()
        .iter()
        .flat_map(|(_, p)| p.value().data().to_vec())
        .collect()
}

fn main() {
    let text_str = &include_str!("char_rnn/tinyshakespeare.txt")[..LANES * (UPDATES * 16 + 1)];
    let mut symbols: Vec<char> = text_str.chars().collect();
    symbols.sort_unstable();
    symbols.dedup();
    let text: Vec<usize> = text_str
        .chars()
        .map(|c| symbols.binary_search(&c).unwrap())
        .collect();
    let vocab = symbols.len();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ranks, lead): (Vec<Vec<f64>>, bool) = if args.iter().any(|a| a == "--mpi") {
        mpi_rank(&text, vocab)
    } else {
        let n: usize = args
            .first()
            .map_or(3, |a| a.parse().expect("RANKS is a whole number"));
        assert!(
            n > 0 && LANES.is_multiple_of(n),
            "{n} ranks cannot share {LANES} lanes evenly"
        );
        println!("{n} ranks as threads, {} lanes each:", LANES / n);
        let group = Threads::group(n, Duration::from_secs(60));
        let text = &text;
        let weights = std::thread::scope(|s| {
            let runs: Vec<_> = group
                .into_iter()
                .map(|rank| {
                    s.spawn(move || {
                        let mine = rank.rank() * (LANES / n)..(rank.rank() + 1) * (LANES / n);
                        train(text, vocab, mine, Some(&rank), rank.rank() == 0)
                    })
                })
                .collect();
            runs.into_iter()
                .map(|r| r.join().expect("a rank panicked"))
                .collect()
        });
        (weights, true)
    };
    if lead {
        println!("one process, {LANES} lanes:");
    }
    let alone = train(&text, vocab, 0..LANES, None, lead);
    let worst = ranks
        .iter()
        .flat_map(|w| w.iter().zip(&alone))
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-12,
        "the ranks' weights differ from one process's by {worst:e}"
    );
    if lead {
        println!(
            "every rank's {} weights equal one process's (worst relative difference {worst:.1e})",
            alone.len()
        );
    }
}

/// This process's rank of an MPI job: its weights (checked on every rank), and whether it is
/// rank 0, which prints.
#[cfg(feature = "mpi")]
fn mpi_rank(text: &[usize], vocab: usize) -> (Vec<Vec<f64>>, bool) {
    let mpi = rewind::nn::collective::Mpi::init(Duration::from_secs(60)).expect("MPI starts");
    let (rank, n) = (mpi.rank(), mpi.size());
    assert!(
        LANES.is_multiple_of(n),
        "{n} ranks cannot share {LANES} lanes evenly"
    );
    if rank == 0 {
        println!("{n} ranks as MPI processes, {} lanes each:", LANES / n);
    }
    let mine = rank * (LANES / n)..(rank + 1) * (LANES / n);
    (
        vec![train(text, vocab, mine, Some(&mpi), rank == 0)],
        rank == 0,
    )
}

#[cfg(not(feature = "mpi"))]
fn mpi_rank(_: &[usize], _: usize) -> (Vec<Vec<f64>>, bool) {
    eprintln!("error: --mpi needs the example built with `--features mpi` (and an MPI library)");
    std::process::exit(2);
}
