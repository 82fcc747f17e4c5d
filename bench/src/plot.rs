//! PNG plots of a run's per-second series (plotters, text in the DejaVu font that
//! `cargo xtask demo` installs from Debian's fonts-dejavu-core).

use std::path::Path;

use anyhow::{Context, bail};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::stack::Second;

/// Where Debian's fonts-dejavu-core puts its sans-serif face.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font once (plotters keeps a `'static` reference to it).
fn font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes =
            std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (install fonts-dejavu-core)"))?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes.leak())
            .map_err(|_| format!("{FONT} is not a usable TrueType font"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Two panels over time: glass-to-glass p50/p99 and RTT (ms) above, received bitrate and
/// DELTA's target (Mbit/s) below; each path's span shaded and named, `events` marked.
pub(crate) fn latency_and_bitrate(
    out: &Path,
    seconds: &[Second],
    events: &[(f64, String)],
) -> anyhow::Result<()> {
    if seconds.is_empty() {
        bail!("nothing to plot: no stats were collected");
    }
    font()?;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(out, (1400, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(450);
        let t_max = seconds.iter().map(|s| s.t).fold(1.0, f64::max) + 1.0;
        let lat_max = seconds
            .iter()
            .filter_map(|s| s.g2g_p99_ms)
            .fold(1.0, f64::max)
            * 1.15;
        let rate_max = seconds
            .iter()
            .map(|s| s.mbps.max(s.target_mbps.unwrap_or(0.0)))
            .fold(1.0, f64::max)
            * 1.15;

        let mut lat = ChartBuilder::on(&top)
            .caption("Wavry stack on loopback: latency", ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..t_max, 0.0..lat_max)?;
        lat.configure_mesh()
            .x_desc("seconds")
            .y_desc("ms")
            .label_style(("sans-serif", 14))
            .draw()?;
        shade_paths(&mut lat, seconds, lat_max)?;
        lines(
            &mut lat,
            seconds,
            |s| s.g2g_p50_ms,
            BLUE.stroke_width(2),
            "glass-to-glass p50",
        )?;
        lines(
            &mut lat,
            seconds,
            |s| s.g2g_p99_ms,
            RED.stroke_width(2),
            "glass-to-glass p99",
        )?;
        lines(&mut lat, seconds, |s| s.rtt_ms, BLACK.into(), "RTT")?;
        mark_events(&mut lat, events, lat_max)?;
        lat.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;

        let mut rate = ChartBuilder::on(&bottom)
            .caption("bitrate", ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..t_max, 0.0..rate_max)?;
        rate.configure_mesh()
            .x_desc("seconds")
            .y_desc("Mbit/s")
            .label_style(("sans-serif", 14))
            .draw()?;
        shade_paths(&mut rate, seconds, rate_max)?;
        lines(
            &mut rate,
            seconds,
            |s| Some(s.mbps),
            BLUE.stroke_width(2),
            "received",
        )?;
        lines(
            &mut rate,
            seconds,
            |s| s.target_mbps,
            GREEN.stroke_width(2),
            "DELTA target",
        )?;
        mark_events(&mut rate, events, rate_max)?;
        rate.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", out.display()))
}

type Chart<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One line per path (not joined across the gap between paths), named once in the legend.
fn lines(
    chart: &mut Chart<'_>,
    seconds: &[Second],
    value: fn(&Second) -> Option<f64>,
    style: ShapeStyle,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut named = false;
    for run in seconds.chunk_by(|a, b| a.path == b.path) {
        let points: Vec<_> = run
            .iter()
            .filter_map(|s| value(s).map(|v| (s.t, v)))
            .collect();
        let series = chart.draw_series(LineSeries::new(points, style))?;
        if !named {
            named = true;
            series
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
        }
    }
    Ok(())
}

/// Shades each path's span of seconds and writes its name at the top.
fn shade_paths(
    chart: &mut Chart<'_>,
    seconds: &[Second],
    y_max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    for run in seconds.chunk_by(|a, b| a.path == b.path) {
        let (a, b) = (run[0].t - 1.0, run[run.len() - 1].t);
        let colour = if run[0].path == "direct" {
            CYAN.mix(0.08)
        } else {
            MAGENTA.mix(0.08)
        };
        chart.draw_series([Rectangle::new([(a, 0.0), (b, y_max)], colour.filled())])?;
        chart.draw_series([Text::new(
            run[0].path.to_owned(),
            (a + 0.2, y_max * 0.97),
            ("sans-serif", 16),
        )])?;
    }
    Ok(())
}

/// A dashed-looking vertical line and a label per event.
fn mark_events(
    chart: &mut Chart<'_>,
    events: &[(f64, String)],
    y_max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    for (i, (t, what)) in events.iter().enumerate() {
        // Alternate heights so that close events stay readable.
        let y = y_max * if i % 2 == 0 { 0.88 } else { 0.80 };
        chart.draw_series([PathElement::new(
            [(*t, 0.0), (*t, y)],
            BLACK.mix(0.5).stroke_width(1),
        )])?;
        chart.draw_series([Text::new(what.clone(), (*t + 0.1, y), ("sans-serif", 13))])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_of_two_paths_is_a_png_of_the_asked_size() {
        // cargo xtask test installs fonts-dejavu-core; say so instead of passing.
        assert!(
            Path::new(FONT).exists(),
            "{FONT} missing: run `cargo xtask test` (it installs fonts-dejavu-core)"
        );
        let dir = std::env::temp_dir().join(format!("wavry-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("p.png");
        let s = |t: f64, path: &'static str| Second {
            t,
            path,
            fps: 60.0,
            mbps: 8.0 + t,
            rtt_ms: Some(0.2),
            g2g_p50_ms: Some(5.0),
            g2g_p99_ms: Some(9.0),
            target_mbps: Some(10.0),
            ..Second::default()
        };
        let series = [
            s(1.0, "direct"),
            s(2.0, "direct"),
            s(3.0, "relay"),
            s(4.0, "relay"),
        ];
        latency_and_bitrate(&out, &series, &[(3.5, "relay killed".into())]).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, right after the signature and chunk header.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (1400, 900));
        assert!(latency_and_bitrate(&out, &[], &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
