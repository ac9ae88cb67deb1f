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
    /// Steps per episode; saturates at u32::MAX, which no device holds (the episode checks refuse it).
    pub fn steps(&self) -> u32 {
        self.patterns
            .saturating_mul(self.presentations)
            .saturating_mul(self.show_steps.saturating_add(self.gap_steps))
            .saturating_add(self.test_steps)
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
///
/// `spare_neurons` more neurons follow the bias neuron, held at 0 at every step with a target of 0:
/// they take no part in the network (x = 0 means they drive nothing, a held neuron passes no gradient
/// back, and the trace of a connection with a silent end stays 0), so the loss and every gradient of
/// the first `side^2 + 1` neurons' parameters are those of the network without them, while the
/// gradients of the spares' own connections are exactly 0. They exist to make N a multiple of 4,
/// where the vec4 rule kernels run: [`ImageTask::with_side`] picks `spare_neurons_for_quads(side^2 + 1)`
/// (the paper's 32 x 32 pixels and bias: 1025 neurons and 3 spares, which trains 1.7-1.9x faster than 1025
/// on lavapipe). A config written before spares existed reads as 0 spares.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTask {
    pub side: u32,
    pub images_per_episode: u32,
    pub cycles: u32,
    pub show_steps: u32,
    pub gap_steps: u32,
    pub test_steps: u32,
    #[serde(default)]
    pub spare_neurons: u32,
}

impl Default for ImageTask {
    fn default() -> Self {
        Self::with_side(32)
    }
}

/// Neurons to add to a network of `neurons` to make their count a multiple of 4, the vec4 rule
/// kernels' condition (see `plasticity_kernels::uses_vec4_kernels`): 0 to 3.
pub fn spare_neurons_for_quads(neurons: u32) -> u32 {
    (4 - neurons % 4) % 4
}

/// What an image episode showed, for figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageEpisode {
    /// For each batch element: the pool indices of its images, which one was tested, and whether
    /// its top half (else its bottom half) was removed.
    pub shown: Vec<(Vec<usize>, usize, bool)>,
}

impl ImageTask {
    /// The paper's episode (3 images, 3 cycles of 20 steps shown and 2 free, 3 test steps) at this
    /// side, with the spare neurons that make N a multiple of 4.
    pub fn with_side(side: u32) -> Self {
        let spare_neurons = spare_neurons_for_quads(side.saturating_mul(side).saturating_add(1));
        Self { side, images_per_episode: 3, cycles: 3, show_steps: 20, gap_steps: 2, test_steps: 3, spare_neurons }
    }

    pub fn pixels(&self) -> u32 {
        self.side * self.side
    }

    /// The neurons of the model: pixels plus the bias neuron.
    pub fn model_neurons(&self) -> u32 {
        self.pixels() + 1
    }

    /// The network's neurons: the model's plus the spares held at 0.
    pub fn neurons(&self) -> u32 {
        self.model_neurons() + self.spare_neurons
    }

    /// Steps per episode; saturates at u32::MAX, which no device holds (the episode checks refuse it).
    pub fn steps(&self) -> u32 {
        self.cycles
            .saturating_mul(self.images_per_episode)
            .saturating_mul(self.show_steps.saturating_add(self.gap_steps))
            .saturating_add(self.test_steps)
    }

