//! The cluster's configuration: the `[cluster]` section of `node.toml`, and
//! cluster service files (a service file plus `[placement]`), which live
//! in etcd and are validated like a local service file before they get
//! there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeValue;

use super::document::{Document, expected, to_duration, to_text};
use super::service;
use super::{ConfigError, ConfigProblem, ServiceConfig};

/// The shortest `lease_ttl`: a renewal every third of it must fit
/// comfortably in it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// The longest `lease_ttl` etcd's gateway is asked for.
const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);
const LABEL_FORM: &str = "a table of strings, e.g. { zone = \"a\", role = \"edge\" }";
const ENDPOINT_FORM: &str = "an array of http:// URLs, e.g. [\"http://127.0.0.1:2379\"]";

/// `[cluster]` in `node.toml`: where the store is and how this node joins.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// `etcd`: the endpoints of etcd's v3 JSON gateway, tried in order.
    pub etcd: Vec<String>,
    /// `prefix`: where the cluster's keys live (default "/snow-fox").
    pub prefix: String,
    /// `labels`: what this node offers placement constraints.
    pub labels: BTreeMap<String, String>,
    /// `lease_ttl`: the node's lease, renewed every third of it (default
    /// 10s, at least 2s).
    pub lease_ttl: Duration,
    /// `username`: etcd's user, with `password_file`.
    pub username: Option<String>,
    /// `password_file`: the file holding that user's password (its first
    /// line); relative to the conf dir if relative.
    pub password_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// What fencing keeps of the lease: a fence stops `fence = true`
    /// instances once `lease_ttl` minus this has passed since the last
    /// renewal that succeeded was sent, and kills them half of it after
    /// their stop signal. A fifth of the lease, at least 300 ms.
    pub fn fence_margin(&self) -> Duration {
        (self.lease_ttl / 5).max(Duration::from_millis(300))
    }
}

/// `[placement]` of a cluster service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `instances`: how many run cluster-wide (default 1; 0 to 1000).
    pub instances: u32,
    /// `max_per_node`: at most this many on one node (default 1).
    pub max_per_node: u32,
    /// `constraints`: labels a node must have to run it.
    pub constraints: BTreeMap<String, String>,
    /// `fence`: stop its instances on a node whose lease cannot have
    /// survived, so that it never runs twice (default false).
    pub fence: bool,
}

/// A cluster service: what each instance runs, and where instances go.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterService {
    /// The service as each node runs an instance of it (`instances` 1,
    /// `autostart` true, no dependencies).
    pub service: ServiceConfig,
    /// Where its instances go.
    pub placement: Placement,
    /// A hash of its text, as a local service file's version.
    pub version: String,
}

/// Keys of a local service file that a cluster service does not take,
/// with what to use instead.
const NOT_FOR_CLUSTER: [(&str, &str); 4] = [
    (
        "instances",
        "a cluster service sets its count in [placement] instances",
    ),
    (
        "autostart",
        "a cluster service runs unless stopped with `snow-fox-client cluster stop`",
    ),
    (
        "requires",
        "a cluster service cannot depend on a node's services",
    ),
    (
        "after",
        "a cluster service cannot depend on a node's services",
    ),
];

/// Reads cluster service `id` from `text`, the content of `file`: the keys
/// of a service file (relative paths relative to `/`) plus `[placement]`.
/// Every problem names the file, the line and the key.
pub fn parse_cluster_service(
    id: &str,
    file: &Path,
    text: &str,
) -> Result<ClusterService, ConfigError> {
    let mut problems = Vec::new();
    if let Err(message) = service::check_id(id) {
        problems.push(ConfigProblem::whole_file(file, message));
    }
    let mut doc = Document::parse(file, text).map_err(|problem| ConfigError {
        problems: vec![problem],
    })?;
    for (key, why) in NOT_FOR_CLUSTER {
        if let Some(entry) = doc.take(key) {
            doc.report(
                Some(entry.line),
                key,
                format!("not for a cluster service: {why}"),
            );
        }
    }
    let placement = match doc.section("placement") {
        Some(mut section) => {
            let placement = Placement {
                instances: section.number("instances", 0..=1000).unwrap_or(1),
                max_per_node: section.number("max_per_node", 1..=1000).unwrap_or(1),
                constraints: labels(&mut section, "constraints"),
                fence: section.flag("fence").unwrap_or(false),
            };
            doc.adopt(section);
            placement
        }
        None => Placement {
            instances: 1,
            max_per_node: 1,
            constraints: BTreeMap::new(),
            fence: false,
        },
    };
    let (service, _) = service::parse_document(id.to_owned(), &mut doc, Path::new("/"));
    problems.extend(doc.finish());
    if problems.is_empty() {
        let mut version = super::VersionHash::new();
        version.add(Path::new(&format!("cluster/{id}.toml")), text);
        Ok(ClusterService {
            service,
            placement,
            version: version.finish(),
        })
    } else {
        problems.sort_by_key(|problem| problem.line);
        Err(ConfigError { problems })
    }
}

