//! The report's figures, drawn with `plotters` to PNG and SVG. Series differ in marker shape
//! and dash pattern as well as colour, so that the figures stay readable in grey.

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (900, 560);

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TTF; plotters' ab_glyph backend needs one registered.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A colour per series, dark enough to differ in grey too.
fn color(k: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(0, 0, 0),
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
    ];
    COLORS[k % COLORS.len()]
}

/// One named line of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart: title, axis labels, series.
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Integer ticks on x (epochs, layers).
    pub integer_x: bool,
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    chart: &LineChart,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (x0, x1) = bounds(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0)),
    );
    let (y0, y1) = bounds(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1)),
    );
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    let integer = chart.integer_x;
    // With integer x (epochs, layers), label only the integers.
    let span = (x1 - x0).ceil().max(1.0) as usize;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style(("sans-serif", 16))
        .x_labels(if integer { (span + 1).min(12) } else { 10 })
        .x_label_formatter(&|v| {
            if !integer {
                format!("{v:.2}")
            } else if (v - v.round()).abs() < 1e-6 {
                format!("{}", v.round())
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (k, series) in chart.series.iter().enumerate() {
        let style = ShapeStyle::from(color(k)).stroke_width(2);
        let points = series.points.clone();
        if k % 2 == 0 {
            ctx.draw_series(LineSeries::new(points.clone(), style))
                .map_err(|e| e.to_string())?
        } else {
            ctx.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))
                .map_err(|e| e.to_string())?
        }
        .label(&series.name)
        .legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(-10, 0), (10, 0)], style)
                + marker_px(k, style)
        });
        // Markers are anchored at the data and drawn in pixels, so they show at any scale.
        let fill = style.filled();
        let drawn = match k % 4 {
            0 => ctx.draw_series(
                points
                    .iter()
                    .map(|p| EmptyElement::at(*p) + Circle::new((0, 0), 4, fill)),
            ),
            1 => ctx.draw_series(
                points
                    .iter()
                    .map(|p| EmptyElement::at(*p) + TriangleMarker::new((0, 0), 5, fill)),
            ),
            2 => ctx.draw_series(
                points
                    .iter()
                    .map(|p| EmptyElement::at(*p) + Cross::new((0, 0), 4, fill)),
            ),
            _ => ctx.draw_series(
                points
                    .iter()
                    .map(|p| EmptyElement::at(*p) + Rectangle::new([(-3, -3), (3, 3)], fill)),
            ),
        };
        drawn.map_err(|e| e.to_string())?;
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(emptiest_corner(&chart.series, (x0, x1), (y0, y1)))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// The corner of the plot that the legend covers least data in (as matplotlib's
/// `loc="best"`): the lines are sampled along their segments, and the legend's box is taken
/// as about 30% of the width and a line's height per series. Ties go to the upper left.
fn emptiest_corner(series: &[Series], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let (w, h) = (0.3, (0.05 * series.len() as f64 + 0.06).min(0.9));
    let corners = [
        (SeriesLabelPosition::UpperLeft, (0.0, w), (1.0 - h, 1.0)),
        (
            SeriesLabelPosition::UpperRight,
            (1.0 - w, 1.0),
            (1.0 - h, 1.0),
        ),
        (SeriesLabelPosition::LowerRight, (1.0 - w, 1.0), (0.0, h)),
        (SeriesLabelPosition::LowerLeft, (0.0, w), (0.0, h)),
    ];
    let mut counts = [0usize; 4];
    for line in series {
        for pair in line.points.windows(2).chain(
            // A single point is a segment of its own.
            (line.points.len() == 1).then_some(&line.points[..]),
        ) {
            let (a, b) = (pair[0], pair[pair.len() - 1]);
            for t in 0..=8 {
                let t = t as f64 / 8.0;
                let u = ((a.0 + t * (b.0 - a.0)) - x.0) / (x.1 - x.0);
                let v = ((a.1 + t * (b.1 - a.1)) - y.0) / (y.1 - y.0);
                for (count, (_, cx, cy)) in counts.iter_mut().zip(&corners) {
                    if (cx.0..=cx.1).contains(&u) && (cy.0..=cy.1).contains(&v) {
                        *count += 1;
                    }
                }
            }
        }
    }
    let best = (0..4).min_by_key(|&k| counts[k]).unwrap_or(0);
    corners[best].0.clone()
}

/// The legend's marker, in pixel coordinates.
fn marker_px<DB: DrawingBackend>(
    k: usize,
    style: ShapeStyle,
) -> DynElement<'static, DB, (i32, i32)> {
    match k % 4 {
        0 => Circle::new((0, 0), 4, style.filled()).into_dyn(),
        1 => TriangleMarker::new((0, 0), 5, style.filled()).into_dyn(),
        2 => Cross::new((0, 0), 4, style.filled()).into_dyn(),
        _ => Rectangle::new([(-3, -3), (3, 3)], style.filled()).into_dyn(),
    }
}

