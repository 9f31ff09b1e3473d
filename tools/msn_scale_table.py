#!/usr/bin/env python3
"""The stock-vs-MSN table of scripts/msn_scale_eval.sh, from the JSON files it wrote.

    python3 tools/msn_scale_table.py OUT_DIR   (prints Markdown)
"""
import json
import sys
from pathlib import Path


def load(path):
    with open(path) as f:
        return json.load(f)


def main(out):
    he = {run: load(out / f"humaneval_{run}" / "summary.json") for run in ("stock", "msn")}
    mats = {t: load(out / f"mat{t}" / "msn_finetune.json") for t in (64, 256)}
    m64 = mats[64]
    rows = [
        (f"HumanEval pass@1 ({he['stock']['problems']} problems)",
         lambda r: f"{he[r]['pass_at_1']:.3f} ({he[r]['passed']}/{he[r]['problems']})"),
        (f"clean held-out loss ({m64['held_out_samples']} answers)",
         lambda r: f"{m64[side(r)]['clean_loss']:.4f}"),
        ("top-1 at ahead noise", lambda r: f"{m64[side(r)]['denoise_noised']:.3f}"),
        ("top-1 on clean positions", lambda r: f"{m64[side(r)]['denoise_clean']:.3f}"),
    ]
    for t, m in mats.items():
        for key, name in (("jacobi_mat", "Jacobi"), ("tr_jacobi_mat", "TR-Jacobi (paper)"),
                          ("tr_recycled_mat", "TR-Jacobi (recycled)")):
            rows.append((f"{name} MAT, {t} new tokens ({m['spec_bench_questions']} questions)",
                         lambda r, m=m, key=key: f"{m[side(r)][key]:.3f}"))
    print("| measure | stock | MSN (LoRA) |")
    print("| --- | ---: | ---: |")
    for name, cell in rows:
        print(f"| {name} | {cell('stock')} | {cell('msn')} |")


def side(run):
    return "before" if run == "stock" else "after"


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/msn_scale/eval"))
