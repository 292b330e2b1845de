//! Slots for checks: at most `per_namespace` checks of one namespace and `per_provider` of one
//! provider object run at a time.
//!
//! A connection that finds its namespace or provider full waits in line (the namespaces of a
//! provider's line take turns, as do the providers of a namespace's line; first come first
//! served within each) and is handed to the runner (`runner.rs`) once its slot is free, with
//! the slot already taken for it. The runner is never asked to retry a
//! connection that cannot run yet: a sweep of N due connections costs about two reconciles
//! each (one to join the line, one to check), however long the line. (Retrying every 1-3 s
//! instead cost 7.5 reconciles per check at 2,000 connections, more the larger the fleet.)
//! Waiting connections hold none of the runner's places, so a provider that hangs delays only
//! its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

pub(super) use super::store::Conn;
use futures::channel::mpsc::UnboundedSender;

/// The lines and counts of every namespace and provider.
pub struct Slots {
    per_namespace: usize,
    per_provider: usize,
    state: Mutex<State>,
    wake: UnboundedSender<Conn>,
}

#[derive(Default)]
struct State {
    namespaces: HashMap<Arc<str>, Line>,
    providers: HashMap<Arc<str>, Line>,
    /// Connections in a line, and what they wait for. Each is in exactly one line: its
    /// provider's while the provider is full, else its namespace's.
    waiting: HashMap<Conn, Want>,
    /// Slots taken for a woken connection until its reconcile claims them.
    held: HashMap<Conn, Want>,
}

#[derive(Default)]
struct Line {
    busy: usize,
    /// Waiting connections grouped by the other half of their want (the namespace in a
    /// provider's line, the provider in a namespace's line), groups served in turn: a thousand
    /// waiting checks of one tenant do not put another tenant's one behind them.
    turns: VecDeque<(Arc<str>, VecDeque<Conn>)>,
}

/// The namespace and provider (label) a check needs a slot of.
#[derive(Clone, Debug, PartialEq)]
struct Want {
    namespace: Arc<str>,
    provider: Arc<str>,
}

impl Want {
    fn key(&self, half: Half) -> &Arc<str> {
        match half {
            Half::Provider => &self.provider,
            Half::Namespace => &self.namespace,
        }
    }
}

/// The two limits a check is under.
#[derive(Clone, Copy)]
enum Half {
    Provider,
    Namespace,
}

impl Half {
    fn other(self) -> Half {
        match self {
            Half::Provider => Half::Namespace,
            Half::Namespace => Half::Provider,
        }
    }
}

/// One check's slot of its namespace and of its provider; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    want: Want,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        self.slots.give_back(&mut state, &self.want);
    }
}

impl Slots {
    pub fn new(per_namespace: usize, per_provider: usize, wake: UnboundedSender<Conn>) -> Self {
        Slots {
            per_namespace: per_namespace.max(1),
            per_provider: per_provider.max(1),
            state: Mutex::default(),
            wake,
        }
    }

    /// A slot for a check of `conn`, or `None`: then `conn` waits in line (keeping its place if
    /// it already does) and is woken when its slot is free.
    pub fn take(self: &Arc<Self>, conn: &Conn, provider: &str) -> Option<Slot> {
        let mut state = self.lock();
        let (_, want) = self.claim(&mut state, conn, provider)?;
        Some(Slot {
            slots: self.clone(),
            want,
        })
    }

    /// Starts a check of a due connection: with its slots free, they are taken for it and the
    /// runner is asked to reconcile it (which claims them); else it waits in line. Either
    /// way without a reconcile spent on finding out.
    /// A connection in line shares its key with the cache and the due queue.
    pub fn start(&self, conn: &Conn, provider: &str) {
        let mut state = self.lock();
        if let Some((conn, want)) = self.claim(&mut state, conn, provider) {
            self.hand(&mut state, conn, want);
        }
    }

    /// Asks the runner to reconcile a due connection whose check needs no slot (it calls
    /// no provider).
    pub fn run_now(&self, conn: &Conn) {
        let _ = self.wake.unbounded_send(conn.clone());
    }

