//! Gives the allocator's free pages back to the kernel while checks run (glibc builds).
//!
//! glibc's `malloc` keeps what a program frees inside its heaps for reuse. In a sweep the cache
//! replaces each connection's copy with the one carrying its new status, and the checks' Secret
//! reads, status writes and watch events come and go; the holes they leave between live
//! objects stay resident, so the resident set grows well past what is in use. `malloc_trim`
//! hands the whole free pages inside those holes back to the kernel (`madvise`). It runs every
//! few seconds while status writes happen and not at all while the operator is idle; one call
//! over a heap of some tens of MiB takes well under a millisecond. The container image is a
//! musl build, whose allocator returns freed pages by itself: there this does nothing.

use std::time::Duration;

/// Calls `trim` every `every` while `activity` (a counter of status writes) moves, until
/// `stop` resolves.
pub async fn trim_while_busy(
    activity: impl Fn() -> u64,
    every: Duration,
    mut trim: impl FnMut(),
    stop: impl std::future::Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut seen = activity();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let now = activity();
        if now != seen {
            seen = now;
            trim();
        }
    }
}

/// Returns free heap pages to the kernel; whether any was returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and only reorganizes glibc's own free lists; it is
    // safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl) return freed pages by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn trims_only_while_something_happens() {
        let writes = Arc::new(AtomicU64::new(0));
        let trims = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (counter, trimmed) = (writes.clone(), trims.clone());
        let task = tokio::spawn(trim_while_busy(
            move || counter.load(Ordering::Relaxed),
            Duration::from_millis(10),
            move || {
                trimmed.fetch_add(1, Ordering::Relaxed);
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(trims.load(Ordering::Relaxed), 0, "idle: no trim");
        writes.store(5, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(trims.load(Ordering::Relaxed), 1, "one trim per change seen");
        let _ = stop_tx.send(());
        task.await.expect("stops when told");
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_pages_go_back_to_the_kernel() {
        // Many small blocks, every other one freed: holes inside the heap, not at its top.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1000]).collect();
        let kept: Vec<Vec<u8>> = blocks
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| (i % 8 == 0).then_some(b))
            .collect();
        assert!(trim(), "glibc returned pages from the holes");
        assert_eq!(kept.len(), 2_500);
    }
}
