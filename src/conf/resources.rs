//! A service's resource keys: `limits` (rlimits), `memory_max`,
//! `memory_high`, `cpu_max`, `pids_max` (its cgroup's limits) and
//! `kill_mode`.

use toml::de::DeValue;

use super::document::{Document, expected, whole_number};
use crate::cgroup::{CPU_PERIOD_USEC, CpuMax, Limits};
use crate::sys::{RLIM_INFINITY, RLIMITS, Rlimit};

const SIZE_FORM: &str =
    "a size: a number of bytes, or a string such as \"64M\" (K, M, G, T: powers of 1024)";
const RLIMIT_FORM: &str =
    "a number, a size such as \"64M\", \"infinity\", or { soft = ..., hard = ... }";
const CPU_FORM: &str =
    "a share of one CPU such as \"50%\", or a number of CPUs such as \"1.5\" or 2";

/// What happens to the rest of an instance's cgroup when its main process
/// ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KillMode {
    /// `"control-group"` (default): everything left in it is killed.
    #[default]
    ControlGroup,
    /// `"process"`: only the main process is the instance; what it left
    /// runs on.
    Process,
}

/// A service's resource settings.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Resources {
    /// `limits`: the rlimits its processes get, in name order.
    pub rlimits: Vec<(String, Rlimit)>,
    /// `memory_max`, `memory_high`, `cpu_max`, `pids_max`.
    pub limits: Limits,
    /// `kill_mode`.
    pub kill_mode: KillMode,
}

/// Reads the resource keys of `doc`, reporting each bad one.
pub(super) fn parse(doc: &mut Document<'_>) -> Resources {
    let rlimits = rlimits(doc);
    let limits = Limits {
        memory_max: doc.scalar("memory_max", positive_size),
        memory_high: doc.scalar("memory_high", positive_size),
        cpu_max: doc.scalar("cpu_max", to_cpu_max),
        pids_max: doc.number("pids_max", 1..=u64::from(u32::MAX)),
    };
    let kill_mode = doc
        .choice(
            "kill_mode",
            &[
                ("control-group", KillMode::ControlGroup),
                ("process", KillMode::Process),
            ],
        )
        .unwrap_or_default();
    Resources {
        rlimits,
        limits,
        kill_mode,
    }
}

fn rlimits(doc: &mut Document<'_>) -> Vec<(String, Rlimit)> {
    let mut limits = Vec::new();
    for (name, entry) in doc.table("limits").unwrap_or_default() {
        let key = format!("limits.{name}");
        let Some(resource) = RLIMITS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, resource)| *resource as u32)
        else {
            let names: Vec<&str> = RLIMITS.iter().map(|(known, _)| *known).collect();
            let message = format!("unknown rlimit; expected one of: {}", names.join(", "));
            doc.report(Some(entry.line), key, message);
            continue;
        };
        let value = entry.value.into_inner();
        let (soft, hard) = match doc.entries(value) {
            Ok(pair) => {
                let mut soft = None;
                let mut hard = None;
                let mut bad = false;
                for (part, part_entry) in pair {
                    let slot = match part.as_str() {
                        "soft" => &mut soft,
                        "hard" => &mut hard,
                        _ => {
                            let message = "unknown key; expected one of: soft, hard".to_owned();
                            doc.report(Some(part_entry.line), format!("{key}.{part}"), message);
                            bad = true;
                            continue;
                        }
                    };
                    match rlimit_value(part_entry.value.get_ref()) {
                        Ok(value) => *slot = Some(value),
                        Err(message) => {
                            doc.report(Some(part_entry.line), format!("{key}.{part}"), message);
                            bad = true;
                        }
                    }
                }
                if bad {
                    continue;
                }
                match (soft, hard) {
                    (Some(soft), Some(hard)) => (soft, hard),
                    (Some(one), None) | (None, Some(one)) => (one, one),
                    (None, None) => {
                        let message = format!("expected {RLIMIT_FORM}, found an empty table");
                        doc.report(Some(entry.line), key, message);
                        continue;
                    }
                }
            }
            Err(value) => match rlimit_value(&value) {
                Ok(value) => (value, value),
                Err(message) => {
                    doc.report(Some(entry.line), key, message);
                    continue;
                }
            },
        };
        if soft > hard {
            let message = format!("the soft limit ({soft}) is above the hard limit ({hard})");
            doc.report(Some(entry.line), key, message);
            continue;
        }
        limits.push((
            name,
            Rlimit {
                resource,
                soft,
                hard,
            },
        ));
    }
    limits
}

fn rlimit_value(value: &DeValue<'_>) -> Result<u64, String> {
    if value.as_str() == Some("infinity") {
        return Ok(RLIM_INFINITY);
    }
    to_size(value).map_err(|_| expected(RLIMIT_FORM, value))
}

/// A number of bytes, or a string of digits with an optional K, M, G or
/// T suffix (powers of 1024; `KiB`, `MB` and the like are taken too).
pub(super) fn to_size(value: &DeValue<'_>) -> Result<u64, String> {
    let size = match value {
        DeValue::String(text) => parse_size(text),
        _ => whole_number(value),
    };
    size.ok_or_else(|| expected(SIZE_FORM, value))
}

fn positive_size(value: &DeValue<'_>) -> Result<u64, String> {
    to_size(value)
        .ok()
        .filter(|size| *size > 0)
        .ok_or_else(|| expected(SIZE_FORM, value))
}

/// "64M" → 64 MiB.
fn parse_size(text: &str) -> Option<u64> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &text[digits.len()..];
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// "50%" of one CPU, or "1.5" (or 2) CPUs, as a quota per
/// [`CPU_PERIOD_USEC`].
fn to_cpu_max(value: &DeValue<'_>) -> Result<CpuMax, String> {
    let cpus = match value {
        DeValue::String(text) => match text.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
            None => text.trim().parse::<f64>().ok(),
        },
        DeValue::Float(float) => float.as_str().parse::<f64>().ok(),
        _ => whole_number(value).map(|cpus| cpus as f64),
    };
    // The kernel takes quotas from 1 ms; 1024 CPUs is more than any host.
    let quota = cpus
        .filter(|cpus| cpus.is_finite() && *cpus >= 0.01 && *cpus <= 1024.0)
        .map(|cpus| (cpus * CPU_PERIOD_USEC as f64).round() as u64);
    quota
        .map(|quota_usec| CpuMax {
            quota_usec,
            period_usec: CPU_PERIOD_USEC,
        })
        .ok_or_else(|| expected(&format!("{CPU_FORM}, from 1% to 1024 CPUs"), value))
}

/// `bytes` as people read it: "64 MiB", "1.5 GiB", "512 B".
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("1.5M"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999999T"), None);
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
        assert_eq!(format_size(100), "100 B");
    }
}