/// Reads `[cluster]` from the node file's document, if there is one.
pub(super) fn parse_section(doc: &mut Document<'_>, conf_dir: &Path) -> Option<ClusterConfig> {
    let mut section = doc.section("cluster")?;
    let etcd = endpoints(&mut section);
    let prefix = section.scalar("prefix", to_prefix);
    let cluster = ClusterConfig {
        etcd,
        prefix: prefix.unwrap_or_else(|| "/snow-fox".to_owned()),
        labels: labels(&mut section, "labels"),
        lease_ttl: section
            .scalar("lease_ttl", |value| match to_duration(value)? {
                ttl if (MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) => Ok(ttl),
                _ => Err(expected("a duration from 2s to 1h", value)),
            })
            .unwrap_or(Duration::from_secs(10)),
        username: section.text("username"),
        password_file: section.path("password_file", conf_dir),
    };
    if cluster.username.is_some() != cluster.password_file.is_some() {
        let line = section
            .line_of("username")
            .or_else(|| section.line_of("password_file"));
        let key = if cluster.username.is_some() {
            "password_file"
        } else {
            "username"
        };
        section.report(
            line,
            key,
            "expected username and password_file together (etcd authentication)".to_owned(),
        );
    }
    doc.adopt(section);
    Some(cluster)
}

fn endpoints(section: &mut Document<'_>) -> Vec<String> {
    let line = |section: &Document<'_>| section.line_of("etcd");
    match section.text_list("etcd", ENDPOINT_FORM) {
        Some(list) if list.is_empty() => {
            let line = line(section);
            section.report(
                line,
                "etcd",
                format!("expected {ENDPOINT_FORM}, found an empty array"),
            );
            Vec::new()
        }
        Some(list) => {
            for (index, url) in list.iter().enumerate() {
                let host = url.strip_prefix("http://").unwrap_or_default();
                if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
                    let line = line(section);
                    let why = if url.starts_with("https://") {
                        "found an https:// URL: this build speaks plain HTTP to etcd (run etcd on loopback or a private network, or put a TLS proxy beside the node)".to_owned()
                    } else {
                        format!("found {url:?}")
                    };
                    section.report(
                        line,
                        format!("etcd[{index}]"),
                        format!("expected http://HOST:PORT without a path, {why}"),
                    );
                }
            }
            list
        }
        None if line(section).is_none() => {
            section.report(None, "etcd", format!("missing; expected {ENDPOINT_FORM}"));
            Vec::new()
        }
        None => Vec::new(),
    }
}

fn to_prefix(value: &DeValue<'_>) -> Result<String, String> {
    let form = "a key prefix starting with '/' and not ending with one, e.g. \"/snow-fox\"";
    let text = to_text(value).map_err(|_| expected(form, value))?;
    let valid = text.len() > 1
        && text.starts_with('/')
        && !text.ends_with('/')
        && text.chars().all(|c| c.is_ascii_graphic());
    if valid {
        Ok(text)
    } else {
        Err(expected(form, value))
    }
}

