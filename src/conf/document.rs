//! Reading one TOML file key by key, recording every problem with its line.
//!
//! A file is parsed once into a table that keeps each key's byte span. Each
//! typed getter removes its key, converts the value and, when that fails,
//! records a problem naming the key's line and what was expected, then lets
//! the caller fall back to the default. Whatever is left at the end is an
//! unknown key. Nothing returns early on a problem, so one pass finds all of
//! a file's problems (serde's derive stops at the first). Pure: no files,
//! no threads, no channels.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigProblem;

/// The longest duration accepted anywhere, so that adding one to a clock
/// reading cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

const DURATION_FORM: &str = "a duration such as \"250ms\", \"5s\", \"2m\" or \"1h\" (up to 8760h), or a whole number of seconds";

/// Parses a duration written as a whole number and a unit: `"250ms"`,
/// `"5s"`, `"2m"`, `"1h"`. `None` for anything else, or beyond [`MAX_DURATION`].
/// (In a TOML file a bare integer also works, meaning seconds.)
pub fn parse_duration(text: &str) -> Option<Duration> {
    let unit_start = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_start);
    let count: u64 = number.parse().ok()?;
    let unit_millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    within_limit(Duration::from_millis(count.checked_mul(unit_millis)?))
}

fn within_limit(duration: Duration) -> Option<Duration> {
    (duration <= MAX_DURATION).then_some(duration)
}

/// The 1-based line holding byte `offset` of `text`.
pub(super) fn line_at(text: &[u8], offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// The key assigned on `line` of `text`, read from the text because a
/// syntax error happens before the parser knows which key it belongs to.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let (key, _) = text.lines().nth(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    let bare = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    (bare && !key.is_empty()).then(|| key.to_owned())
}

/// A key's value with the line the key is on.
pub(super) struct Entry<'t> {
    pub line: usize,
    pub value: Spanned<DeValue<'t>>,
}

/// One parsed file, read key by key.
pub(super) struct Document<'t> {
    file: PathBuf,
    text: &'t str,
    table: DeTable<'t>,
    /// Every key a getter asked for, in order, with its line if present.
    asked: Vec<(&'static str, Option<usize>)>,
    problems: Vec<ConfigProblem>,
    /// Put before each key in problems: `cluster.` for the keys of a
    /// `[cluster]` section read as a document of its own.
    prefix: String,
}

