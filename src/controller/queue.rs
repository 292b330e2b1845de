//! When each connection is looked at next: a due queue of our own instead of kube's scheduler.
//!
//! A reconcile ends by saying when the connection is next due; kube's controller would keep
//! that as a scheduled request per connection (two copies of its `ObjectRef` and a delay-queue
//! entry, about half a KiB each), held for the whole interval by every connection. Here the
//! queue keeps a deadline per connection (namespace shared, name, a millisecond count: about
//! 150 bytes), and [`run`] looks at a connection when its deadline passes: not yet due (the
//! cache says so), it is put back; due, it takes its slots (`slots.rs`) and is handed to the
//! runner (`runner.rs`), or waits in line without a reconcile. So a check costs one
//! reconcile, and no reconcile is spent on a connection only to find its provider busy.
//! Triggers (a connection's own change, its Secret's, its provider's, a failed reconcile's
//! backoff) are deadlines too: now, or when the backoff ends.
//!
//! The queue only decides when to look: the reconcile decides again on the newest copy, so a
//! look that is early or repeated costs a reconcile, never a check.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::store::Conn;

/// Deadlines of every connection that has one.
pub struct DueQueue {
    epoch: Instant,
    state: Mutex<State>,
    /// Told when a deadline earlier than every other is set.
    earlier: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Milliseconds after `epoch` at which each connection is due.
    at: HashMap<Conn, u64>,
    order: BTreeSet<(u64, Conn)>,
}

impl Default for DueQueue {
    fn default() -> Self {
        DueQueue {
            epoch: Instant::now(),
            state: Mutex::default(),
            earlier: tokio::sync::Notify::new(),
        }
    }
}

impl DueQueue {
    /// Looks at `conn` after `wait` (replacing an earlier or later deadline it had).
    pub fn after(&self, conn: &Conn, wait: Duration) {
        self.put(conn.clone(), wait);
    }

    /// As [`DueQueue::after`], for a connection the queue handed out.
    pub fn put(&self, fresh: Conn, wait: Duration) {
        // A wait is rounded up to the next millisecond, so a connection is never looked at
        // before it has passed; no wait is due at once.
        let now = Instant::now().saturating_duration_since(self.epoch);
        let at = if wait.is_zero() {
            millis(now)
        } else {
            millis(now.saturating_add(wait)).saturating_add(1)
        };
        let first = {
            let mut state = self.lock();
            // A connection that has a deadline keeps its name as stored: the map and the order
            // share one allocation of it.
            let conn = match state.at.remove_entry(&fresh) {
                Some((stored, old)) => {
                    state.order.remove(&(old, stored.clone()));
                    stored
                }
                None => fresh,
            };
            state.at.insert(conn.clone(), at);
            let first = state.order.first().is_none_or(|(t, _)| at < *t);
            state.order.insert((at, conn));
            first
        };
        if first {
            self.earlier.notify_one();
        }
    }

    /// `conn` has no deadline any more (deleted, or waits for a change).
    pub fn forget(&self, conn: &Conn) {
        let mut state = self.lock();
        if let Some((conn, at)) = state.at.remove_entry(conn) {
            state.order.remove(&(at, conn));
        }
    }

    /// Takes out up to `max` connections whose deadline has passed at `now`.
    fn take_due(&self, now: Instant, max: usize) -> Vec<Conn> {
        let now = self.millis(now);
        let mut state = self.lock();
        let mut due = Vec::new();
        while due.len() < max {
            let Some((at, _)) = state.order.first() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some((_, conn)) = state.order.pop_first() else {
                break;
            };
            state.at.remove(&conn);
            due.push(conn);
        }
        if state.at.is_empty() {
            // A sweep's worth of capacity is not kept once nothing is waiting.
            state.at.shrink_to_fit();
        }
        due
    }

    /// The earliest deadline.
    fn next(&self) -> Option<Instant> {
        let state = self.lock();
        let (at, _) = state.order.first()?;
        Some(self.epoch + Duration::from_millis(*at))
    }

