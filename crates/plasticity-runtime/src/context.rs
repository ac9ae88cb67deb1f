//! The GPU context: a device and queue, either opened here or handed over by a host application,
//! and the compiled kernels.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{PlasticityError, Result};
use crate::pipelines::Kernels;
use crate::profile::KernelProfiler;
use crate::tuning::KernelTuning;

/// What the runtime tells a user about the adapter it runs on.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    /// The sizes a subgroup can have on this adapter (wgpu's `AdapterInfo::subgroup_min_size` and
    /// `subgroup_max_size`): 8 and 8 on lavapipe, 32 and 32 on NVIDIA.
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
}

impl AdapterSummary {
    pub fn from_info(info: &wgpu::AdapterInfo) -> Self {
        Self {
            name: info.name.clone(),
            backend: info.backend,
            device_type: info.device_type,
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
        }
    }

    /// True for software rasterisers such as lavapipe, whose timings are not GPU timings.
    pub fn is_cpu(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?}, {:?}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

/// How long the runtime waits for one submission before reporting the device as lost.
pub const DEFAULT_GPU_TIMEOUT: Duration = Duration::from_secs(600);

/// A device, its queue and the plasticity kernels compiled for it.
///
/// Cloning is cheap (the wgpu handles are reference counted), so a host can keep its own handles.
#[derive(Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub(crate) kernels: Arc<Kernels>,
    /// Longest wait for one submission before it is reported as a lost device.
    pub timeout: Duration,
    /// How the step kernels divide their work; by default chosen from the adapter and the size.
    pub tuning: KernelTuning,
    /// When set, every dispatch is timed (see [`crate::profile`]); off by default.
    pub profiler: Option<Arc<KernelProfiler>>,
    /// Whether the kernels keep wgpu's loop bounding (see [`GpuContext::with_wgpu_loop_bounding`]).
    wgpu_loop_bounding: bool,
}

