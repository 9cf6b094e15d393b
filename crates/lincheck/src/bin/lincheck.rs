//! Standalone `lincheck --format jepsen-etcd|kv FILE...` (same as `raftkv lincheck`).

fn main() {
    let mut stdout = std::io::stdout();
    match lincheck::cli::main(std::env::args().skip(1), &mut stdout) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("lincheck: {e:#}");
            std::process::exit(3);
        }
    }
}
