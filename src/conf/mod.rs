//! Loading and validating the configuration, and its version hash.
//!
//! A conf dir holds `node.toml` (the node; optional, every key has a
//! default) and `services/<id>.toml` (one service per file, its id the
//! file's stem; the directory is optional). [`Config::load`] reads them all,
//! checks them as a whole and returns either a complete [`Config`] or one
//! [`ConfigError`] listing every problem of every file, each naming the
//! file, the line and the key and saying what was expected.
//!
//! No thread, no channel: the daemon calls [`Config::load`] at start and on
//! reload, and hands the result to the roles. A failed load changes
//! nothing, so a reload that fails keeps the running configuration.

mod cluster;
pub mod deps;
mod document;
mod error;
pub mod host;
mod node;
pub mod paths;
mod resources;
mod service;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use cluster::{ClusterConfig, ClusterService, MIN_LEASE_TTL, Placement, parse_cluster_service};
pub use document::{MAX_DURATION, parse_duration};
pub use error::{ConfigError, ConfigProblem};
pub use node::NodeConfig;
pub use resources::{KillMode, Resources, format_size};
pub use service::{
    Health, MAX_ID_LEN, MAX_INSTANCES, MAX_LOG_KEEP, OnNodeExit, Output, Probe, Readiness,
    ReadySignal, RestartPolicy, ServiceConfig, expand, signal_by_name, signal_name,
};

/// A loaded, valid configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The conf dir, as given to [`Config::load`].
    pub dir: PathBuf,
    /// `node.toml`.
    pub node: NodeConfig,
    /// `services/*.toml`, by id.
    pub services: BTreeMap<String, ServiceConfig>,
    /// 16 lowercase hex digits: FNV-1a 64 over each file's path relative to
    /// the conf dir and its content, `node.toml` first, then
    /// `services/*.toml` in name order, each followed by its `env_file`'s
    /// path (as resolved) and content.
    pub effective_version: String,
    /// Each service's own version, by id: FNV-1a 64 over its file's path
    /// relative to the conf dir and its content, as in `effective_version`.
    /// The state record keeps it to tell whether a process still running
    /// from before the node restarted was started from today's definition.
    pub service_versions: BTreeMap<String, String>,
    /// Each service's file and its text as loaded, by id (`cat`).
    pub sources: BTreeMap<String, ServiceSource>,
}

/// A service's file as it was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSource {
    /// The file's path, as reached from the conf dir given.
    pub file: PathBuf,
    /// Its text.
    pub text: String,
}

impl Config {
    /// Reads and validates the configuration in `dir`. Relative paths in it
    /// are resolved against `dir` made absolute, so they do not depend on
    /// the working directory of whoever uses them later.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        match Config::load_parts(dir) {
            (Some(config), problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(ConfigError { problems }),
        }
    }

    /// What [`Config::load`] found: the configuration as far as it could
    /// be read (`None` when the directory or `node.toml` could not be),
    /// and every problem. A service with problems may be incomplete.
    fn load_parts(dir: &Path) -> (Option<Config>, Vec<ConfigProblem>) {
        match Config::read_parts(dir) {
            Ok(parts) => parts,
            Err(error) => (None, error.problems),
        }
    }

    fn read_parts(dir: &Path) -> Result<(Option<Config>, Vec<ConfigProblem>), ConfigError> {
        let single = |problem| ConfigError {
            problems: vec![problem],
        };
        fs::read_dir(dir).map_err(|error| {
            single(ConfigProblem::whole_file(
                dir,
                format!("cannot read the configuration directory: {error}"),
            ))
        })?;
        let conf_dir = std::path::absolute(dir).map_err(|error| {
            single(ConfigProblem::whole_file(
                dir,
                format!("cannot make the configuration directory's path absolute: {error}"),
            ))
        })?;

        let mut problems = Vec::new();
        let mut version = VersionHash::new();

        let node_relative = Path::new("node.toml");
        let node_text = read_text(&dir.join(node_relative), &mut problems);
        if let Some(text) = &node_text {
            version.add(node_relative, text);
        }
        let node = node::parse(
            &dir.join(node_relative),
            node_text.as_deref().unwrap_or_default(),
            &conf_dir,
            &mut problems,
        );

        let mut services = BTreeMap::new();
        let mut service_versions = BTreeMap::new();
        let mut dependency_lines = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for relative in service_files(dir, &mut problems) {
            let file = dir.join(&relative);
            let id = relative
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Err(message) = service::check_id(&id) {
                problems.push(ConfigProblem::whole_file(&file, message));
            }
            let Some(text) = read_text(&file, &mut problems) else {
                continue;
            };
            version.add(&relative, &text);
            let mut service_version = VersionHash::new();
            service_version.add(&relative, &text);
            sources.insert(
                id.clone(),
                ServiceSource {
                    file: file.clone(),
                    text: text.clone(),
                },
            );
            let parsed = service::parse(id.clone(), &file, &text, &conf_dir, &mut problems);
            // An env file's text is part of its service's definition.
            if let Some((env_file, env_text)) = parsed
                .as_ref()
                .and_then(|(_, facts)| facts.env_file.as_ref())
            {
                version.add(env_file, env_text);
                service_version.add(env_file, env_text);
            }
            service_versions.insert(id, service_version.finish());
            if let Some((service, facts)) = parsed {
                dependency_lines.insert(service.id.clone(), (file, facts));
                services.insert(service.id.clone(), service);
            }
        }
        check_dependencies(&services, &dependency_lines, &mut problems);

        let config = node.map(|node| Config {
            dir: dir.to_owned(),
            node,
            services,
            effective_version: version.finish(),
            service_versions,
            sources,
        });
        Ok((config, problems))
    }
}