/// A table of non-empty strings whose names are plain words.
fn labels(doc: &mut Document<'_>, key: &'static str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some(entry) = doc.take(key) else {
        return labels;
    };
    let line = entry.line;
    let entries = match doc.entries(entry.value.into_inner()) {
        Ok(entries) => entries,
        Err(value) => {
            doc.report(Some(line), key, expected(LABEL_FORM, &value));
            return labels;
        }
    };
    for (name, entry) in entries {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        match to_text(entry.value.get_ref()) {
            Ok(value) if plain => {
                labels.insert(name, value);
            }
            Ok(_) => doc.report(
                Some(entry.line),
                format!("{key}.{name}"),
                "expected a label name of A-Z a-z 0-9 _ . -".to_owned(),
            ),
            Err(message) => doc.report(Some(entry.line), format!("{key}.{name}"), message),
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> (Option<ClusterConfig>, Vec<String>) {
        let mut problems = Vec::new();
        let node = super::super::node::parse(
            Path::new("node.toml"),
            text,
            Path::new("/srv/conf"),
            &mut problems,
        );
        let problems = problems.iter().map(ToString::to_string).collect();
        (node.and_then(|node| node.cluster), problems)
    }

    fn problems_of(text: &str) -> Vec<String> {
        match parse_cluster_service("web", Path::new("web.toml"), text) {
            Ok(service) => panic!("accepted: {service:?}"),
            Err(error) => error.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_cluster_section_takes_its_keys_and_defaults() {
        let (cluster, problems) = node(
            "[cluster]\netcd = [\"http://127.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n\
             labels = { zone = \"a\", role = \"edge\" }\nusername = \"sf\"\npassword_file = \"etcd.pw\"\n",
        );
        assert_eq!(problems, Vec::<String>::new());
        let cluster = cluster.unwrap();
        assert_eq!(cluster.etcd.len(), 2);
        assert_eq!(cluster.prefix, "/snow-fox");
        assert_eq!(cluster.lease_ttl, Duration::from_secs(10));
        assert_eq!(cluster.labels["role"], "edge");
        assert_eq!(
            cluster.password_file,
            Some(PathBuf::from("/srv/conf/etcd.pw"))
        );
        assert_eq!(cluster.fence_margin(), Duration::from_secs(2));
        // No section: no cluster.
        assert_eq!(node(""), (None, Vec::new()));
    }

    #[test]
    fn a_bad_cluster_section_names_each_key_and_line() {
        let (_, problems) = node(
            "name = \"n\"\n[cluster]\netcd = [\"https://e:2379\", \"e:2379/x\"]\nprefix = \"/sf/\"\n\
             lease_ttl = \"1s\"\nlabels = { \"bad key\" = \"x\", zone = 3 }\nusername = \"u\"\nspeed = 1\n",
        );
        let expected = [
            "node.toml:3: key `cluster.etcd[0]`: expected http://HOST:PORT without a path, found an https:// URL",
            "node.toml:3: key `cluster.etcd[1]`",
            "node.toml:4: key `cluster.prefix`",
            "node.toml:5: key `cluster.lease_ttl`: expected a duration from 2s to 1h, found \"1s\"",
            "node.toml:6: key `cluster.labels.bad key`",
            "node.toml:6: key `cluster.labels.zone`",
            "node.toml:7: key `cluster.password_file`: expected username and password_file together",
            "node.toml:8: key `cluster.speed`: unknown key",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, expected) in problems.iter().zip(expected) {
            assert!(
                problem.starts_with(expected),
                "{problem} does not start with {expected}"
            );
        }
        let (_, problems) = node("[cluster]\nlease_ttl = \"10s\"\n");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("key `cluster.etcd`: missing"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_cluster_service_is_a_service_file_plus_placement() {
        let service = parse_cluster_service(
            "web",
            Path::new("web.toml"),
            "command = [\"/bin/web\"]\nstop_timeout = \"3s\"\n[placement]\ninstances = 3\n\
             max_per_node = 2\nconstraints = { zone = \"a\" }\nfence = true\n",
        )
        .unwrap();
        assert_eq!(service.service.command, ["/bin/web"]);
        assert_eq!(service.service.stop_timeout, Duration::from_secs(3));
        assert_eq!(service.service.instances, 1);
        assert!(service.service.autostart);
        assert_eq!(service.placement.instances, 3);
        assert_eq!(service.placement.max_per_node, 2);
        assert_eq!(service.placement.constraints["zone"], "a");
        assert!(service.placement.fence);
        let again =
            parse_cluster_service("web", Path::new("x"), "command = [\"/bin/web\"]\n").unwrap();
        assert_eq!(again.placement.instances, 1);
        assert_eq!(again.placement.max_per_node, 1);
        assert_ne!(again.version, service.version);
    }

    #[test]
    fn a_bad_cluster_service_names_file_line_and_key() {
        let problems = problems_of(
            "command = [\"/bin/web\"]\ninstances = 2\nrequires = [\"db\"]\n[placement]\n\
             instances = 1001\nmax_per_node = 0\nfence = \"yes\"\nspread = 1\n",
        );
        let expected = [
            "web.toml:2: key `instances`: not for a cluster service",
            "web.toml:3: key `requires`: not for a cluster service",
            "web.toml:5: key `placement.instances`",
            "web.toml:6: key `placement.max_per_node`",
            "web.toml:7: key `placement.fence`",
            "web.toml:8: key `placement.spread`: unknown key",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, expected) in problems.iter().zip(expected) {
            assert!(
                problem.starts_with(expected),
                "{problem} does not start with {expected}"
            );
        }
        // Ids that could escape a key or pass for an assigned instance.
        for id in ["../x", "web@1", "a/b", "cluster", ""] {
            let refused = parse_cluster_service(id, Path::new("f.toml"), "command = [\"/x\"]\n");
            assert!(refused.is_err(), "{id:?} accepted");
        }
        assert!(!problems_of("placement = 3\ncommand = [\"/x\"]\n").is_empty());
        assert!(!problems_of("command = [\"/x\"\n").is_empty());
    }
}
