//! The configuration's one error: every problem found in every file.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used, with all of its problems.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Every problem found, by file (`node.toml`, then `services/*.toml` in
    /// name order) and by line within a file.
    pub problems: Vec<ConfigProblem>,
}

/// One thing wrong with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file (or directory) at fault, as reached from the conf dir given.
    pub file: PathBuf,
    /// The 1-based line, where the problem has one.
    pub line: Option<usize>,
    /// The key at fault (`instances`, `env.PATH`, `command[1]`), where there is one.
    pub key: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with a file (or directory) as a whole, such as failing to read it.
    pub(super) fn whole_file(file: &Path, message: String) -> ConfigProblem {
        ConfigProblem {
            file: file.to_owned(),
            line: None,
            key: None,
            message,
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
