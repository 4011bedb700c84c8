//! `trifecta report RUN_DIR...`: a Markdown report with tables and PNG/SVG figures.

use crate::error::Result;
use crate::report;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run folders (each with config.toml and metrics.jsonl).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write report.md and its figures.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let runs = report::load_runs(&args.runs)?;
    let path = report::write_report(&runs, &args.out)?;
    println!("wrote {}", path.display());
    Ok(())
}
