//! Image files for the image-completion task, and its completion figure.

use std::path::Path;

use anyhow::{Context, bail};
use image::imageops::FilterType;
use image::{GrayImage, Luma};
use plasticity_runtime::{ImageEpisode, ImageTask};

/// Loads every PNG or JPEG in `dir` as a `side x side` grey image with pixels in [-1, 1]
/// (converted to grey, scaled to cover and centre-cropped). Unreadable files are skipped with a
/// warning; a directory without one usable image is an error.
pub fn load_images(dir: &Path, side: u32) -> anyhow::Result<Vec<Vec<f32>>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read the image directory {}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    paths.sort();
    let mut images = Vec::new();
    for path in &paths {
        match image::open(path) {
            Ok(img) => {
                let grey = img.resize_to_fill(side, side, FilterType::Triangle).to_luma8();
                images.push(grey.pixels().map(|p| p.0[0] as f32 / 127.5 - 1.0).collect());
            }
            Err(e) => eprintln!("warning: skipping {}: {e}", path.display()),
        }
    }
    if images.is_empty() {
        bail!("no usable images in {} (looked for .png, .jpg and .jpeg files, found {} such files)", dir.display(), paths.len());
    }
    Ok(images)
}

fn paste(canvas: &mut GrayImage, x0: u32, y0: u32, side: u32, scale: u32, pixel: impl Fn(u32) -> Option<f32>) {
    for k in 0..side * side {
        let v = pixel(k).map_or(128, |v| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8);
        let (px, py) = (k % side, k / side);
        for dy in 0..scale {
            for dx in 0..scale {
                canvas.put_pixel(x0 + px * scale + dx, y0 + py * scale + dy, Luma([v]));
            }
        }
    }
}

/// One row per batch element (at most 4): the stored images, the half-image cue (the removed half
/// mid-grey), the network's completion (its last step), and the whole tested image.
pub fn completion_figure(
    path: &Path,
    pool: &[Vec<f32>],
    episode: &ImageEpisode,
    activations: &[f32],
    task: &ImageTask,
    batch: u32,
) -> anyhow::Result<()> {
    let (scale, gap) = (4u32, 6u32);
    let (side, neurons) = (task.side, task.neurons() as usize);
    let last = activations.len() / (batch as usize * neurons) - 1;
    let rows = episode.shown.len().min(4) as u32;
    let cols = episode.shown.first().map_or(0, |s| s.0.len()) as u32 + 3;
    let cell = side * scale + gap;
    let mut canvas = GrayImage::from_pixel(cols * cell + gap, rows * cell + gap, Luma([255]));
    for (r, (picks, tested, remove_top)) in episode.shown.iter().take(4).enumerate() {
        let y = gap + r as u32 * cell;
        for (c, &k) in picks.iter().enumerate() {
            paste(&mut canvas, gap + c as u32 * cell, y, side, scale, |p| Some(pool[k][p as usize]));
        }
        let half = side * side / 2;
        let c = picks.len() as u32;
        paste(&mut canvas, gap + c * cell, y, side, scale, |p| ((p < half) != *remove_top).then(|| pool[*tested][p as usize]));
        let x_last = &activations[(last * batch as usize + r) * neurons..][..neurons];
        paste(&mut canvas, gap + (c + 1) * cell, y, side, scale, |p| Some(x_last[p as usize]));
        paste(&mut canvas, gap + (c + 2) * cell, y, side, scale, |p| Some(pool[*tested][p as usize]));
    }
    let mut bytes = Vec::new();
    canvas.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).context("encoding the figure")?;
    plasticity_runtime::checkpoint::write_atomically(path, &bytes).with_context(|| format!("writing {}", path.display()))
}
