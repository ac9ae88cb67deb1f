//! Compute pipelines built from the kernel descriptors: the bind group layout of each kernel is
//! derived from its descriptor, so a binding added in WGSL without the descriptor fails the layout
//! test instead of silently misbinding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use plasticity_kernels::{BindingKind, KernelDescriptor, Plasticity};

pub(crate) struct Kernel {
    pub descriptor: KernelDescriptor,
    pub layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    /// Built with every override at its default (the paper's decay rule).
    pub pipeline: wgpu::ComputePipeline,
}

/// The kernels' default pipelines, plus a cache of the rule kernels specialised per rule.
pub(crate) struct Kernels {
    by_name: HashMap<&'static str, Kernel>,
    specialised: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
}

impl Kernels {
    /// `loop_bounding`: keep wgpu's loop bounding in every kernel, even those whose loops are
    /// counted (see [`KernelDescriptor::counted_loops`]).
    pub fn new(device: &wgpu::Device, loop_bounding: bool) -> Self {
        // A kernel that needs subgroups is built only where the device has them; the runtime never
        // asks for it elsewhere (KernelTuning::forward_subgroups). Likewise 64-bit integers (the
        // bench's stream_triad_wide, asked for only where GpuContext::has_int64).
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        let int64 = device.features().contains(wgpu::Features::SHADER_INT64);
        let by_name = plasticity_kernels::ALL_KERNELS
            .iter()
            .filter(|k| (subgroups || !k.subgroups) && (int64 || !k.int64))
            .map(|k| (k.name, build(device, k, loop_bounding)))
            .collect();
        Self { by_name, specialised: Mutex::new(HashMap::new()) }
    }

    pub fn get(&self, name: &str) -> &Kernel {
        self.by_name.get(name).unwrap_or_else(|| panic!("kernel {name} was not built for this device"))
    }

    /// The pipeline of a rule kernel with the override constants of `spec` (and `extra` ones, such
    /// as backward_trace's REVERSE), compiled on first use.
    pub fn specialised(&self, device: &wgpu::Device, name: &str, spec: &Plasticity, extra: &[(&str, f64)]) -> Arc<wgpu::ComputePipeline> {
        let k = self.get(name);
        assert!(k.descriptor.rule_constants, "{name} does not apply the rule");
        let constants: Vec<(&str, f64)> = spec.constants().into_iter().chain(extra.iter().copied()).collect();
        let key = format!("{name}{constants:?}");
        let mut cache = self.specialised.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| {
                Arc::new(device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(k.descriptor.name),
                    layout: Some(&k.pipeline_layout),
                    module: &k.module,
                    entry_point: Some(k.descriptor.name),
                    compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
                    cache: None,
                }))
            })
            .clone()
    }
}

fn build(device: &wgpu::Device, k: &KernelDescriptor, loop_bounding: bool) -> Kernel {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = k
        .bindings
        .iter()
        .enumerate()
        .map(|(binding, b)| wgpu::BindGroupLayoutEntry {
            binding: binding as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b.kind {
                    BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                    BindingKind::StorageRead => wgpu::BufferBindingType::Storage { read_only: true },
                    BindingKind::StorageReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                // The per-step params of one episode sit in one uniform buffer, one slot per step.
                has_dynamic_offset: binding == 0,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(k.name), entries: &entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(k.name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let desc = wgpu::ShaderModuleDescriptor { label: Some(k.name), source: wgpu::ShaderSource::Wgsl(k.source.into()) };
    let module = if k.counted_loops && !loop_bounding {
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        checks.force_loop_bounding = false;
        // SAFETY: the one check turned off is wgpu's loop bounding, which guards against loops that
        // never end; every loop of this kernel is a counted `for` loop that must end, which the
        // `counted_loops_end` test checks of every kernel with `counted_loops` set. Bounds checks
        // and every other check stay as wgpu sets them.
        unsafe { device.create_shader_module_trusted(desc, checks) }
    } else {
        device.create_shader_module(desc)
    };
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(k.name),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(k.name),
        compilation_options: Default::default(),
        cache: None,
    });
    Kernel { descriptor: *k, layout, pipeline_layout, module, pipeline }
}
