use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = ftpgate::cli::Cli::parse();
    if cli.is_long_running() {
        // Returns only where it did not re-execute (see the module).
        ftpgate::cli::malloc::tune();
    }
    // `run` may ask for JSON logs in its configuration; everything else logs text.
    let json = cli.wants_json_logs();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FTPGATE_LOG").unwrap_or_else(|_| "info".into());
    // No colour codes: the writer escapes every control character, since log
    // fields carry what peers send (text::SafeWriter).
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ftpgate::text::SafeWriter(std::io::stderr()))
        .with_ansi(false);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    match ftpgate::cli::main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ftpgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
