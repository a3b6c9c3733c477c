//! Placement: which node runs each cluster instance. Pure: no store, no
//! clock but the one handed in; the scheduler feeds it what it read.
//!
//! Rules, in order: an instance stays where it is while its node is alive,
//! eligible and within `max_per_node` (so nothing moves that need not);
//! an instance of a node that vanished along with most others stays put
//! for a grace period (a store or network fault is likelier than most
//! nodes dying at once); every other instance goes to the eligible node
//! (constraints met, under `max_per_node`) with the fewest instances, ties
//! broken by name. The same input always gives the same answer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::conf::Placement;

/// A cluster instance: its service's id and its index.
pub type InstanceKey = (String, u32);

/// What placement needs of a service.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// Its `[placement]`.
    pub placement: Placement,
    /// Stopped with `cluster stop`: no instance is placed.
    pub stopped: bool,
}

/// The node of every placed instance; instances no node can take are
/// left out. `alive` maps each live node to its labels; `held` are dead
/// nodes whose instances stay put for now.
pub fn place(
    alive: &BTreeMap<String, BTreeMap<String, String>>,
    services: &BTreeMap<String, Wanted>,
    current: &BTreeMap<InstanceKey, String>,
    held: &BTreeSet<String>,
) -> BTreeMap<InstanceKey, String> {
    let mut load: BTreeMap<&str, usize> = alive.keys().map(|node| (node.as_str(), 0)).collect();
    let mut per_service: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut placed = BTreeMap::new();
    let eligible = |node: &str, placement: &Placement| {
        alive.get(node).is_some_and(|labels| {
            placement
                .constraints
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        })
    };
    let running = || services.iter().filter(|(_, wanted)| !wanted.stopped);
    for (id, wanted) in running() {
        for index in 0..wanted.placement.instances {
            let Some(node) = current.get(&(id.clone(), index)) else {
                continue;
            };
            if held.contains(node) {
                placed.insert((id.clone(), index), node.clone());
                continue;
            }
            let count = per_service.entry((id, node)).or_default();
            if eligible(node, &wanted.placement) && *count < wanted.placement.max_per_node {
                *count += 1;
                *load.entry(node).or_default() += 1;
                placed.insert((id.clone(), index), node.clone());
            }
        }
    }
    for (id, wanted) in running() {
        for index in 0..wanted.placement.instances {
            let key = (id.clone(), index);
            if placed.contains_key(&key) {
                continue;
            }
            let best = alive
                .keys()
                .filter(|node| eligible(node, &wanted.placement))
                .filter(|node| {
                    per_service
                        .get(&(id.as_str(), node.as_str()))
                        .copied()
                        .unwrap_or(0)
                        < wanted.placement.max_per_node
                })
                .min_by_key(|node| (load.get(node.as_str()).copied().unwrap_or(0), *node));
            if let Some(node) = best {
                *per_service.entry((id, node)).or_default() += 1;
                *load.entry(node).or_default() += 1;
                placed.insert(key, node.clone());
            }
        }
    }
    placed
}

