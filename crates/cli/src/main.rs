//! The `rlhf` binary: argument parsing and dispatch only; the work happens in the library crates.

fn main() {
    println!("rlhf");
}
