//! The dependency graph of the services: `requires` and `after` edges,
//! both of which order starts (a service starts after what it names) and,
//! reversed, stops.
//!
//! It lives in `conf` rather than in the manager because
//! [`super::Config::load`] needs it to refuse a cycle, and `conf` may not
//! import a role; the manager uses the same graph for start order, pull-in
//! and reverse stop order, so the walk is written once. Pure: no threads,
//! no channels, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ServiceConfig;

/// The services and their `requires` and `after` edges.
#[derive(Debug, Clone, Copy)]
pub struct Graph<'c> {
    services: &'c BTreeMap<String, ServiceConfig>,
}

impl<'c> Graph<'c> {
    /// The graph of `services`.
    pub fn new(services: &'c BTreeMap<String, ServiceConfig>) -> Self {
        Graph { services }
    }

    /// What `id` starts after: its `requires`, then its `after`.
    fn before(&self, id: &str) -> impl Iterator<Item = &'c str> + use<'c> {
        self.services.get(id).into_iter().flat_map(|service| {
            service
                .requires
                .iter()
                .chain(&service.after)
                .map(String::as_str)
        })
    }

    /// A dependency cycle, as the ids along it with the first repeated at
    /// the end (`["a", "b", "c", "a"]`); the first one found in id order.
    pub fn cycle(&self) -> Option<Vec<String>> {
        let mut done = BTreeSet::new();
        for id in self.services.keys() {
            let mut path = Vec::new();
            if let Some(cycle) = self.find_cycle(id, &mut path, &mut done) {
                return Some(cycle);
            }
        }
        None
    }

    fn find_cycle(
        &self,
        id: &'c str,
        path: &mut Vec<&'c str>,
        done: &mut BTreeSet<&'c str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|on_path| *on_path == id) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(id.to_owned());
            return Some(cycle);
        }
        if done.contains(id) {
            return None;
        }
        path.push(id);
        for next in self.before(id) {
            if let Some(cycle) = self.find_cycle(next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(id);
        None
    }

    /// `id` and everything it requires, directly or not, in an order where
    /// each comes after what it requires. Assumes no cycle (as in a loaded
    /// configuration).
    pub fn requirements(&self, id: &str) -> Vec<String> {
        let mut order = Vec::new();
        self.visit_requirements(id, &mut order);
        order
    }

    fn visit_requirements(&self, id: &str, order: &mut Vec<String>) {
        if order.iter().any(|seen| seen == id) || !self.services.contains_key(id) {
            return;
        }
        for required in &self.services[id].requires {
            self.visit_requirements(required, order);
        }
        order.push(id.to_owned());
    }

    /// The services that require `id`, directly or not, each after its own
    /// dependents (the order to stop them in, before `id`).
    pub fn dependents(&self, id: &str) -> Vec<String> {
        RequiredBy::new(self.services).dependents(id)
    }
}

/// Who names each service, directly: the `requires` edges reversed, and
/// the `requires` and `after` edges reversed, each list in id order. Built
/// once per configuration, so that finding a service's dependents walks
/// only them, not every service (a stop of each of 10,000 services walked
/// all of them).
#[derive(Debug, Clone, Default)]
pub struct RequiredBy {
    requires: HashMap<String, Vec<String>>,
    names: HashMap<String, Vec<String>>,
}

impl RequiredBy {
    /// The reversed `requires` (and `after`) edges of `services`.
    pub fn new(services: &BTreeMap<String, ServiceConfig>) -> Self {
        let mut by = RequiredBy::default();
        for service in services.values() {
            for required in &service.requires {
                by.requires
                    .entry(required.clone())
                    .or_default()
                    .push(service.id.clone());
            }
            let named: BTreeSet<&String> = service.requires.iter().chain(&service.after).collect();
            for id in named {
                by.names
                    .entry(id.clone())
                    .or_default()
                    .push(service.id.clone());
            }
        }
        by
    }

    /// The services that require `id` directly, in id order.
    pub fn required_by(&self, id: &str) -> &[String] {
        self.requires.get(id).map_or(&[], Vec::as_slice)
    }

    /// The services that name `id` in their `requires` or `after`, in id
    /// order: those that must be down before `id` stops, when they stop
    /// too.
    pub fn stop_before(&self, id: &str) -> &[String] {
        self.names.get(id).map_or(&[], Vec::as_slice)
    }

    /// The services that require `id`, directly or not, each after its own
    /// dependents (the order to stop them in, before `id`).
    pub fn dependents(&self, id: &str) -> Vec<String> {
        let mut order = Vec::new();
        self.visit(id, &mut order);
        order.retain(|dependent| dependent != id);
        order
    }

    fn visit(&self, id: &str, order: &mut Vec<String>) {
        if order.iter().any(|seen| seen == id) {
            return;
        }
        for dependent in self.required_by(id) {
            self.visit(dependent, order);
        }
        order.push(id.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::service::tests::minimal;

    fn services(edges: &[(&str, &[&str], &[&str])]) -> BTreeMap<String, ServiceConfig> {
        edges
            .iter()
            .map(|(id, requires, after)| {
                let mut service = minimal(id);
                service.requires = requires.iter().map(|s| (*s).to_owned()).collect();
                service.after = after.iter().map(|s| (*s).to_owned()).collect();
                ((*id).to_owned(), service)
            })
            .collect()
    }

    #[test]
    fn a_cycle_is_named_along_its_edges() {
        let services = services(&[("a", &["b"], &[]), ("b", &[], &["c"]), ("c", &["a"], &[])]);
        assert_eq!(
            Graph::new(&services).cycle(),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        let services = services_without_cycle();
        assert_eq!(Graph::new(&services).cycle(), None);
        let selfish = self::services(&[("x", &["x"], &[])]);
        assert_eq!(
            Graph::new(&selfish).cycle(),
            Some(vec!["x".into(), "x".into()])
        );
    }

    fn services_without_cycle() -> BTreeMap<String, ServiceConfig> {
        services(&[
            ("app", &["db", "cache"], &["log"]),
            ("cache", &["db"], &[]),
            ("db", &[], &[]),
            ("log", &[], &[]),
            ("web", &["app"], &[]),
        ])
    }

    #[test]
    fn requirements_come_before_what_requires_them() {
        let services = services_without_cycle();
        let graph = Graph::new(&services);
        assert_eq!(graph.requirements("web"), ["db", "cache", "app", "web"]);
        assert_eq!(graph.requirements("db"), ["db"]);
    }

    #[test]
    fn dependents_stop_before_what_they_require() {
        let services = services_without_cycle();
        let graph = Graph::new(&services);
        assert_eq!(graph.dependents("db"), ["web", "app", "cache"]);
        assert_eq!(graph.dependents("log"), Vec::<String>::new());
        let by = RequiredBy::new(&services);
        assert_eq!(by.stop_before("log"), ["app"]);
        assert_eq!(by.stop_before("db"), ["app", "cache"]);
        assert_eq!(by.required_by("db"), ["app", "cache"]);
        assert_eq!(by.required_by("log"), Vec::<String>::new());
        // Named twice, listed once.
        let twice = self::services(&[("a", &["b"], &["b"]), ("b", &[], &[])]);
        assert_eq!(RequiredBy::new(&twice).stop_before("b"), ["a"]);
    }
}
