//! The `orly` command line: one submodule per command. Binaries stay thin; this module parses
//! flags and calls the domain modules.

pub mod audit;
mod commands;
pub mod gen_events;
pub mod import;
pub mod lines;
pub mod output;
mod peers;
mod service_call;
pub mod sync;
mod sync_command;
mod syncs;
mod token;

pub use commands::run;

pub use crate::config::default_data_dir;

/// A progress bar on a terminal, nothing otherwise (scripts and CI get clean output).
pub fn progress_bar(len: Option<u64>, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb
}
