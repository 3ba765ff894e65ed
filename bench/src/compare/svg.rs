//! The SVG figure: for each pinning mode and scenario, one horizontal bar per broker for the median
//! of the scenario's headline metric, scaled to the largest.
//!
//! Draws collected results only: it starts no broker, runs no scenario and writes no file itself.

use std::fmt::Write as _;

use super::metrics::{metrics_for, ReportCtx};

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart: for each mode and scenario, the headline figure of every broker.
pub(super) fn svg_chart(ctx: &ReportCtx<'_>) -> String {
    const W: f64 = 960.0;
    const LEFT: f64 = 170.0;
    const BAR_H: f64 = 16.0;
    const GAP: f64 = 14.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    ];
    let mut rows = String::new();
    let mut y = 58.0;
    for (mi, (mode, _)) in ctx.modes.iter().enumerate() {
        let _ = writeln!(
            rows,
            r#"<text x="10" y="{y}" font-size="15" font-weight="bold">{}</text>"#,
            if ctx.modes[mi].1 {
                "Broker pinned to its own CPU"
            } else {
                "Unpinned"
            }
        );
        let _ = mode;
        y += 14.0;
        for (si_, sc) in ctx.scenarios.iter().enumerate() {
            let m = metrics_for(sc)[0];
            let vals: Vec<Option<f64>> = (0..ctx.brokers.len())
                .map(|bi| ctx.median_of(mi, si_, bi, &m))
                .collect();
            let max = vals.iter().flatten().copied().fold(0.0f64, f64::max);
            y += 8.0;
            let _ = writeln!(
                rows,
                r#"<text x="10" y="{:.0}" font-size="12">{} — {} ({} is better)</text>"#,
                y + 4.0,
                xml_escape(&ctx.scenario_texts[si_]),
                xml_escape(m.name),
                if m.higher_is_better {
                    "higher"
                } else {
                    "lower"
                }
            );
            y += 10.0;
            for (bi, v) in vals.iter().enumerate() {
                let width = match v {
                    Some(v) if max > 0.0 => (v / max) * (W - LEFT - 140.0),
                    _ => 0.0,
                };
                let color = COLORS[bi % COLORS.len()];
                let _ = writeln!(
                    rows,
                    r#"<text x="{:.0}" y="{:.0}" font-size="11" text-anchor="end">{}</text><rect x="{LEFT}" y="{y:.0}" width="{width:.1}" height="{BAR_H}" fill="{color}"/><text x="{:.1}" y="{:.0}" font-size="11">{}</text>"#,
                    LEFT - 6.0,
                    y + 12.0,
                    xml_escape(&ctx.brokers[bi].name),
                    LEFT + width + 6.0,
                    y + 12.0,
                    xml_escape(&v.map_or_else(|| "no result".into(), m.fmt))
                );
                y += BAR_H + 3.0;
            }
            y += GAP - 3.0;
        }
        y += 10.0;
    }
    let h = y + 10.0;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h:.0}" viewBox="0 0 {W} {h:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="26" font-size="18" font-weight="bold">amqtt-bench compare: median of {} round(s)</text>
{rows}</svg>
"#,
        ctx.args.rounds
    )
}
