//! Loading an operator's catalog file (YAML, or JSON, which YAML reads too) at start.

use std::path::Path;

use domain::{Catalog, catalog::CatalogError};

/// Why a catalog file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFileError {
    /// the file could not be read
    #[error("cannot read the catalog {path}: {source}")]
    Read {
        /// the file
        path: String,
        /// cause
        source: std::io::Error,
    },
    /// the file is not a catalog
    #[error("the catalog {path} is not in catalog format: {detail}")]
    Parse {
        /// the file
        path: String,
        /// where and why, from the parser
        detail: String,
    },
    /// the catalog breaks rules
    #[error("the catalog {path} is refused: {source}")]
    Invalid {
        /// the file
        path: String,
        /// every problem
        source: CatalogError,
    },
}

/// Reads, parses and checks the catalog at `path`.
pub fn load(path: &Path) -> Result<Catalog, CatalogFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| CatalogFileError::Read { path: shown.clone(), source })?;
    parse(&text, &shown)
}

/// Parses and checks a catalog's text; `path` names it in errors.
fn parse(text: &str, path: &str) -> Result<Catalog, CatalogFileError> {
    let catalog: Catalog = serde_saphyr::from_str(text)
        .map_err(|e| CatalogFileError::Parse { path: path.to_owned(), detail: e.to_string() })?;
    catalog.validated().map_err(|source| CatalogFileError::Invalid { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_written_as_json_loads_back() {
        let json = serde_json::to_string_pretty(Catalog::builtin()).unwrap();
        assert!(matches!(parse(&json, "builtin"), Ok(catalog) if &catalog == Catalog::builtin()));
    }

    #[test]
    fn a_typo_is_refused_with_where_it_is() {
        let yaml = "format: 1\nservices:\n  - service: postgresql\n    versions: ['16']\n    upgrade_path: any_newer\n    plans: []\n    parameterz: []\n";
        let Err(CatalogFileError::Parse { detail, .. }) = parse(yaml, "typo.yaml") else {
            panic!("accepted a misspelt field")
        };
        assert!(detail.contains("parameterz"), "{detail}");
    }
}
