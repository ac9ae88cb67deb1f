//! `cargo run -p runtime --release --example make_images -- DIR [COUNT]`: writes COUNT (default 40)
//! synthetic 48x48 colour PNG images (smooth blobs over a gradient, some with stripes), to try the
//! image-completion task without a dataset: `plasticity train --task image --images DIR`.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: make_images DIR [COUNT]");
        std::process::exit(2);
    };
    let count: usize = args.next().map_or(40, |c| c.parse().expect("COUNT is a number"));
    std::fs::create_dir_all(&dir).expect("create the directory");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for k in 0..count {
        let (gx, gy) = (rng.random_range(-1.0f32..1.0), rng.random_range(-1.0f32..1.0));
        let blobs: Vec<(f32, f32, f32, f32)> = (0..3)
            .map(|_| (rng.random_range(0.0..48.0), rng.random_range(0.0..48.0), rng.random_range(5.0..14.0), rng.random_range(-1.0..1.0)))
            .collect();
        let stripes = if rng.random_bool(0.4) { rng.random_range(3.0f32..9.0) } else { 0.0 };
        let img = RgbImage::from_fn(48, 48, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let mut v = 0.5 + 0.25 * (gx * (fx / 48.0 - 0.5) + gy * (fy / 48.0 - 0.5));
            for &(cx, cy, r, a) in &blobs {
                v += 0.4 * a * (-((fx - cx).powi(2) + (fy - cy).powi(2)) / (r * r)).exp();
            }
            if stripes > 0.0 {
                v += 0.15 * (fx / stripes).sin();
            }
            let g = (v.clamp(0.0, 1.0) * 255.0) as u8;
            Rgb([g, g.saturating_add(20), g / 2 + 60])
        });
        img.save(format!("{dir}/synthetic-{k:03}.png")).expect("write the image");
    }
    println!("wrote {count} images to {dir}");
}