impl GpuContext {
    /// Opens a device on the best adapter, honouring `WGPU_BACKEND` (a comma list such as
    /// `vulkan,gl`) and `WGPU_ADAPTER_NAME` (a case-insensitive substring of the adapter name).
    /// Without `WGPU_BACKEND`, Vulkan, Metal and DX12 adapters are preferred to GL.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    pub async fn new_async() -> Result<Self> {
        // Without WGPU_BACKEND, look at the native APIs first and only then at GL, so that GL's
        // start-up (and its complaints on headless machines) is skipped where Vulkan works.
        let searches = match wgpu::Backends::from_env() {
            Some(backends) => vec![backends],
            None => vec![wgpu::Backends::PRIMARY, wgpu::Backends::SECONDARY],
        };
        let wanted_name = std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty()).map(|s| s.to_lowercase());
        let mut listed: Vec<String> = Vec::new();
        let mut chosen = None;
        for backends in &searches {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
            desc.backends = *backends;
            let instance = wgpu::Instance::new(desc);
            let adapters = instance.enumerate_adapters(*backends).await;
            listed.extend(adapters.iter().map(|a| AdapterSummary::from_info(&a.get_info()).to_string()));
            chosen = adapters
                .into_iter()
                .filter(|a| wanted_name.as_ref().is_none_or(|name| a.get_info().name.to_lowercase().contains(name)))
                .filter(|a| a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS))
                .max_by_key(|a| adapter_rank(&a.get_info()));
            if chosen.is_some() {
                break;
            }
        }
        let searched = searches.iter().fold(wgpu::Backends::empty(), |acc, b| acc | *b);
        let adapter = chosen.ok_or_else(|| PlasticityError::NoAdapter {
            detail: match (&wanted_name, listed.is_empty()) {
                (_, true) => format!(" (backends searched: {searched:?})"),
                (Some(name), false) => {
                    format!(" matching WGPU_ADAPTER_NAME='{name}' with compute shaders (found: {})", listed.join("; "))
                }
                (None, false) => format!(" with compute shaders (found: {})", listed.join("; ")),
            },
        })?;
        let info = adapter.get_info();
        // A compute engine wants the largest buffers the adapter allows, not WebGPU's defaults.
        let required_limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("plasticity"),
                // Timestamps let the bench time GPU work rather than wall clock where the adapter has
                // them, and time each kernel (`bench --profile`) where they can be written inside passes.
                // 64-bit integers let the bench measure 32-byte accesses (stream_triad_wide).
                required_features: adapter.features()
                    & (wgpu::Features::TIMESTAMP_QUERY
                        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
                        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
                        | wgpu::Features::SUBGROUP
                        | wgpu::Features::SHADER_INT64),
                required_limits,
                ..Default::default()
            })
            .await
            .map_err(|source| PlasticityError::RequestDevice { adapter: info.name.clone(), source })?;
        // Our own device: every error we can cause is caught by an error scope, so anything else is
        // logged rather than turned into a panic.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| log::error!("uncaptured wgpu error: {e}")));
        Self::build(device, queue, AdapterSummary::from_info(&info))
    }

    /// Wraps a device and queue that a host application created. Nothing global is changed on the
    /// device: no error handler is installed, and every runtime call catches its own errors with
    /// error scopes. The device must allow 8 storage buffers per shader stage (wgpu's default).
    /// Where it was created with `wgpu::Features::SUBGROUP`, the forward step may use subgroup
    /// shuffles (see [`KernelTuning::forward_subgroups`]); without it, the kernels that need none.
    /// Likewise `wgpu::Features::SHADER_INT64` adds the bench's 32-byte streaming kernel.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let adapter = AdapterSummary::from_info(&device.adapter_info());
        Self::build(device, queue, adapter)
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, adapter: AdapterSummary) -> Result<Self> {
        let limits = device.limits();
        let needed = plasticity_kernels::ALL_KERNELS.iter().map(|k| k.storage_binding_count()).max().unwrap_or(0) as u32;
        if limits.max_storage_buffers_per_shader_stage < needed {
            return Err(PlasticityError::LimitExceeded {
                what: "the backward kernel".into(),
                limit: "max_storage_buffers_per_shader_stage",
                needed: needed as u64,
                allowed: limits.max_storage_buffers_per_shader_stage as u64,
                fix: format!("request a device with at least {needed} storage buffers per shader stage"),
            });
        }
        let kernels = scoped(&device, "compiling the plasticity kernels", || Kernels::new(&device, false))?;
        Ok(Self {
            device,
            queue,
            adapter,
            kernels: Arc::new(kernels),
            timeout: DEFAULT_GPU_TIMEOUT,
            tuning: KernelTuning::default(),
            profiler: None,
            wgpu_loop_bounding: false,
        })
    }

    /// This context with its kernels compiled again, with (`true`) or without wgpu's loop bounding.
    ///
    /// wgpu puts a 64-bit counter into every shader loop by default, so that no loop can run forever
    /// (downstream compilers may treat an endless loop as undefined behaviour). Every loop of the
    /// kernels marked `counted_loops` (all but four small reductions) is a counted loop that must end,
    /// checked by a test, so the runtime builds them without it: on lavapipe a training episode takes
    /// 1-15% less time so (README). Turning it back on is for comparing the two (`bench
    /// --wgpu-loop-bounding`) or for a host that wants wgpu's guarantee regardless; results are the
    /// same either way.
    pub fn with_wgpu_loop_bounding(self, on: bool) -> Result<Self> {
        if on == self.wgpu_loop_bounding {
            return Ok(self);
        }
        let kernels = scoped(&self.device, "compiling the plasticity kernels", || Kernels::new(&self.device, on))?;
        Ok(Self { kernels: Arc::new(kernels), wgpu_loop_bounding: on, ..self })
    }

    /// Whether the kernels were compiled with wgpu's loop bounding.
    pub fn wgpu_loop_bounding(&self) -> bool {
        self.wgpu_loop_bounding
    }

    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Whether the device was created with subgroup operations (`wgpu::Features::SUBGROUP`).
    pub fn has_subgroups(&self) -> bool {
        self.device.features().contains(wgpu::Features::SUBGROUP)
    }

    /// Whether the device was created with 64-bit integers in shaders (`wgpu::Features::SHADER_INT64`),
    /// which the 32-byte streaming kernel needs ([`crate::bench::StreamTriad::median_wide_of`]).
    pub fn has_int64(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_INT64)
    }

    /// Whether the vec4 forward step runs as `forward_step_vec4_subgroup` on this device with this
    /// context's tuning, or the error that says why it cannot when the tuning asks for it (see
    /// [`KernelTuning::forward_subgroups`]).
    pub fn forward_subgroup_kernel(&self) -> Result<bool> {
        self.tuning.forward_subgroup_kernel(&self.adapter, self.has_subgroups(), self.tuning.forward_workgroup(&self.adapter))
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they catch into a
    /// [`PlasticityError::Gpu`]; the device stays usable.
    pub fn scoped<T>(&self, during: &str, f: impl FnOnce() -> T) -> Result<T> {
        scoped(&self.device, during, f)
    }

    /// Submits `commands` and waits for them, at most [`GpuContext::timeout`].
    pub fn submit_and_wait(&self, during: &str, commands: wgpu::CommandBuffer) -> Result<()> {
        let index = self.scoped(during, || self.queue.submit([commands]))?;
        self.wait(during, Some(index))
    }

    pub(crate) fn wait(&self, during: &str, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: index, timeout: Some(self.timeout) })
            .map(|_| ())
            .map_err(|e| PlasticityError::DeviceLost { during: during.to_string(), message: e.to_string() })
    }
}

