//! Reading token choices out of logits: the argmax every decoder verifies with, and the top-K
//! lists drafters learn from. Ties go to the lower token id everywhere, so every decoder and
//! greedy decoding break ties the same way.

use burn::prelude::*;

/// Greedy argmax of every row of `[batch, t, vocab]` logits, as `batch * t` ids (row-major).
/// Ties go to the lowest id (the backend's argmax rule, shared by every decoder).
pub(crate) fn argmax<B: Backend>(logits: Tensor<B, 3>) -> Vec<u32> {
    token_ids(logits.argmax(2))
}

/// The values of an integer tensor of token ids, row-major, as `u32`.
pub(crate) fn token_ids<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<u32> {
    t.into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("int data")
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

/// The `k` highest-scoring tokens of each of `rows` of `[1, n, vocab]` logits, best first (ties
/// to the lower id).
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
    let data = sel.into_data().convert::<f32>();
    let vals = data.as_slice::<f32>().expect("f32 logits");
    vals.chunks(vocab).map(|row| top_k(row, k)).collect()
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
    use super::top_k;

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