/// Draws `chart` to `stem.png` and `stem.svg`.
pub fn line_chart(stem: &Path, chart: &LineChart) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw_lines(BitMapBackend::new(&png, SIZE).into_drawing_area(), chart)
        .map_err(|e| Error::data(&png, e))?;
    draw_lines(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart)
        .map_err(|e| Error::data(&svg, e))?;
    Ok(())
}

/// Histograms of positive and negative goodness, one panel per layer.
pub struct Histograms {
    pub title: String,
    /// (layer, positives, negatives)
    pub layers: Vec<(usize, Vec<f32>, Vec<f32>)>,
}

fn histogram(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<(f64, f64)> {
    let mut counts = vec![0usize; bins];
    for v in values {
        let b = (((*v as f64 - lo) / (hi - lo)) * bins as f64).floor();
        counts[(b.max(0.0) as usize).min(bins - 1)] += 1;
    }
    let width = (hi - lo) / bins as f64;
    let total = values.len().max(1) as f64;
    // A step outline: each bin as two points, as a fraction of the samples.
    let mut points = vec![(lo, 0.0)];
    for (b, c) in counts.iter().enumerate() {
        let y = *c as f64 / total;
        points.push((lo + b as f64 * width, y));
        points.push((lo + (b + 1) as f64 * width, y));
    }
    points.push((hi, 0.0));
    points
}

fn draw_histograms<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    h: &Histograms,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(&h.title, ("sans-serif", 24))
        .map_err(|e| e.to_string())?;
    let cols = 3.min(h.layers.len().max(1));
    let rows = h.layers.len().div_ceil(cols).max(1);
    let panels = root.split_evenly((rows, cols));
    for ((layer, positive, negative), panel) in h.layers.iter().zip(panels.iter()) {
        let all = positive.iter().chain(negative.iter()).map(|v| *v as f64);
        let (lo, hi) = bounds(all);
        let lo = lo.max(0.0);
        let pos = histogram(positive, lo, hi, 30);
        let neg = histogram(negative, lo, hi, 30);
        let (_, top) = bounds(pos.iter().chain(neg.iter()).map(|p| p.1));
        // Headroom over the tallest bin for the legend (about a fifth of the panel's height),
        // which otherwise hid the peaks it labels.
        let top = 1.3 * top;
        let mut ctx = ChartBuilder::on(panel)
            .caption(format!("layer {layer}"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(|e| e.to_string())?;
        ctx.configure_mesh()
            .x_desc("goodness")
            .y_desc("fraction")
            .label_style(("sans-serif", 11))
            .x_labels(4)
            .y_labels(4)
            .draw()
            .map_err(|e| e.to_string())?;
        let solid = ShapeStyle::from(color(1)).stroke_width(2);
        let dashed = ShapeStyle::from(color(2)).stroke_width(2);
        ctx.draw_series(LineSeries::new(pos, solid))
            .map_err(|e| e.to_string())?
            .label("positive")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], solid));
        ctx.draw_series(DashedLineSeries::new(neg, 6, 4, dashed))
            .map_err(|e| e.to_string())?
            .label("negative (dashed)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 6, y), (x + 10, y), (x + 18, y)], dashed)
            });
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Draws `h` to `stem.png` and `stem.svg`.
pub fn histograms(stem: &Path, h: &Histograms) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let size = (SIZE.0, 300 * h.layers.len().div_ceil(3).max(1) as u32 + 40);
    draw_histograms(BitMapBackend::new(&png, size).into_drawing_area(), h)
        .map_err(|e| Error::data(&png, e))?;
    draw_histograms(SVGBackend::new(&svg, size).into_drawing_area(), h)
        .map_err(|e| Error::data(&svg, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corner(lines: &[&[(f64, f64)]]) -> SeriesLabelPosition {
        let series: Vec<Series> = lines
            .iter()
            .map(|points| Series {
                name: String::new(),
                points: points.to_vec(),
            })
            .collect();
        emptiest_corner(&series, (0.0, 10.0), (0.0, 10.0))
    }

    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        // Accuracy-like curves rising to the top: the upper left holds their start.
        let rising: &[(f64, f64)] = &[(0.0, 7.0), (1.0, 9.5), (10.0, 9.8)];
        let slow: &[(f64, f64)] = &[(0.0, 1.0), (10.0, 4.0)];
        assert!(matches!(
            corner(&[rising, slow]),
            SeriesLabelPosition::LowerRight
        ));
        // A line through the lower right only: the upper left (the tie-break) is free.
        let falling: &[(f64, f64)] = &[(5.0, 3.0), (10.0, 0.0)];
        assert!(matches!(corner(&[falling]), SeriesLabelPosition::UpperLeft));
        // A segment crosses the upper left between its two points.
        let across: &[(f64, f64)] = &[(-1.0, 8.0), (5.0, 9.9)];
        let low: &[(f64, f64)] = &[(0.0, 0.5), (10.0, 0.5)];
        assert!(matches!(
            corner(&[across, low]),
            SeriesLabelPosition::UpperRight
        ));
    }
}
