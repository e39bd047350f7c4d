//! Commands waiting for a worker, and which of them goes next.
//!
//! When a call fills up in a burst, the worker's commands are mostly answers to the
//! renegotiations each join causes for everyone already in the call, each a description of
//! up to a hundred m-lines to apply. A newcomer's own commands (its join, its publisher offer,
//! the answer that brings its subscriber connection up) are what its join time waits on, and in
//! arrival order they queued behind all of those. So the backlog hands out the earliest urgent
//! command first, as long as nothing earlier in it concerns the same participant: each
//! participant's commands keep their order, and only other people's routine work waits.

use std::collections::VecDeque;

pub(crate) struct Backlog<T> {
    items: VecDeque<T>,
}

impl<T> Default for Backlog<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
        }
    }
}

impl<T> Backlog<T> {
    pub(crate) fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the earliest item that `urgent` accepts and that no earlier item concerns the same
    /// participant as (`same_owner`), or else the earliest item.
    pub(crate) fn take_next(
        &mut self,
        same_owner: impl Fn(&T, &T) -> bool,
        urgent: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let next = (0..self.items.len())
            .find(|&i| {
                let item = &self.items[i];
                urgent(item)
                    && !self
                        .items
                        .range(..i)
                        .any(|earlier| same_owner(earlier, item))
            })
            .unwrap_or(0);
        self.items.remove(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (who, what, urgent)
    type Item = (&'static str, u32, bool);

    fn drain(items: &[Item]) -> Vec<u32> {
        let mut backlog = Backlog::default();
        for item in items {
            backlog.push(*item);
        }
        let mut order = Vec::new();
        let same = |a: &Item, b: &Item| !a.0.is_empty() && a.0 == b.0;
        while let Some((_, what, _)) = backlog.take_next(same, |i| i.2) {
            order.push(what);
        }
        order
    }

    #[test]
    fn without_urgent_items_it_is_first_in_first_out() {
        assert_eq!(
            drain(&[("a", 1, false), ("b", 2, false), ("", 3, false)]),
            [1, 2, 3]
        );
        assert_eq!(drain(&[]), Vec::<u32>::new());
    }

    #[test]
    fn urgent_items_go_first_in_their_order() {
        let items = [
            ("a", 1, false),
            ("b", 2, false),
            ("n", 3, true),
            ("c", 4, false),
            ("m", 5, true),
            ("n", 6, true),
        ];
        assert_eq!(drain(&items), [3, 5, 6, 1, 2, 4]);
    }

    #[test]
    fn an_urgent_item_never_overtakes_an_earlier_one_of_the_same_participant() {
        // n's routine item 2 must go before its urgent 4; m's urgent 3 need not wait.
        let items = [
            ("a", 1, false),
            ("n", 2, false),
            ("m", 3, true),
            ("n", 4, true),
        ];
        assert_eq!(drain(&items), [3, 1, 2, 4]);
    }

    #[test]
    fn an_urgent_item_without_a_participant_goes_first_too() {
        assert_eq!(drain(&[("a", 1, false), ("", 2, true)]), [2, 1]);
    }
}
