//! Configuration errors: each names the file, line, column and key, and says what is
//! expected.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{0}")]
    Invalid(Box<Located>),
}

impl ConfigError {
    /// The located error, when there is one (for tests and tools).
    pub fn located(&self) -> Option<&Located> {
        match self {
            ConfigError::Invalid(l) => Some(l),
            ConfigError::Read { .. } => None,
        }
    }
}

/// An error at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted key path, e.g. `listener[0].backend[1].weight`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
    /// The offending source line, for the caret display.
    pub source_line: String,
}

impl Located {
    /// Locates byte range `span` of `src`.
    pub fn new(path: PathBuf, src: &str, span: Range<usize>, key: String, message: String) -> Self {
        let start = span.start.min(src.len());
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
        Located {
            path,
            line: src[..start].matches('\n').count() + 1,
            column: src[line_start..start].chars().count() + 1,
            key,
            message,
            source_line: src[line_start..line_end].trim_end_matches('\r').to_string(),
        }
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: `{}`: {}",
            self.path.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )?;
        if !self.source_line.is_empty() {
            let gutter = self.line.to_string().len();
            write!(
                f,
                "\n{:gutter$} |\n{} | {}\n{:gutter$} | {:>col$}",
                "",
                self.line,
                self.source_line,
                "",
                "^",
                col = self.column
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column() {
        let src = "a = 1\nweight = 0\n";
        let at = src.find('0').unwrap();
        let l = Located::new(
            "x.toml".into(),
            src,
            at..at + 1,
            "weight".into(),
            "bad".into(),
        );
        assert_eq!((l.line, l.column), (2, 10));
        let shown = l.to_string();
        assert!(shown.starts_with("x.toml:2:10: `weight`: bad"), "{shown}");
        assert!(shown.ends_with("|          ^"), "{shown}");
    }
}
