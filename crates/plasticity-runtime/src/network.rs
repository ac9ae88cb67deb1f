//! Network configuration and parameters: one flat f32 buffer `[w (N, N), alpha, eta, modulator]`
//! (llm.c style), mirrored by the gradient and Adam buffers. The rule ([`Plasticity`]) sets the
//! lengths: alpha (N, N), (N) or (1); eta (1) or (N); the modulator `[mod_w (N), mod_b (1)]`, plus
//! `[mod_u (N), mod_c (N)]` with per-neuron fan-out, or nothing.

use plasticity_kernels::{AlphaShape, Plasticity, Rule};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::buffers::{self, GpuBuffer};
use crate::context::GpuContext;
use crate::error::{Result, invalid};

/// Shape, rule and initialisation of a plastic network.
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
    /// The plasticity rule; absent in configs written before rules existed, which used the paper's.
    #[serde(default)]
    pub plasticity: Plasticity,
    /// An input layer: episodes bring inputs v(t) of this width D, projected into the neurons as
    /// `u(t) = v(t) w_in + b_in` (learned). `None`: inputs of width N drive the neurons directly.
    #[serde(default)]
    pub input_width: Option<u32>,
    /// Output heads read from the neurons at the loss steps, `y = x W + b` per head. With heads, the
    /// loss is theirs (targets are (L, B, total head width)); without, it is the squared error of
    /// the neurons themselves.
    #[serde(default)]
    pub heads: Vec<OutputHead>,
}

/// What an output head's loss is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// Summed squared error against the targets (a regression or value head).
    Linear,
    /// Cross-entropy of softmax(y) against target probabilities, e.g. one-hot (a classifier or policy).
    Softmax,
}

/// An output head of `width` outputs read from every neuron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputHead {
    pub width: u32,
    pub kind: HeadKind,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            neurons: 64,
            eta: 0.01,
            learn_eta: true,
            plastic: true,
            w_init_std: 0.01,
            alpha_init_std: 0.01,
            seed: 0,
            plasticity: Plasticity::PAPER,
            input_width: None,
            heads: Vec::new(),
        }
    }
}

impl NetworkConfig {
    pub fn validate(&self) -> Result<()> {
        if self.neurons == 0 {
            return Err(invalid("network config", "neurons must be at least 1"));
        }
        self.plasticity.check().map_err(|m| invalid("network config", m))?;
        if self.heads.len() > MAX_HEADS {
            return Err(invalid("network config", format!("{} output heads; at most {MAX_HEADS} are supported", self.heads.len())));
        }
        if let Some(h) = self.heads.iter().position(|h| h.width == 0) {
            return Err(invalid("network config", format!("output head {h} has width 0; give it at least one output")));
        }
        if self.input_width == Some(0) {
            return Err(invalid("network config", "input_width must be at least 1 (or absent for inputs added directly)"));
        }
        if !self.eta.is_finite() {
            return Err(invalid("network config", format!("eta = {} must be finite", self.eta)));
        }
        if self.plasticity.rule != Rule::Additive && (self.eta >= 1.0 || self.eta < 0.0) {
            return Err(invalid(
                "network config",
                format!("eta = {} is outside [0, 1), where the {:?} rule is a stable decay", self.eta, self.plasticity.rule),
            ));
        }
        for (name, v) in [("w_init_std", self.w_init_std), ("alpha_init_std", self.alpha_init_std)] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid("network config", format!("{name} = {v} must be finite and >= 0")));
            }
        }
        // The layout and every kernel index the flat parameters with u32: w and alpha alone are
        // 2 N^2 floats. ParamLayout::checked_of counts in u64, so a size past that is refused, not wrapped.
        if ParamLayout::checked_of(self).is_none() {
            // The largest N whose layout fits, by bisection (the count grows with N).
            let fits = |neurons: u32| ParamLayout::checked_of(&NetworkConfig { neurons, ..self.clone() }).is_some();
            let (mut fitting, mut too_many) = (0u32, self.neurons);
            while too_many - fitting > 1 {
                let mid = fitting + (too_many - fitting) / 2;
                if fits(mid) { fitting = mid } else { too_many = mid }
            }
            let fix = if fitting == 0 {
                "even one neuron does not fit with this input layer and these heads; make them narrower".to_string()
            } else {
                format!("use at most {fitting} neurons")
            };
            return Err(invalid(
                "network config",
                format!(
                    "the parameters of {} neurons (w and alpha alone are 2 N^2 floats) do not fit the kernels' 32-bit indices; {fix}",
                    self.neurons
                ),
            ));
        }
        Ok(())
    }

    /// The largest N at which this network (its rule, input layer and heads as configured) is valid
    /// and its flat parameters take at most `bytes`: what one storage binding of that size allows.
    pub fn largest_neurons_within(&self, bytes: u64) -> u32 {
        let fits = |neurons: u32| {
            let config = NetworkConfig { neurons, ..self.clone() };
            // The layout first: it is None past the kernels' u32 indices, and cheap to form.
            ParamLayout::checked_of(&config).is_some_and(|layout| layout.count as u64 * 4 <= bytes) && config.validate().is_ok()
        };
        let mut neurons = ((bytes / 8) as f64).sqrt().min(u32::MAX as f64 - 1.0) as u32 + 1;
        while neurons > 1 && !fits(neurons) {
            neurons -= 1;
        }
        neurons
    }
}

