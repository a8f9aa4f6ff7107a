//! The char-RNN example: train a character-level language model on any text, watch it learn,
//! sample from it, and resume where it stopped.
//!
//! ```text
//! cargo run --release --example char_rnn                       # trains on the built-in tinyshakespeare
//! cargo run --release --example char_rnn -- --data book.txt --cell gru --hidden 256 --minutes 10
//! cargo run --release --example char_rnn -- sample --checkpoint char_rnn.safetensors --prime "fn "
//! cargo run --release --example char_rnn -- --resume char_rnn.safetensors --steps 5000
//! cargo run --release --example char_rnn -- eval --checkpoint char_rnn.safetensors --dynamic
//! cargo run --release --example char_rnn -- plot char_rnn.safetensors.metrics.csv --out curve.svg
//! cargo run --release --example char_rnn -- connectivity --checkpoint char_rnn.safetensors --text "To be, or not" --at 4,11
//! ```

mod app;

fn main() -> std::process::ExitCode {
    app::main(std::env::args_os())
}
