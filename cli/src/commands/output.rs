//! Output shared by the commands: tables (comfy-table), JSON, progress bars (indicatif).

use std::process::ExitCode;

/// A table with these column headers, drawn without borders, as `kubectl get` draws them.
pub(crate) fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(header);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Prints a table made by [`table`], without trailing spaces.
pub(crate) fn print(table: &comfy_table::Table) {
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
}

/// Aligns these columns (0-based) to the right: counts and sizes.
pub(crate) fn align_right(table: &mut comfy_table::Table, columns: &[usize]) {
    for index in columns {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
}

/// Prints `value` as one pretty-printed JSON document and ends successfully.
pub(crate) fn json(value: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` as one JSON line (for live output: a stream of documents).
pub(crate) fn json_line(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// A progress bar on standard error for a bulk operation, drawn only for a person watching:
/// not with `--json`, and only when standard output and standard error are terminals (so
/// `herald dlq redrive --all > log` or a script sees no bar).
pub(crate) fn progress(label: &'static str, total: u64, json: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    let shown = !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let target = if shown {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("#>-"));
    }
    bar.set_prefix(label);
    bar
}
