//! The `sluice` binary: argument parsing and wiring only.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use sluice_control::admin::{self, audit::Caller, cli::Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match admin::execute(&cli, &Caller::local(), std::time::SystemTime::now()) {
        Ok(response) => {
            let mut out = std::io::stdout().lock();
            // A closed stdout (a pipe to `head`) is not an error worth reporting.
            let _ = out.write_all(response.render(cli.output).as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
