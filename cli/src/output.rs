//! What a command prints: a table for people, or the API's own JSON or YAML for scripts.

use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;

/// Output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// columns for people
    Table,
    /// the API's JSON
    Json,
    /// the API's JSON as YAML
    Yaml,
}

/// Prints `value`: as JSON or YAML, or as the table `rows` makes of it.
pub(crate) fn print<T: Serialize>(
    format: Format,
    value: &T,
    rows: impl FnOnce(&T) -> Rows,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        Format::Table => {
            let rows = rows(value);
            let mut table = Table::new();
            table.load_preset(NOTHING).set_header(rows.header);
            for row in rows.rows {
                table.add_row(row);
            }
            println!("{}", table.trim_fmt());
        }
    }
    Ok(())
}

/// A table: a header and rows of cells.
pub(crate) struct Rows {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Rows {
    /// A table with these column names.
    pub(crate) fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| h.to_uppercase()).collect(), rows: Vec::new() }
    }

    /// Adds a row.
    pub(crate) fn row(mut self, cells: impl IntoIterator<Item = String>) -> Self {
        self.rows.push(cells.into_iter().collect());
        self
    }

    /// Adds a row per item.
    pub(crate) fn rows<I>(
        self,
        items: impl IntoIterator<Item = I>,
        cells: impl Fn(I) -> Vec<String>,
    ) -> Self {
        items.into_iter().fold(self, |table, item| table.row(cells(item)))
    }
}

/// A JSON value as a cell: strings bare, the rest as JSON.
pub(crate) fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// An optional value as a cell.
pub(crate) fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A serde enum value as its wire name.
pub(crate) fn wire_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).map(|v| cell(&v)).unwrap_or_default()
}

/// A time as people read it in a table.
pub(crate) fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}