/// Where each tensor sits in the flat parameter (and gradient) buffer, in f32 elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamLayout {
    pub neurons: u32,
    pub plasticity: Plasticity,
    pub w_offset: u32,
    pub alpha_offset: u32,
    pub eta_offset: u32,
    /// `[mod_w (N), mod_b, mod_u (N), mod_c (N)]` as the rule has them; empty when not modulated.
    pub mod_offset: u32,
    /// The input layer `[w_in (D, N), b_in (N)]`; empty without one.
    pub in_offset: u32,
    /// D, or 0 without an input layer.
    pub input_width: u32,
    /// The output heads `[W_h (N, K_h), b_h (K_h)]` one after another, from here.
    pub heads_offset: u32,
    /// `(offset of W_h, K_h)` of the first `head_count` heads.
    pub head_slots: [(u32, u32); MAX_HEADS],
    pub head_count: u32,
    pub count: u32,
}

/// Output heads a network may have.
pub const MAX_HEADS: usize = 4;

impl ParamLayout {
    /// The layout of a network of `neurons` with this rule and neither an input layer nor heads.
    /// Panics where its offsets would not fit u32 (past N = 46340); [`ParamLayout::checked_of`] does not.
    pub fn new(neurons: u32, plasticity: &Plasticity) -> Self {
        Self::of(&NetworkConfig { neurons, plasticity: *plasticity, input_width: None, heads: Vec::new(), ..Default::default() })
    }

    /// The layout of `config`'s network, input layer and output heads included. `config` must have
    /// passed [`NetworkConfig::validate`], which refuses the sizes whose offsets would not fit u32.
    pub fn of(config: &NetworkConfig) -> Self {
        Self::checked_of(config).expect("a validated config: its parameter offsets fit u32")
    }

    /// [`ParamLayout::of`], or `None` where an offset would not fit u32. Every offset is formed in
    /// u64 from the same lengths, so this is the one place that decides the bound.
    pub fn checked_of(config: &NetworkConfig) -> Option<Self> {
        let (n, spec) = (config.neurons as u64, &config.plasticity);
        let u32_of = |v: u64| u32::try_from(v).ok();
        // Past this, n^2 (and so the rule's own lengths, at most n^2) would wrap u32 before it is summed.
        let _ = u32_of(n.checked_mul(2 * n)?)?;
        let len = |f: fn(&Plasticity, u32) -> u32| f(spec, config.neurons) as u64;
        let alpha_offset = n * n;
        let eta_offset = alpha_offset + len(Plasticity::alpha_len);
        let mod_offset = eta_offset + len(Plasticity::eta_len);
        let in_offset = mod_offset + len(Plasticity::modulator_len);
        let heads_offset = in_offset + config.input_width.map_or(0, |d| (d as u64 + 1) * n);
        let mut layout = Self {
            neurons: config.neurons,
            plasticity: *spec,
            w_offset: 0,
            alpha_offset: u32_of(alpha_offset)?,
            eta_offset: u32_of(eta_offset)?,
            mod_offset: u32_of(mod_offset)?,
            in_offset: u32_of(in_offset)?,
            input_width: config.input_width.unwrap_or(0),
            heads_offset: u32_of(heads_offset)?,
            head_slots: [(0, 0); MAX_HEADS],
            head_count: 0,
            count: 0,
        };
        let mut count = heads_offset;
        for h in config.heads.iter().take(MAX_HEADS) {
            layout.head_slots[layout.head_count as usize] = (u32_of(count)?, h.width);
            layout.head_count += 1;
            count += (n + 1) * h.width as u64;
        }
        layout.count = u32_of(count)?;
        Some(layout)
    }

