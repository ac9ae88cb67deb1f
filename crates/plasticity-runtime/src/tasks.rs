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
