//! `cpctl`: the control plane from a shell. Every request and answer is a `wire` type, the same the API
//! serves; tables for people by default, `-o json|yaml` for scripts, `--wait` to follow an operation.

mod args;
mod client;
mod commands;
mod config;
mod output;
mod wait;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};

use crate::args::{Cli, Command};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "cpctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
