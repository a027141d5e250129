fn main() -> std::process::ExitCode {
    bootkmod::cli::main().into()
}
