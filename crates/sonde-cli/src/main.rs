//! `sonde`: the command-line entry point. Parsing and dispatch only; each command lives in
//! its own module.

mod bench;
mod bench_dashboard;
mod bench_steal;
mod cli;
mod commands;
mod config;
mod demo;
mod http;
mod import;
mod report;
mod simulate;
mod status;
mod table;

use clap::Parser;

/// mimalloc: faster than glibc malloc for the many small allocations of event parsing, and it
/// returns memory to the OS more readily (lower RSS under sustained ingest).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    commands::init_logging(cli.log_json);
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