/// Higher is better: real GPUs before virtual and software ones, native APIs before GL.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 1,
        _ => 0,
    };
    (device, backend)
}

pub(crate) fn scoped<T>(device: &wgpu::Device, during: &str, f: impl FnOnce() -> T) -> Result<T> {
    let out_of_memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let validation = pollster::block_on(validation.pop());
    let out_of_memory = pollster::block_on(out_of_memory.pop());
    match validation.or(out_of_memory) {
        Some(e) => Err(PlasticityError::Gpu { during: during.to_string(), message: e.to_string() }),
        None => Ok(value),
    }
}

impl GpuContext {
    /// Records one dispatch of the kernel `name` (see `plasticity_kernels::ALL_KERNELS`) on buffers
    /// the caller owns, given in binding order after the uniform params. Used by the kernel tests,
    /// and by hosts that compose the kernels themselves.
    pub fn record_kernel(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        name: &str,
        params: &[u8],
        storage: &[&wgpu::Buffer],
        grid: [u32; 3],
    ) -> Result<()> {
        self.record_kernel_specialised(encoder, name, None, params, storage, grid)
    }

    /// Like [`GpuContext::record_kernel`], for the kernels that apply a rule
    /// (`KernelDescriptor::rule_constants`): `rule` gives the rule and any extra override
    /// constants (backward_trace's `REVERSE`); `None` uses the defaults (the paper's rule).
    pub fn record_kernel_specialised(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        name: &str,
        rule: Option<(&plasticity_kernels::Plasticity, &[(&str, f64)])>,
        params: &[u8],
        storage: &[&wgpu::Buffer],
        grid: [u32; 3],
    ) -> Result<()> {
        let Some(descriptor) = plasticity_kernels::ALL_KERNELS.iter().find(|k| k.name == name) else {
            return Err(crate::error::invalid("kernel", format!("no kernel named '{name}'")));
        };
        if params.len() != descriptor.params_size || storage.len() + 1 != descriptor.bindings.len() {
            return Err(crate::error::invalid(
                "kernel call",
                format!(
                    "{name} takes {} params bytes and {} buffers, got {} and {}",
                    descriptor.params_size,
                    descriptor.bindings.len() - 1,
                    params.len(),
                    storage.len()
                ),
            ));
        }
        if rule.is_some() && !descriptor.rule_constants {
            return Err(crate::error::invalid("kernel call", format!("{name} does not apply a rule")));
        }
        let slots = crate::episode::ParamSlots::from_bytes(self, "kernel params", params)?;
        self.scoped(&format!("recording {name}"), || {
            let group = crate::episode::bind_group(self, name, &slots, storage);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(name), timestamp_writes: None });
            match rule {
                Some((spec, extra)) => {
                    let pipeline = self.kernels.specialised(&self.device, name, spec, extra);
                    crate::episode::dispatch_pipeline(&mut pass, self, descriptor.name, &pipeline, &group, 0, grid);
                }
                None => crate::episode::dispatch(&mut pass, self, name, &group, 0, grid),
            }
        })
    }
}
