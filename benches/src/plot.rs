//! Plots for the bench reports: line charts (recall vs QPS, latency vs corpus size,
//! throughput vs concurrency) and grouped bar charts (hit@k per category per mode), each
//! written as `NAME.svg` and `NAME.png`.
//!
//! Text is drawn with DejaVu Sans, embedded from the `dejavu` crate and registered with
//! plotters' `ab_glyph` text backend, so neither backend needs the system's fontconfig
//! or freetype: a fresh machine renders the same pictures.
//!
//! The `*_figures` functions read a report's JSON rather than its Rust type, so that every
//! series the report holds is drawn — a peer added to a report shows up in its plot
//! without a change here.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

/// Pixel size of every chart (SVG and PNG alike).
const SIZE: (u32, u32) = (900, 560);
const FONT: &str = "sans-serif";

/// One named line of a [`LineChart`]: `(x, y)` points, drawn in the order given.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// `(x, y)` in data units (before any log scaling).
    pub points: Vec<(f64, f64)>,
}

/// A line chart with markers and a legend.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    /// The caption above the chart.
    pub title: String,
    /// The x axis' description.
    pub x_label: String,
    /// The y axis' description.
    pub y_label: String,
    /// Logarithmic x axis (every x must then be positive; others are dropped).
    pub log_x: bool,
    /// Start the y axis at 0 instead of just below the smallest value.
    pub y_from_zero: bool,
    /// Legend in the upper left corner (for rising lines) instead of the upper right.
    pub legend_left: bool,
    /// The lines, in legend order (colours are assigned in this order).
    pub series: Vec<Series>,
}

/// A grouped bar chart: one group per category, one bar per series within each group.
#[derive(Clone, Debug, Default)]
pub struct BarChart {
    /// The caption above the chart.
    pub title: String,
    /// The y axis' description.
    pub y_label: String,
    /// Category names along the x axis.
    pub groups: Vec<String>,
    /// `(series name, one value per group)`; a missing value (`None`) leaves a gap.
    pub series: Vec<(String, Vec<Option<f64>>)>,
    /// Upper end of the y axis (default: the largest value plus 10%).
    pub y_max: Option<f64>,
}

fn register_fonts() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut failed = false;
    ONCE.call_once(|| {
        failed = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .is_err()
            || plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_err();
    });
    if failed {
        return Err(anyhow!("the embedded DejaVu font did not load"));
    }
    Ok(())
}

/// The palette of the series, in order (colour-blind safe, Okabe–Ito).
fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
        RGBColor(240, 228, 66),
    ];
    C[i % C.len()]
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e}")
}

