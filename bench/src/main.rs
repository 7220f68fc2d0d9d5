//! The sluice benchmark harness (filled in by the benchmark work).

fn main() {
    println!("sluice-bench: no benchmarks yet");
}
