//! What the manager asked the spawner and awaits an answer to, matched to
//! the answers by correlation id.
//!
//! The spawner answers every request once (`ProcessStarted`, `Ack` or
//! `Error`) under the request's correlation id. Several requests may share
//! one id (a client's stop of a service with three instances is three
//! signals; health checks carry none): those are answered in the order
//! asked, which is the order the spawner takes them in. Requests under
//! different ids may be answered in any order.

use std::collections::{HashMap, VecDeque};

use super::checks::CheckKey;

/// One request of the manager's that the spawner has not answered yet.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Asked {
    /// A `StartProcess` of an instance.
    Start { service: String, index: u32 },
    /// A `SignalProcess`; `client` is the correlation id of the client's
    /// `ServiceSignal` that waits for its answer, if one does.
    Signal { client: Option<String> },
    /// An `AdoptProcess`.
    Watch { pid: u32 },
    /// A `StartProcess` of a check command.
    Check { key: CheckKey },
}

/// The unanswered requests, by correlation id ("" for none), each id's in
/// the order asked.
#[derive(Debug, Default)]
pub(super) struct Asks {
    by_id: HashMap<String, VecDeque<Asked>>,
}

impl Asks {
    /// Notes that a request under `correlation` awaits its answer.
    pub(super) fn push(&mut self, correlation: Option<&str>, asked: Asked) {
        self.by_id
            .entry(correlation.unwrap_or_default().to_owned())
            .or_default()
            .push_back(asked);
    }

    /// The request an answer under `correlation` answers: the oldest one
    /// asked under that id. `None` for an answer nothing awaits.
    pub(super) fn answered(&mut self, correlation: Option<&str>) -> Option<Asked> {
        let id = correlation.unwrap_or_default();
        let queue = self.by_id.get_mut(id)?;
        let asked = queue.pop_front();
        if queue.is_empty() {
            self.by_id.remove(id);
        }
        asked
    }

    /// Every request still unanswered, emptying the table: the spawner is
    /// gone, so none will be.
    pub(super) fn take_all(&mut self) -> Vec<Asked> {
        self.by_id.drain().flat_map(|(_, queue)| queue).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(service: &str, index: u32) -> Asked {
        Asked::Start {
            service: service.to_owned(),
            index,
        }
    }

    #[test]
    fn answers_out_of_order_reach_the_requests_they_answer() {
        let mut asks = Asks::default();
        asks.push(Some("a"), start("web", 0));
        asks.push(
            Some("b"),
            Asked::Signal {
                client: Some("b".to_owned()),
            },
        );
        asks.push(None, Asked::Watch { pid: 7 });
        // The spawner answers the last request first, then the first.
        assert_eq!(asks.answered(None), Some(Asked::Watch { pid: 7 }));
        assert_eq!(asks.answered(Some("a")), Some(start("web", 0)));
        assert_eq!(
            asks.answered(Some("b")),
            Some(Asked::Signal {
                client: Some("b".to_owned())
            })
        );
        assert!(asks.take_all().is_empty());
    }

    #[test]
    fn requests_under_one_id_are_answered_in_the_order_asked() {
        let mut asks = Asks::default();
        for index in 0..3 {
            asks.push(Some("stop:1"), start("web", index));
        }
        asks.push(Some("other"), start("db", 0));
        for index in 0..3 {
            assert_eq!(asks.answered(Some("stop:1")), Some(start("web", index)));
        }
        assert_eq!(asks.answered(Some("stop:1")), None);
        assert_eq!(asks.take_all(), [start("db", 0)]);
    }

    #[test]
    fn an_answer_nothing_awaits_matches_nothing() {
        let mut asks = Asks::default();
        asks.push(Some("a"), start("web", 0));
        assert_eq!(asks.answered(Some("forged")), None);
        assert_eq!(asks.answered(None), None);
        assert_eq!(asks.answered(Some("a")), Some(start("web", 0)));
    }
}
