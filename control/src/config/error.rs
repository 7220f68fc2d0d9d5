//! Configuration errors that point at the file, line and column, name the field, and say what
//! is wrong in plain words.

use std::fmt;
use std::path::{Path, PathBuf};

/// One step of a path into the configuration document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(&'static str),
    /// An index into an array (of tables).
    Index(usize),
}

/// Where a field sits in the document, like `endpoint[0].route[2].destination_cidr`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a key.
    #[must_use]
    pub fn key(&self, k: &'static str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k));
        Self(v)
    }

    /// This path extended by an array index.
    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if first {
            f.write_str("(file)")?;
        }
        Ok(())
    }
}

/// One problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The field, as a path into the document (`endpoint[0].client_cidr_block`).
    pub field: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, in plain words.
    pub message: String,
}

/// A configuration that cannot be used: unreadable, unparsable, or failing validation.
#[derive(Clone, Debug)]
pub struct ConfigError {
    /// The file the configuration came from.
    pub file: PathBuf,
    /// Every problem found, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// An error about the file as a whole (unreadable, for example).
    pub fn whole_file(file: &Path, message: String) -> Self {
        Self {
            file: file.to_path_buf(),
            diagnostics: vec![Diagnostic {
                field: "(file)".into(),
                line: 1,
                column: 1,
                message,
            }],
        }
    }

    /// Whether any diagnostic's message contains `needle` (for tests and callers that branch).
    pub fn mentions(&self, needle: &str) -> bool {
        self.diagnostics.iter().any(|d| d.message.contains(needle))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file.display(),
                d.line,
                d.column,
                d.field,
                d.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Converts a byte offset in `text` to a 1-based (line, column), counting columns in characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// `line_col` of each of `offsets`, which must be in ascending order, in one pass over
/// `text`: a file of many findings (a 16 MiB one can have hundreds of thousands) costs its
/// length once, not once a finding. An offset inside a character counts from that
/// character's start.
pub fn line_cols(text: &str, offsets: &[usize]) -> Vec<(usize, usize)> {
    let (mut pos, mut line, mut column) = (0, 1, 1);
    offsets
        .iter()
        .map(|&o| {
            let mut o = o.min(text.len());
            while !text.is_char_boundary(o) {
                o -= 1;
            }
            for c in text.get(pos..o).unwrap_or_default().chars() {
                if c == '\n' {
                    line += 1;
                    column = 1;
                } else {
                    column += 1;
                }
            }
            pos = pos.max(o);
            (line, column)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// One pass gives what each offset's own count gives.
        #[test]
        fn line_cols_agree_with_line_col(
            text in "(?s)[a\n=é𝄞]{0,200}",
            mut offsets in proptest::collection::vec(0usize..210, 0..20),
        ) {
            offsets.sort_unstable();
            let one_pass = line_cols(&text, &offsets);
            for (o, got) in offsets.iter().zip(one_pass) {
                let mut at = (*o).min(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                proptest::prop_assert_eq!(got, line_col(&text, at), "offset {}", o);
            }
        }
    }

    #[test]
    fn path_display() {
        let p = FieldPath::root()
            .key("endpoint")
            .index(0)
            .key("route")
            .index(2)
            .key("x");
        assert_eq!(p.to_string(), "endpoint[0].route[2].x");
        assert_eq!(FieldPath::root().to_string(), "(file)");
    }

    #[test]
    fn line_and_column() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, t.find('=').unwrap()), (1, 3));
        let second_eq = t.rfind('=').unwrap();
        assert_eq!(line_col(t, second_eq), (2, 4));
        assert_eq!(line_col(t, 999), (3, 1));
    }
}