    pub fn validate(&self) -> Result<()> {
        let what = "image task";
        if self.side < 2 {
            return Err(invalid(what, format!("side {} must be at least 2 (the test removes half of the image)", self.side)));
        }
        if self.images_per_episode == 0 || self.cycles == 0 || self.show_steps == 0 || self.test_steps == 0 {
            return Err(invalid(what, "images per episode, cycles, show steps and test steps must each be at least 1"));
        }
        // The network's own limits on N apply later; this keeps side^2 + 1 + spares within u32.
        if (self.side as u64).pow(2) + 1 + self.spare_neurons as u64 > u32::MAX as u64 / 2 {
            return Err(invalid(what, format!("side {} with {} spare neurons is far too large a network", self.side, self.spare_neurons)));
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
                        t += 1;
                    }
                    t += self.gap_steps as usize;
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
                t += 1;
            }
            // Held at every step: the bias neuron at 1, and the spares after it at 0 (target 0 too).
            for t in 0..steps {
                hold(t, e, pixels, 1.0, &mut inputs);
                for j in self.model_neurons() as usize..n {
                    hold(t, e, j, 0.0, &mut inputs);
                }
            }
            targets[e * n..][..pixels].copy_from_slice(&pool[tested]);
            targets[e * n + pixels] = 1.0;
            shown.push((picks, tested, remove_top));
        }
        let data = EpisodeData { batch, steps: steps as u32, inputs, loss_steps: vec![steps as u32], targets, loss_scale: 1.0, clamp };
        Ok((data, ImageEpisode { shown }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn spare_neurons_make_a_multiple_of_four() {
        for (neurons, spares) in [(0, 0), (1, 3), (4, 0), (10, 2), (17, 3), (1024, 0), (1025, 3), (1027, 1), (u32::MAX, 1)] {
            assert_eq!(spare_neurons_for_quads(neurons), spares, "{neurons}");
        }
        let task = ImageTask::default();
        assert_eq!((task.side, task.model_neurons(), task.spare_neurons, task.neurons()), (32, 1025, 3, 1028));
        assert!(ImageTask::with_side(u32::MAX).validate().unwrap_err().to_string().contains("far too large"));
    }

    #[test]
    fn a_config_from_before_spares_reads_as_none() {
        let old = r#"{"side": 32, "images_per_episode": 3, "cycles": 3, "show_steps": 20, "gap_steps": 2, "test_steps": 3}"#;
        let task: ImageTask = serde_json::from_str(old).unwrap();
        assert_eq!((task.spare_neurons, task.neurons()), (0, 1025));
        let round_trip: ImageTask = serde_json::from_str(&serde_json::to_string(&ImageTask::default()).unwrap()).unwrap();
        assert_eq!(round_trip, ImageTask::default());
    }

    /// The spares are held at 0 with a target of 0 at every step of every batch element, and the
    /// model's neurons see exactly the episode of the task without spares (the same draws).
    #[test]
    fn image_spares_are_held_at_zero_and_change_nothing_else() {
        let padded = ImageTask { images_per_episode: 2, cycles: 2, show_steps: 2, gap_steps: 1, test_steps: 2, ..ImageTask::with_side(5) };
        let bare = ImageTask { spare_neurons: 0, ..padded.clone() };
        let (m, n) = (bare.neurons() as usize, padded.neurons() as usize);
        assert_eq!((m, n), (26, 28));
        let mut r = ChaCha8Rng::seed_from_u64(3);
        let pool: Vec<Vec<f32>> = (0..4).map(|_| (0..25).map(|_| r.random_range(-1.0..1.0)).collect()).collect();
        let (p, p_shown) = padded.generate(&pool, 3, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        let (b, b_shown) = bare.generate(&pool, 3, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        assert_eq!(p_shown, b_shown);
        let (p_words, b_words) = (plasticity_kernels::clamp_words(n as u32) as usize, plasticity_kernels::clamp_words(m as u32) as usize);
        let held = |mask: &[u32], words: usize, row: usize, j: usize| plasticity_kernels::is_clamped(&mask[row * words..][..words], j);
        for row in 0..(p.steps * p.batch) as usize {
            for j in 0..n {
                let (input, clamped) = (p.inputs[row * n + j], held(&p.clamp, p_words, row, j));
                if j < m {
                    assert_eq!((input, clamped), (b.inputs[row * m + j], held(&b.clamp, b_words, row, j)), "row {row} neuron {j}");
                } else {
                    assert_eq!((input, clamped), (0.0, true), "spare {j} at row {row}");
                }
            }
        }
        for e in 0..3 {
            assert_eq!(&p.targets[e * n..][..m], &b.targets[e * m..][..m]);
            assert_eq!(&p.targets[e * n + m..][..n - m], &[0.0, 0.0]);
        }
        assert_eq!((p.steps, &p.loss_steps, p.loss_scale), (b.steps, &b.loss_steps, b.loss_scale));
    }
}
