//! The digest's chart: visitors per day over the digest's period as a small PNG
//! ([`visitors_png`]), drawn with tiny-skia. E-mail clients (Gmail, Outlook) show neither SVG
//! nor scripts, so [`crate::digest`] attaches the PNG inline (`multipart/related`, shown by
//! `<img src="cid:…">`, [`crate::mail::InlineImage`]) and says the same numbers in words.
//!
//! Image: [`WIDTH`]×[`HEIGHT`] CSS pixels drawn at [`SCALE`]× (a 1120×320 PNG for
//! high-density screens, palette-indexed: 4–7 KB, [`encode`]), on a white background with a light baseline: the period's days
//! left to right as a line in the dashboard's accent colour ([`ACCENT`], `--accent` of
//! `dashboards/web/app.css`) over a light area, and the period before as a dashed grey line
//! ([`PREVIOUS`]) when the digest compares. Both share one vertical scale, zero at the
//! baseline, the highest day at the top. A withheld day (`None`) breaks the line. No axes,
//! labels or text: the e-mail's alt text and table carry the numbers.
//!
//! The numbers drawn are given (the digest's published ones); this module only draws.

use tiny_skia::{
    Color, FillRule, LineCap, LineJoin, Paint, PathBuilder, Pixmap, Stroke, StrokeDash, Transform,
};

/// The image's width in CSS pixels (the `<img width>`).
pub const WIDTH: u32 = 560;
/// The image's height in CSS pixels (the `<img height>`).
pub const HEIGHT: u32 = 160;
/// Device pixels per CSS pixel of the PNG.
pub const SCALE: u32 = 2;
/// The current period's line: the dashboard's `--accent` (#2450b8).
pub const ACCENT: [u8; 3] = [0x24, 0x50, 0xb8];
/// The previous period's dashed line.
pub const PREVIOUS: [u8; 3] = [0x9a, 0xa3, 0xb5];
/// The baseline: the dashboard's `--bar` (#dfe7fb).
const BASELINE: [u8; 3] = [0xdf, 0xe7, 0xfb];
/// Space around the plot (CSS pixels): room for the line's width at the top and ends.
const PAD: f32 = 8.0;

/// The plot's point of day `i` of `n` with `value` on a scale whose top is `top`.
fn point(i: usize, n: usize, value: f64, top: f64) -> (f32, f32) {
    let w = WIDTH as f32 - 2.0 * PAD;
    let h = HEIGHT as f32 - 2.0 * PAD;
    let x = if n <= 1 {
        WIDTH as f32 / 2.0
    } else {
        PAD + w * i as f32 / (n - 1) as f32
    };
    let share = if top > 0.0 {
        (value.max(0.0) / top) as f32
    } else {
        0.0
    };
    (x, PAD + h * (1.0 - share.min(1.0)))
}