    /// `(offset of W_h, K_h)` per output head.
    pub fn heads(&self) -> &[(u32, u32)] {
        &self.head_slots[..self.head_count as usize]
    }

    /// `(offset of W_h, K_h, first column of head h among all heads' outputs)` per output head.
    pub fn head_columns(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.heads().iter().scan(0, |col0, &(offset, width)| {
            let first = *col0;
            *col0 += width;
            Some((offset, width, first))
        })
    }

    /// The summed width of the output heads (0 without heads).
    pub fn heads_width(&self) -> u32 {
        self.heads().iter().map(|h| h.1).sum()
    }

    /// The paper's layout `[w (N, N), alpha (N, N), eta (1)]`; panics as [`ParamLayout::new`].
    pub fn paper(neurons: u32) -> Self {
        Self::new(neurons, &Plasticity::PAPER)
    }

    /// `(name, offset, shape)` of each tensor, in buffer order: the names checkpoints use.
    pub fn tensors(&self) -> Vec<(&'static str, u32, Vec<usize>)> {
        let n = self.neurons as usize;
        let spec = &self.plasticity;
        let alpha_shape = match spec.alpha {
            AlphaShape::PerConnection => vec![n, n],
            AlphaShape::PerNeuron => vec![n],
            AlphaShape::Scalar => vec![1],
        };
        let mut t = vec![
            ("w", self.w_offset, vec![n, n]),
            ("alpha", self.alpha_offset, alpha_shape),
            ("eta", self.eta_offset, vec![spec.eta_len(self.neurons) as usize]),
        ];
        if spec.modulated() {
            t.push(("mod_w", self.mod_offset, vec![n]));
            t.push(("mod_b", self.mod_offset + self.neurons, vec![1]));
        }
        if spec.modulation == plasticity_kernels::Modulation::PerNeuron {
            t.push(("mod_u", self.mod_offset + self.neurons + 1, vec![n]));
            t.push(("mod_c", self.mod_offset + 2 * self.neurons + 1, vec![n]));
        }
        if self.input_width > 0 {
            t.push(("w_in", self.in_offset, vec![self.input_width as usize, n]));
            t.push(("b_in", self.in_offset + self.input_width * self.neurons, vec![n]));
        }
        let names = [("head0_w", "head0_b"), ("head1_w", "head1_b"), ("head2_w", "head2_b"), ("head3_w", "head3_b")];
        for (&(offset, width), (w, b)) in self.heads().iter().zip(names) {
            t.push((w, offset, vec![n, width as usize]));
            t.push((b, offset + self.neurons * width, vec![width as usize]));
        }
        t
    }
}

/// Parameters on the host, e.g. to initialise, inspect or checkpoint a network.
#[derive(Clone, Debug, PartialEq)]
pub struct HostParameters {
    pub layout: ParamLayout,
    pub values: Vec<f32>,
}

/// Appends `weights` values drawn as PyTorch's `nn.Linear(fan_in, _)` draws its weights,
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), then `biases` zeros.
fn push_linear_init(values: &mut Vec<f32>, rng: &mut ChaCha8Rng, fan_in: usize, weights: usize, biases: usize) {
    let bound = 1.0 / (fan_in as f32).sqrt();
    values.extend((0..weights).map(|_| bound * (2.0 * rand::Rng::random::<f32>(rng) - 1.0)));
    values.extend(std::iter::repeat_n(0.0, biases));
}

