//! Config problems with their position: [`Diagnostic`] (one problem at
//! `file:line:column`, with its TOML path) and [`ConfigErrors`] (all of them).

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file.
///
/// Displays as `regions.toml:12:5: apps.acme.allow_regions[1]: unknown region "mars"`
/// (1-based line and column; the column counts characters, not bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column (in characters) of the offending key or value.
    pub column: usize,
    /// Where in the document, e.g. `apps.acme.allow_regions[1]`; empty for
    /// problems with the file as a whole.
    pub toml_path: String,
    /// What is wrong, and where useful how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a byte offset of `text`.
    pub(crate) fn at_offset(
        file: &Path,
        text: &str,
        offset: usize,
        toml_path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(text, offset);
        Self {
            file: file.to_path_buf(),
            line,
            column,
            toml_path: toml_path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.toml_path.is_empty() {
            write!(f, "{}: ", self.toml_path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file, in file order. Displays one
/// diagnostic per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Converts a byte offset into a 1-based (line, column in characters).
/// Offsets past the end, or inside a multi-byte character, are clamped.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_line_and_column() {
        let text = "a = 1\nbb = 2\n\nç = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
        assert_eq!(line_column(text, 13), (3, 1));
        // "ç" is two bytes but one column.
        assert_eq!(line_column(text, 14 + 2), (4, 2));
        assert_eq!(line_column(text, 10_000), (5, 1));
    }

    #[test]
    fn diagnostics_display_file_line_column_path_message() {
        let diagnostic = Diagnostic {
            file: PathBuf::from("regions.toml"),
            line: 12,
            column: 5,
            toml_path: "apps.acme.allow_regions[1]".into(),
            message: "unknown region \"mars\"".into(),
        };
        assert_eq!(
            diagnostic.to_string(),
            "regions.toml:12:5: apps.acme.allow_regions[1]: unknown region \"mars\""
        );
        let errors = ConfigErrors(vec![diagnostic.clone(), diagnostic]);
        assert_eq!(errors.to_string().lines().count(), 2);
    }
}
