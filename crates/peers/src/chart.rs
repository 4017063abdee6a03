//! The run as a PNG: publish throughput as bars, one group per durability
//! class, and below it the publish-to-ack latency, a bar to p50 and a
//! whisker to p99 (log scale).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::{Class, Row, System};

/// Fonts tried, in order (the chart's text needs one; Debian's
/// fonts-dejavu-core has the first).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const COLORS: [RGBColor; 5] = [
    RGBColor(38, 166, 91),   // nats
    RGBColor(255, 102, 0),   // rabbitmq
    RGBColor(80, 80, 80),    // kafka
    RGBColor(33, 113, 181),  // switchboard
    RGBColor(107, 174, 214), // switchboard on kafka
];

fn color(s: System) -> RGBColor {
    COLORS[match s {
        System::Nats => 0,
        System::Rabbitmq => 1,
        System::Kafka => 2,
        System::Switchboard => 3,
        System::SwitchboardKafka => 4,
    }]
}

pub fn name(s: System) -> &'static str {
    match s {
        System::Nats => "NATS JetStream",
        System::Rabbitmq => "RabbitMQ",
        System::Kafka => "Kafka",
        System::Switchboard => "Switchboard",
        System::SwitchboardKafka => "Switchboard on Kafka",
    }
}

fn register_font() -> Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .context("no font for the chart's text (install fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a font plotters can use"))
}

/// Draws `rows` to `out`.
pub fn draw(rows: &[Row], systems: &[System], classes: &[Class], out: &Path) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(out, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(470);
    let slots = systems.len() + 1;
    let x_max = (classes.len() * slots) as f64;
    let x_of = |c: usize, s: usize| (c * slots + s) as f64 + 0.5;
    let label = |x: &f64| {
        let group = (*x as usize) / slots;
        let within = (*x as usize) % slots;
        if within == systems.len() / 2 {
            classes
                .get(group)
                .map(|c| format!("{c:?}").to_lowercase())
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    let find = |s: System, c: Class| rows.iter().find(|r| r.system == s && r.class == c);

    let peak = rows.iter().map(|r| r.publish_events_s).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption("Publish throughput (events/s, 1 KiB events)", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_max, 0.0..peak * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(classes.len() * slots * 2)
        .x_label_formatter(&label)
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    for (ci, c) in classes.iter().enumerate() {
        for (si, s) in systems.iter().enumerate() {
            if let Some(r) = find(*s, *c) {
                let x = x_of(ci, si);
                let bar = chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.4, 0.0), (x + 0.4, r.publish_events_s)],
                    color(*s).filled(),
                )))?;
                // one legend entry per system
                if ci == 0 {
                    bar.label(name(*s)).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], color(*s).filled())
                    });
                }
            }
        }
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;

    let lat_max = rows.iter().map(|r| r.ack_p99_ms).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "Publish-to-ack latency (ms): bar to p50, whisker to p99",
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_max, (0.1..lat_max * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(classes.len() * slots * 2)
        .x_label_formatter(&label)
        .draw()?;
    for (ci, c) in classes.iter().enumerate() {
        for (si, s) in systems.iter().enumerate() {
            if let Some(r) = find(*s, *c) {
                let x = x_of(ci, si);
                let p50 = r.ack_p50_ms.max(0.1);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.4, 0.1), (x + 0.4, p50)],
                    color(*s).filled(),
                )))?;
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(x, p50), (x, r.ack_p99_ms.max(0.1))],
                    BLACK.stroke_width(2),
                )))?;
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(x - 0.2, r.ack_p99_ms.max(0.1)), (x + 0.2, r.ack_p99_ms.max(0.1))],
                    BLACK.stroke_width(2),
                )))?;
            }
        }
    }
    root.present().context("writing the chart")?;
    Ok(())
}
