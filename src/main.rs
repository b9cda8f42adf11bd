use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = ftpgate::cli::Cli::parse();
    // `run` may ask for JSON logs in its configuration; everything else logs text.
    let json = cli.wants_json_logs();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FTPGATE_LOG").unwrap_or_else(|_| "info".into());
    // Colour codes only for a person at a terminal, never into files or journald.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
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
