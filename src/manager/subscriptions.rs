//! The event subscriptions: each one a connection and the correlation id
//! of its `Subscribe`, under which the connection gets every `Event`.
//! Bounded per connection; gone with the connection.

use crate::wire::link::ConnectionId;

/// Every subscription, in the order they were made.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    held: Vec<(ConnectionId, String)>,
}

impl Subscriptions {
    /// Subscribes `connection` under `correlation`, unless it holds
    /// `limit` subscriptions already: then how many it holds.
    pub(super) fn add(
        &mut self,
        connection: ConnectionId,
        correlation: &str,
        limit: usize,
    ) -> Result<(), usize> {
        let held = self
            .held
            .iter()
            .filter(|(subscriber, _)| *subscriber == connection)
            .count();
        if held >= limit {
            return Err(held);
        }
        self.held.push((connection, correlation.to_owned()));
        Ok(())
    }

    /// Drops the subscriptions of a connection that closed.
    pub(super) fn closed(&mut self, connection: ConnectionId) {
        self.held
            .retain(|(subscriber, _)| *subscriber != connection);
    }

    /// Whether nobody is subscribed.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Every subscription: its connection and correlation id.
    pub(super) fn iter(&self) -> impl Iterator<Item = (ConnectionId, &str)> {
        self.held
            .iter()
            .map(|(connection, correlation)| (*connection, correlation.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_holds_at_most_its_limit_and_loses_them_when_it_closes() {
        let (one, two) = (ConnectionId(1), ConnectionId(2));
        let mut subscriptions = Subscriptions::default();
        assert_eq!(subscriptions.add(one, "a", 2), Ok(()));
        assert_eq!(subscriptions.add(two, "b", 2), Ok(()));
        assert_eq!(subscriptions.add(one, "c", 2), Ok(()));
        assert_eq!(subscriptions.add(one, "d", 2), Err(2));
        let held: Vec<_> = subscriptions.iter().collect();
        assert_eq!(held, [(one, "a"), (two, "b"), (one, "c")]);
        subscriptions.closed(one);
        assert_eq!(subscriptions.iter().collect::<Vec<_>>(), [(two, "b")]);
        subscriptions.closed(two);
        assert!(subscriptions.is_empty());
    }
}