    /// Takes the slots of `conn` (or those held for it), or puts it in line. What it returns is
    /// counted as busy.
    fn claim(&self, state: &mut State, conn: &Conn, provider: &str) -> Option<(Conn, Want)> {
        let want = state.want(&conn.namespace, provider);
        let conn = conn.clone();
        if let Some(want) = state.held.remove(&conn) {
            return Some((conn, want));
        }
        if let Some(want) = state.waiting.get(&conn).cloned() {
            // In line already. Moving the lines here is a safety net only: a free slot is
            // always given to the first in line the moment it is freed.
            self.advance(state, &want);
            return state.held.remove(&conn).map(|want| (conn, want));
        }
        let provider_free = self.free(state, Half::Provider, &want.provider);
        if provider_free && self.free(state, Half::Namespace, &want.namespace) {
            state.start(&want);
            return Some((conn, want));
        }
        // In the line of what is full (the provider's first).
        let half = if provider_free {
            Half::Namespace
        } else {
            Half::Provider
        };
        if let Some(line) = state.line(half, want.key(half)) {
            line.push(want.key(half.other()), conn.clone());
        }
        state.waiting.insert(conn, want);
        None
    }

    /// Ends a reconcile of `conn`: slots taken for it that it did not claim (it was no longer
    /// due, say) go to the next in line.
    pub fn settle(&self, conn: &Conn) {
        let mut state = self.lock();
        if state.held.is_empty() {
            return;
        }
        self.settle_locked(&mut state, conn);
    }

    /// A deleted connection leaves its line, and slots taken for it are freed.
    pub fn forget(&self, conn: &Conn) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(want) = state.waiting.remove(conn) {
            for half in [Half::Provider, Half::Namespace] {
                if let Some(line) = state.line(half, want.key(half)) {
                    line.remove(conn);
                }
            }
        }
        self.settle_locked(state, conn);
    }

    fn settle_locked(&self, state: &mut State, conn: &Conn) {
        if let Some(want) = state.held.remove(conn) {
            self.give_back(state, &want);
        }
    }

    fn give_back(&self, state: &mut State, want: &Want) {
        for half in [Half::Provider, Half::Namespace] {
            if let Some(line) = state.line(half, want.key(half)) {
                line.busy = line.busy.saturating_sub(1);
            }
        }
        self.advance(state, want);
    }

    /// Gives free slots of `want`'s provider and namespace to the first in their lines.
    fn advance(&self, state: &mut State, want: &Want) {
        self.serve(state, Half::Provider, want);
        self.serve(state, Half::Namespace, want);
    }

    /// Serves one line (`want`'s provider or namespace) while it has free slots: the first in
    /// line whose other half is free too starts; one whose other half is full moves to that
    /// line.
    fn serve(&self, state: &mut State, half: Half, want: &Want) {
        let key = want.key(half);
        while self.free(state, half, key) {
            let Some(conn) = state.line(half, key).and_then(Line::pop) else {
                break;
            };
            let Some(w) = state.waiting.get(&conn).cloned() else {
                continue;
            };
            let other = half.other();
            if self.free(state, other, w.key(other)) {
                self.wake(state, conn, w);
            } else if let Some(line) = state.line(other, w.key(other)) {
                line.push(w.key(half), conn);
            }
        }
    }

    /// Whether the provider or namespace `key` has a free slot.
    fn free(&self, state: &mut State, half: Half, key: &Arc<str>) -> bool {
        let size = match half {
            Half::Provider => self.per_provider,
            Half::Namespace => self.per_namespace,
        };
        state.line(half, key).is_some_and(|l| l.busy < size)
    }

    /// Takes the slots for `conn` and asks the runner to reconcile it.
    fn wake(&self, state: &mut State, conn: Conn, want: Want) {
        state.waiting.remove(&conn);
        if state.waiting.is_empty() {
            // The capacity of a sweep's line is not kept once nobody waits.
            state.waiting.shrink_to_fit();
        }
        state.start(&want);
        self.hand(state, conn, want);
    }

    /// Keeps the slots taken for `conn` until its reconcile claims them, and asks the
    /// runner to reconcile it.
    fn hand(&self, state: &mut State, conn: Conn, want: Want) {
        state.held.insert(conn.clone(), want);
        // Closed only when the runner has stopped: nothing to wake then.
        let _ = self.wake.unbounded_send(conn);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// The want of `namespace` and `provider`, their lines created on first use. (Lines stay:
    /// one per namespace and provider object that ever had a check.)
    fn want(&mut self, namespace: &str, provider: &str) -> Want {
        fn key(map: &mut HashMap<Arc<str>, Line>, k: &str) -> Arc<str> {
            match map.get_key_value(k) {
                Some((k, _)) => k.clone(),
                None => {
                    let k: Arc<str> = k.into();
                    map.insert(k.clone(), Line::default());
                    k
                }
            }
        }
        Want {
            namespace: key(&mut self.namespaces, namespace),
            provider: key(&mut self.providers, provider),
        }
    }

    fn start(&mut self, want: &Want) {
        for half in [Half::Provider, Half::Namespace] {
            if let Some(line) = self.line(half, want.key(half)) {
                line.busy += 1;
            }
        }
    }

    fn line(&mut self, half: Half, key: &Arc<str>) -> Option<&mut Line> {
        match half {
            Half::Provider => self.providers.get_mut(key),
            Half::Namespace => self.namespaces.get_mut(key),
        }
    }
}