impl Config {
    /// [`Config::load`], then the checks against this host
    /// ([`host::check`]): users and groups exist, programs are executable,
    /// work dirs can be entered, output directories exist. What the node
    /// runs at start and on reload, and `snow-fox --check`.
    /// Problems of both kinds come together, by file and line; a file
    /// that does not parse gets no host checks.
    pub fn load_checked(dir: &Path) -> Result<Config, ConfigError> {
        let (config, mut problems) = Config::load_parts(dir);
        if let Some(config) = &config {
            problems.extend(host::check(config));
        }
        // Stable: a file's problems keep their order within a line.
        problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError { problems }),
        }
    }
}

/// Reports each `requires` or `after` naming no configured service, and a
/// dependency cycle, naming the services on it, against the file of the
/// first of them.
fn check_dependencies(
    services: &BTreeMap<String, ServiceConfig>,
    lines: &BTreeMap<String, (PathBuf, service::ServiceFacts)>,
    problems: &mut Vec<ConfigProblem>,
) {
    let mut unknown = false;
    for service in services.values() {
        let Some((file, lines)) = lines.get(&service.id) else {
            continue;
        };
        for (key, ids, line) in [
            ("requires", &service.requires, lines.requires),
            ("after", &service.after, lines.after),
        ] {
            for (index, id) in ids.iter().enumerate() {
                if services.contains_key(id) {
                    continue;
                }
                unknown = true;
                problems.push(ConfigProblem {
                    file: file.clone(),
                    line,
                    key: Some(format!("{key}[{index}]")),
                    message: format!(
                        "expected the id of a configured service, found `{id}`, which has no file services/{id}.toml"
                    ),
                });
            }
        }
    }
    if unknown {
        return;
    }
    let Some(cycle) = deps::Graph::new(services).cycle() else {
        return;
    };
    let first = &cycle[0];
    let (file, lines) = &lines[first];
    let (key, line) = if services[first].requires.contains(&cycle[1]) {
        ("requires", lines.requires)
    } else {
        ("after", lines.after)
    };
    problems.push(ConfigProblem {
        file: file.clone(),
        line,
        key: Some(key.to_owned()),
        message: format!(
            "dependency cycle: {}; expected services that can start one after another",
            cycle.join(" → ")
        ),
    });
}

/// A file's text; `None` when it does not exist (no problem) or cannot be
/// read as text (a problem recorded).
fn read_text(file: &Path, problems: &mut Vec<ConfigProblem>) -> Option<String> {
    let bytes = match fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
        Err(error) => {
            problems.push(ConfigProblem::whole_file(
                file,
                format!("cannot read: {error}"),
            ));
            return None;
        }
    };
    String::from_utf8(bytes)
        .map_err(|error| {
            let offset = error.utf8_error().valid_up_to();
            problems.push(ConfigProblem {
                file: file.to_owned(),
                line: Some(document::line_at(error.as_bytes(), offset)),
                key: None,
                message: format!("invalid UTF-8 at byte {offset}; expected a TOML text file"),
            });
        })
        .ok()
}

