//! Recycled `f32` buffers for the host engine's activations.
//!
//! A forward pass allocates a few buffers per layer (the normed input, queries, keys, values,
//! the products' outputs), each `rows x width` values: at a prefill chunk of 128 tokens of a
//! 1B model, megabytes each. Fresh allocations that large are new maps from the system, so every
//! 4 KiB of them costs a page fault and the kernel's zeroing when the products first write
//! there (2-3% of a 1B prefill on a Zen 4 VM). The engine hands the buffers it is done with back
//! here, and the next allocation on the same thread reuses one: at most [`KEEP`] buffers and
//! [`KEEP_BYTES`] bytes are kept per thread.

use std::cell::RefCell;

/// Buffers kept per thread.
const KEEP: usize = 16;

/// Bytes kept per thread.
const KEEP_BYTES: usize = 128 << 20;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// `n` zeros, in a recycled buffer where one of this thread's is large enough.
pub(crate) fn zeroed(n: usize) -> Vec<f32> {
    match reuse(n) {
        Some(mut v) => {
            v.clear();
            v.resize(n, 0.0);
            v
        }
        None => vec![0.0; n],
    }
}

/// `n` values for a caller that writes every one of them before reading any (a product's
/// output): a recycled buffer keeps its old values (zeros past its old length), which saves
/// [`zeroed`]'s pass over the memory, a few percent of a forward of a few tokens.
pub(crate) fn to_overwrite(n: usize) -> Vec<f32> {
    match reuse(n) {
        Some(mut v) => {
            v.truncate(n);
            v.resize(n, 0.0);
            v
        }
        None => vec![0.0; n],
    }
}

/// The smallest of this thread's buffers that holds `n` values, so large ones stay for large
/// requests.
fn reuse(n: usize) -> Option<Vec<f32>> {
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        let best = (0..f.len())
            .filter(|&i| f[i].capacity() >= n)
            .min_by_key(|&i| f[i].capacity())?;
        Some(f.swap_remove(best))
    })
}

/// Gives `v` back for reuse on this thread (dropped when the thread keeps enough already).
pub(crate) fn recycle(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        let kept: usize = f.iter().map(|b| b.capacity() * 4).sum();
        if f.len() < KEEP && kept + v.capacity() * 4 <= KEEP_BYTES {
            f.push(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_at_the_asked_length() {
        let mut a = zeroed(1000);
        a.iter_mut().for_each(|v| *v = 7.0);
        let ptr = a.as_ptr();
        recycle(a);
        // Reused (same allocation), yet all zeros and exactly as long as asked.
        let b = zeroed(600);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b.len(), 600);
        assert!(b.iter().all(|&v| v == 0.0));
        // Nothing free that is large enough: a new buffer.
        recycle(b);
        let c = zeroed(5000);
        assert_eq!(c.len(), 5000);
        assert!(c.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_buffers() {
        for _ in 0..(KEEP + 10) {
            recycle(vec![1.0; 64]);
        }
        FREE.with(|f| assert!(f.borrow().len() <= KEEP));
        recycle(Vec::with_capacity(KEEP_BYTES)); // larger than the byte budget left
        FREE.with(|f| {
            let kept: usize = f.borrow().iter().map(|b| b.capacity() * 4).sum();
            assert!(kept <= KEEP_BYTES);
        });
    }
}
