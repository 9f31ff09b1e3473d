//! Reading token choices out of logits: the argmax every decoder verifies with, and the top-K
//! lists drafters learn from. Ties go to the lower token id everywhere, so every decoder and
//! greedy decoding break ties the same way.
//!
//! On a device backend only token ids cross to the host: the argmax and the top-K are reduced
//! on the device. Every read back to the host goes through [`read_back`], which counts them
//! (per thread), so a decoding step can report what it moved.

use burn::prelude::*;
use std::cell::Cell;

thread_local! {
    /// Reads back to the host on this thread, and their bytes.
    static READS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

#[cfg(test)]
thread_local! {
    /// Tests: the device's top-K on a CPU backend too (to count what a device would move).
    pub(crate) static DEVICE_TOP_K: Cell<bool> = const { Cell::new(false) };
}

/// Whether the top-K is taken on the host: on burn's CPU backends, where the logits are.
fn top_k_on_host<B: Backend>(device: &B::Device) -> bool {
    #[cfg(test)]
    if DEVICE_TOP_K.with(Cell::get) {
        return false;
    }
    crate::device::is_host_backend::<B>(device)
}

/// Reads `t` back to the host, counting the read and its bytes.
pub(crate) fn read_back<B, const D: usize, K>(t: Tensor<B, D, K>) -> TensorData
where
    B: Backend,
    K: burn::tensor::TensorKind<B> + burn::tensor::BasicOps<B>,
{
    let data = t.into_data();
    READS.with(|r| {
        let (n, bytes) = r.get();
        r.set((n + 1, bytes + data.bytes.len()));
    });
    data
}

/// Reads back to the host on this thread so far, and their bytes.
pub(crate) fn reads() -> (usize, usize) {
    READS.with(Cell::get)
}

/// Greedy argmax of every row of `[batch, t, vocab]` logits, as `batch * t` ids (row-major).
/// Ties go to the lowest id (the backend's argmax rule, shared by every decoder).
pub(crate) fn argmax<B: Backend>(logits: Tensor<B, 3>) -> Vec<u32> {
    token_ids(logits.argmax(2))
}

/// The values of an integer tensor of token ids, row-major, as `u32`.
pub(crate) fn token_ids<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<u32> {
    read_back(t)
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("int data")
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

/// The `k` highest-scoring tokens of each of `rows` of `[1, n, vocab]` logits, best first (ties
/// to the lower id): on the host for burn's CPU backends (where the logits already are), on the
/// device for the others ([`top_k_on_device`], so only the ids cross).
pub(crate) fn top_k_rows<B: Backend>(
    logits: Tensor<B, 3>,
    rows: &[usize],
    k: usize,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    if rows.is_empty() || k == 0 {
        return Vec::new();
    }
    let [_, n, vocab] = logits.dims();
    let all = rows.len() == n && rows.iter().enumerate().all(|(i, &r)| i == r);
    let sel = if all {
        logits
    } else {
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        logits.select(
            1,
            Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), device),
        )
    };
    if !top_k_on_host::<B>(device) {
        return top_k_on_device(sel, k);
    }
    let data = read_back(sel).convert::<f32>();
    let vals = data.as_slice::<f32>().expect("f32 logits");
    vals.chunks(vocab).map(|row| top_k(row, k)).collect()
}

/// [`top_k`] of every row of `[1, r, vocab]` logits, reduced on their device: `k` rounds of
/// argmax (ties to the lowest id), each masking its winner with `-inf`; one read of the
/// `[1, r, k]` ids. For finite logits it equals [`top_k`] of each row.
pub(crate) fn top_k_on_device<B: Backend>(logits: Tensor<B, 3>, k: usize) -> Vec<Vec<u32>> {
    let [b, r, vocab] = logits.dims();
    let k = k.min(vocab);
    if k == 0 || r == 0 {
        return vec![Vec::new(); b * r];
    }
    let device = logits.device();
    let ids = Tensor::<B, 1, Int>::arange(0..vocab as i64, &device)
        .reshape([1, 1, vocab])
        .expand([b, r, vocab]);
    let mut x = logits;
    let mut picks = Vec::with_capacity(k);
    for i in 0..k {
        let best = x.clone().argmax(2);
        if i + 1 < k {
            let hit = ids.clone().equal(best.clone().expand([b, r, vocab]));
            x = x.mask_fill(hit, f32::NEG_INFINITY);
        }
        picks.push(best);
    }
    token_ids(Tensor::cat(picks, 2))
        .chunks(k)
        .map(<[u32]>::to_vec)
        .collect()
}

/// Indices of the `k` largest values, largest first, ties to the lower index (values ordered by
/// [`f32::total_cmp`]). One pass with a small sorted buffer: most values lose against the
/// buffer's last entry in one comparison, so a 49k-token row costs tens of microseconds.
pub(crate) fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    use std::cmp::Ordering::{Greater, Less};
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &x) in row.iter().enumerate() {
        if best.len() == k && x.total_cmp(&best[k - 1].0) != Greater {
            continue;
        }
        // Before the first strictly smaller value: equal values seen earlier (lower ids) stay
        // ahead.
        let at = best.partition_point(|b| b.0.total_cmp(&x) != Less);
        best.insert(at, (x, i as u32));
        best.truncate(k);
    }
    best.into_iter().map(|b| b.1).collect()
}

#[cfg(test)]
mod tests {
    use super::{reads, top_k, top_k_on_device};
    use burn::prelude::*;

    #[test]
    fn top_k_on_the_device_equals_the_host_one_and_reads_only_ids() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let mut rng = crate::rng::Rng::new(11);
        let (rows, vocab, k) = (5, 300, 10);
        // Few distinct values (ties to the lower id), and distinct ones.
        for distinct in [7, 1_000_000] {
            let vals: Vec<f32> = (0..rows * vocab)
                .map(|_| rng.below(distinct) as f32 / 10.0 - 3.0)
                .collect();
            let logits =
                Tensor::<B, 3>::from_data(TensorData::new(vals.clone(), [1, rows, vocab]), &device);
            let before = reads();
            let got = top_k_on_device(logits, k);
            let after = reads();
            let want: Vec<Vec<u32>> = vals.chunks(vocab).map(|r| top_k(r, k)).collect();
            assert_eq!(got, want, "{distinct} distinct values");
            assert_eq!(after.0 - before.0, 1, "one read");
            assert!(
                after.1 - before.1 <= rows * k * 8,
                "ids only: {} bytes",
                after.1 - before.1
            );
        }
    }

    #[test]
    fn top_k_equals_a_full_sort_with_ties_to_the_lower_id() {
        let mut rng = crate::rng::Rng::new(7);
        for case in 0..200 {
            // Few distinct values, so ties are common; some NaN and infinities.
            let n = 1 + rng.below(300);
            let row: Vec<f32> = (0..n)
                .map(|_| match rng.below(40) {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => f32::INFINITY,
                    v => (v % 7) as f32 - 3.0,
                })
                .collect();
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            for k in [0, 1, 2, 5, 10, n, n + 3] {
                assert_eq!(top_k(&row, k), order[..k.min(n)], "case {case}, k {k}");
            }
        }
    }
}