/// `services/*.toml` as paths relative to the conf dir, in name order.
/// Other files are ignored, so editors' backups and notes can live there.
fn service_files(dir: &Path, problems: &mut Vec<ConfigProblem>) -> Vec<PathBuf> {
    let services_dir = dir.join("services");
    let entries = match fs::read_dir(&services_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            problems.push(ConfigProblem::whole_file(
                &services_dir,
                format!("cannot list: {error}"),
            ));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let name = PathBuf::from(entry.file_name());
                if name
                    .extension()
                    .is_some_and(|extension| extension == "toml")
                {
                    files.push(Path::new("services").join(name));
                }
            }
            Err(error) => {
                problems.push(ConfigProblem::whole_file(
                    &services_dir,
                    format!("cannot list: {error}"),
                ));
            }
        }
    }
    files.sort();
    files
}

/// FNV-1a 64: tiny, dependency-free and stable across builds and
/// platforms, which is all a version that tells configurations apart needs.
struct VersionHash(u64);

impl VersionHash {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> VersionHash {
        VersionHash(Self::OFFSET_BASIS)
    }

    /// Adds one file. A NUL after the path and after the content (TOML text
    /// holds none) keeps `a` + `bc` apart from `ab` + `c`.
    fn add(&mut self, relative: &Path, text: &str) {
        self.bytes(relative.as_os_str().as_encoded_bytes());
        self.bytes(&[0]);
        self.bytes(text.as_bytes());
        self.bytes(&[0]);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A conf dir of its own under the temp dir, removed when dropped.
    struct TempConf(PathBuf);

    impl TempConf {
        fn new(files: &[(&str, &str)]) -> TempConf {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "snow-fox-conf-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            let conf = TempConf(dir);
            for (relative, text) in files {
                conf.write(relative, text);
            }
            conf
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn load(&self) -> Result<Config, ConfigError> {
            Config::load(&self.0)
        }

        fn problems(&self) -> Vec<String> {
            let error = self.load().unwrap_err();
            let prefix = format!("{}/", self.0.display());
            error
                .to_string()
                .lines()
                .map(|line| line.replace(&prefix, ""))
                .collect()
        }
    }

    impl Drop for TempConf {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_shipped_example_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let config = Config::load(&dir).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.node.name, "example-node");
        assert_eq!(config.node.label, "example-1");
        assert_eq!(config.node.socket, None);
        let ids: Vec<_> = config.services.keys().map(String::as_str).collect();
        assert_eq!(ids, ["app", "db", "manual", "oneshot", "pair", "ticker"]);
        assert_eq!(config.services["app"].requires, ["db"]);
        assert_eq!(config.services["db"].ready.signal, ReadySignal::Fd(3));
        assert_eq!(config.services["oneshot"].restart, RestartPolicy::Never);
        assert!(!config.services["manual"].autostart);
        assert_eq!(config.services["pair"].instances, 2);
        assert_eq!(config.services["ticker"].command[0], "/bin/sh");
    }

    #[test]
    fn a_dependency_cycle_is_named_and_unknown_ids_are_refused() {
        let command = "command = [\"/bin/true\"]\n";
        let conf = TempConf::new(&[
            ("services/a.toml", &format!("{command}requires = [\"b\"]\n")),
            ("services/b.toml", &format!("{command}after = [\"c\"]\n")),
            (
                "services/c.toml",
                &format!("{command}\nrequires = [\"a\"]\n"),
            ),
        ]);
        assert_eq!(
            conf.problems(),
            [
                "services/a.toml:2: key `requires`: dependency cycle: a → b → c → a; \
                 expected services that can start one after another"
            ]
        );
        conf.write(
            "services/c.toml",
            &format!("{command}after = [\"x\", \"a\"]\n"),
        );
        conf.write("services/a.toml", command);
        assert_eq!(
            conf.problems(),
            [
                "services/c.toml:2: key `after[0]`: expected the id of a configured service, \
                 found `x`, which has no file services/x.toml"
            ]
        );
        conf.write("services/c.toml", &format!("{command}after = [\"a\"]\n"));
        let config = conf.load().unwrap();
        assert_eq!(config.services["b"].after, ["c"]);
    }

    #[test]
    fn an_empty_dir_is_all_defaults() {
        let conf = TempConf::new(&[]);
        let config = conf.load().unwrap();
        assert_eq!(config.dir, conf.0);
        assert_eq!(config.node.label, "unlabelled");
        assert!(config.services.is_empty());
        assert_eq!(
            config.effective_version,
            format!("{:016x}", VersionHash::OFFSET_BASIS)
        );
    }

    #[test]
    fn a_missing_dir_is_named() {
        let conf = TempConf::new(&[]);
        let missing = conf.0.join("nowhere");
        let error = Config::load(&missing).unwrap_err();
        assert_eq!(error.problems.len(), 1);
        assert_eq!(
            error.to_string(),
            format!(
                "{}: cannot read the configuration directory: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn a_file_given_as_the_dir_is_named() {
        let conf = TempConf::new(&[("node.toml", "")]);
        let error = Config::load(&conf.0.join("node.toml")).unwrap_err();
        assert_eq!(error.problems[0].file, conf.0.join("node.toml"));
        assert!(
            error.problems[0]
                .message
                .starts_with("cannot read the configuration directory: ")
        );
    }

    #[test]
    fn services_are_read_by_file_stem_and_others_ignored() {
        let conf = TempConf::new(&[
            ("services/web.toml", "command = [\"/bin/sleep\", \"60\"]\n"),
            (
                "services/db.toml",
                "command = [\"/bin/true\"]\ninstances = 2\n",
            ),
            ("services/web.toml~", "broken ="),
            ("services/README", "notes"),
            ("services/.web.toml.swp", "junk"),
        ]);
        let config = conf.load().unwrap();
        let ids: Vec<_> = config.services.keys().map(String::as_str).collect();
        assert_eq!(ids, ["db", "web"]);
        assert_eq!(config.services["db"].instances, 2);
        assert_eq!(config.services["web"].id, "web");
    }

    #[test]
    fn relative_paths_are_relative_to_the_conf_dir() {
        let conf = TempConf::new(&[
            (
                "node.toml",
                "socket = \"sf.sock\"\nlog_dir = \"/var/tmp/logs\"\n",
            ),
            (
                "services/web.toml",
                "command = [\"/bin/true\"]\nwork_dir = \"www\"\n",
            ),
        ]);
        let config = conf.load().unwrap();
        assert_eq!(config.node.socket, Some(conf.0.join("sf.sock")));
        assert_eq!(config.node.log_dir, PathBuf::from("/var/tmp/logs"));
        assert_eq!(config.services["web"].work_dir, Some(conf.0.join("www")));
    }

    #[test]
    fn every_problem_of_every_file_is_reported_together() {
        let conf = TempConf::new(&[
            ("node.toml", "# node\nmax_frame = 1\nlable = \"x\"\n"),
            (
                "services/web.toml",
                "command = \"sleep 60\"\ninstances = \"x\"\n",
            ),
            ("services/daemon.toml", "command = [\"/bin/true\"]\n"),
            ("services/broken.toml", "command = [\n"),
            ("services/ok.toml", "command = [\"/bin/true\"]\n"),
        ]);
        let problems = conf.problems();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert_eq!(
            problems[0],
            "node.toml:2: key `max_frame`: expected a whole number from 64 to 67108864, found 1"
        );
        assert!(
            problems[1].starts_with(
                "node.toml:3: key `lable`: unknown key; expected one of: name, label, "
            )
        );
        assert!(
            problems[2].starts_with("services/broken.toml:"),
            "{}",
            problems[2]
        );
        assert!(problems[3].starts_with(
            "services/daemon.toml: the service id `daemon` (the file's name) is reserved"
        ));
        assert_eq!(
            problems[4],
            "services/web.toml:1: key `command`: expected an array of strings, e.g. [\"/bin/sleep\", \"60\"]; \
             no shell is used, found \"sleep 60\""
        );
        assert_eq!(
            problems[5],
            "services/web.toml:2: key `instances`: expected a whole number from 1 to 1000, found \"x\""
        );
    }

    #[test]
    fn an_invalid_id_is_reported_with_the_file_name() {
        let conf = TempConf::new(&[("services/my web.toml", "command = [\"/bin/true\"]\n")]);
        let problems = conf.problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with(
            "services/my web.toml: the service id `my web` (the file's name) is not valid"
        ));
    }

    #[test]
    fn unreadable_text_is_a_problem_with_its_line() {
        let conf = TempConf::new(&[]);
        fs::write(
            conf.0.join("node.toml"),
            b"name = \"a\"\nlabel = \"\xff\"\n",
        )
        .unwrap();
        assert_eq!(
            conf.problems(),
            ["node.toml:2: invalid UTF-8 at byte 20; expected a TOML text file"]
        );
    }

    #[test]
    fn a_services_path_that_is_not_a_dir_is_a_problem() {
        let conf = TempConf::new(&[("services", "")]);
        let problems = conf.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("services: cannot list: "),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn the_version_follows_the_content() {
        let conf = TempConf::new(&[
            ("node.toml", "label = \"a\"\n"),
            ("services/web.toml", "command = [\"/bin/true\"]\n"),
        ]);
        let first = conf.load().unwrap().effective_version;
        assert_eq!(first.len(), 16);
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(conf.load().unwrap().effective_version, first, "stable");

        conf.write("services/web.toml", "command = [\"/bin/false\"]\n");
        let changed = conf.load().unwrap().effective_version;
        assert_ne!(changed, first);

        conf.write("services/web.toml", "command = [\"/bin/true\"]\n");
        assert_eq!(
            conf.load().unwrap().effective_version,
            first,
            "back to the same content"
        );

        conf.write("services/notes.txt", "not configuration");
        assert_eq!(
            conf.load().unwrap().effective_version,
            first,
            "ignored files do not count"
        );

        fs::rename(
            conf.0.join("services/web.toml"),
            conf.0.join("services/www.toml"),
        )
        .unwrap();
        assert_ne!(
            conf.load().unwrap().effective_version,
            first,
            "the file name counts"
        );
    }

    #[test]
    fn each_service_has_a_version_of_its_own_file() {
        let conf = TempConf::new(&[
            ("services/web.toml", "command = [\"/bin/true\"]\n"),
            ("services/db.toml", "command = [\"/bin/true\"]\n"),
        ]);
        let first = conf.load().unwrap().service_versions;
        assert_eq!(first.len(), 2);
        assert_ne!(first["web"], first["db"], "the path counts");
        conf.write("services/web.toml", "command = [\"/bin/false\"]\n");
        conf.write("node.toml", "label = \"b\"\n");
        let changed = conf.load().unwrap().service_versions;
        assert_ne!(changed["web"], first["web"]);
        assert_eq!(changed["db"], first["db"], "other files do not count");
    }

    #[test]
    fn an_env_file_is_part_of_its_services_version() {
        let conf = TempConf::new(&[
            (
                "services/web.toml",
                "command = [\"/bin/true\"]\nenv_file = \"web.env\"\n",
            ),
            ("services/db.toml", "command = [\"/bin/true\"]\n"),
            ("web.env", "A=1\n"),
        ]);
        let first = conf.load().unwrap();
        conf.write("web.env", "A=2\n");
        let changed = conf.load().unwrap();
        assert_eq!(changed.services["web"].env["A"], "2");
        assert_ne!(
            changed.service_versions["web"],
            first.service_versions["web"]
        );
        assert_eq!(changed.service_versions["db"], first.service_versions["db"]);
        assert_ne!(changed.effective_version, first.effective_version);
    }

    #[test]
    fn the_version_is_fnv1a_of_paths_and_contents() {
        let mut hash = VersionHash::new();
        hash.bytes(b"a");
        assert_eq!(hash.finish(), "af63dc4c8601ec8c");
        let mut version = VersionHash::new();
        version.add(Path::new("node.toml"), "x");
        let mut by_hand = VersionHash::new();
        by_hand.bytes(b"node.toml\0x\0");
        assert_eq!(version.finish(), by_hand.finish());
    }

    #[test]
    fn problems_display_with_and_without_line_and_key() {
        let problem = ConfigProblem {
            file: PathBuf::from("conf/services/web.toml"),
            line: Some(3),
            key: Some("instances".to_owned()),
            message: "expected a whole number from 1 to 1000, found \"x\"".to_owned(),
        };
        assert_eq!(
            problem.to_string(),
            "conf/services/web.toml:3: key `instances`: expected a whole number from 1 to 1000, found \"x\""
        );
        let whole = ConfigProblem::whole_file(
            Path::new("conf/node.toml"),
            "cannot read: Permission denied (os error 13)".to_owned(),
        );
        assert_eq!(
            whole.to_string(),
            "conf/node.toml: cannot read: Permission denied (os error 13)"
        );
        let error = ConfigError {
            problems: vec![problem, whole],
        };
        assert_eq!(error.to_string().lines().count(), 2);
    }
}
