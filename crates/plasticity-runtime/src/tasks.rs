//! Episode generators for the paper's experiments.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::episode::EpisodeData;
use crate::error::{Result, invalid};

/// Binary pattern memorisation (the paper's first experiment): `patterns` random +-1 patterns are
/// each shown for `show_steps` steps then `gap_steps` of silence, in `presentations` cycles with the
/// order reshuffled each cycle; then one of them, with each bit zeroed with probability
/// `degrade_prob`, is shown for `test_steps` steps. Inputs are added to the drive with gain
/// `input_gain`. The loss is the squared error of the last step's activations against the full
/// pattern. Defaults are the paper's: 106 steps.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternTask {
    pub neurons: u32,
    pub patterns: u32,
    pub presentations: u32,
    pub show_steps: u32,
    pub gap_steps: u32,
    pub test_steps: u32,
    pub input_gain: f32,
    pub degrade_prob: f32,
}

impl Default for PatternTask {
    fn default() -> Self {
        Self {
            neurons: 1000,
            patterns: 5,
            presentations: 2,
            show_steps: 6,
            gap_steps: 4,
            test_steps: 6,
            input_gain: 20.0,
            degrade_prob: 0.5,
        }
    }
}

impl PatternTask {
    pub fn steps(&self) -> u32 {
        self.patterns * self.presentations * (self.show_steps + self.gap_steps) + self.test_steps
    }

    pub fn validate(&self) -> Result<()> {
        let what = "pattern task";
        if self.neurons == 0 {
            return Err(invalid(what, "neurons must be at least 1"));
        }
        if self.patterns == 0 {
            return Err(invalid(what, "patterns must be at least 1"));
        }
        if self.presentations == 0 || self.show_steps == 0 || self.test_steps == 0 {
            return Err(invalid(what, "presentations, show steps and test steps must each be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.degrade_prob) {
            return Err(invalid(what, format!("degrade probability {} is outside [0, 1]", self.degrade_prob)));
        }
        if !self.input_gain.is_finite() {
            return Err(invalid(what, "input gain must be finite"));
        }
        Ok(())
    }

    /// A batch of independent episodes, each with its own patterns.
    pub fn generate(&self, batch: u32, rng: &mut impl Rng) -> Result<EpisodeData> {
        self.validate()?;
        if batch == 0 {
            return Err(invalid("pattern task", "batch must be at least 1"));
        }
        let (n, b, steps) = (self.neurons as usize, batch as usize, self.steps() as usize);
        let row = b * n;
        let mut inputs = vec![0.0f32; steps * row];
        let mut targets = vec![0.0f32; row];
        for e in 0..b {
            let patterns: Vec<Vec<f32>> =
                (0..self.patterns).map(|_| (0..n).map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 }).collect()).collect();
            let mut t = 0usize;
            let mut order: Vec<usize> = (0..patterns.len()).collect();
            for _ in 0..self.presentations {
                order.shuffle(rng);
                for &k in &order {
                    for _ in 0..self.show_steps {
                        for j in 0..n {
                            inputs[t * row + e * n + j] = self.input_gain * patterns[k][j];
                        }
                        t += 1;
                    }
                    t += self.gap_steps as usize;
                }
            }
            let test = &patterns[rng.random_range(0..patterns.len())];
            let degraded: Vec<f32> = test.iter().map(|&v| if rng.random_bool(self.degrade_prob as f64) { 0.0 } else { v }).collect();
            for _ in 0..self.test_steps {
                for j in 0..n {
                    inputs[t * row + e * n + j] = self.input_gain * degraded[j];
                }
                t += 1;
            }
            targets[e * n..][..n].copy_from_slice(test);
        }
        Ok(EpisodeData { batch, steps: steps as u32, inputs, loss_steps: vec![steps as u32], targets, loss_scale: 1.0, clamp: Vec::new() })
    }
}

/// Natural-image completion (the paper's second experiment): `images_per_episode` images of
/// `side x side` grey pixels in [-1, 1] are shown in `cycles` cycles, each for `show_steps` steps
/// followed by `gap_steps` free steps; then one of them with its top or bottom half removed is shown
/// for `test_steps` steps. Inputs clamp the neurons they drive (a shown pixel's neuron is held at its
/// value), and neuron `side * side` is a bias neuron held at 1 throughout. The loss is the squared
/// error of the last step against the whole image (the held half contributes nothing).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTask {
    pub side: u32,
    pub images_per_episode: u32,
    pub cycles: u32,
    pub show_steps: u32,
    pub gap_steps: u32,
    pub test_steps: u32,
}

