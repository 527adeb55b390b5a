//! `orly`: the command line. Flags are parsed in `orly::config`, the commands run in
//! `orly::cli`.

use clap::Parser;
use orly::config::{Cli, ProcessEnv};
use orly::errln;
use std::process::ExitCode;

fn main() -> ExitCode {
    orly::init_crypto();
    let cli = Cli::parse();
    match orly::cli::run(cli, &ProcessEnv) {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
