//! The `georelay` binary; see [`georelay::cli`].

fn main() -> std::process::ExitCode {
    georelay::cli::main()
}
