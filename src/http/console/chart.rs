//! The dashboard's chart as SVG geometry, computed here and drawn by the template (no chart
//! library, no script): per day, the records received (one bar) and the syncs by outcome (one
//! stacked bar), each bar with a title a screen reader or a hover reads.

use crate::admin::tenant_api::DayStats;

/// The drawing's size in SVG units (the template scales it to the page).
pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 120.0;

/// One rectangle of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// The CSS class that colours it (`received`, `succeeded`, `partial`, `failed`, `open`).
    pub class: &'static str,
    pub title: String,
}

/// A chart: its bars and the largest value its scale reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub bars: Vec<Bar>,
    pub max: i64,
}

fn slot(days: usize) -> f64 {
    WIDTH / days.max(1) as f64
}

/// Records received per day, one bar each, scaled to the busiest day.
pub fn received(days: &[DayStats]) -> Chart {
    let max = days.iter().map(|d| d.records_received).max().unwrap_or(0);
    let w = slot(days.len());
    let bars = days
        .iter()
        .enumerate()
        .filter(|(_, d)| d.records_received > 0)
        .map(|(i, d)| {
            let height = HEIGHT * d.records_received as f64 / max.max(1) as f64;
            Bar {
                x: i as f64 * w + w * 0.1,
                y: HEIGHT - height,
                width: w * 0.8,
                height,
                class: "received",
                title: format!("{}: {} records received", d.day, d.records_received),
            }
        })
        .collect();
    Chart { bars, max }
}

/// Syncs per day stacked by outcome (succeeded at the bottom), scaled to the busiest day.
pub fn syncs(days: &[DayStats]) -> Chart {
    let max = days.iter().map(|d| d.syncs).max().unwrap_or(0);
    let w = slot(days.len());
    let mut bars = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let mut top = HEIGHT;
        for (count, class, what) in [
            (d.succeeded, "succeeded", "succeeded"),
            (d.partial, "partial", "partial"),
            (d.failed, "failed", "failed"),
            (d.open, "open", "still open"),
        ] {
            if count == 0 {
                continue;
            }
            let height = HEIGHT * count as f64 / max.max(1) as f64;
            top -= height;
            bars.push(Bar {
                x: i as f64 * w + w * 0.1,
                y: top,
                width: w * 0.8,
                height,
                class,
                title: format!("{}: {count} {what}", d.day),
            });
        }
    }
    Chart { bars, max }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(n: u32, received: i64, ok: i64, failed: i64) -> DayStats {
        DayStats {
            day: chrono::NaiveDate::from_ymd_opt(2026, 11, n).unwrap(),
            syncs: ok + failed,
            succeeded: ok,
            partial: 0,
            failed,
            open: 0,
            records_received: received,
            bytes_received: 0,
        }
    }

    #[test]
    fn the_busiest_day_fills_the_height_and_empty_days_draw_nothing() {
        let days = [day(1, 0, 0, 0), day(2, 500, 1, 0), day(3, 1000, 1, 1)];
        let chart = received(&days);
        assert_eq!(chart.max, 1000);
        assert_eq!(chart.bars.len(), 2);
        assert_eq!(chart.bars[1].height, HEIGHT);
        assert_eq!(chart.bars[0].height, HEIGHT / 2.0);
        assert_eq!(chart.bars[0].x, WIDTH / 3.0 + WIDTH / 30.0);
        assert_eq!(chart.bars[1].title, "2026-11-03: 1000 records received");
    }

    #[test]
    fn outcomes_stack_from_the_bottom_without_overlapping() {
        let days = [day(1, 0, 1, 0), day(2, 0, 1, 1)];
        let chart = syncs(&days);
        let day2: Vec<&Bar> = chart.bars.iter().filter(|b| b.x > WIDTH / 2.0).collect();
        assert_eq!(day2.len(), 2);
        assert_eq!(day2[0].class, "succeeded");
        assert_eq!(day2[0].y + day2[0].height, HEIGHT);
        assert_eq!(day2[1].y + day2[1].height, day2[0].y);
        assert_eq!(day2[1].y, 0.0);
    }
}
