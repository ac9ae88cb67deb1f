//! Network configuration and parameters: one flat f32 buffer `[w (N, N), alpha (N, N), eta (1)]`
//! (llm.c style), mirrored by the gradient and Adam buffers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::buffers::{self, GpuBuffer};
use crate::context::GpuContext;
use crate::error::{Result, invalid};

/// Shape and initialisation of a plastic network (decay rule).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Number of neurons N, fully recurrent.
    pub neurons: u32,
    /// Initial plasticity rate (the paper: 0.01).
    pub eta: f32,
    /// Whether eta is learned (the paper learns it).
    pub learn_eta: bool,
    /// False for the non-plastic baseline: alpha starts at zero and is never updated, so the
    /// network is an ordinary recurrent network with the same shape.
    pub plastic: bool,
    /// w and alpha start as `std * normal`, the paper's 0.01.
    pub w_init_std: f32,
    pub alpha_init_std: f32,
    pub seed: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self { neurons: 64, eta: 0.01, learn_eta: true, plastic: true, w_init_std: 0.01, alpha_init_std: 0.01, seed: 0 }
    }
}

impl NetworkConfig {
    pub fn validate(&self) -> Result<()> {
        if self.neurons == 0 {
            return Err(invalid("network config", "neurons must be at least 1"));
        }
        if !self.eta.is_finite() || self.eta >= 1.0 || self.eta < 0.0 {
            return Err(invalid("network config", format!("eta = {} is outside [0, 1) for the decay rule", self.eta)));
        }
        for (name, v) in [("w_init_std", self.w_init_std), ("alpha_init_std", self.alpha_init_std)] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid("network config", format!("{name} = {v} must be finite and >= 0")));
            }
        }
        Ok(())
    }
}

/// Where each tensor sits in the flat parameter (and gradient) buffer, in f32 elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    pub neurons: u32,
    pub w_offset: u32,
    pub alpha_offset: u32,
    pub eta_offset: u32,
    pub count: u32,
}

impl ParamLayout {
    pub fn new(neurons: u32) -> Self {
        let nn = neurons * neurons;
        Self { neurons, w_offset: 0, alpha_offset: nn, eta_offset: 2 * nn, count: 2 * nn + 1 }
    }
}

/// Parameters on the host, e.g. to initialise, inspect or checkpoint a network.
#[derive(Clone, Debug, PartialEq)]
pub struct HostParameters {
    pub layout: ParamLayout,
    pub values: Vec<f32>,
}

impl HostParameters {
    /// The paper's initialisation: w, alpha ~ std * N(0, 1), seeded; eta as configured.
    pub fn init(config: &NetworkConfig) -> Result<Self> {
        config.validate()?;
        let layout = ParamLayout::new(config.neurons);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
        let nn = (config.neurons * config.neurons) as usize;
        let mut values = Vec::with_capacity(layout.count as usize);
        values.extend((0..nn).map(|_| config.w_init_std * normal.sample(&mut rng)));
        let alpha_std = if config.plastic { config.alpha_init_std } else { 0.0 };
        values.extend((0..nn).map(|_| alpha_std * normal.sample(&mut rng)));
        values.push(config.eta);
        Ok(Self { layout, values })
    }

    pub fn w(&self) -> &[f32] {
        &self.values[self.layout.w_offset as usize..self.layout.alpha_offset as usize]
    }
    pub fn alpha(&self) -> &[f32] {
        &self.values[self.layout.alpha_offset as usize..self.layout.eta_offset as usize]
    }
    pub fn eta(&self) -> f32 {
        self.values[self.layout.eta_offset as usize]
    }
}

/// A network whose parameters live in one GPU buffer.
pub struct Network {
    pub config: NetworkConfig,
    pub layout: ParamLayout,
    pub params: GpuBuffer,
}

impl Network {
    pub fn new(ctx: &GpuContext, config: &NetworkConfig) -> Result<Self> {
        let host = HostParameters::init(config)?;
        Self::from_parameters(ctx, config, &host)
    }

    pub fn from_parameters(ctx: &GpuContext, config: &NetworkConfig, host: &HostParameters) -> Result<Self> {
        config.validate()?;
        let layout = ParamLayout::new(config.neurons);
        if host.layout != layout || host.values.len() != layout.count as usize {
            return Err(invalid(
                "parameters",
                format!("expected {} values for N = {}, got {}", layout.count, config.neurons, host.values.len()),
            ));
        }
        if !config.plastic && host.alpha().iter().any(|&a| a != 0.0) {
            return Err(invalid("parameters", "the non-plastic baseline needs alpha = 0 everywhere"));
        }
        let bytes = layout.count as u64 * 4;
        buffers::check_storage(ctx, "the parameters [w, alpha, eta]", bytes, |limit| {
            format!("use at most {} neurons", ((limit / 8) as f64).sqrt() as u64)
        })?;
        let params = buffers::storage_from(ctx, "parameters", &host.values)?;
        Ok(Self { config: config.clone(), layout, params })
    }

    pub fn read_parameters(&self, ctx: &GpuContext) -> Result<HostParameters> {
        let values = buffers::read_f32(ctx, &self.params, 0, self.layout.count as usize, "parameters")?;
        Ok(HostParameters { layout: self.layout, values })
    }

    pub fn write_parameters(&self, ctx: &GpuContext, host: &HostParameters) -> Result<()> {
        if host.layout != self.layout {
            return Err(invalid("parameters", "layout does not match this network"));
        }
        buffers::write(ctx, &self.params, 0, &host.values)
    }
}
