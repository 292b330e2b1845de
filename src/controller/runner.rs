//! Runs the connection reconciles: what kube's controller did for connections, kept to what
//! the due queue and the slots leave for it.
//!
//! Every trigger (a connection's own change, its Secret's or provider's, a complete list) goes
//! to the due queue, which looks at the connection and hands it here once it is due and has
//! its slots (`queue.rs`, `slots.rs`). The runner adds two rules: at most `concurrency`
//! reconciles at once, and one reconcile of a connection at a time (a connection handed over
//! while its reconcile runs is run again after it). A failed reconcile goes back to the due
//! queue after its backoff (`reconcile::error_policy`); there is no second scheduler.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use futures::channel::mpsc::UnboundedReceiver;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::Context;
use super::reconcile;
use super::store::Conn as Key;

/// Runs reconciles of the connections handed over through `handed` until `shutdown`
/// resolves; reconciles in flight then finish first.
pub async fn run(
    ctx: Arc<Context>,
    mut handed: UnboundedReceiver<Key>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = match ctx.settings.concurrency {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let mut state = Runs::default();
    let mut tasks = FuturesUnordered::new();
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    loop {
        while tasks.len() < limit {
            let Some(key) = state.next() else { break };
            let ctx = ctx.clone();
            tasks.push(async move {
                reconcile::run_one(&ctx, &key).await;
                key
            });
        }
        tokio::select! {
            () = &mut shutdown => break,
            key = handed.next() => match key {
                Some(key) => state.hand(key),
                None => break,
            },
            Some(key) = tasks.next(), if !tasks.is_empty() => state.done(key),
        }
    }
    while tasks.next().await.is_some() {}
}

/// Which connections are running and which wait for a turn.
#[derive(Default)]
struct Runs {
    running: HashSet<Key>,
    /// Handed over while running: run again once done.
    again: HashSet<Key>,
    waiting: VecDeque<Key>,
    queued: HashSet<Key>,
}

impl Runs {
    fn hand(&mut self, key: Key) {
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.waiting.push_back(key);
        }
    }

    /// The next connection to run (marked running).
    fn next(&mut self) -> Option<Key> {
        let key = self.waiting.pop_front()?;
        self.queued.remove(&key);
        if self.waiting.is_empty() {
            // A sweep's worth of capacity is not kept once nobody waits.
            self.waiting.shrink_to_fit();
            self.queued.shrink_to_fit();
        }
        self.running.insert(key.clone());
        Some(key)
    }

    fn done(&mut self, key: Key) {
        self.running.remove(&key);
        if self.again.remove(&key) {
            self.hand(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn key(name: &str) -> Key {
        Key::new("ns", name)
    }

    #[test]
    fn a_connection_runs_once_at_a_time_and_again_if_handed_over_meanwhile() {
        let mut runs = Runs::default();
        runs.hand(key("a"));
        runs.hand(key("a"));
        runs.hand(key("b"));
        assert_eq!(runs.next(), Some(key("a")), "handed twice, waits once");
        runs.hand(key("a"));
        assert_eq!(runs.next(), Some(key("b")));
        assert_eq!(runs.next(), None, "a is running: not started twice");
        runs.done(key("a"));
        assert_eq!(runs.next(), Some(key("a")), "run again after it");
        runs.done(key("a"));
        runs.done(key("b"));
        assert_eq!(runs.next(), None);
        assert!(runs.running.is_empty() && runs.again.is_empty());
    }
}