impl HostParameters {
    /// The paper's initialisation: w, alpha ~ std * N(0, 1), seeded; eta as configured. alpha's
    /// diagonal is zero without plastic self-connections. The modulator starts like a PyTorch
    /// `nn.Linear` (mod_w ~ U(-1/sqrt(N), 1/sqrt(N)), mod_b = 0) with fan-out u = 1, c = 0, so the
    /// rate starts as M(t) itself.
    pub fn init(config: &NetworkConfig) -> Result<Self> {
        config.validate()?;
        let spec = &config.plasticity;
        let layout = ParamLayout::of(config);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
        let n = config.neurons as usize;
        let mut values = Vec::with_capacity(layout.count as usize);
        values.extend((0..n * n).map(|_| config.w_init_std * normal.sample(&mut rng)));
        let alpha_std = if config.plastic { config.alpha_init_std } else { 0.0 };
        values.extend((0..spec.alpha_len(config.neurons)).map(|_| alpha_std * normal.sample(&mut rng)));
        if !spec.plastic_self && spec.alpha == AlphaShape::PerConnection {
            for i in 0..n {
                values[n * n + i * n + i] = 0.0;
            }
        }
        values.extend((0..spec.eta_len(config.neurons)).map(|_| config.eta));
        if spec.modulated() {
            push_linear_init(&mut values, &mut rng, n, n, 1); // mod_w (N), mod_b
        }
        if spec.modulation == plasticity_kernels::Modulation::PerNeuron {
            values.extend(std::iter::repeat_n(1.0, n));
            values.extend(std::iter::repeat_n(0.0, n));
        }
        if let Some(d) = config.input_width {
            push_linear_init(&mut values, &mut rng, d as usize, d as usize * n, n); // nn.Linear(D, N)
        }
        for h in &config.heads {
            let k = h.width as usize;
            push_linear_init(&mut values, &mut rng, n, n * k, k); // nn.Linear(N, K)
        }
        debug_assert_eq!(values.len(), layout.count as usize);
        Ok(Self { layout, values })
    }

    /// Every tensor of the layout as `(name, shape, values)`, named as in checkpoints.
    pub fn tensors(&self) -> Vec<(&'static str, Vec<usize>, &[f32])> {
        self.layout
            .tensors()
            .into_iter()
            .map(|(name, offset, shape)| {
                let len = shape.iter().product();
                (name, shape, &self.values[offset as usize..][..len])
            })
            .collect()
    }

    pub fn w(&self) -> &[f32] {
        &self.values[self.layout.w_offset as usize..self.layout.alpha_offset as usize]
    }
    pub fn alpha(&self) -> &[f32] {
        &self.values[self.layout.alpha_offset as usize..self.layout.eta_offset as usize]
    }
    /// The first (or only) eta.
    pub fn eta(&self) -> f32 {
        self.values[self.layout.eta_offset as usize]
    }
    /// Every eta: one, or one per neuron.
    pub fn etas(&self) -> &[f32] {
        &self.values[self.layout.eta_offset as usize..self.layout.mod_offset as usize]
    }
    /// `[mod_w, mod_b, mod_u, mod_c]` as the rule has them.
    pub fn modulator(&self) -> &[f32] {
        &self.values[self.layout.mod_offset as usize..self.layout.in_offset as usize]
    }
    /// The input layer `[w_in (D, N), b_in (N)]`, or nothing.
    pub fn input_layer(&self) -> &[f32] {
        &self.values[self.layout.in_offset as usize..self.layout.heads_offset as usize]
    }
    /// The output heads `[W_h (N, K_h), b_h (K_h)]...`, or nothing.
    pub fn output_heads(&self) -> &[f32] {
        &self.values[self.layout.heads_offset as usize..]
    }
}

/// The flat parameters must fit one storage binding: w and alpha are N * N floats each.
pub(crate) fn check_parameter_size(ctx: &GpuContext, config: &NetworkConfig) -> Result<()> {
    let bytes = ParamLayout::of(config).count as u64 * 4;
    buffers::check_storage(ctx, "the parameters [w, alpha, eta, modulator]", bytes, |limit| {
        format!("use at most {} neurons", config.largest_neurons_within(limit))
    })
}

/// A network whose parameters live in one GPU buffer.
pub struct Network {
    pub config: NetworkConfig,
    pub layout: ParamLayout,
    pub params: GpuBuffer,
}

impl Network {
    pub fn new(ctx: &GpuContext, config: &NetworkConfig) -> Result<Self> {
        // Refused before the host draws N * N initial weights it could not upload (or even allocate).
        config.validate()?;
        check_parameter_size(ctx, config)?;
        Self::upload(ctx, config, &HostParameters::init(config)?)
    }

    pub fn from_parameters(ctx: &GpuContext, config: &NetworkConfig, host: &HostParameters) -> Result<Self> {
        config.validate()?;
        let layout = ParamLayout::of(config);
        if host.layout != layout || host.values.len() != layout.count as usize {
            return Err(invalid(
                "parameters",
                format!("expected {} values for N = {}, got {}", layout.count, config.neurons, host.values.len()),
            ));
        }
        if !config.plastic && host.alpha().iter().any(|&a| a != 0.0) {
            return Err(invalid("parameters", "the non-plastic baseline needs alpha = 0 everywhere"));
        }
        check_parameter_size(ctx, config)?;
        Self::upload(ctx, config, host)
    }

