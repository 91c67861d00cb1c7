//! The `surgemq-bench` benchmark runner binary.

fn main() {
    eprintln!(
        "surgemq-bench {}: the benchmark runner is not built yet (see README.md)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
