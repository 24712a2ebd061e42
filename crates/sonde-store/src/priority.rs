//! CPU priority of the store's background threads.
//!
//! Compaction must not delay acknowledgements. At nice 10 it still did: on two cores, a
//! request's wake-ups (the HTTP worker, the WAL writer, the completion thread) waited
//! behind the compactor's time slice, up to 14 ms measured with `perf sched`. Under
//! `SCHED_IDLE` any other thread that wakes preempts it at once (RocksDB's `kIdle` CPU
//! priority does the same for its compaction pool). An idle-class thread gets almost no CPU
//! while the cores are saturated, so once flushed files pile up the compactor goes back to
//! the normal class at nice 10 and takes a small share until it has caught up. Only the
//! merging itself runs idle: what the ingest path may wait for — the buffer's and the
//! manifest's locks, writeback and fsync of merged files, which hold the filesystem's
//! journal — runs at nice 10 ([`unstarved`] inside a merge), so an idle-class thread
//! never sits on it while the cores are busy.

use std::cell::Cell;

thread_local! {
    /// The class this thread last asked for; `None` if it never did.
    static CLASS: Cell<Option<Background>> = const { Cell::new(None) };
}

/// The scheduling class a background thread asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Background {
    /// Runs only when no other thread wants the CPU (`SCHED_IDLE`).
    Idle,
    /// Normal class at nice 10: a small share even on saturated cores.
    Low,
}

/// Put the calling thread in `class`. Failing leaves the thread as it was (logged): only
/// latency depends on it.
pub(crate) fn set(class: Background) {
    CLASS.with(|c| c.set(Some(class)));
    apply(class);
}

/// Run `f` in the normal class if this thread is in the idle class, then go back: for
/// work that holds a lock other threads wait for. Other threads run `f` as they are.
pub(crate) fn unstarved<R>(f: impl FnOnce() -> R) -> R {
    if CLASS.with(|c| c.get()) != Some(Background::Idle) {
        return f();
    }
    apply(Background::Low);
    let out = f();
    apply(Background::Idle);
    out
}

fn apply(class: Background) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread (`0` and its own tid); the only memory
    // passed is a `sched_param` on this stack, read by the kernel during the call.
    unsafe {
        let (policy, nice) = match class {
            Background::Idle => (libc::SCHED_IDLE, 0),
            Background::Low => (libc::SCHED_OTHER, 10),
        };
        let param = libc::sched_param { sched_priority: 0 };
        let tid = libc::gettid();
        if libc::sched_setscheduler(0, policy, &param) != 0
            || libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0
        {
            tracing::debug!(class = ?class, "could not set a background thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = class;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_thread_moves_to_idle_and_back_to_nice_10() {
        std::thread::spawn(|| {
            set(Background::Idle);
            assert_eq!(policy(), libc::SCHED_IDLE);
            assert_eq!(unstarved(policy), libc::SCHED_OTHER);
            assert_eq!(policy(), libc::SCHED_IDLE);
            set(Background::Low);
            assert_eq!(policy(), libc::SCHED_OTHER);
            // SAFETY: reads the calling thread's nice value.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            assert_eq!(nice, 10);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn unstarved_leaves_a_thread_that_never_chose_a_class_alone() {
        std::thread::spawn(|| {
            assert_eq!(unstarved(policy), libc::SCHED_OTHER);
            // SAFETY: reads the calling thread's nice value.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            assert_eq!(nice, 0);
        })
        .join()
        .unwrap();
    }
}
