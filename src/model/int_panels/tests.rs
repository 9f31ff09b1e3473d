use super::*;

/// Random blocks with moderate finite scales (and, for Q8_0, the value -128 now and then).
fn random_blocks(ty: GgmlType, blocks: usize, seed: u64) -> Vec<u8> {
    let mut rng = crate::rng::Rng::new(seed);
    let ts = ty.type_size();
    let mut b: Vec<u8> = (0..blocks * ts).map(|_| rng.next_u64() as u8).collect();
    // Where the f16 scales lie.
    let scales: &[usize] = match ty {
        GgmlType::Q4_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q6K => &[208],
        _ => &[0],
    };
    // The K-quants' sub-block scales multiply theirs by up to 63 (Q6_K: 127).
    let k = if ty.block_size() > QK { 64.0 } else { 1.0 };
    for blk in b.chunks_exact_mut(ts) {
        for &at in scales {
            let v = ((rng.next_u64() % 2001) as f32 / 1000.0 - 1.0) / 16.0 / k;
            blk[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
        if ty == GgmlType::Q8_0 && rng.next_u64().is_multiple_of(3) {
            blk[2 + (rng.next_u64() % 32) as usize] = 0x80;
        }
    }
    b
}

fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::Rng::new(seed);
    (0..n)
        .map(|_| ((rng.next_u64() % 20001) as f32 / 10000.0 - 1.0) * 3.0)
        .collect()
}

const TYPES: [GgmlType; 7] = INTEGER_TYPES;

/// [`write_block`] for one chunk width.
type BlockWriter = fn(GgmlType, usize, &[u8], &mut [u8]);

#[test]
fn blocks_are_written_where_the_panel_layout_puts_each_byte() {
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        let blk = random_blocks(ty, 1, 5);
        for lane in 0..PANEL {
            let writers: [(usize, BlockWriter); 2] = [(2, write_block::<2>), (4, write_block::<4>)];
            for (unit, fast) in writers {
                let mut want = vec![0u8; PANEL * ty.type_size()];
                for (i, v) in blk.iter().enumerate() {
                    want[panel_offset(ty, unit, lane, i)] = *v;
                }
                let mut got = vec![0u8; want.len()];
                fast(ty, lane, &blk, &mut got);
                assert_eq!(got, want, "{ty:?}, unit {unit}, lane {lane}");
            }
        }
    }
}

#[test]
fn k_blocks_round_trip_and_dequantize_as_ggml() {
    for ty in TYPES {
        let blocks = random_blocks(ty, 5, 11);
        let mut wf = vec![0f32; 5 * ty.block_size()];
        crate::model::quant::dequantize(ty, &blocks, &mut wf).unwrap();
        let subs = row_blocks(ty, &blocks);
        assert_eq!(subs.len() * QK, wf.len());
        // The definition's blocks are the dequantizer's values, bit for bit.
        for (i, want) in wf.iter().enumerate() {
            let w = subs[i / QK];
            let v = w.d[(i % QK) / 16] * w.v[i % QK] as f32;
            let v = if has_min(ty) { v + w.m } else { v };
            assert_eq!(v.to_bits(), want.to_bits(), "{ty:?} value {i}");
        }
        if is_k(ty) {
            for blk in blocks.chunks_exact(ty.type_size()) {
                let mut back = vec![0u8; ty.type_size()];
                KBlock::decode(ty, blk).encode(ty, &mut back);
                assert_eq!(back, blk, "{ty:?}: encode(decode(b)) == b");
                // The loader's fast writer lays a block out as the general visitor does, and
                // reading it back gives the block.
            }
            // The loader's fast writer lays a panel's blocks out as the general visitor does
            // row by row, and reading a row back gives its block.
            let blocks = random_blocks(ty, PANEL, 12);
            let ks: Vec<KBlock> = blocks
                .chunks_exact(ty.type_size())
                .map(|b| KBlock::decode(ty, b))
                .collect();
            for unit in [2, 4] {
                for lanes in [1, 3, PANEL] {
                    let mut fast = vec![0u8; k_quants::panel_super_bytes(ty)];
                    let mut slow = fast.clone();
                    KBlock::write_panel(&ks[..lanes], ty, unit, &mut fast);
                    for (lane, k) in ks[..lanes].iter().enumerate() {
                        k.write_slow(ty, unit, lane, &mut slow);
                    }
                    assert_eq!(fast, slow, "{ty:?}, unit {unit}, {lanes} rows");
                    for (lane, k) in ks[..lanes].iter().enumerate() {
                        assert_eq!(&KBlock::read(ty, unit, lane, &fast), k);
                    }
                }
            }
        }
    }
}

