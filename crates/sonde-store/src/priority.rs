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
//!
//! The other way round, the threads an acknowledgement waits on — the HTTP workers, the
//! WAL writer and its completion thread — ask the scheduler (EEVDF, Linux 6.6+; custom
//! slices from 6.12) for a short time slice ([`latency_sensitive`]). That gives them no
//! more CPU, but earlier deadlines: woken while the flusher encodes a burst of files they
//! run at once instead of after its slice. In A/B runs of the ingest bench (60 s at full
//! speed, then 20 s at 50,000 events/s) the paced p99 was 11.9 / 12.6 / 14.1 ms with
//! 300 µs slices against 19.2 / 15.4 ms without (100 µs: no better in five pairs).

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

/// The time slice of [`latency_sensitive`] threads (the default is 0.7 ms × (1 + log2
/// cores): 1.4 ms on two cores).
const LATENCY_SLICE_NS: u64 = 300_000;

/// Give the calling thread a short time slice: for threads that acknowledgements wait on.
/// Threads it spawns inherit it; [`bulk`] takes it back. Failing (a kernel before 6.12
/// ignores or refuses it) leaves the thread as it was.
pub fn latency_sensitive() {
    set_slice(LATENCY_SLICE_NS);
}

/// The default time slice again, for a bulk-work thread spawned by a latency-sensitive one.
pub(crate) fn bulk() {
    set_slice(0);
}

/// `struct sched_attr` up to `sched_period` (`SCHED_ATTR_SIZE_VER0`); not in `libc`.
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For the normal class: the requested slice (0: the default).
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Normal class, nice 0, with a slice of `ns` (0: the default).
fn set_slice(ns: u64) {
    #[cfg(target_os = "linux")]
    {
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            runtime: ns,
            ..SchedAttr::default()
        };
        // SAFETY: sched_setattr on the calling thread (pid 0) with a valid, initialized
        // struct of the size it declares, read by the kernel during the call.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r != 0 {
            tracing::debug!(slice_ns = ns, "could not set a thread's time slice");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = ns;
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

    /// The calling thread's time slice as the kernel reports it.
    fn slice() -> u64 {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as u32;
        // SAFETY: sched_getattr writes at most `size` bytes into `attr`, which has them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        assert_eq!(r, 0, "sched_getattr");
        attr.runtime
    }

    #[test]
    fn latency_sensitive_threads_get_a_short_slice_and_their_children_give_it_back() {
        let default = std::thread::spawn(slice).join().unwrap();
        assert_ne!(default, LATENCY_SLICE_NS);
        std::thread::spawn(move || {
            latency_sensitive();
            assert_eq!(slice(), LATENCY_SLICE_NS);
            std::thread::spawn(move || {
                assert_eq!(slice(), LATENCY_SLICE_NS, "inherited");
                bulk();
                assert_eq!(slice(), default);
            })
            .join()
            .unwrap();
        })
        .join()
        .unwrap();
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
