//! The run as pictures: line charts (SVG) of figures sampled over time.

use std::path::Path;

use plotters::prelude::*;

/// One line of a chart.
pub(super) struct Series<'a> {
    pub(super) label: &'a str,
    pub(super) values: Vec<f64>,
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Draws `series` against `seconds` (the x axis: seconds since the first request) into an SVG at `path`.
pub(super) fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    seconds: &[f64],
    series: &[Series<'_>],
) -> anyhow::Result<()> {
    let x_max = seconds.iter().copied().fold(1.0, f64::max);
    let y_max = series.iter().flat_map(|s| s.values.iter().copied()).fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first request")
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (n, line) in series.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                seconds.iter().copied().zip(line.values.iter().copied()),
                colour.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(line.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
