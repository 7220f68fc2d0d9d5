//! The `sluice` binary: argument parsing and wiring only.

fn main() {
    println!("sluice {}", env!("CARGO_PKG_VERSION"));
}