/// The runs of known values of `series`: each a list of points, broken at withheld days.
fn runs(series: &[Option<f64>], n: usize, top: f64) -> Vec<Vec<(f32, f32)>> {
    let mut out: Vec<Vec<(f32, f32)>> = Vec::new();
    let mut cur = Vec::new();
    for (i, v) in series.iter().enumerate() {
        match v {
            Some(v) if v.is_finite() => cur.push(point(i, n, *v, top)),
            _ => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn paint(rgb: [u8; 3], alpha: u8) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(rgb[0], rgb[1], rgb[2], alpha);
    p.anti_alias = true;
    p
}

/// Strokes each run of `runs` (a lone point as a dot).
fn stroke_runs(pixmap: &mut Pixmap, runs: &[Vec<(f32, f32)>], paint: &Paint, stroke: &Stroke) {
    let t = Transform::from_scale(SCALE as f32, SCALE as f32);
    for run in runs {
        if let [(x, y)] = run.as_slice() {
            if let Some(dot) = PathBuilder::from_circle(*x, *y, stroke.width) {
                pixmap.fill_path(&dot, paint, FillRule::Winding, t, None);
            }
            continue;
        }
        let mut pb = PathBuilder::new();
        for (i, (x, y)) in run.iter().enumerate() {
            if i == 0 {
                pb.move_to(*x, *y);
            } else {
                pb.line_to(*x, *y);
            }
        }
        if let Some(path) = pb.finish() {
            pixmap.stroke_path(&path, paint, stroke, t, None);
        }
    }
}

/// The PNG of visitors per day: `current` (the period's days in order) and, when the digest
/// compares, `previous` (the period before, day by day at the same positions; empty when
/// not compared). `None` when no day of `current` has a published number above zero (an
/// empty or withheld series has no chart) or the image could not be made.
pub fn visitors_png(current: &[Option<f64>], previous: &[Option<f64>]) -> Option<Vec<u8>> {
    let known = |s: &[Option<f64>]| -> Vec<f64> {
        s.iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .collect()
    };
    let now = known(current);
    if !now.iter().any(|v| *v > 0.0) {
        return None;
    }
    let top = now
        .iter()
        .chain(known(previous).iter())
        .fold(0.0_f64, |a, b| a.max(*b));
    let n = current.len().max(previous.len());
    let mut pixmap = Pixmap::new(WIDTH * SCALE, HEIGHT * SCALE)?;
    pixmap.fill(Color::WHITE);
    let t = Transform::from_scale(SCALE as f32, SCALE as f32);
    let base_y = HEIGHT as f32 - PAD;
    let mut pb = PathBuilder::new();
    pb.move_to(PAD, base_y);
    pb.line_to(WIDTH as f32 - PAD, base_y);
    if let Some(base) = pb.finish() {
        let s = Stroke {
            width: 1.0,
            ..Stroke::default()
        };
        pixmap.stroke_path(&base, &paint(BASELINE, 255), &s, t, None);
    }
    let current_runs = runs(current, n, top);
    // The area under each run of the current period, lightly.
    for run in current_runs.iter().filter(|r| r.len() > 1) {
        let mut pb = PathBuilder::new();
        pb.move_to(run[0].0, base_y);
        for (x, y) in run {
            pb.line_to(*x, *y);
        }
        pb.line_to(run[run.len() - 1].0, base_y);
        pb.close();
        if let Some(area) = pb.finish() {
            pixmap.fill_path(&area, &paint(ACCENT, 36), FillRule::Winding, t, None);
        }
    }
    let dashed = Stroke {
        width: 1.5,
        line_cap: LineCap::Butt,
        line_join: LineJoin::Round,
        dash: StrokeDash::new(vec![5.0, 4.0], 0.0),
        ..Stroke::default()
    };
    stroke_runs(
        &mut pixmap,
        &runs(previous, n, top),
        &paint(PREVIOUS, 255),
        &dashed,
    );
    let solid = Stroke {
        width: 2.5,
        line_cap: LineCap::Round,
        line_join: LineJoin::Round,
        ..Stroke::default()
    };
    stroke_runs(&mut pixmap, &current_runs, &paint(ACCENT, 255), &solid);
    match encode(&pixmap) {
        Ok(png) => Some(png),
        Err(e) => {
            tracing::warn!(error = %e, "encoding the digest's chart failed; sent without it");
            None
        }
    }
}

/// The opaque `pixmap` as a PNG, palette-indexed when it has at most 256 colours (a chart
/// has about 80: its few colours and their anti-aliased blends), 8-bit RGB otherwise.
/// Indexed is about a sixth of tiny-skia's own RGBA `encode_png` (4–7 KB against 26–39 KB
/// for a week's and a month's chart).
fn encode(pixmap: &Pixmap) -> Result<Vec<u8>, png::EncodingError> {
    let rgb: Vec<[u8; 3]> = pixmap
        .pixels()
        .iter()
        .map(|p| {
            let c = p.demultiply();
            [c.red(), c.green(), c.blue()]
        })
        .collect();
    let mut palette: std::collections::HashMap<[u8; 3], u8> = std::collections::HashMap::new();
    let mut colours: Vec<u8> = Vec::new();
    let mut indexed = Vec::with_capacity(rgb.len());
    for c in &rgb {
        let next = palette.len();
        let i = match palette.get(c) {
            Some(i) => *i,
            None => match u8::try_from(next) {
                Ok(i) => {
                    palette.insert(*c, i);
                    colours.extend_from_slice(c);
                    i
                }
                Err(_) => break,
            },
        };
        indexed.push(i);
    }
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, pixmap.width(), pixmap.height());
    e.set_depth(png::BitDepth::Eight);
    e.set_compression(png::Compression::Default);
    let data = if indexed.len() == rgb.len() {
        e.set_color(png::ColorType::Indexed);
        e.set_palette(colours);
        // Filters help photographs' gradients, not palette indices (libpng's advice too).
        e.set_filter(png::FilterType::NoFilter);
        indexed
    } else {
        e.set_color(png::ColorType::Rgb);
        e.set_filter(png::FilterType::Sub);
        rgb.concat()
    };
    let mut w = e.write_header()?;
    w.write_image_data(&data)?;
    w.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the pixel is (nearly) the accent colour: the line, not its light area.
    fn accent(p: tiny_skia::PremultipliedColorU8) -> bool {
        let c = p.demultiply();
        c.alpha() == 255
            && [c.red(), c.green(), c.blue()]
                .iter()
                .zip(ACCENT)
                .all(|(a, b)| a.abs_diff(b) <= 8)
    }

    /// The highest row (smallest y) with an accent pixel among columns `xs`.
    fn top_of_line(p: &Pixmap, xs: std::ops::Range<u32>) -> Option<u32> {
        (0..p.height()).find(|y| xs.clone().any(|x| p.pixel(x, *y).is_some_and(accent)))
    }

    #[test]
    fn a_rising_series_draws_higher_on_the_right_than_on_the_left() {
        let rising: Vec<Option<f64>> = (1..=7).map(|d| Some(f64::from(d * 10))).collect();
        let png = visitors_png(&rising, &[]).expect("a chart");
        let p = Pixmap::decode_png(&png).expect("a PNG");
        assert_eq!((p.width(), p.height()), (WIDTH * SCALE, HEIGHT * SCALE));
        let w = p.width();
        let left = top_of_line(&p, 0..w / 10).expect("the line on the left");
        let right = top_of_line(&p, w - w / 10..w).expect("the line on the right");
        assert!(
            right + 100 < left,
            "right {right} is not well above left {left}"
        );
        // The highest day touches the top of the plot; the lowest a seventh of the way up.
        assert!(right <= (PAD as u32 + 4) * SCALE, "{right}");
        // And a falling one the other way round.
        let falling: Vec<Option<f64>> = rising.iter().rev().copied().collect();
        let p = Pixmap::decode_png(&visitors_png(&falling, &[]).unwrap()).unwrap();
        assert!(
            top_of_line(&p, 0..w / 10).unwrap() + 100 < top_of_line(&p, w - w / 10..w).unwrap()
        );
    }

    #[test]
    fn the_previous_period_is_a_grey_line_on_the_same_scale() {
        let flat = vec![Some(10.0); 7];
        let before = vec![Some(40.0); 7];
        let p = Pixmap::decode_png(&visitors_png(&flat, &before).unwrap()).unwrap();
        let grey = |q: tiny_skia::PremultipliedColorU8| {
            let c = q.demultiply();
            [c.red(), c.green(), c.blue()]
                .iter()
                .zip(PREVIOUS)
                .all(|(a, b)| a.abs_diff(b) <= 10)
        };
        let mid = p.width() / 2;
        let grey_y =
            (0..p.height()).find(|y| (mid - 20..mid + 20).any(|x| grey(p.pixel(x, *y).unwrap())));
        let accent_y = top_of_line(&p, mid - 20..mid + 20);
        // 40 is the top of the scale, 10 a quarter of it: the grey line is far above.
        assert!(
            grey_y.unwrap() + 150 < accent_y.unwrap(),
            "{grey_y:?} {accent_y:?}"
        );
    }

    #[test]
    fn no_chart_for_an_empty_withheld_or_zero_series() {
        assert!(visitors_png(&[], &[]).is_none());
        assert!(visitors_png(&[None; 7], &[Some(3.0); 7]).is_none());
        assert!(visitors_png(&[Some(0.0); 7], &[]).is_none());
        // One withheld day breaks the line but the chart is drawn.
        let gap = [
            Some(5.0),
            Some(6.0),
            None,
            Some(7.0),
            Some(8.0),
            Some(9.0),
            Some(4.0),
        ];
        let png = visitors_png(&gap, &[]).unwrap();
        assert!(Pixmap::decode_png(&png).is_ok());
    }

    #[test]
    fn a_months_chart_is_a_few_kilobytes() {
        // 30 days going up and down, the month before too: the most a digest draws.
        let month: Vec<Option<f64>> = (0..30)
            .map(|i| Some(f64::from((i * 37) % 11 + 20 + i)))
            .collect();
        let before: Vec<Option<f64>> = (0..30)
            .map(|i| Some(f64::from((i * 13) % 7 + 18)))
            .collect();
        let png = visitors_png(&month, &before).unwrap();
        assert!(png.len() < 12_000, "{} bytes", png.len());
        let p = Pixmap::decode_png(&png).unwrap();
        assert_eq!((p.width(), p.height()), (WIDTH * SCALE, HEIGHT * SCALE));
        assert!(p.pixels().iter().any(|c| accent(*c)));
    }
}