#[test]
fn the_definition_is_the_exact_product_of_the_dequantized_operands() {
    exact_product::<i16>(1e-4);
    exact_product::<i8>(0.02);
}

/// `close`: how near the quantized product must be to the float one, relative to the sum of
/// the magnitudes of the products.
fn exact_product<Q: PanelAct>(close: f64) {
    // Independent: dequantize both sides (the GGUF dequantizer, the integer blocks by their
    // scales) and sum in f64.
    for ty in TYPES {
        let gb = 9;
        let nb = gb * ty.block_size() / QK;
        let w = random_blocks(ty, gb, 1);
        let mut wf = vec![0f32; nb * QK];
        crate::model::quant::dequantize(ty, &w, &mut wf).unwrap();
        let xf = activations(nb * QK, 2);
        let x = ActRows::<Q>::quantize(&xf, 1, nb * QK);
        let r = x.row(0);
        let exact: f64 = (0..nb * QK)
            .map(|i| f64::from(wf[i]) * f64::from(r.d[i / QK]) * f64::from(r.qs[i].to_i32()))
            .sum();
        let scale: f64 = (0..nb * QK)
            .map(|i| (f64::from(wf[i]) * f64::from(xf[i])).abs())
            .sum();
        let got = f64::from(dot(ty, &w, r));
        assert!(
            (got - exact).abs() <= 1e-5 * scale,
            "{ty:?}: {got} vs {exact}"
        );
        // And the quantized activations are close to the float ones.
        let float: f64 = (0..nb * QK)
            .map(|i| f64::from(wf[i]) * f64::from(xf[i]))
            .sum();
        assert!(
            (got - float).abs() <= close * scale,
            "{ty:?}: {got} vs {float}"
        );
    }
}

#[test]
fn panels_hold_every_block_as_stored() {
    hold::<i16>();
    hold::<i8>();
}

fn hold<Q: PanelAct>() {
    for ty in TYPES {
        // 2 panels (the second padded), 5 (the last alone where paired).
        for (rows, paired) in [(13, false), (13, true), (37, false), (37, true)] {
            let nb = 3;
            let rb = nb * ty.type_size();
            let src = random_blocks(ty, rows * nb, 7);
            let p = Panels::with_layout::<Q>(ty, rows, rb, &src, paired);
            let panels = rows.div_ceil(PANEL);
            assert_eq!(p.bytes.len(), panels * p.panel_bytes(), "whole panels");
            assert_eq!(p.paired(), if paired { panels / 2 * 2 } else { 0 });
            assert_eq!(p.width(), nb * ty.block_size());
            for r in 0..rows {
                let row = &src[r * rb..(r + 1) * rb];
                assert_eq!(p.row_values(r), row_blocks(ty, row), "{ty:?} row {r}");
            }
            assert_eq!(p.gguf_rows(0, rows), src, "{ty:?}: the inverse");
            assert_eq!(
                p.gguf_rows(9, 2),
                src[9 * rb..11 * rb],
                "{ty:?}: rows 9, 10"
            );
        }
    }
}

#[test]
fn paired_panels_hold_both_heads_then_both_values_per_block() {
    // Q4_1, 3 panels of 2 blocks (heads 32 bytes, values 128 per panel block): the pair's
    // block 0 is panel 0's heads, panel 1's, panel 0's values, panel 1's; then block 1; then
    // panel 2 alone, as unpaired.
    let (rows, nb, ty) = (24, 2, GgmlType::Q4_1);
    let rb = nb * ty.type_size();
    let src = random_blocks(ty, rows * nb, 3);
    let plain = Panels::with_layout::<i16>(ty, rows, rb, &src, false);
    let paired = Panels::with_layout::<i16>(ty, rows, rb, &src, true);
    let (pb, unit) = (nb * PANEL * ty.type_size(), PANEL * ty.type_size());
    let plain_at = |panel: usize, b: usize, from: usize, len: usize| {
        plain.bytes[panel * pb + b * unit + from..][..len].to_vec()
    };
    let mut want = Vec::new();
    for b in 0..nb {
        want.extend(plain_at(0, b, 0, 32));
        want.extend(plain_at(1, b, 0, 32));
        want.extend(plain_at(0, b, 32, 128));
        want.extend(plain_at(1, b, 32, 128));
    }
    want.extend(plain_at(2, 0, 0, pb));
    assert_eq!(paired.bytes.to_vec(), want);
}

/// Every instruction-set path this CPU runs, and the definition's own loop (`None`).
fn paths() -> Vec<Option<x86_isa::Isa>> {
    if std::env::var_os("MSN_SKIP_SCALAR").is_some() {
        #[cfg(target_arch = "x86_64")]
        return x86::available().into_iter().map(Some).collect();
    }
    let mut v: Vec<Option<x86_isa::Isa>> = vec![None];
    #[cfg(target_arch = "x86_64")]
    v.extend(x86::available().into_iter().map(Some));
    v
}