    /// How many connections have a deadline.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().at.len()
    }

    fn millis(&self, t: Instant) -> u64 {
        millis(t.saturating_duration_since(self.epoch))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Connections looked at in one go before the task lets others run.
const BATCH: usize = 256;

/// Looks at each connection when its deadline passes (`look` decides and dispatches), until
/// `shutdown` resolves.
pub async fn run(
    queue: Arc<DueQueue>,
    mut look: impl FnMut(Conn),
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let earlier = queue.earlier.notified();
        let due = queue.take_due(Instant::now(), BATCH);
        if due.len() == BATCH {
            due.into_iter().for_each(&mut look);
            tokio::task::yield_now().await;
            continue;
        }
        due.into_iter().for_each(&mut look);
        let sleep = async {
            match queue.next() {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = earlier => {}
            () = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Conn {
        Conn::new("ns", name)
    }

    fn names(conns: Vec<Conn>) -> Vec<String> {
        conns.into_iter().map(|c| c.name.to_string()).collect()
    }

    #[test]
    fn connections_come_out_when_due_in_order_of_their_deadlines() {
        let q = DueQueue::default();
        q.after(&key("late"), Duration::from_secs(60));
        q.after(&key("soon"), Duration::from_secs(1));
        q.after(&key("now"), Duration::ZERO);
        let now = Instant::now();
        assert_eq!(names(q.take_due(now, 10)), ["now"]);
        assert_eq!(
            names(q.take_due(now + Duration::from_secs(120), 10)),
            ["soon", "late"]
        );
        assert_eq!(q.len(), 0);
        assert!(q.next().is_none());
    }

    #[test]
    fn a_new_deadline_replaces_the_old_one() {
        let q = DueQueue::default();
        q.after(&key("a"), Duration::ZERO);
        q.after(&key("a"), Duration::from_secs(60));
        assert_eq!(q.len(), 1);
        assert!(
            q.take_due(Instant::now() + Duration::from_secs(1), 10)
                .is_empty(),
            "the later deadline counts, once"
        );
        q.after(&key("a"), Duration::ZERO);
        assert_eq!(names(q.take_due(Instant::now(), 10)), ["a"]);
    }

    #[test]
    fn a_rescheduled_connection_keeps_one_copy_of_its_name() {
        let q = DueQueue::default();
        q.after(&key("a"), Duration::from_secs(60));
        q.after(&key("a"), Duration::from_secs(30));
        let state = q.lock();
        let (in_map, _) = state.at.get_key_value(&key("a")).unwrap();
        let (_, in_order) = state.order.first().unwrap();
        assert!(Arc::ptr_eq(&in_map.name, &in_order.name));
        assert_eq!(state.order.len(), 1);
    }

    #[test]
    fn a_forgotten_connection_never_comes_out() {
        let q = DueQueue::default();
        q.after(&key("gone"), Duration::ZERO);
        q.after(&key("kept"), Duration::ZERO);
        q.forget(&key("gone"));
        q.forget(&Conn::new("elsewhere", "other"));
        assert_eq!(names(q.take_due(Instant::now(), 10)), ["kept"]);
    }

    #[test]
    fn at_most_a_batch_comes_out_at_once() {
        let q = DueQueue::default();
        for i in 0..5 {
            q.after(&key(&format!("c{i}")), Duration::ZERO);
        }
        assert_eq!(q.take_due(Instant::now(), 3).len(), 3);
        assert_eq!(q.take_due(Instant::now(), 3).len(), 2);
    }

    #[tokio::test]
    async fn run_looks_at_each_connection_when_it_is_due() {
        let q = Arc::new(DueQueue::default());
        let start = Instant::now();
        q.after(&key("b"), Duration::from_millis(400));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            q.clone(),
            move |c: Conn| {
                let _ = tx.send((c.name.to_string(), Instant::now()));
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // An earlier deadline set while the task sleeps wakes it.
        q.after(&key("a"), Duration::from_millis(50));
        let (first, at) = rx.recv().await.expect("a");
        assert_eq!(first, "a", "the earlier deadline first");
        let waited = at.duration_since(start);
        assert!(
            waited >= Duration::from_millis(100),
            "not before its deadline: {waited:?}"
        );
        let (second, at) = rx.recv().await.expect("b");
        assert_eq!(second, "b");
        assert!(at.duration_since(start) >= Duration::from_millis(400));
        let _ = stop_tx.send(());
        task.await.expect("stops on shutdown");
    }
}
