//! PNG charts with `plotters` (bitmap backend). Text is drawn by
//! `ab_glyph` from the DejaVu Sans file vendored in `assets/`, so no system
//! font library is needed.

use std::{path::Path, sync::Once};

use anyhow::anyhow;
use plotters::{
    coord::Shift,
    prelude::*,
    style::{
        register_font,
        text_anchor::{HPos, Pos, VPos},
        FontStyle,
    },
};

use crate::{
    driver::Kind,
    report::{distinct, si},
    result::RunResult,
};

/// DejaVu Sans (Bitstream Vera license, see `assets/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            eprintln!("corecast-bench: the vendored font did not load; charts will have no text");
        }
    });
}

fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Corecast => RGBColor(230, 126, 34),
        Kind::Nats => RGBColor(41, 128, 185),
        Kind::Redis => RGBColor(192, 57, 43),
    }
}

/// Bars grouped by category, one bar per broker.
struct Bars {
    title: String,
    y_label: String,
    categories: Vec<String>,
    series: Vec<(Kind, Vec<Option<f64>>)>,
    log: bool,
    fmt: fn(f64) -> String,
}

fn brokers_in(runs: &[&RunResult]) -> Vec<Kind> {
    Kind::ALL.into_iter().filter(|k| runs.iter().any(|r| r.broker == *k)).collect()
}

/// Core mode and settings of a run, for chart titles.
fn section(r: &RunResult) -> String {
    let mode = r.mode.as_deref().unwrap_or("standalone");
    match r.settings.as_deref() {
        Some(settings) => format!("cores: {mode}, {settings}"),
        None => format!("cores: {mode}"),
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotters: {e:?}")
}

fn draw_bars(area: &DrawingArea<BitMapBackend<'_>, Shift>, bars: &Bars) -> anyhow::Result<()> {
    let values = bars.series.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let max = values.clone().fold(0.0f64, f64::max).max(1e-9);
    let min = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let n = bars.categories.len() as f64;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&bars.title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80);
    let categories = bars.categories.clone();
    let x_fmt = move |x: &f64| {
        let c = x.floor();
        if (x - c - 0.5).abs() < 1e-6 {
            categories.get(c as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    if bars.log {
        let lo = (min / 2.0).max(1e-3);
        let mut chart =
            builder.build_cartesian_2d(0.0..n, (lo..max * 8.0).log_scale()).map_err(plot_err)?;
        fill_chart(&mut chart, bars, &x_fmt, lo)
    } else {
        let mut chart = builder.build_cartesian_2d(0.0..n, 0.0..max * 1.3).map_err(plot_err)?;
        fill_chart(&mut chart, bars, &x_fmt, 0.0)
    }
}

type XCoord = plotters::coord::types::RangedCoordf64;

/// Mesh, bars from `base` up, value labels and legend.
fn fill_chart<'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<XCoord, Y>>,
    bars: &Bars,
    x_fmt: &dyn Fn(&f64) -> String,
    base: f64,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.categories.len() * 2 + 1)
        .x_label_formatter(x_fmt)
        .y_label_formatter(&|y| (bars.fmt)(*y))
        .y_desc(bars.y_label.as_str())
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(plot_err)?;
    let width = 0.8 / bars.series.len().max(1) as f64;
    for (s, (kind, vals)) in bars.series.iter().enumerate() {
        let kind = *kind;
        let style = color(kind).filled();
        let rects = vals.iter().enumerate().filter_map(|(c, v)| {
            let x0 = c as f64 + 0.1 + s as f64 * width;
            v.map(|v| Rectangle::new([(x0, base), (x0 + width * 0.92, v.max(base))], style))
        });
        chart.draw_series(rects).map_err(plot_err)?.label(kind.name()).legend(move |(x, y)| {
            Rectangle::new([(x, y - 6), (x + 14, y + 6)], color(kind).filled())
        });
        let labels = vals.iter().enumerate().filter_map(|(c, v)| {
            let x = c as f64 + 0.1 + (s as f64 + 0.46) * width;
            let style =
                TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
            v.map(|v| Text::new((bars.fmt)(v), (x, v.max(base)), style))
        });
        chart.draw_series(labels).map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 15))
        .draw()
        .map_err(plot_err)
}

/// Delivered messages/s per broker and throughput case. `Ok(false)` if
/// there is nothing to draw.
pub fn throughput(runs: &[&RunResult], path: &Path) -> anyhow::Result<bool> {
    let flows: Vec<&RunResult> = runs.iter().copied().filter(|r| r.flow.is_some()).collect();
    if flows.is_empty() {
        return Ok(false);
    }
    ensure_font();
    let categories = distinct(flows.iter().map(|r| r.case.clone()));
    let series = brokers_in(&flows)
        .into_iter()
        .map(|k| {
            let vals = categories
                .iter()
                .map(|c| {
                    flows
                        .iter()
                        .find(|r| r.broker == k && &r.case == c)
                        .and_then(|r| r.flow.as_ref())
                        .map(|f| f.delivered_per_s)
                })
                .collect();
            (k, vals)
        })
        .collect();
    let bars = Bars {
        title: format!("Delivered messages/s ({})", section(flows[0])),
        y_label: "messages/s".into(),
        categories,
        series,
        log: false,
        fmt: si,
    };
    let width = 300 + 260 * bars.categories.len() as u32;
    let root = BitMapBackend::new(path, (width.max(900), 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    draw_bars(&root, &bars)?;
    root.present().map_err(plot_err)?;
    Ok(true)
}

fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else {
        format!("{v:.0}µs")
    }
}

/// Latency percentiles per broker, one panel per latency case (log scale).
pub fn latency(runs: &[&RunResult], path: &Path) -> anyhow::Result<bool> {
    let lats: Vec<&RunResult> = runs.iter().copied().filter(|r| r.latency.is_some()).collect();
    if lats.is_empty() {
        return Ok(false);
    }
    ensure_font();
    let cases = distinct(lats.iter().map(|r| r.case.clone()));
    let root = BitMapBackend::new(path, (1100, 480 * cases.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let section = section(lats[0]);
    for (case, area) in cases.iter().zip(root.split_evenly((cases.len(), 1))) {
        let series = brokers_in(&lats)
            .into_iter()
            .map(|k| {
                let s = lats
                    .iter()
                    .find(|r| r.broker == k && &r.case == case)
                    .and_then(|r| r.latency.as_ref())
                    .map(|l| l.latency);
                (
                    k,
                    s.map_or(vec![None; 5], |s| {
                        vec![
                            Some(s.p50_us),
                            Some(s.p90_us),
                            Some(s.p99_us),
                            Some(s.p999_us),
                            Some(s.max_us),
                        ]
                    }),
                )
            })
            .collect();
        let bars = Bars {
            title: format!("End-to-end latency, {case} ({section})"),
            y_label: "latency (log scale)".into(),
            categories: ["p50", "p90", "p99", "p99.9", "max"].map(String::from).to_vec(),
            series,
            log: true,
            fmt: us,
        };
        draw_bars(&area, &bars)?;
    }
    root.present().map_err(plot_err)?;
    Ok(true)
}