impl<'t> Document<'t> {
    /// Parses `text`, the content of `file`. A syntax error is the file's
    /// one problem: reading keys from a half-parsed file, or reporting the
    /// parser's later errors, would point at the wrong lines.
    pub(super) fn parse(file: &Path, text: &'t str) -> Result<Document<'t>, ConfigProblem> {
        match DeTable::parse(text) {
            Ok(table) => Ok(Document {
                file: file.to_owned(),
                text,
                table: table.into_inner(),
                asked: Vec::new(),
                problems: Vec::new(),
                prefix: String::new(),
            }),
            Err(error) => {
                let line = error
                    .span()
                    .map(|span| line_at(text.as_bytes(), span.start));
                Err(ConfigProblem {
                    file: file.to_owned(),
                    line,
                    key: line.and_then(|line| key_on_line(text, line)),
                    message: format!("invalid TOML: {}", error.message()),
                })
            }
        }
    }

    /// Records a problem with `key` (on `line`, if known).
    pub(super) fn report(&mut self, line: Option<usize>, key: impl Into<String>, message: String) {
        self.problems.push(ConfigProblem {
            file: self.file.clone(),
            line,
            key: Some(format!("{}{}", self.prefix, key.into())),
            message,
        });
    }

    /// Whether a problem has been recorded for `key`.
    pub(super) fn has_problem(&self, key: &str) -> bool {
        self.problems.iter().any(|problem| {
            problem
                .key
                .as_deref()
                .and_then(|found| found.strip_prefix(self.prefix.as_str()))
                == Some(key)
        })
    }

    /// Whether a problem has been recorded for `key` or one of its
    /// sub-keys (`key.name`).
    pub(super) fn has_problem_under(&self, key: &str) -> bool {
        self.problems.iter().any(|problem| {
            problem.key.as_deref().is_some_and(|found| {
                found == key
                    || found
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        })
    }

    /// The line of `key`, if the file sets it and it has been asked for.
    pub(super) fn line_of(&self, key: &str) -> Option<usize> {
        self.asked
            .iter()
            .find(|(asked, _)| *asked == key)
            .and_then(|(_, line)| *line)
    }

    /// Removes `key` from the table, remembering that it is a known key.
    pub(super) fn take(&mut self, key: &'static str) -> Option<Entry<'t>> {
        match self.table.remove_entry(key) {
            Some((name, value)) => {
                let line = line_at(self.text.as_bytes(), name.span().start);
                self.asked.push((key, Some(line)));
                Some(Entry { line, value })
            }
            None => {
                self.asked.push((key, None));
                None
            }
        }
    }

    /// The value of `key` converted by `convert`, whose error message is
    /// recorded against the key's line.
    pub(super) fn scalar<T>(
        &mut self,
        key: &'static str,
        convert: impl FnOnce(&DeValue<'_>) -> Result<T, String>,
    ) -> Option<T> {
        let entry = self.take(key)?;
        match convert(entry.value.get_ref()) {
            Ok(value) => Some(value),
            Err(message) => {
                self.report(Some(entry.line), key, message);
                None
            }
        }
    }

    /// A non-empty string.
    pub(super) fn text(&mut self, key: &'static str) -> Option<String> {
        self.scalar(key, to_text)
    }

    /// A path; a relative one is taken relative to `base`.
    pub(super) fn path(&mut self, key: &'static str, base: &Path) -> Option<PathBuf> {
        self.text(key).map(|path| base.join(path))
    }

    /// `true` or `false`.
    pub(super) fn flag(&mut self, key: &'static str) -> Option<bool> {
        self.scalar(key, |value| {
            value
                .as_bool()
                .ok_or_else(|| expected("true or false", value))
        })
    }

    /// A whole number in `range` that fits `T`.
    pub(super) fn number<T: TryFrom<u64>>(
        &mut self,
        key: &'static str,
        range: RangeInclusive<u64>,
    ) -> Option<T> {
        self.scalar(key, |value| {
            let form = if *range.end() == u64::MAX {
                format!("a whole number of at least {}", range.start())
            } else {
                format!("a whole number from {} to {}", range.start(), range.end())
            };
            whole_number(value)
                .filter(|number| range.contains(number))
                .and_then(|number| T::try_from(number).ok())
                .ok_or_else(|| expected(&form, value))
        })
    }

    /// A duration, zero included.
    pub(super) fn duration(&mut self, key: &'static str) -> Option<Duration> {
        self.scalar(key, to_duration)
    }

    /// A duration longer than zero.
    pub(super) fn positive_duration(&mut self, key: &'static str) -> Option<Duration> {
        self.scalar(key, |value| match to_duration(value)? {
            Duration::ZERO => Err(expected("a duration longer than zero", value)),
            duration => Ok(duration),
        })
    }

    /// One of the strings of `options`, as its paired value.
    pub(super) fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        options: &[(&str, T)],
    ) -> Option<T> {
        self.scalar(key, |value| {
            let name = value.as_str();
            options
                .iter()
                .find(|(option, _)| Some(*option) == name)
                .map(|(_, choice)| *choice)
                .ok_or_else(|| {
                    let names: Vec<String> = options
                        .iter()
                        .map(|(option, _)| format!("{option:?}"))
                        .collect();
                    expected(&format!("one of {}", names.join(", ")), value)
                })
        })
    }

    /// An array of non-empty strings. `form` says what is expected when the
    /// value is not an array; each bad element is reported as `key[index]`
    /// on its own line.
    pub(super) fn text_list(&mut self, key: &'static str, form: &str) -> Option<Vec<String>> {
        let entry = self.take(key)?;
        let DeValue::Array(items) = entry.value.get_ref() else {
            let message = expected(form, entry.value.get_ref());
            self.report(Some(entry.line), key, message);
            return None;
        };
        let mut texts = Vec::with_capacity(items.len());
        let mut all_valid = true;
        for (index, item) in items.iter().enumerate() {
            match to_text(item.get_ref()) {
                Ok(text) => texts.push(text),
                Err(message) => {
                    let line = line_at(self.text.as_bytes(), item.span().start);
                    self.report(Some(line), format!("{key}[{index}]"), message);
                    all_valid = false;
                }
            }
        }
        all_valid.then_some(texts)
    }

    /// The table `key` (a `[key]` section) as a document of its own, whose
    /// problems name its keys `key.name`; hand it back to [`Document::adopt`]
    /// once read. `None` when absent or not a table (a problem then).
    pub(super) fn section(&mut self, key: &'static str) -> Option<Document<'t>> {
        let entry = self.take(key)?;
        match entry.value.into_inner() {
            DeValue::Table(table) => Some(Document {
                file: self.file.clone(),
                text: self.text,
                table,
                asked: Vec::new(),
                problems: Vec::new(),
                prefix: format!("{}{key}.", self.prefix),
            }),
            other => {
                let message = expected(&format!("a table ([{key}])"), &other);
                self.report(Some(entry.line), key, message);
                None
            }
        }
    }

    /// Takes in the problems of a finished [`Document::section`].
    pub(super) fn adopt(&mut self, section: Document<'t>) {
        self.problems.extend(section.finish());
    }

    /// A table's entries as (name, entry), in name order.
    pub(super) fn table(&mut self, key: &'static str) -> Option<Vec<(String, Entry<'t>)>> {
        let entry = self.take(key)?;
        match self.entries(entry.value.into_inner()) {
            Ok(entries) => Some(entries),
            Err(_) => {
                let message = format!("expected a table, e.g. {key} = {{ NAME = \"value\" }}");
                self.report(Some(entry.line), key, message);
                None
            }
        }
    }

    /// A table value's entries as (name, entry), in name order; the value
    /// back when it is not a table.
    pub(super) fn entries(
        &self,
        value: DeValue<'t>,
    ) -> Result<Vec<(String, Entry<'t>)>, DeValue<'t>> {
        let DeValue::Table(table) = value else {
            return Err(value);
        };
        Ok(table
            .into_iter()
            .map(|(name, value)| {
                let line = line_at(self.text.as_bytes(), name.span().start);
                (name.into_inner().into_owned(), Entry { line, value })
            })
            .collect())
    }

    /// Reports every key no getter asked for, and returns all of the file's
    /// problems in line order.
    pub(super) fn finish(mut self) -> Vec<ConfigProblem> {
        let known: Vec<&str> = self.asked.iter().map(|(key, _)| *key).collect();
        let message = format!("unknown key; expected one of: {}", known.join(", "));
        for (name, _) in std::mem::take(&mut self.table) {
            let line = line_at(self.text.as_bytes(), name.span().start);
            self.report(Some(line), name.into_inner(), message.clone());
        }
        self.problems.sort_by_key(|problem| problem.line);
        self.problems
    }
}

/// "expected `form`, found `value`".
pub(super) fn expected(form: &str, value: &DeValue<'_>) -> String {
    format!("expected {form}, found {}", describe(value))
}

/// A value as a user would recognise it in the file.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(text) => format!("{text:?}"),
        DeValue::Integer(integer) => integer.to_string(),
        DeValue::Float(float) => float.to_string(),
        DeValue::Boolean(flag) => flag.to_string(),
        DeValue::Datetime(datetime) => datetime.to_string(),
        DeValue::Array(items) if items.is_empty() => "an empty array".to_owned(),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// A non-empty string without NUL characters (which no path, argument or
/// name handed to the OS can hold).
pub(super) fn to_text(value: &DeValue<'_>) -> Result<String, String> {
    match value.as_str() {
        Some(text) if text.contains('\0') => Err("must not contain a NUL character".to_owned()),
        Some(text) if !text.is_empty() => Ok(text.to_owned()),
        _ => Err(expected("a non-empty string", value)),
    }
}

/// An integer that is zero or more, if it fits a `u64`.
pub(super) fn whole_number(value: &DeValue<'_>) -> Option<u64> {
    let integer = value.as_integer()?;
    u64::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// A duration: a string such as "1s", or whole seconds.
pub(super) fn to_duration(value: &DeValue<'_>) -> Result<Duration, String> {
    let duration = match value {
        DeValue::String(text) => parse_duration(text),
        _ => whole_number(value).and_then(|seconds| within_limit(Duration::from_secs(seconds))),
    };
    duration.ok_or_else(|| expected(DURATION_FORM, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Document<'_> {
        Document::parse(Path::new("conf/x.toml"), text).unwrap()
    }

    #[test]
    fn durations_take_a_whole_number_and_a_unit() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("8760h"), Some(MAX_DURATION));
        for bad in [
            "",
            "5",
            "s",
            "ms",
            "-5s",
            "+5s",
            "1.5s",
            "5 s",
            " 5s",
            "5S",
            "5d",
            "8761h",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn toml_durations_are_strings_or_whole_seconds() {
        let mut doc = parse("a = \"250ms\"\nb = 7\nc = -1\nd = 1.5\ne = \"7\"\nf = 0\n");
        assert_eq!(doc.duration("a"), Some(Duration::from_millis(250)));
        assert_eq!(doc.duration("b"), Some(Duration::from_secs(7)));
        assert_eq!(doc.duration("c"), None);
        assert_eq!(doc.duration("d"), None);
        assert_eq!(doc.duration("e"), None);
        assert_eq!(doc.positive_duration("f"), None);
        let problems = doc.finish();
        let lines: Vec<_> = problems.iter().map(|p| (p.line, p.key.clone())).collect();
        assert_eq!(
            lines,
            [
                (Some(3), Some("c".to_owned())),
                (Some(4), Some("d".to_owned())),
                (Some(5), Some("e".to_owned())),
                (Some(6), Some("f".to_owned())),
            ]
        );
        assert!(
            problems[0]
                .message
                .starts_with("expected a duration such as")
        );
        assert!(problems[0].message.ends_with("found -1"));
        assert_eq!(
            problems[3].message,
            "expected a duration longer than zero, found 0"
        );
    }

    #[test]
    fn lines_are_counted_from_one() {
        assert_eq!(line_at(b"a\nb\nc", 0), 1);
        assert_eq!(line_at(b"a\nb\nc", 2), 2);
        assert_eq!(line_at(b"a\nb\nc", 4), 3);
        assert_eq!(line_at(b"a\nb\nc", 99), 3);
    }

    #[test]
    fn a_syntax_error_names_its_line_and_the_key_written_there() {
        let problem = Document::parse(
            Path::new("conf/x.toml"),
            "# c\nname = \"ok\"\ninstances = \nlabel = \n",
        )
        .err()
        .unwrap();
        assert_eq!(problem.line, Some(3));
        assert_eq!(problem.key.as_deref(), Some("instances"));
        assert!(
            problem.message.starts_with("invalid TOML: "),
            "{}",
            problem.message
        );
    }

    #[test]
    fn a_syntax_error_off_a_key_line_names_no_key() {
        let problem = Document::parse(Path::new("x.toml"), "a = 1\n[b\n")
            .err()
            .unwrap();
        assert_eq!(problem.line, Some(2));
        assert_eq!(problem.key, None);
    }

    #[test]
    fn a_duplicate_key_is_a_syntax_error() {
        let problem = Document::parse(Path::new("x.toml"), "a = 1\na = 2\n")
            .err()
            .unwrap();
        assert_eq!(problem.line, Some(2), "{problem:?}");
    }

    #[test]
    fn unknown_keys_list_the_known_ones() {
        let mut doc = parse("instances = 2\ninstnces = 3\n");
        assert_eq!(doc.number::<u32>("instances", 1..=1000), Some(2));
        assert_eq!(doc.text("user"), None);
        let problems = doc.finish();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].to_string(),
            "conf/x.toml:2: key `instnces`: unknown key; expected one of: instances, user"
        );
    }

    #[test]
    fn numbers_say_their_range() {
        let mut doc = parse("a = \"x\"\nb = 0\nc = 5000000000\nd = 0x10\ne = -3\n");
        assert_eq!(doc.number::<u32>("a", 1..=1000), None);
        assert_eq!(doc.number::<u32>("b", 1..=u64::MAX), None);
        assert_eq!(doc.number::<u32>("c", 0..=u64::MAX), None);
        assert_eq!(doc.number::<u32>("d", 1..=1000), Some(16));
        assert_eq!(doc.number::<u64>("e", 0..=u64::MAX), None);
        let messages: Vec<_> = doc.finish().into_iter().map(|p| p.message).collect();
        assert_eq!(
            messages,
            [
                "expected a whole number from 1 to 1000, found \"x\"",
                "expected a whole number of at least 1, found 0",
                "expected a whole number of at least 0, found 5000000000",
                "expected a whole number of at least 0, found -3",
            ]
        );
    }

    #[test]
    fn list_elements_are_reported_on_their_own_lines() {
        let mut doc = parse("a = [\n  \"x\",\n  5,\n  \"\",\n]\nb = \"x\"\n");
        assert_eq!(doc.text_list("a", "a list"), None);
        assert_eq!(doc.text_list("b", "a list of names"), None);
        let problems: Vec<_> = doc.finish().into_iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            [
                "conf/x.toml:3: key `a[1]`: expected a non-empty string, found 5",
                "conf/x.toml:4: key `a[2]`: expected a non-empty string, found \"\"",
                "conf/x.toml:6: key `b`: expected a list of names, found \"x\"",
            ]
        );
    }

    #[test]
    fn strings_must_not_hold_nul() {
        let mut doc = parse("a = \"x\\u0000y\"\n");
        assert_eq!(doc.text("a"), None);
        assert_eq!(doc.finish()[0].message, "must not contain a NUL character");
    }

    #[test]
    fn choices_list_their_options() {
        let mut doc = parse("a = \"sometimes\"\nb = \"no\"\n");
        assert_eq!(doc.choice("a", &[("yes", true), ("no", false)]), None);
        assert_eq!(
            doc.choice("b", &[("yes", true), ("no", false)]),
            Some(false)
        );
        assert_eq!(
            doc.finish()[0].message,
            "expected one of \"yes\", \"no\", found \"sometimes\""
        );
    }
}