impl Line {
    /// Puts `conn` at the back of its group's turn (a new group's turn comes last).
    fn push(&mut self, group: &Arc<str>, conn: Conn) {
        match self.turns.iter_mut().find(|(g, _)| g == group) {
            Some((_, queue)) => queue.push_back(conn),
            None => self
                .turns
                .push_back((group.clone(), VecDeque::from([conn]))),
        }
    }

    /// The first of the group whose turn it is; the group's turn then goes to the back.
    fn pop(&mut self) -> Option<Conn> {
        let (group, mut queue) = self.turns.pop_front()?;
        let conn = queue.pop_front();
        if !queue.is_empty() {
            self.turns.push_back((group, queue));
        }
        conn
    }

    fn remove(&mut self, conn: &Conn) {
        for (_, queue) in &mut self.turns {
            queue.retain(|k| k != conn);
        }
        self.turns.retain(|(_, queue)| !queue.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc::{UnboundedReceiver, unbounded};

    fn key(name: &str) -> Conn {
        Conn::new("ns", name)
    }

    fn slots(per_namespace: usize, per_provider: usize) -> (Arc<Slots>, UnboundedReceiver<Conn>) {
        let (tx, rx) = unbounded();
        (Arc::new(Slots::new(per_namespace, per_provider, tx)), rx)
    }

    fn woken(rx: &mut UnboundedReceiver<Conn>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|k| k.name.to_string())
            .collect()
    }

    impl Slots {
        fn waiting(&self) -> usize {
            self.lock().waiting.len()
        }
    }

    #[test]
    fn a_full_provider_puts_checks_in_line_and_wakes_them_in_order() {
        let (slots, mut rx) = slots(10, 2);
        let a = slots.take(&key("a"), "p").expect("free");
        let b = slots.take(&key("b"), "p").expect("free");
        assert!(slots.take(&key("c"), "p").is_none());
        assert!(slots.take(&key("d"), "p").is_none());
        // Asking again keeps the place in line and wakes nothing.
        assert!(slots.take(&key("c"), "p").is_none());
        assert_eq!(slots.waiting(), 2);
        assert!(woken(&mut rx).is_empty());

        drop(a);
        assert_eq!(woken(&mut rx), ["c"], "the first in line, once");
        // The freed slot is held for c: a newcomer does not overtake it.
        assert!(slots.take(&key("e"), "p").is_none());
        let c = slots.take(&key("c"), "p").expect("held for c");
        drop(b);
        assert_eq!(woken(&mut rx), ["d"]);
        drop(c);
        assert_eq!(woken(&mut rx), ["e"]);
        assert_eq!(slots.waiting(), 0);
    }

    #[test]
    fn a_connection_started_from_the_due_queue_waits_under_the_queues_copy_of_its_name() {
        let (slots, mut rx) = slots(10, 1);
        let _busy = slots.take(&key("a"), "p").expect("free");
        let conn = Conn {
            namespace: "ns".into(),
            name: "b".into(),
        };
        slots.start(&conn, "p");
        let state = slots.lock();
        let (waiting, _) = state.waiting.get_key_value(&conn).expect("in line");
        assert!(
            Arc::ptr_eq(&waiting.name, &conn.name),
            "one allocation of the name for the queue and the line"
        );
        drop(state);
        assert!(woken(&mut rx).is_empty());
    }

    #[test]
    fn namespaces_waiting_for_one_provider_take_turns() {
        let (slots, mut rx) = slots(100, 1);
        let at = |name: &str, ns: &str| Conn::new(ns, name);
        let mut held = slots.take(&at("first", "busy"), "shared");
        for name in ["b1", "b2", "b3"] {
            assert!(slots.take(&at(name, "busy"), "shared").is_none());
        }
        assert!(slots.take(&at("q1", "quiet"), "shared").is_none());
        let mut order = Vec::new();
        while let Some(slot) = held.take() {
            drop(slot);
            let next = woken(&mut rx);
            let Some(name) = next.first() else { break };
            let ns = if name.starts_with('q') {
                "quiet"
            } else {
                "busy"
            };
            held = slots.take(&at(name, ns), "shared");
            order.extend(next);
        }
        assert_eq!(
            order,
            ["b1", "q1", "b2", "b3"],
            "one tenant's line does not hold up another's"
        );
    }

    #[test]
    fn a_woken_check_that_needs_no_slot_hands_it_on() {
        let (slots, mut rx) = slots(10, 1);
        let a = slots.take(&key("a"), "p").expect("free");
        assert!(slots.take(&key("b"), "p").is_none());
        assert!(slots.take(&key("c"), "p").is_none());
        drop(a);
        assert_eq!(woken(&mut rx), ["b"]);
        // b's reconcile found it no longer due and ended without a check.
        slots.settle(&key("b"));
        assert_eq!(woken(&mut rx), ["c"]);
        // Settling a connection that holds nothing changes nothing.
        slots.settle(&key("b"));
        assert!(woken(&mut rx).is_empty());
        assert!(slots.take(&key("c"), "p").is_some());
    }

    #[test]
    fn a_deleted_connection_leaves_its_line_and_frees_what_was_held() {
        let (slots, mut rx) = slots(10, 1);
        let a = slots.take(&key("a"), "p").expect("free");
        for name in ["b", "c", "d"] {
            assert!(slots.take(&key(name), "p").is_none());
        }
        slots.forget(&key("c"));
        drop(a);
        assert_eq!(woken(&mut rx), ["b"]);
        slots.forget(&key("b"));
        assert_eq!(
            woken(&mut rx),
            ["d"],
            "c left the line; b's held slot went on"
        );
        assert_eq!(slots.waiting(), 0);
    }

    #[test]
    fn other_providers_run_while_one_provider_has_a_line() {
        let (slots, mut rx) = slots(10, 1);
        let _stuck = slots.take(&key("a"), "stuck").expect("free");
        assert!(slots.take(&key("b"), "stuck").is_none());
        let healthy = slots.take(&key("h"), "healthy");
        assert!(healthy.is_some(), "another provider is not behind the line");
        drop(healthy);
        assert!(
            woken(&mut rx).is_empty(),
            "b still waits for its own provider"
        );
    }

    #[test]
    fn a_full_namespace_and_a_full_provider_are_both_waited_for() {
        // One check per namespace and per provider; provider p serves both namespaces.
        let (slots, mut rx) = slots(1, 1);
        let at = |name: &str, ns: &str| Conn::new(ns, name);
        let a = slots.take(&at("a", "ns1"), "p").expect("free");
        let b = slots.take(&at("b", "ns2"), "q").expect("free");
        // Provider p is full: c waits in p's line.
        assert!(slots.take(&at("c", "ns2"), "p").is_none());
        // The namespace ns2 is full, though provider r is free: d waits in ns2's line.
        assert!(slots.take(&at("d", "ns2"), "r").is_none());
        drop(a);
        // p is free but ns2 is still full: c moves to the back of ns2's line.
        assert!(woken(&mut rx).is_empty());
        drop(b);
        assert_eq!(woken(&mut rx), ["d"], "first in ns2's line");
        slots.settle(&at("d", "ns2"));
        assert_eq!(woken(&mut rx), ["c"]);
        assert!(slots.take(&at("c", "ns2"), "p").is_some());
        assert_eq!(slots.waiting(), 0);
    }
}
