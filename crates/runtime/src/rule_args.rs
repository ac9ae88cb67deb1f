//! Command-line options that choose the plasticity rule, shared by `train` and `bench`.

use clap::{Args, ValueEnum};
use plasticity_runtime::kernels::{AlphaShape, EtaShape, Modulation, Plasticity, Rule};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuleKind {
    /// Hebb <- (1 - eta) Hebb + eta pre post (the paper's).
    Decay,
    /// Hebb <- Hebb + eta post (pre - post Hebb).
    Oja,
    /// Hebb <- Hebb + eta pre post (use with --trace-clip, as Backpropamine does).
    Additive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModulationKind {
    /// The rate is eta.
    None,
    /// A learned modulator M(t) = tanh(w_mod . x(t) + b_mod), one per episode, replaces eta.
    Simple,
    /// M(t) fanned out to one rate per neuron, eta_j(t) = u_j M(t) + c_j.
    PerNeuron,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AlphaKind {
    PerConnection,
    PerNeuron,
    Scalar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EtaKind {
    Scalar,
    PerNeuron,
}

#[derive(Args, Debug, Clone)]
pub struct RuleArgs {
    /// Plasticity rule of the trace update.
    #[arg(long, value_enum, default_value_t = RuleKind::Decay)]
    pub rule: RuleKind,
    /// Clip the plastic trace to [-C, C] after every update (Backpropamine uses 1 or 2); off by default.
    #[arg(long, value_name = "C")]
    pub trace_clip: Option<f32>,
    /// Neuromodulation (Backpropamine): the network sets its own plasticity rate.
    #[arg(long, value_enum, default_value_t = ModulationKind::None)]
    pub modulation: ModulationKind,
    /// Retroactive neuromodulation: the rule drives an eligibility trace E with rate eta, and
    /// Hebb <- clip(Hebb + M(t) E); needs --modulation.
    #[arg(long)]
    pub retroactive: bool,
    /// One alpha per connection, per post-synaptic neuron, or one for the whole network.
    #[arg(long, value_enum, default_value_t = AlphaKind::PerConnection)]
    pub alpha: AlphaKind,
    /// One eta, or one per post-synaptic neuron.
    #[arg(long, value_enum, default_value_t = EtaKind::Scalar)]
    pub eta_shape: EtaKind,
    /// No plastic self-connections (alpha's diagonal held at zero).
    #[arg(long)]
    pub no_plastic_self: bool,
}

impl RuleArgs {
    pub fn plasticity(&self) -> anyhow::Result<Plasticity> {
        let spec = Plasticity {
            rule: match self.rule {
                RuleKind::Decay => Rule::Decay,
                RuleKind::Oja => Rule::Oja,
                RuleKind::Additive => Rule::Additive,
            },
            clip: self.trace_clip,
            alpha: match self.alpha {
                AlphaKind::PerConnection => AlphaShape::PerConnection,
                AlphaKind::PerNeuron => AlphaShape::PerNeuron,
                AlphaKind::Scalar => AlphaShape::Scalar,
            },
            eta: match self.eta_shape {
                EtaKind::Scalar => EtaShape::Scalar,
                EtaKind::PerNeuron => EtaShape::PerNeuron,
            },
            modulation: match self.modulation {
                ModulationKind::None => Modulation::None,
                ModulationKind::Simple => Modulation::Simple,
                ModulationKind::PerNeuron => Modulation::PerNeuron,
            },
            retroactive: self.retroactive,
            plastic_self: !self.no_plastic_self,
        };
        spec.check().map_err(|m| anyhow::anyhow!("{m} (see --trace-clip, --modulation, --retroactive)"))?;
        Ok(spec)
    }
}

/// A short name for tables: `decay`, `oja clip 1`, `additive clip 1 simple retro`, ...
pub fn describe(spec: &Plasticity) -> String {
    let mut s = format!("{:?}", spec.rule).to_lowercase();
    if let Some(c) = spec.clip {
        s += &format!(" clip {c}");
    }
    match spec.modulation {
        Modulation::None => {}
        Modulation::Simple => s += " mod",
        Modulation::PerNeuron => s += " mod/neuron",
    }
    if spec.retroactive {
        s += " retro";
    }
    match spec.alpha {
        AlphaShape::PerConnection => {}
        AlphaShape::PerNeuron => s += " alpha/neuron",
        AlphaShape::Scalar => s += " one alpha",
    }
    if spec.eta == EtaShape::PerNeuron {
        s += " eta/neuron";
    }
    if !spec.plastic_self {
        s += " no-self";
    }
    s
}
