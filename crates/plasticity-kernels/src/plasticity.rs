//! Which plasticity rule a network uses, as a configuration value shared by the kernels (as
//! pipeline override constants), their CPU twins, the f64 reference and the runtime.
//!
//! With `pre = x_i(t-1)`, `post = x_j(t)` and the rate `r = rate_bj(t)` of batch element b:
//!
//! ```text
//! decay:     U(H) = (1 - r) H + r pre post
//! oja:       U(H) = H + r post (pre - post H)
//! additive:  U(H) = H + r pre post
//! clip:      H(t+1) = min(max(U(H(t)), -c), c)        when `clip = Some(c)`, else U(H(t))
//! ```
//!
//! The rate is `eta` (one scalar, or `eta_j` per post-synaptic neuron) unless the network is
//! neuromodulated: then `M_b(t) = tanh(sum_k mod_w_k x_bk(t) + mod_b)` replaces it (`Simple`), or
//! fans out to `u_j M_b(t) + c_j` (`PerNeuron`).
//!
//! Retroactive neuromodulation (Backpropamine's eligibility traces): the rule, with rate `eta`,
//! updates an eligibility trace E instead, and the plastic trace follows the modulated rate:
//!
//! ```text
//! E(t+1) = U_eta(E(t))                              (the rule above, rate eta, never clipped)
//! H(t+1) = clip(H(t) + rate_bj(t) E(t))             (the old E)
//! ```
//!
//! The plastic weight is `alpha_eff_ij H_ij` with `alpha_eff_ij` = `alpha[i * N + j]`, `alpha[j]` or
//! `alpha[0]` by [`AlphaShape`], and 0 on the diagonal when `plastic_self` is false.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// `(1 - r) H + r pre post`, the paper's default.
    #[default]
    Decay,
    /// `H + r post (pre - post H)`.
    Oja,
    /// `H + r pre post`, usually with a clip (Backpropamine).
    Additive,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlphaShape {
    /// One alpha per connection, `(N, N)`.
    #[default]
    PerConnection,
    /// One alpha per post-synaptic neuron, `(N)`.
    PerNeuron,
    /// One alpha for the whole network, `(1)`.
    Scalar,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EtaShape {
    #[default]
    Scalar,
    /// One rate per post-synaptic neuron, `(N)`.
    PerNeuron,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Modulation {
    /// The rate is `eta`.
    #[default]
    None,
    /// The rate is `M_b(t)`.
    Simple,
    /// The rate is `u_j M_b(t) + c_j`.
    PerNeuron,
}

/// Everything that selects a rule. `Default` is the paper's decay rule with per-connection alpha,
/// one eta and plastic self-connections.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plasticity {
    pub rule: Rule,
    /// Clip the plastic trace to `[-c, c]` after each update.
    pub clip: Option<f32>,
    pub alpha: AlphaShape,
    pub eta: EtaShape,
    pub modulation: Modulation,
    /// Backpropamine's eligibility trace: needs a modulation.
    pub retroactive: bool,
    /// False zeroes alpha's diagonal: no plastic self-connections.
    pub plastic_self: bool,
}

impl Default for Plasticity {
    fn default() -> Self {
        Self::PAPER
    }
}

impl Plasticity {
    /// The paper's rule: decay, per-connection alpha, scalar eta, plastic self-connections.
    pub const PAPER: Self = Self {
        rule: Rule::Decay,
        clip: None,
        alpha: AlphaShape::PerConnection,
        eta: EtaShape::Scalar,
        modulation: Modulation::None,
        retroactive: false,
        plastic_self: true,
    };

    /// Checks that the combination makes sense; the message names the field to change.
    pub fn check(&self) -> Result<(), String> {
        if let Some(c) = self.clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(format!("clip = {c} must be a positive number (the papers use 1 or 2)"));
        }
        if self.retroactive && self.modulation == Modulation::None {
            return Err("retroactive neuromodulation needs a modulation (simple or per-neuron)".into());
        }
        Ok(())
    }

    pub fn modulated(&self) -> bool {
        self.modulation != Modulation::None
    }

    /// Whether the backward sweep may recover H(t-1) from H(t) by inverting the update (fixed rate
    /// per episode, no clip, one trace). Otherwise it recomputes the trace from checkpoints.
    pub fn reversible(&self) -> bool {
        self.clip.is_none() && !self.modulated() && !self.retroactive && self.eta == EtaShape::Scalar
    }

    /// Elements of alpha for N neurons.
    pub fn alpha_len(&self, n: u32) -> u32 {
        match self.alpha {
            AlphaShape::PerConnection => n * n,
            AlphaShape::PerNeuron => n,
            AlphaShape::Scalar => 1,
        }
    }

    /// Elements of eta for N neurons.
    pub fn eta_len(&self, n: u32) -> u32 {
        match self.eta {
            EtaShape::Scalar => 1,
            EtaShape::PerNeuron => n,
        }
    }

    /// Elements of the modulator's parameters `[mod_w (N), mod_b (1), mod_u (N), mod_c (N)]`, the
    /// last two only for per-neuron fan-out.
    pub fn modulator_len(&self, n: u32) -> u32 {
        match self.modulation {
            Modulation::None => 0,
            Modulation::Simple => n + 1,
            Modulation::PerNeuron => 3 * n + 1,
        }
    }

    /// Pipeline override constants for the kernels that apply the rule.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("RULE", self.rule as u32 as f64),
            ("CLIP", self.clip.unwrap_or(0.0) as f64),
            ("ALPHA_SHAPE", self.alpha as u32 as f64),
            ("RATE", self.rate_kind() as f64),
            ("ETA_PER_NEURON", (self.eta == EtaShape::PerNeuron) as u32 as f64),
            ("RETROACTIVE", self.retroactive as u32 as f64),
            ("PLASTIC_SELF", self.plastic_self as u32 as f64),
        ]
    }

    /// How the kernels find the rate of H's update: 0 `eta[0]`, 1 `eta[j]`, 2 `M_b`, 3 `u_j M_b + c_j`.
    /// (With a retroactive trace, E's rate is always eta, scalar or per neuron.)
    pub fn rate_kind(&self) -> u32 {
        match (self.modulation, self.eta) {
            (Modulation::None, EtaShape::Scalar) => 0,
            (Modulation::None, EtaShape::PerNeuron) => 1,
            (Modulation::Simple, _) => 2,
            (Modulation::PerNeuron, _) => 3,
        }
    }
}
