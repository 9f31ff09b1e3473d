#!/usr/bin/env python3
"""Accepted tokens per forward pass (MAT) by where in the answer a step starts.

Reads the per-step accept lengths that `specbench` writes (`<out>/<decoder>.jsonl`) and prints
one markdown row per file: MAT over the steps that start in each token range of an answer, and
over all steps (pooled, as `specbench` reports it). Standard library only.

    python3 scripts/mat_by_position.py [--svg OUT.svg] [--label NAME=FILE ...] FILE ...

`--svg` also draws the table as grouped bars (one group per token range, one bar per file);
`NAME=FILE` names a file's bars in the legend.
"""
import json
import sys

EDGES = [0, 64, 128, 256, 1 << 30]


def buckets(path):
    tokens = [0] * (len(EDGES) - 1)
    steps = [0] * (len(EDGES) - 1)
    for line in open(path, encoding="utf-8"):
        if not line.strip():
            continue
        for choice in json.loads(line)["choices"]:
            for turn in choice["accept_lengths"]:
                at = 0
                for n in turn:
                    b = max(i for i in range(len(EDGES) - 1) if EDGES[i] <= at)
                    tokens[b] += n
                    steps[b] += 1
                    at += n
    return tokens, steps


def svg_bars(title, groups, series):
    """Grouped bar chart: `series` is [(name, [value per group])]."""
    w, h, left, top, bottom = 760, 360, 60, 40, 60
    colors = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377"]
    vmax = max([v for _, vs in series for v in vs if v == v] + [1.0]) * 1.1
    gw = (w - left - 20) / len(groups)
    bw = gw * 0.8 / max(1, len(series))
    y = lambda v: top + (h - top - bottom) * (1 - v / vmax)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{y(0)}" x2="{w - 20}" y2="{y(0)}" stroke="black"/>']
    for k in range(6):
        v = vmax * k / 5
        out.append(f'<text x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{v:.1f}</text>')
        out.append(f'<line x1="{left}" y1="{y(v)}" x2="{w - 20}" y2="{y(v)}" stroke="#ddd"/>')
    out.append(f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">'
               "accepted tokens per forward pass</text>")
    for g, name in enumerate(groups):
        x0 = left + g * gw + gw * 0.1
        out.append(f'<text x="{left + g * gw + gw / 2}" y="{h - bottom + 18}" text-anchor="middle">{name}</text>')
        for i, (_, vs) in enumerate(series):
            v = vs[g]
            if v == v:  # not NaN
                out.append(f'<rect x="{x0 + i * bw:.1f}" y="{y(v):.1f}" width="{bw * 0.9:.1f}" '
                           f'height="{y(0) - y(v):.1f}" fill="{colors[i % len(colors)]}"/>')
                out.append(f'<text x="{x0 + i * bw + bw * 0.45:.1f}" y="{y(v) - 4:.1f}" '
                           f'text-anchor="middle" font-size="10">{v:.2f}</text>')
    for i, (name, _) in enumerate(series):
        lx = left + 10 + i * 175
        out.append(f'<rect x="{lx}" y="{h - 22}" width="12" height="12" fill="{colors[i % len(colors)]}"/>')
        out.append(f'<text x="{lx + 16}" y="{h - 12}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(args):
    svg, labels, paths = None, {}, []
    it = iter(args)
    for a in it:
        if a == "--svg":
            svg = next(it, None)
        elif a == "--label":
            name, _, path = next(it, "").partition("=")
            labels[path] = name
        else:
            paths.append(a)
    if not paths or (svg is not None and not svg):
        sys.exit(__doc__)
    names = [f"tokens {EDGES[i]}-{EDGES[i + 1]}" if EDGES[i + 1] < 1 << 30 else f"tokens {EDGES[i]}+"
             for i in range(len(EDGES) - 1)]
    print("| file | " + " | ".join(names) + " | all |")
    print("|---" * (len(names) + 2) + "|")
    series = []
    for p in paths:
        tokens, steps = buckets(p)
        cells = [f"{t / s:.2f} ({s} steps)" if s else "-" for t, s in zip(tokens, steps)]
        print(f"| {p} | " + " | ".join(cells) + f" | {sum(tokens) / max(1, sum(steps)):.2f} |")
        values = [t / s if s else float("nan") for t, s in zip(tokens, steps)]
        series.append((labels.get(p, p), values + [sum(tokens) / max(1, sum(steps))]))
    if svg:
        # Ranges no file reached are left out of the chart.
        keep = [i for i in range(len(names)) if any(vs[i] == vs[i] for _, vs in series)]
        groups = [names[i] for i in keep] + ["all"]
        series = [(n, [vs[i] for i in keep] + [vs[-1]]) for n, vs in series]
        with open(svg, "w", encoding="utf-8") as f:
            f.write(svg_bars("MAT by where in the answer a step starts", groups, series))


if __name__ == "__main__":
    main(sys.argv[1:])
