//! Pictures of benchmark results, as SVG files (drawn with `plotters`).
//!
//! **Owns:** turning numbers already measured into drawings: the latency distribution of
//! one run ([`latency_svg`]) and a bar chart of msgs/s per shape per broker from
//! `scripts/compare.sh`'s JSON lines ([`throughput_chart`]).
//!
//! **Must not touch:** the measurement itself; a drawing failure never fails a run.

use std::path::Path;

use plotters::prelude::*;

/// Errors while drawing or reading results.
#[derive(Debug, thiserror::Error)]
pub enum SvgError {
    /// The drawing backend failed.
    #[error("drawing {path}: {msg}")]
    Draw {
        /// Output file.
        path: String,
        /// What failed.
        msg: String,
    },
    /// The results file could not be read or holds no usable line.
    #[error("results {path}: {msg}")]
    Input {
        /// Input file.
        path: String,
        /// What is wrong.
        msg: String,
    },
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> SvgError {
    SvgError::Draw {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// Percentile as "nines" on the x axis: 0 → 0, 90% → 1, 99% → 2, 99.9% → 3 ...
fn nines(q: f64) -> f64 {
    -(1.0 - q.min(0.999_999)).log10()
}

/// Draws latency (µs, log scale) against percentile (in nines) for one run. `points` are
/// (quantile in 0..=1, latency µs), as from `hdrhistogram`'s quantile iterator.
pub fn latency_svg(path: &Path, title: &str, points: &[(f64, u64)]) -> Result<(), SvgError> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .map(|&(q, us)| (nines(q), us.max(1) as f64))
        .collect();
    let max_x = pts.iter().map(|p| p.0).fold(1.0, f64::max).ceil().max(2.0);
    let max_y = pts.iter().map(|p| p.1).fold(10.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_x, (1f64..max_y).log_scale())
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&|x| {
            let n = x.round() as i32;
            match n {
                0 => "0%".into(),
                1 => "90%".into(),
                2 => "99%".into(),
                _ => format!("99.{}%", "9".repeat((n - 2).max(0) as usize)),
            }
        })
        .draw()
        .map_err(|e| draw_err(path, e))?;
    chart
        .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(())
}

/// One bar of a throughput chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Group on the x axis (e.g. "fan-in q1").
    pub group: String,
    /// Series (the broker).
    pub series: String,
    /// Height: messages per second.
    pub value: f64,
}

/// Reads `scripts/compare.sh`'s `results.jsonl` (one JSON object per line with `broker`,
/// `label`, `qos`, `msgs_per_s`) into bars; connection runs and failed runs are skipped.
pub fn bars_from_results(path: &Path) -> Result<Vec<Bar>, SvgError> {
    let text = std::fs::read_to_string(path).map_err(|e| SvgError::Input {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut bars = Vec::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let label = v.get("label").and_then(|x| x.as_str()).unwrap_or_default();
        if label.starts_with("connect") || v.get("failed").is_some() {
            continue;
        }
        let (Some(broker), Some(rate)) = (
            v.get("broker").and_then(|x| x.as_str()),
            v.get("msgs_per_s").and_then(|x| x.as_f64()),
        ) else {
            continue;
        };
        let qos = v.get("qos").and_then(|x| x.as_u64()).unwrap_or(0);
        bars.push(Bar {
            group: format!("{label} q{qos}"),
            series: broker.to_string(),
            value: rate,
        });
    }
    if bars.is_empty() {
        return Err(SvgError::Input {
            path: path.display().to_string(),
            msg: "no throughput results".into(),
        });
    }
    Ok(bars)
}

/// Draws grouped bars: one group per shape and QoS, one bar per broker, msgs/s.
pub fn throughput_chart(path: &Path, title: &str, bars: &[Bar]) -> Result<(), SvgError> {
    let mut groups: Vec<&str> = Vec::new();
    let mut series: Vec<&str> = Vec::new();
    for b in bars {
        if !groups.contains(&b.group.as_str()) {
            groups.push(&b.group);
        }
        if !series.contains(&b.series.as_str()) {
            series.push(&b.series);
        }
    }
    let max_y = bars.iter().map(|b| b.value).fold(1.0, f64::max) * 1.15;
    let palette = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
    ];
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..max_y)
        .map_err(|e| draw_err(path, e))?;
    let names: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            // Label only the group centres.
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("messages/s received")
        .y_label_formatter(&|y| {
            if *y >= 1e6 {
                format!("{:.1}M", y / 1e6)
            } else {
                format!("{:.0}k", y / 1e3)
            }
        })
        .draw()
        .map_err(|e| draw_err(path, e))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (si, s) in series.iter().enumerate() {
        let color = palette[si % palette.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = bars
            .iter()
            .filter(|b| b.series == *s)
            .filter_map(|b| {
                let gi = groups.iter().position(|g| *g == b.group)?;
                let x0 = gi as f64 + 0.1 + si as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, b.value)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(|e| draw_err(path, e))?
            .label(*s)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_scale() {
        assert!((nines(0.0) - 0.0).abs() < 1e-9);
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn charts_are_written() {
        let dir = std::env::temp_dir().join(format!("surgemq-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lat = dir.join("lat.svg");
        latency_svg(
            &lat,
            "test",
            &[(0.0, 10), (0.5, 20), (0.99, 100), (0.999, 400), (1.0, 900)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&lat).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{svg:.200}"
        );

        let res = dir.join("results.jsonl");
        std::fs::write(
            &res,
            "{\"broker\":\"surgemq\",\"label\":\"fan-in\",\"qos\":0,\"msgs_per_s\":1000000}\n\
             {\"broker\":\"mosquitto\",\"label\":\"fan-in\",\"qos\":0,\"msgs_per_s\":250000}\n\
             {\"broker\":\"surgemq\",\"label\":\"connect-cold\",\"qos\":0,\"msgs_per_s\":0}\n\
             {\"broker\":\"mosquitto\",\"label\":\"mesh\",\"shape\":\"mesh\",\"failed\":true}\n",
        )
        .unwrap();
        let bars = bars_from_results(&res).unwrap();
        assert_eq!(bars.len(), 2);
        assert_eq!(
            bars[1],
            Bar {
                group: "fan-in q0".into(),
                series: "mosquitto".into(),
                value: 250000.0
            }
        );
        let chart = dir.join("chart.svg");
        throughput_chart(&chart, "t", &bars).unwrap();
        let svg = std::fs::read_to_string(&chart).unwrap();
        assert!(svg.contains("mosquitto") && svg.contains("<rect"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
