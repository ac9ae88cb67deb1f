//! The loss-curve figure of a run: loss on a log scale (blue) and bit error rate (red) against
//! episodes, both smoothed over 20 episodes, drawn with a built-in 3x5 pixel font so that no
//! system font is needed.

use std::path::Path;

use anyhow::Context;
use image::{Rgb, RgbImage};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 420;
const LEFT: u32 = 70;
const RIGHT: u32 = 70;
const TOP: u32 = 30;
const BOTTOM: u32 = 50;
const BLUE: Rgb<u8> = Rgb([30, 90, 200]);
const RED: Rgb<u8> = Rgb([210, 50, 40]);
const GREY: Rgb<u8> = Rgb([200, 200, 200]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);

/// Rows of a 3-wide glyph, top to bottom, 3 bits each (MSB left).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '%' => [5, 1, 2, 4, 5],
        '(' => [2, 4, 4, 4, 2],
        ')' => [2, 1, 1, 1, 2],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'G' => [3, 4, 5, 5, 3],
        'I' => [7, 2, 2, 2, 7],
        'L' => [4, 4, 4, 4, 7],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        _ => [0; 5],
    }
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, color: Rgb<u8>) {
    const SCALE: u32 = 2;
    for (k, c) in s.chars().enumerate() {
        for (row, bits) in glyph(c.to_ascii_uppercase()).iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let (px, py) = (x + k as u32 * 4 * SCALE + col * SCALE + dx, y + row as u32 * SCALE + dy);
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, color);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for s in 0..=steps {
        let f = s as f64 / steps as f64;
        let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, color);
        }
    }
}

fn smooth(v: &[f64], window: usize) -> Vec<f64> {
    (0..v.len()).map(|k| v[k.saturating_sub(window - 1)..=k].iter().sum::<f64>() / (k + 1).min(window) as f64).collect()
}

fn label(v: f64) -> String {
    if v >= 1.0 && v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Reads metrics.csv (episode, loss, bit_error_rate, ...) and writes the figure atomically.
pub fn write_loss_plot(metrics: &Path, png: &Path) -> anyhow::Result<()> {
    let text_in = std::fs::read_to_string(metrics).with_context(|| format!("reading {}", metrics.display()))?;
    let rows: Vec<(f64, f64, f64)> = text_in
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',').map(|v| v.parse::<f64>());
            Some((f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?))
        })
        .collect();
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let (x0, x1, y0, y1) = (LEFT as f64, (WIDTH - RIGHT) as f64, TOP as f64, (HEIGHT - BOTTOM) as f64);
    text(&mut img, 8, 8, "LOSS (LOG)", BLUE);
    text(&mut img, WIDTH - 110, 8, "BIT ERROR %", RED);
    text(&mut img, (WIDTH / 2) - 28, HEIGHT - 18, "EPISODE", BLACK);
    if rows.len() >= 2 {
        let episodes: Vec<f64> = rows.iter().map(|r| r.0).collect();
        let losses = smooth(&rows.iter().map(|r| r.1.max(1e-12).log10()).collect::<Vec<_>>(), 20);
        let errors = smooth(&rows.iter().map(|r| 100.0 * r.2).collect::<Vec<_>>(), 20);
        let (e_min, e_max) = (episodes[0], *episodes.last().expect("two rows"));
        let lo = losses.iter().cloned().fold(f64::INFINITY, f64::min).floor();
        let hi = losses.iter().cloned().fold(f64::NEG_INFINITY, f64::max).ceil().max(lo + 1.0);
        let err_max = (errors.iter().cloned().fold(0.0, f64::max) / 10.0).ceil().max(1.0) * 10.0;
        let px = |e: f64| x0 + (e - e_min) / (e_max - e_min).max(1.0) * (x1 - x0);
        for decade in lo as i32..=hi as i32 {
            let y = y1 - (decade as f64 - lo) / (hi - lo) * (y1 - y0);
            line(&mut img, (x0, y), (x1, y), GREY);
            text(&mut img, 6, y as u32 - 5, &label(10f64.powi(decade)), BLUE);
        }
        for k in 0..=4 {
            let v = err_max * k as f64 / 4.0;
            text(&mut img, x1 as u32 + 8, (y1 - v / err_max * (y1 - y0)) as u32 - 5, &label(v), RED);
        }
        for k in 0..=4 {
            let e = e_min + (e_max - e_min) * k as f64 / 4.0;
            text(&mut img, px(e) as u32 - 8, y1 as u32 + 8, &format!("{e:.0}"), BLACK);
        }
        for k in 1..rows.len() {
            let y = |v: f64| y1 - (v - lo) / (hi - lo) * (y1 - y0);
            line(&mut img, (px(episodes[k - 1]), y(losses[k - 1])), (px(episodes[k]), y(losses[k])), BLUE);
            let ye = |v: f64| y1 - v / err_max * (y1 - y0);
            line(&mut img, (px(episodes[k - 1]), ye(errors[k - 1])), (px(episodes[k]), ye(errors[k])), RED);
        }
    }
    line(&mut img, (x0, y1), (x1, y1), BLACK);
    line(&mut img, (x0, y0), (x0, y1), BLACK);
    line(&mut img, (x1, y0), (x1, y1), BLACK);
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).context("encoding the loss plot")?;
    plasticity_runtime::checkpoint::write_atomically(png, &bytes).with_context(|| format!("writing {}", png.display()))
}
