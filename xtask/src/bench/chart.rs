//! PNG charts of benchmark results: side-by-side panels, each with categories along x and
//! one bar per series, whiskers spanning min to max over the runs.

use std::{path::Path, sync::OnceLock};

use anyhow::{anyhow, Context as _, Result};
use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};

use super::Spread;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub struct Series {
    pub name: String,
    /// One value per category; `None` where the series has no figure.
    pub values: Vec<Option<Spread>>,
}

pub struct Panel {
    pub title: String,
    pub y_desc: String,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
}

/// Text needs a font file; plotters' bitmap backend ships none. DejaVu comes with Debian's
/// `fonts-dejavu-core`.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT).map_err(|e| format!("reading {FONT}: {e}"))?;
            register_font("sans-serif", FontStyle::Normal, Vec::leak(bytes))
                .map_err(|_| format!("{FONT} is not a usable font"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

/// Draws `panels` side by side into a PNG at `path`.
pub fn draw(path: &Path, panels: &[Panel]) -> Result<()> {
    font()?;
    let width = 520 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    for (area, panel) in root
        .split_evenly((1, panels.len().max(1)))
        .iter()
        .zip(panels)
    {
        draw_panel(area, panel)?;
    }
    root.present()
        .map_err(err)
        .with_context(|| format!("writing {}", path.display()))
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    p: &Panel,
) -> Result<()> {
    let n = p.categories.len().max(1);
    let top = p
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .map(|v| v.max)
        .fold(0.0, f64::max);
    // Headroom above the bars for the legend.
    let top = if top > 0.0 { top * 1.6 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(err)?;
    let cats = p.categories.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&move |x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                cats.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(p.y_desc.as_str())
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let k = p.series.len().max(1) as f64;
    let slot = 0.8 / k;
    for (si, s) in p.series.iter().enumerate() {
        let color = Palette99::pick(si).to_rgba();
        let offset = -0.4 + slot * (si as f64 + 0.5);
        let points: Vec<(f64, Spread)> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as f64 + offset, v)))
            .collect();
        chart
            .draw_series(points.iter().map(|(x, v)| {
                Rectangle::new(
                    [(x - slot * 0.45, 0.0), (x + slot * 0.45, v.min)],
                    color.filled(),
                )
            }))
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart
            .draw_series(points.iter().map(|(x, v)| {
                ErrorBar::new_vertical(*x, v.min, v.min, v.max, BLACK.stroke_width(1), 6)
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}