/// A number as an axis label: no trailing zeros, thousands as `k`.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn draw_line<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &LineChart,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let fx = |x: f64| if chart.log_x { x.log10() } else { x };
    let series: Vec<(String, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| {
            let pts = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.log_x || *x > 0.0))
                .map(|&(x, y)| (fx(x), y))
                .collect();
            (s.name.clone(), pts)
        })
        .collect();
    let all = series.iter().flat_map(|(_, p)| p.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let xpad = ((x1 - x0) * 0.05).max(if chart.log_x { 0.1 } else { 1e-9 });
    let ypad = ((y1 - y0) * 0.08).max(y1.abs() * 0.05).max(1e-9);
    let y_lo = if chart.y_from_zero {
        0.0f64.min(y0)
    } else {
        y0 - ypad
    };
    let mut c = ChartBuilder::on(root)
        .caption(&chart.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x0 - xpad)..(x1 + xpad), y_lo..(y1 + ypad))
        .map_err(err)?;
    let log_x = chart.log_x;
    let x_fmt = move |v: &f64| {
        if log_x {
            tick(two_significant(10f64.powf(*v)))
        } else {
            tick(*v)
        }
    };
    let y_fmt = |v: &f64| tick(*v);
    c.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let col = colour(i);
        c.draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, col.filled())))
            .map_err(err)?;
    }
    if series.len() > 1 || series.first().is_some_and(|(n, _)| !n.is_empty()) {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(if chart.legend_left {
                SeriesLabelPosition::UpperLeft
            } else {
                SeriesLabelPosition::UpperRight
            })
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// `v` rounded to two significant digits (log-axis ticks fall between round numbers).
fn two_significant(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(v.abs().log10().floor() as i32 - 1);
    (v / scale).round() * scale
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &BarChart,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let groups = chart.groups.len().max(1);
    let largest = chart
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let y_max = chart
        .y_max
        .unwrap_or(if largest > 0.0 { largest * 1.1 } else { 1.0 });
    let mut c = ChartBuilder::on(root)
        .caption(&chart.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(groups as f64 - 0.5), 0f64..y_max)
        .map_err(err)?;
    let names = chart.groups.clone();
    let x_fmt = move |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 0.01 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let y_fmt = |v: &f64| tick(*v);
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .y_desc(&chart.y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    let n = chart.series.len().max(1) as f64;
    let width = 0.8 / n;
    for (s, (name, values)) in chart.series.iter().enumerate() {
        let col = colour(s);
        c.draw_series(values.iter().enumerate().filter_map(|(g, v)| {
            let v = (*v)?;
            let left = g as f64 - 0.4 + s as f64 * width;
            Some(Rectangle::new(
                [(left, 0.0), (left + width * 0.92, v.min(y_max))],
                col.filled(),
            ))
        }))
        .map_err(err)?
        .label(name.as_str())
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], col.filled()));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn write_both(
    dir: &Path,
    name: &str,
    svg: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
    png: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<String>> {
    register_fonts()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (svg_name, png_name) = (format!("{name}.svg"), format!("{name}.png"));
    let svg_path = dir.join(&svg_name);
    svg(&SVGBackend::new(&svg_path, SIZE).into_drawing_area())
        .with_context(|| format!("cannot draw {}", svg_path.display()))?;
    let png_path = dir.join(&png_name);
    png(&BitMapBackend::new(&png_path, SIZE).into_drawing_area())
        .with_context(|| format!("cannot draw {}", png_path.display()))?;
    Ok(vec![svg_name, png_name])
}

/// Draws `chart` as `DIR/NAME.svg` and `DIR/NAME.png`; returns the two file names.
pub fn line_chart(dir: &Path, name: &str, chart: &LineChart) -> anyhow::Result<Vec<String>> {
    write_both(dir, name, |a| draw_line(a, chart), |a| draw_line(a, chart))
}

/// Draws `chart` as `DIR/NAME.svg` and `DIR/NAME.png`; returns the two file names.
pub fn bar_chart(dir: &Path, name: &str, chart: &BarChart) -> anyhow::Result<Vec<String>> {
    write_both(dir, name, |a| draw_bars(a, chart), |a| draw_bars(a, chart))
}

/// Markdown that shows each SVG among `files` and links its PNG.
pub fn markdown(files: &[String]) -> String {
    let mut md = String::new();
    for f in files.iter().filter(|f| f.ends_with(".svg")) {
        let stem = f.trim_end_matches(".svg");
        md += &format!("![{stem}]({f})\n\n");
        if files.iter().any(|p| p == &format!("{stem}.png")) {
            md += &format!("([PNG]({stem}.png))\n\n");
        }
    }
    md
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// `bench ann`: recall@10 against QPS, one line per library found in the report (any
/// object with `lib` and `points`, directly, as `{"Ok": …}` or as a peer's `result`, at
/// the top level or in an array there, such as `peers`).
pub fn ann_figures(report: &Value, dir: &Path) -> anyhow::Result<Vec<String>> {
    fn lib(v: &Value) -> Option<&Value> {
        let v = v.get("result").unwrap_or(v);
        let v = v.get("Ok").unwrap_or(v);
        (v.get("lib").is_some() && v.get("points").is_some_and(Value::is_array)).then_some(v)
    }
    let mut libs: Vec<&Value> = Vec::new();
    if let Some(map) = report.as_object() {
        for v in map.values() {
            match v {
                Value::Array(items) => libs.extend(items.iter().filter_map(lib)),
                _ => libs.extend(lib(v)),
            }
        }
    }
    let series: Vec<Series> = libs
        .iter()
        .map(|l| Series {
            name: l["lib"].as_str().unwrap_or("?").to_owned(),
            points: l["points"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((num(p, "recall")?, num(p, "qps")?)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(Vec::new());
    }
    line_chart(
        dir,
        "recall_vs_qps",
        &LineChart {
            title: "ANN: recall@10 vs queries per second (one thread)".into(),
            x_label: "recall@10".into(),
            y_label: "queries / s".into(),
            y_from_zero: true,
            series,
            ..Default::default()
        },
    )
}

/// `bench retrieve`: p50/p95/p99 latency against corpus size (log x), with and without
/// the namespace filter, and while another client ingests.
pub fn retrieve_figures(report: &Value, dir: &Path) -> anyhow::Result<Vec<String>> {
    let sizes = report["sizes"].as_array().cloned().unwrap_or_default();
    let mut series = Vec::new();
    for (phase, label) in [
        ("no_filter", "no filter"),
        ("namespace_filter", "namespace"),
        ("under_ingest", "while ingesting"),
    ] {
        for p in ["p50_ms", "p95_ms", "p99_ms"] {
            let points: Vec<(f64, f64)> = sizes
                .iter()
                .filter_map(|s| Some((num(s, "records")?, num(&s[phase], p)?)))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    name: format!("{label} {}", p.trim_end_matches("_ms")),
                    points,
                });
            }
        }
    }
    if series.is_empty() {
        return Ok(Vec::new());
    }
    line_chart(
        dir,
        "latency_vs_corpus",
        &LineChart {
            title: "RetrieveMemoryRecords latency vs corpus size".into(),
            legend_left: true,
            x_label: "records".into(),
            y_label: "latency (ms)".into(),
            log_x: true,
            y_from_zero: true,
            series,
        },
    )
}

/// `bench ingest`: acknowledged CreateEvents per second (and p99 latency) against the
/// number of concurrent clients, from the report's `sweep` (one point per level).
pub fn ingest_figures(report: &Value, dir: &Path) -> anyhow::Result<Vec<String>> {
    let sweep = report["sweep"].as_array().cloned().unwrap_or_default();
    let mut files = Vec::new();
    let points = |k: &str| -> Vec<(f64, f64)> {
        sweep
            .iter()
            .filter_map(|r| Some((num(r, "concurrency")?, num(r, k)?)))
            .collect()
    };
    let scale = report["scale"].as_array().cloned().unwrap_or_default();
    let by_size = |k: &str| -> Vec<(f64, f64)> {
        scale
            .iter()
            .filter_map(|r| Some((num(r, "events")?, num(r, k)?)))
            .collect()
    };
    if scale.len() > 1 {
        files.extend(line_chart(
            dir,
            "throughput_vs_size",
            &LineChart {
                title: "CreateEvent throughput vs events in the log".into(),
                legend_left: true,
                x_label: "events".into(),
                y_label: "events / s".into(),
                log_x: true,
                y_from_zero: true,
                series: vec![Series {
                    name: "CreateEvent".into(),
                    points: by_size("events_per_sec"),
                }],
            },
        )?);
        files.extend(line_chart(
            dir,
            "latency_vs_size",
            &LineChart {
                title: "Latency vs events in the log".into(),
                legend_left: true,
                x_label: "events".into(),
                y_label: "latency (ms)".into(),
                log_x: true,
                y_from_zero: true,
                series: [
                    ("CreateEvent p50", "p50_ms"),
                    ("CreateEvent p99", "p99_ms"),
                    ("ListEvents p99", "list_p99_ms"),
                ]
                .iter()
                .map(|(name, k)| Series {
                    name: (*name).into(),
                    points: by_size(k),
                })
                .collect(),
            },
        )?);
    }
    let throughput = points("events_per_sec");
    if throughput.is_empty() {
        return Ok(files);
    }
    files.extend(line_chart(
        dir,
        "throughput_vs_concurrency",
        &LineChart {
            title: "CreateEvent throughput vs concurrent clients".into(),
            legend_left: true,
            x_label: "concurrent clients".into(),
            y_label: "events / s".into(),
            log_x: true,
            y_from_zero: true,
            series: vec![Series {
                name: "CreateEvent".into(),
                points: throughput,
            }],
        },
    )?);
    files.extend(line_chart(
        dir,
        "latency_vs_concurrency",
        &LineChart {
            title: "CreateEvent latency vs concurrent clients".into(),
            legend_left: true,
            x_label: "concurrent clients".into(),
            y_label: "latency (ms)".into(),
            log_x: true,
            y_from_zero: true,
            series: ["p50_ms", "p99_ms"]
                .iter()
                .map(|p| Series {
                    name: p.trim_end_matches("_ms").into(),
                    points: points(p),
                })
                .collect(),
        },
    )?);
    Ok(files)
}

/// `bench locomo`: hit@k per question category, one bar per mode. Every entry of the
/// report's `results` object that has `by_category` is a mode, and so is every peer in
/// `peers.peers` (or a `peers`/`baselines` object) whose `result` has one. The metric is
/// read as `hit@k` or `hit_at_k`.
pub fn locomo_figures(report: &Value, dir: &Path, k: u32) -> anyhow::Result<Vec<String>> {
    let keys = [format!("hit@{k}"), format!("hit_at_{k}")];
    let metric = |v: &Value| keys.iter().find_map(|key| num(v, key));
    let has_categories = |r: &Value| r.get("by_category").is_some_and(Value::is_object);
    let mut modes: Vec<(String, &Value)> = Vec::new();
    for section in ["results", "peers", "baselines"] {
        if let Some(map) = report.get(section).and_then(Value::as_object) {
            for (name, r) in map {
                if has_categories(r) {
                    modes.push((name.clone(), r));
                }
            }
        }
    }
    for p in report
        .pointer("/peers/peers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(lib), Some(r)) = (p["lib"].as_str(), p.get("result"))
            && has_categories(r)
        {
            modes.push((lib.to_owned(), r));
        }
    }
    let mut groups: Vec<String> = modes
        .iter()
        .flat_map(|(_, r)| r["by_category"].as_object().into_iter().flatten())
        .map(|(c, _)| c.clone())
        .collect();
    groups.sort_by_key(|c| (c.parse::<u32>().unwrap_or(u32::MAX), c.clone()));
    groups.dedup();
    if modes.is_empty() || groups.is_empty() {
        return Ok(Vec::new());
    }
    let mut labels: Vec<String> = groups.iter().map(|c| format!("cat {c}")).collect();
    labels.push("all".into());
    let series = modes
        .iter()
        .map(|(name, r)| {
            let mut v: Vec<Option<f64>> = groups
                .iter()
                .map(|c| metric(&r["by_category"][c.as_str()]))
                .collect();
            v.push(metric(&r["overall"]));
            (name.clone(), v)
        })
        .collect();
    bar_chart(
        dir,
        &format!("hit_at_{k}_by_category"),
        &BarChart {
            title: format!("LoCoMo hit@{k} per question category"),
            y_label: format!("hit@{k}"),
            groups: labels,
            series,
            y_max: Some(1.05),
        },
    )
}

/// `bench eval`: spans per second by encoding and stage (grouped bars).
pub fn eval_figures(report: &Value, dir: &Path) -> anyhow::Result<Vec<String>> {
    let i = &report["ingest"];
    let get = |enc: &str, k: &str| num(&i[enc], k);
    if get("protobuf", "parse_spans_per_sec").is_none() {
        return Ok(Vec::new());
    }
    bar_chart(
        dir,
        "otlp_spans_per_sec",
        &BarChart {
            title: "OTLP span ingest, spans per second".into(),
            y_label: "spans / s".into(),
            groups: vec!["decode + map".into(), "decode + map + store".into()],
            series: ["protobuf", "json"]
                .iter()
                .map(|enc| {
                    (
                        (*enc).to_owned(),
                        vec![
                            get(enc, "parse_spans_per_sec"),
                            get(enc, "ingest_spans_per_sec"),
                        ],
                    )
                })
                .collect(),
            y_max: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_well() {
        assert_eq!(tick(100_000.0), "100k");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(1_500_000.0), "1.5M");
    }

    #[test]
    fn markdown_embeds_svg_and_links_png() {
        let md = markdown(&["a.svg".into(), "a.png".into()]);
        assert!(md.contains("![a](a.svg)"));
        assert!(md.contains("(a.png)"));
    }
}