    /// `host`, already checked against `config` and the device, into a new parameter buffer.
    fn upload(ctx: &GpuContext, config: &NetworkConfig, host: &HostParameters) -> Result<Self> {
        let params = buffers::storage_from(ctx, "parameters", &host.values)?;
        Ok(Self { config: config.clone(), layout: host.layout, params })
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

#[cfg(test)]
mod tests {
    use super::*;
    use plasticity_kernels::{EtaShape, Modulation};

    /// The u32 bound is decided by the layout itself: at N = 46340 the rule with the most parameters
    /// (per-neuron modulation and eta, 2 N^2 + 4 N + 1 floats) and a one-wide head passes 2^32 by
    /// 35,607 floats, which a separate count of 2 N^2 + 3 N + 2 once let through. The N the error
    /// names fits, and one more does not.
    #[test]
    fn parameter_offsets_past_u32_are_refused_with_the_largest_n_that_fits() {
        let widest = Plasticity { modulation: Modulation::PerNeuron, eta: EtaShape::PerNeuron, ..Plasticity::PAPER };
        let head = vec![OutputHead { width: 1, kind: HeadKind::Linear }];
        let configs = [
            NetworkConfig { neurons: 46340, plasticity: widest, heads: head.clone(), ..Default::default() },
            NetworkConfig { neurons: 46341, ..Default::default() },
            NetworkConfig { neurons: 100_000, input_width: Some(7), ..Default::default() },
            NetworkConfig { neurons: u32::MAX, plasticity: widest, heads: head, ..Default::default() },
        ];
        for config in configs {
            assert!(ParamLayout::checked_of(&config).is_none(), "N = {}", config.neurons);
            let message = config.validate().unwrap_err().to_string();
            let named: u32 = message
                .split("use at most ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|k| k.parse().ok())
                .unwrap_or_else(|| panic!("the error names the largest N that fits: {message}"));
            let at = |neurons: u32| NetworkConfig { neurons, ..config.clone() };
            assert!(at(named).validate().is_ok() && ParamLayout::checked_of(&at(named)).is_some(), "{message}");
            assert!(at(named + 1).validate().is_err(), "{message}");
        }
        // An input layer too wide for even one neuron is named as the thing to change.
        let message = NetworkConfig { neurons: 2, input_width: Some(u32::MAX), ..Default::default() }.validate().unwrap_err().to_string();
        assert!(message.contains("even one neuron does not fit with this input layer"), "{message}");
        // Episode data checked against a paper network too large to lay out: an error, not a panic.
        let data = crate::EpisodeData {
            batch: 1,
            steps: 1,
            inputs: Vec::new(),
            loss_steps: vec![1],
            targets: Vec::new(),
            loss_scale: 1.0,
            clamp: Vec::new(),
        };
        let message = data.validate(100_000).unwrap_err().to_string();
        assert!(message.contains("use at most 46340 neurons"), "{message}");
        // The largest network within a binding: it fits, one more neuron does not, up to bindings
        // far past what the u32 indices allow.
        for config in [
            NetworkConfig::default(),
            NetworkConfig { plasticity: widest, heads: vec![OutputHead { width: 3, kind: HeadKind::Softmax }], ..Default::default() },
        ] {
            for bytes in [64u64, 1 << 20, 128 << 20, 4 << 30, 1 << 40] {
                let n = config.largest_neurons_within(bytes);
                let size = |neurons: u32| {
                    let at = NetworkConfig { neurons, ..config.clone() };
                    at.validate().ok().map(|_| ParamLayout::of(&at).count as u64 * 4)
                };
                assert!(size(n).is_some_and(|b| b <= bytes) || n == 1, "{bytes} bytes: N = {n}");
                assert!(size(n + 1).is_none_or(|b| b > bytes), "{bytes} bytes: N = {} fits too", n + 1);
            }
        }
        // Where it fits, the layout ends where the heads end.
        let config = NetworkConfig { neurons: 10, plasticity: widest, input_width: Some(3), ..Default::default() };
        assert_eq!(ParamLayout::of(&config).count, 2 * 100 + 10 + 31 + 4 * 10);
    }
}
