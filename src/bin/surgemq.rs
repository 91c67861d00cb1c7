//! The `surgemq` broker binary.

fn main() {
    eprintln!(
        "surgemq {}: the broker is not built yet (the codec is; see README.md)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
