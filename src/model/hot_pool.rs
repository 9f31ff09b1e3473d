//! A spinning thread pool for the host engine's small parallel regions.
//!
//! A decoding step of a small model is ~150 parallel regions of 20-100 microseconds each (the
//! products of every layer, attention). Waking sleeping worker threads for each costs about as
//! much as the work on a few cores. Here the workers spin on an epoch counter between regions
//! and only park after [`SPIN`] without work, so during a decode they start a region within
//! a fraction of a microsecond; the calling thread takes tasks too. Which thread runs a task
//! never changes its result: every task writes its own output.
//!
//! One region runs at a time; a caller that finds the pool busy (another thread decoding at the
//! same time) runs its region on rayon instead.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// The job of the current region: a type-erased `&(dyn Fn(usize) + Sync)`.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync` and outlives every use (the caller waits for all workers).
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

struct Pool {
    workers: usize,
    /// Serializes regions.
    submit: Mutex<()>,
    /// Bumped once per region (after `job`, `n`, `next`, `done` are set).
    epoch: AtomicU64,
    job: Mutex<Option<Job>>,
    n: AtomicUsize,
    next: AtomicUsize,
    /// Workers finished with the current region.
    done: AtomicUsize,
    panicked: AtomicBool,
    /// Workers parked or about to park (so that a region wakes them only when there are any:
    /// the wake-up is a system call, and a decoding step has ~150 regions).
    parked: AtomicUsize,
    /// Parked workers wait here for the epoch to move.
    sleep: Mutex<()>,
    wake: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = rayon::current_num_threads().saturating_sub(1);
        let p: &'static Pool = Box::leak(Box::new(Pool {
            workers,
            submit: Mutex::new(()),
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            n: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        }));
        for i in 0..workers {
            std::thread::Builder::new()
                .name(format!("msn-hot-{i}"))
                .spawn(move || worker(p))
                .expect("spawn a host engine worker thread");
        }
        p
    })
}

/// The threads a region runs on: the pool's and the caller's.
pub(crate) fn threads() -> usize {
    pool().workers + 1
}

/// Runs `f(0..n)` across the pool's threads and the caller's; returns when all are done.
pub(crate) fn for_each(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let p = pool();
    if n <= 1 || p.workers == 0 {
        (0..n).for_each(f);
        return;
    }
    let Ok(_region) = p.submit.try_lock() else {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(f);
        return;
    };
    // SAFETY: only the lifetime is erased; the pointer is cleared before this function returns
    // and every worker has finished with it by then (`done == workers`).
    let job = Job(unsafe {
        std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
            f as *const _,
        )
    });
    *p.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
    p.n.store(n, Ordering::Relaxed);
    p.next.store(0, Ordering::Relaxed);
    p.done.store(0, Ordering::Relaxed);
    // SeqCst here and in `park`: either this load sees a parking worker, or that worker's
    // check sees the new epoch.
    p.epoch.fetch_add(1, Ordering::SeqCst);
    if p.parked.load(Ordering::SeqCst) > 0 {
        // Under the lock: a worker between its check and its wait holds it.
        let _guard = p.sleep.lock().unwrap_or_else(|e| e.into_inner());
        p.wake.notify_all();
    }
    let caller = run_tasks(p, f);
    while p.done.load(Ordering::Acquire) < p.workers {
        std::hint::spin_loop();
    }
    *p.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    if caller.is_err() || p.panicked.swap(false, Ordering::Relaxed) {
        panic!("a host engine task panicked");
    }
}

/// Takes tasks until none are left.
fn run_tasks(p: &Pool, f: &(dyn Fn(usize) + Sync)) -> std::thread::Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let n = p.n.load(Ordering::Relaxed);
        loop {
            let i = p.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            f(i);
        }
    }))
}

fn worker(p: &'static Pool) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let e = p.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                park(p, seen);
            }
        };
        seen = epoch;
        let job = *p.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Job(f)) = job {
            // SAFETY: the caller keeps `f` alive until every worker has counted itself done.
            if run_tasks(p, unsafe { &*f }).is_err() {
                p.panicked.store(true, Ordering::Relaxed);
            }
        }
        p.done.fetch_add(1, Ordering::Release);
    }
}

/// Waits until the epoch moves past `seen`.
fn park(p: &Pool, seen: u64) {
    let mut guard = p.sleep.lock().unwrap_or_else(|e| e.into_inner());
    p.parked.fetch_add(1, Ordering::SeqCst);
    while p.epoch.load(Ordering::SeqCst) == seen {
        guard = p.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
    p.parked.fetch_sub(1, Ordering::SeqCst);
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_once_in_back_to_back_regions() {
        for n in [0, 1, 2, 7, 64, 1000] {
            for _ in 0..50 {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                for_each(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{n} tasks"
                );
            }
        }
    }

    #[test]
    fn regions_after_the_workers_park_wake_them() {
        for k in 0..20 {
            // Longer than `SPIN`: every worker parks before the next region.
            std::thread::sleep(SPIN * 3);
            let n = 8 + k;
            let sum = AtomicUsize::new(0);
            for_each(n, &|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), n * (n - 1) / 2);
        }
    }

    #[test]
    fn concurrent_callers_and_parked_workers_still_run_everything() {
        std::thread::sleep(Duration::from_millis(5)); // let the workers park
        let threads: Vec<_> = (0..3)
            .map(|t| {
                std::thread::spawn(move || {
                    for k in 0..30 {
                        let n = 10 + t * 7 + k;
                        let sum = AtomicUsize::new(0);
                        for_each(n, &|i| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), n * (n - 1) / 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
