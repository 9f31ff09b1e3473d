//! A minimal SVG line chart (no plotting dependency): one series per line, log-free axes.

/// One named series of `(x, y)` points.
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// A tick label with as many decimals as the axis range needs.
fn tick(y: f64, max: f64) -> String {
    match max {
        m if m >= 50.0 => format!("{y:.0}"),
        m if m >= 5.0 => format!("{y:.1}"),
        _ => format!("{y:.2}"),
    }
}

/// Six horizontal grid lines with labels, at fifths of `[0, y1]`, from `x0` to `x1`.
fn y_grid(y1: f64, x0: f64, x1: f64, py: &dyn Fn(f64) -> f64) -> String {
    (0..=5)
        .map(|i| {
            let y = y1 * i as f64 / 5.0;
            format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><line x1=\"{x0}\" y1=\"{:.1}\" x2=\"{x1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n",
                x0 - 6.0,
                py(y) + 4.0,
                tick(y, y1),
                py(y),
                py(y)
            )
        })
        .collect()
}

/// Renders a line chart with axes, ticks at the data's x values, and a legend.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, l, r, t, b) = (720.0, 420.0, 86.0, 20.0, 40.0, 60.0);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(f64::MIN, f64::max),
    );
    let y1 = ys.iter().cloned().fold(0.0, f64::max) * 1.1;
    let px = |x: f64| l + (x - x0) / (x1 - x0).max(1e-12) * (w - l - r);
    let py = |y: f64| h - b - y / y1.max(1e-12) * (h - t - b);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        w / 2.0
    );
    s += &format!(
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b,
        w - r,
        h - b
    );
    s += &format!(
        "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b
    );
    let mut ticks = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in ticks {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x}</text>\n",
            px(x),
            h - b + 16.0
        );
    }
    s += &y_grid(y1, l, w - r, &py);
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n",
        (l + w - r) / 2.0,
        h - 18.0
    );
    s += &format!(
        "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{y_label}</text>\n",
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            pts.join(" ")
        );
        for &(x, y) in &se.points {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n",
                px(x),
                py(y)
            );
        }
        let ly = t + 10.0 + 18.0 * i as f64;
        s += &format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            l + 12.0,
            l + 32.0,
            l + 38.0,
            ly + 4.0,
            se.name
        );
    }
    s + "</svg>\n"
}

/// Renders a grouped bar chart: one group per category, one bar per series (same order as
/// `categories`; a non-finite value draws no bar), and a dashed reference line at `reference`
/// (e.g. 1.0 for greedy).
pub fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    reference: Option<f64>,
) -> String {
    let (w, h, l, r, t, b) = (900.0, 420.0, 70.0, 20.0, 40.0, 90.0);
    let y1 = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .chain(reference)
        .fold(0.0, f64::max)
        * 1.15;
    let py = |y: f64| h - b - y / y1.max(1e-12) * (h - t - b);
    let gw = (w - l - r) / categories.len().max(1) as f64;
    let bw = gw * 0.8 / series.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        w / 2.0
    );
    s += &y_grid(y1, l, w - r, &py);
    for (ci, c) in categories.iter().enumerate() {
        let gx = l + gw * ci as f64 + gw * 0.1;
        for (si, (_, vals)) in series.iter().enumerate() {
            let v = vals.get(ci).copied().unwrap_or(0.0);
            if !v.is_finite() {
                // Not measured: no bar (a zero-height bar would read as a measured zero).
                continue;
            }
            s += &format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n",
                gx + bw * si as f64,
                py(v),
                bw * 0.95,
                (h - b - py(v)).max(0.0),
                COLORS[si % COLORS.len()]
            );
        }
        let cx = gx + gw * 0.4;
        s += &format!(
            "<text x=\"{cx:.1}\" y=\"{}\" text-anchor=\"end\" transform=\"rotate(-35 {cx:.1} {})\">{c}</text>\n",
            h - b + 14.0,
            h - b + 14.0
        );
    }
    if let Some(rv) = reference {
        s += &format!(
            "<line x1=\"{l}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"black\" stroke-dasharray=\"5,4\"/>\n",
            py(rv),
            w - r,
            py(rv)
        );
    }
    s += &format!(
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b,
        w - r,
        h - b,
        h - b
    );
    s += &format!(
        "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{y_label}</text>\n",
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    // Legend entries side by side, each as wide as its label (~7 px a character at 12 px), at
    // least the 130 px the charts always used.
    let mut lx = l + 12.0;
    for (si, (name, _)) in series.iter().enumerate() {
        s += &format!(
            "<rect x=\"{lx}\" y=\"{}\" width=\"14\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            t + 2.0,
            COLORS[si % COLORS.len()],
            lx + 18.0,
            t + 11.0
        );
        lx += (30.0 + 7.0 * name.chars().count() as f64).max(130.0);
    }
    s + "</svg>\n"
}