/// The dead nodes whose instances stay put now. While the nodes `gone`
/// (vanished recently, or dead and still holding instances) are more than
/// half of the nodes (live plus gone), each dead node of `dead_since`
/// keeps its instances until `grace` after it was first seen dead; the
/// first to vanish, before the others made a majority, moved already.
pub fn held(
    gone: &BTreeSet<String>,
    dead_since: &BTreeMap<String, Instant>,
    alive: usize,
    now: Instant,
    grace: Duration,
) -> BTreeSet<String> {
    if gone.len() * 2 <= alive + gone.len() {
        return BTreeSet::new();
    }
    dead_since
        .iter()
        .filter(|(_, since)| now < **since + grace)
        .map(|(node, _)| node.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
        list.iter()
            .map(|(name, labels)| {
                let labels = labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                ((*name).to_owned(), labels)
            })
            .collect()
    }

    fn service(instances: u32, max_per_node: u32, constraints: &[(&str, &str)]) -> Wanted {
        Wanted {
            placement: Placement {
                instances,
                max_per_node,
                constraints: constraints
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                fence: false,
            },
            stopped: false,
        }
    }

    fn on(placed: &BTreeMap<InstanceKey, String>, id: &str) -> Vec<String> {
        placed
            .iter()
            .filter(|((service, _), _)| service == id)
            .map(|(_, node)| node.clone())
            .collect()
    }

    #[test]
    fn instances_spread_over_the_least_loaded_nodes() {
        let alive = nodes(&[("a", &[]), ("b", &[]), ("c", &[])]);
        let services = BTreeMap::from([("web".to_owned(), service(3, 1, &[]))]);
        let placed = place(&alive, &services, &BTreeMap::new(), &BTreeSet::new());
        assert_eq!(on(&placed, "web"), ["a", "b", "c"]);
        // Deterministic: the same input, the same answer.
        assert_eq!(
            placed,
            place(&alive, &services, &BTreeMap::new(), &BTreeSet::new())
        );
    }

    #[test]
    fn constraints_come_first_then_max_per_node() {
        let alive = nodes(&[("a", &[("zone", "x")]), ("b", &[("zone", "y")]), ("c", &[])]);
        let services = BTreeMap::from([("db".to_owned(), service(3, 2, &[("zone", "x")]))]);
        let placed = place(&alive, &services, &BTreeMap::new(), &BTreeSet::new());
        // Two fit on the one eligible node; the third stays unplaced.
        assert_eq!(on(&placed, "db"), ["a", "a"]);
        assert_eq!(placed.len(), 2);
    }

    #[test]
    fn nothing_moves_that_need_not_and_a_dead_nodes_instance_moves() {
        let alive = nodes(&[("a", &[]), ("b", &[]), ("c", &[])]);
        let services = BTreeMap::from([("web".to_owned(), service(3, 2, &[]))]);
        let first = place(&alive, &services, &BTreeMap::new(), &BTreeSet::new());
        // A new node changes nothing already placed.
        let more = nodes(&[("a", &[]), ("b", &[]), ("c", &[]), ("0", &[])]);
        assert_eq!(place(&more, &services, &first, &BTreeSet::new()), first);
        // b dies: only its instance moves, to the least loaded (a, by name).
        let fewer = nodes(&[("a", &[]), ("c", &[])]);
        let after = place(&fewer, &services, &first, &BTreeSet::new());
        let moved: Vec<_> = first
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .collect();
        assert_eq!(moved.len(), 1);
        assert_eq!(after[&("web".to_owned(), 1)], "a");
        // b returns: nothing moves back.
        assert_eq!(place(&alive, &services, &after, &BTreeSet::new()), after);
    }

    #[test]
    fn a_held_node_keeps_its_instances_and_a_stopped_service_has_none() {
        let alive = nodes(&[("a", &[])]);
        let mut services = BTreeMap::from([("web".to_owned(), service(2, 2, &[]))]);
        let current = BTreeMap::from([
            (("web".to_owned(), 0), "a".to_owned()),
            (("web".to_owned(), 1), "b".to_owned()),
        ]);
        let held_nodes = BTreeSet::from(["b".to_owned()]);
        assert_eq!(place(&alive, &services, &current, &held_nodes), current);
        services.get_mut("web").unwrap().stopped = true;
        assert!(place(&alive, &services, &current, &held_nodes).is_empty());
    }

    #[test]
    fn most_nodes_vanishing_at_once_is_held_for_the_grace_period() {
        let now = Instant::now();
        let grace = Duration::from_secs(4);
        let names = |list: &[&str]| {
            list.iter()
                .map(|n| (*n).to_owned())
                .collect::<BTreeSet<_>>()
        };
        let dead = BTreeMap::from([("b".to_owned(), now), ("c".to_owned(), now)]);
        assert_eq!(held(&names(&["b", "c"]), &dead, 1, now, grace).len(), 2);
        assert!(held(&names(&["b", "c"]), &dead, 1, now + grace, grace).is_empty());
        // One of three is no mass vanishing: it moves at once.
        let one = BTreeMap::from([("b".to_owned(), now)]);
        assert!(held(&names(&["b"]), &one, 2, now, grace).is_empty());
        // b vanished first and its instances moved; c vanishing next makes
        // two of three: c's are held.
        let c = BTreeMap::from([("c".to_owned(), now)]);
        assert_eq!(held(&names(&["b", "c"]), &c, 1, now, grace), names(&["c"]));
    }
}