impl Default for ImageTask {
    fn default() -> Self {
        Self { side: 32, images_per_episode: 3, cycles: 3, show_steps: 20, gap_steps: 2, test_steps: 3 }
    }
}

/// What an image episode showed, for figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageEpisode {
    /// For each batch element: the pool indices of its images, which one was tested, and whether
    /// its top half (else its bottom half) was removed.
    pub shown: Vec<(Vec<usize>, usize, bool)>,
}

impl ImageTask {
    pub fn pixels(&self) -> u32 {
        self.side * self.side
    }

    /// Pixels plus the bias neuron.
    pub fn neurons(&self) -> u32 {
        self.pixels() + 1
    }

    pub fn steps(&self) -> u32 {
        self.cycles * self.images_per_episode * (self.show_steps + self.gap_steps) + self.test_steps
    }

    pub fn validate(&self) -> Result<()> {
        let what = "image task";
        if self.side < 2 {
            return Err(invalid(what, format!("side {} must be at least 2 (the test removes half of the image)", self.side)));
        }
        if self.images_per_episode == 0 || self.cycles == 0 || self.show_steps == 0 || self.test_steps == 0 {
            return Err(invalid(what, "images per episode, cycles, show steps and test steps must each be at least 1"));
        }
        Ok(())
    }

    /// A batch of episodes drawing images from `pool` (each `side * side` values in [-1, 1]).
    pub fn generate(&self, pool: &[Vec<f32>], batch: u32, rng: &mut impl Rng) -> Result<(EpisodeData, ImageEpisode)> {
        self.validate()?;
        let pixels = self.pixels() as usize;
        if pool.len() < self.images_per_episode as usize {
            return Err(invalid(
                "image task",
                format!("{} usable images, but each episode shows {} different ones", pool.len(), self.images_per_episode),
            ));
        }
        if let Some(k) = pool.iter().position(|im| im.len() != pixels) {
            return Err(invalid("image task", format!("image {k} has {} pixels, expected {pixels}", pool[k].len())));
        }
        if batch == 0 {
            return Err(invalid("image task", "batch must be at least 1"));
        }
        let (n, b, steps) = (self.neurons() as usize, batch as usize, self.steps() as usize);
        let words = plasticity_kernels::clamp_words(n as u32) as usize;
        let (row, mask_row) = (b * n, b * words);
        let mut inputs = vec![0.0f32; steps * row];
        let mut clamp = vec![0u32; steps * mask_row];
        let mut targets = vec![0.0f32; row];
        let mut shown = Vec::with_capacity(b);
        let mut hold = |t: usize, e: usize, j: usize, value: f32, inputs: &mut Vec<f32>| {
            inputs[t * row + e * n + j] = value;
            clamp[t * mask_row + e * words + j / 32] |= 1 << (j % 32);
        };
        for e in 0..b {
            let picks: Vec<usize> = rand::seq::index::sample(rng, pool.len(), self.images_per_episode as usize).into_vec();
            let mut t = 0usize;
            for _ in 0..self.cycles {
                for &k in &picks {
                    for _ in 0..self.show_steps {
                        for (j, &v) in pool[k].iter().enumerate() {
                            hold(t, e, j, v, &mut inputs);
                        }
                        hold(t, e, pixels, 1.0, &mut inputs);
                        t += 1;
                    }
                    for _ in 0..self.gap_steps {
                        hold(t, e, pixels, 1.0, &mut inputs);
                        t += 1;
                    }
                }
            }
            let tested = picks[rng.random_range(0..picks.len())];
            let remove_top = rng.random_bool(0.5);
            let half = pixels / 2; // rows 0..side/2 are the top half
            for _ in 0..self.test_steps {
                for (j, &v) in pool[tested].iter().enumerate() {
                    if (j < half) != remove_top {
                        hold(t, e, j, v, &mut inputs);
                    }
                }
                hold(t, e, pixels, 1.0, &mut inputs);
                t += 1;
            }
            targets[e * n..][..pixels].copy_from_slice(&pool[tested]);
            targets[e * n + pixels] = 1.0;
            shown.push((picks, tested, remove_top));
        }
        let data = EpisodeData { batch, steps: steps as u32, inputs, loss_steps: vec![steps as u32], targets, loss_scale: 1.0, clamp };
        Ok((data, ImageEpisode { shown }))
    }
}