#[cfg(target_arch = "x86_64")]
mod x86_isa {
    pub(super) use super::x86::Isa;
}
#[cfg(not(target_arch = "x86_64"))]
mod x86_isa {
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Isa {}
}

/// Features `first..first + n` of `p` times `x` by `isa` into `y` (`[m, features]`).
fn run<Q: PanelAct>(
    p: &Panels,
    isa: Option<x86_isa::Isa>,
    first: usize,
    n: usize,
    x: &ActRows<Q>,
    y: &mut [f32],
) {
    assert!(Q::UNIT == p.unit && first.is_multiple_of(PANEL));
    assert!(first + n <= p.rows && x.width() == p.width());
    let out = Out::new(y, x.rows());
    assert_eq!(out.features, p.rows);
    // SAFETY: the checks of `rows_to` hold (asserted), `isa` comes from `paths`, and nothing
    // else touches `y`.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        p.rows_by(isa, first, n, x, out);
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = isa;
            p.scalar_rows(first, n, x, out);
        }
    }
}

#[test]
fn every_path_and_tile_equals_the_definition_bit_for_bit() {
    every_path::<i16>();
    every_path::<i8>();
}

fn every_path<Q: PanelAct>() {
    let paths = paths();
    eprintln!("paths: {paths:?}");
    for (t, ty) in TYPES.into_iter().enumerate() {
        for (n, nb, m) in [
            (1, 1usize, 1),
            (7, 3, 1),
            (9, 5, 2),
            (40, 2, 1),
            (33, 2, 5),
            (64, 18, 3),
            (17, 1, 8),
            (24, 2, 9),
            (16, 3, 4),
            (48, 2, 17),
        ] {
            // The K-quants' blocks are 8 times longer: fewer of them.
            let nb: usize = if is_k(ty) { nb.div_ceil(4) } else { nb };
            let seed = 10 * t as u64 + n as u64;
            let rb = nb * ty.type_size();
            let w = random_blocks(ty, n * nb, seed);
            let width = nb * ty.block_size();
            let xf = activations(m * width, seed + 100);
            let x = ActRows::<Q>::quantize(&xf, m, width);
            // Every path on both layouts; AVX2's tiles of two panels (wide rows) over any width.
            let cases = paths.iter().flat_map(|i| {
                [
                    (i, false, None),
                    (i, true, None),
                    (i, false, Some(0)),
                    (i, true, Some(0)),
                ]
            });
            for (&isa, paired, two_from) in cases {
                #[cfg(target_arch = "x86_64")]
                x86::TEST_AVX2_TWO_FROM.with(|w| w.set(two_from));
                let p = Panels::with_layout::<Q>(ty, n, rb, &w, paired);
                // A call starts a pair where the panels are paired.
                let step = if paired { 2 * PANEL } else { PANEL };
                for first in (0..n).step_by(step).take(2) {
                    // All features from `first`, or one panel's worth (written, and no more).
                    for count in [n - first, (n - first).min(PANEL + 1)] {
                        let mut y = vec![f32::NAN; n * m];
                        run(&p, isa, first, count, &x, &mut y);
                        for r in 0..n {
                            for j in 0..m {
                                let got = y[j * n + r];
                                if r < first || r >= first + count {
                                    assert!(got.is_nan(), "{ty:?} {isa:?}: feature {r} written");
                                    continue;
                                }
                                let wr = &w[r * rb..(r + 1) * rb];
                                let want = dot(ty, wr, x.row(j));
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{ty:?} {isa:?} (paired {paired}, two from {two_from:?}) \
                                     [{n} x {nb} blocks] x {m}, {count} from {first}: feature \
                                     {r}, activation {j}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Kernel throughput on one core (not a test: `cargo test --release --lib kernel_speed --
/// --ignored --nocapture`; `MSN_KERNEL_ROWS` output rows, `MSN_KERNEL_WIDTH` values per row,
/// `MSN_KERNEL_TYPES` e.g. `Q4_1,Q4_K`, `MSN_KERNEL_M` activation rows e.g. `1,3,5`,
/// `MSN_KERNEL_PAIRED` 0 or 1 for the layout, `MSN_KERNEL_AVX2_TWO` the width from which AVX2
/// takes two panels a tile).
#[test]
#[ignore]
fn kernel_speed() {
    let n: usize = std::env::var("MSN_KERNEL_ROWS").map_or(1536, |v| v.parse().unwrap());
    let types = std::env::var("MSN_KERNEL_TYPES").unwrap_or_else(|_| "Q4_1".into());
    for name in types.split(',') {
        let ty = TYPES
            .into_iter()
            .find(|t| GgmlType::name_of_id(t.id()) == name)
            .unwrap_or_else(|| panic!("{name}: one of {TYPES:?}"));
        // 768 values per row unless `MSN_KERNEL_WIDTH` says (a multiple of 256).
        let width: usize = std::env::var("MSN_KERNEL_WIDTH").map_or(768, |v| v.parse().unwrap());
        let nb = width / ty.block_size();
        let w = random_blocks(ty, n * nb, 3);
        eprintln!("{name}: {n} rows of {width}");
        speed::<i16>(ty, n, nb, &w, false);
        speed::<i8>(ty, n, nb, &w, true);
    }
}

fn speed<Q: PanelAct>(ty: GgmlType, n: usize, nb: usize, w: &[u8], eight: bool) {
    let rb = nb * ty.type_size();
    // `MSN_KERNEL_AVX2_TWO`: AVX2 rows at least this wide take tiles of two panels.
    #[cfg(target_arch = "x86_64")]
    if let Ok(v) = std::env::var("MSN_KERNEL_AVX2_TWO") {
        x86::TEST_AVX2_TWO_FROM.with(|w| w.set(Some(v.parse().unwrap())));
    }
    // `MSN_KERNEL_PAIRED=0`: panels one after another (default: as this CPU reads them).
    let p = match std::env::var("MSN_KERNEL_PAIRED").as_deref() {
        Ok("0") => Panels::with_layout::<Q>(ty, n, rb, w, false),
        Ok("1") => Panels::with_layout::<Q>(ty, n, rb, w, true),
        _ => Panels::new::<Q>(ty, n, rb, w),
    };
    // `MSN_KERNEL_ISA`: only the path of this name (as `Debug` prints it, e.g. `Avx512Vnni`).
    let only = std::env::var("MSN_KERNEL_ISA").ok();
    // `MSN_KERNEL_M`: the activation row counts to time, e.g. `1,2,3,4` (default 1 .. 64).
    let ms: Vec<usize> = std::env::var("MSN_KERNEL_M").map_or(vec![1, 2, 4, 8, 16, 32, 64], |v| {
        v.split(',').map(|m| m.parse().unwrap()).collect()
    });
    let chosen = |isa: &Option<x86_isa::Isa>| {
        only.as_ref()
            .is_none_or(|o| format!("{isa:?}").contains(o.as_str()))
    };
    for isa in paths().into_iter().filter(chosen) {
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = isa {
            let peak = x86::peak(isa, eight, 20_000_000) / 1e9;
            eprintln!(
                "{isa:?} {}-bit peak: {peak:.1} GMAC/s",
                if eight { 8 } else { 16 }
            );
        }
        for &m in &ms {
            let width = nb * ty.block_size();
            let xf = activations(m * width, 5);
            let x = ActRows::<Q>::quantize(&xf, m, width);
            let mut out = vec![0f32; n * m];
            let reps = ((4000 / m) * 1536 / n.max(1536)).max(5);
            run(&p, isa, 0, n, &x, &mut out);
            // The fastest of 15 rounds (a shared VM's neighbours only ever slow a round).
            let per = reps.div_ceil(15);
            let s = (0..15)
                .map(|_| {
                    let t = std::time::Instant::now();
                    for _ in 0..per {
                        run(&p, isa, 0, n, &x, &mut out);
                    }
                    t.elapsed().as_secs_f64() / per as f64
                })
                .fold(f64::INFINITY, f64::min);
            let macs = (n * width * m) as f64;
            eprintln!(
                "{isa:?} {}-bit m={m:3}: {:8.1} us, {:6.1} GMAC/s",
                if eight { 8 } else { 16 },
                s * 1e6,
                macs / s / 1e9
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_instruction_set_override_takes_only_paths_this_cpu_runs() {
    assert_eq!(x86::chosen("scalar"), Ok(None));
    for isa in x86::available() {
        let name = match isa {
            x86::Isa::Avx2 => "avx2",
            x86::Isa::AvxVnni => "avx-vnni",
            x86::Isa::Avx512Vnni => "avx512-vnni",
            x86::Isa::Avx512Vnni256 => "avx512-vnni-256",
        };
        assert_eq!(x86::chosen(name), Ok(Some(isa)));
    }
    let err = x86::chosen("avx9").unwrap_err();
    assert!(
        err.contains("scalar, avx2, avx-vnni, avx512-vnni-256, avx512-vnni"),
        "{err}"
    );
    if !x86::available().contains(&x86::Isa::AvxVnni) {
        let err = x86::chosen("avx-vnni").unwrap_err();
        assert!(err.contains("this CPU runs"), "{err}");
    }
}
