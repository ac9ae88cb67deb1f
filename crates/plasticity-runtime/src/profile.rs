//! GPU time per kernel (`bench --profile`): a timestamp written inside the compute pass before and
//! after every dispatch of one recorded episode, summed per kernel.
//!
//! Enabled by putting a [`KernelProfiler`] in `GpuContext::profiler` (a clone of the context, so that
//! nothing else is timed); every dispatch the runtime records then writes two timestamps. It needs
//! the device feature `TIMESTAMP_QUERY_INSIDE_PASSES`, which `GpuContext::new` requests where the
//! adapter has it. On tile-based GPUs the order inside a pass is not the recorded order, so there
//! the split between kernels is approximate.

use std::sync::Mutex;

use crate::buffers;
use crate::context::GpuContext;
use crate::error::{PlasticityError, Result};

/// Timestamps one profile can hold (wgpu's limit for a query set): the first half that many
/// dispatches are timed, later ones are counted as untimed.
pub const PROFILE_QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// The device features a profile needs.
pub const PROFILE_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY.union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

/// GPU time of one kernel over the profiled recording.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub dispatches: u32,
    pub seconds: f64,
}

/// Every kernel's time, the largest first, and the dispatches past the query capacity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelProfile {
    pub kernels: Vec<KernelTime>,
    pub untimed_dispatches: u32,
}

impl KernelProfile {
    /// Sum of the timed dispatches' GPU time.
    pub fn total_seconds(&self) -> f64 {
        self.kernels.iter().map(|k| k.seconds).sum()
    }
}

#[derive(Default)]
struct Recorded {
    /// Kernel of each timed dispatch, in recording order: dispatch d wrote queries 2d and 2d + 1.
    kernels: Vec<&'static str>,
    untimed: u32,
}

pub struct KernelProfiler {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
    recorded: Mutex<Recorded>,
}

impl std::fmt::Debug for KernelProfiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelProfiler").field("timed_dispatches", &self.recorded().kernels.len()).finish()
    }
}

impl KernelProfiler {
    /// Whether `ctx`'s device can be profiled: an error naming the missing features otherwise.
    pub fn check_supported(ctx: &GpuContext) -> Result<()> {
        let missing = PROFILE_FEATURES - ctx.device.features();
        if missing.is_empty() {
            return Ok(());
        }
        Err(PlasticityError::InvalidConfig {
            what: "kernel profile",
            message: format!(
                "timing each kernel needs the device features {missing:?}, which {} does not offer; \
                 leave out --profile (the whole-episode figures do not need them)",
                ctx.adapter.name
            ),
        })
    }

    /// A profiler for `ctx`'s device, or an error naming the missing feature.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::check_supported(ctx)?;
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel profile"),
            ty: wgpu::QueryType::Timestamp,
            count: PROFILE_QUERIES,
        });
        let bytes = PROFILE_QUERIES as u64 * 8;
        let buffer = |usage| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel profile"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Ok(Self {
            queries,
            resolved: buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            period_ns: ctx.queue.get_timestamp_period() as f64,
            recorded: Mutex::new(Recorded::default()),
        })
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what was recorded, before a new recording.
    pub fn reset(&self) {
        *self.recorded() = Recorded::default();
    }

    /// Records `dispatch` between two timestamps when there is room for them.
    pub(crate) fn time(&self, pass: &mut wgpu::ComputePass<'_>, kernel: &'static str, dispatch: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
        let slot = {
            let mut r = self.recorded();
            if (r.kernels.len() as u32 + 1) * 2 > PROFILE_QUERIES {
                r.untimed += 1;
                None
            } else {
                r.kernels.push(kernel);
                Some(r.kernels.len() as u32 - 1)
            }
        };
        match slot {
            Some(d) => {
                pass.write_timestamp(&self.queries, 2 * d);
                dispatch(pass);
                pass.write_timestamp(&self.queries, 2 * d + 1);
            }
            None => dispatch(pass),
        }
    }

    /// Copies the recorded timestamps out; call at the end of the encoder that recorded them.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let count = self.recorded().kernels.len() as u32 * 2;
        if count > 0 {
            encoder.resolve_query_set(&self.queries, 0..count, &self.resolved, 0);
            encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, count as u64 * 8);
        }
    }

    /// The profile of the recording, once the submission that resolved it has finished.
    pub fn read(&self, ctx: &GpuContext) -> Result<KernelProfile> {
        let recorded = std::mem::take(&mut *self.recorded());
        let count = recorded.kernels.len() * 2;
        let ticks: Vec<u64> = if count == 0 { Vec::new() } else { buffers::map_read_u64(ctx, &self.readback, count, "kernel timestamps")? };
        let mut kernels: Vec<KernelTime> = Vec::new();
        for (d, &kernel) in recorded.kernels.iter().enumerate() {
            let seconds = ticks[2 * d + 1].saturating_sub(ticks[2 * d]) as f64 * self.period_ns * 1e-9;
            match kernels.iter_mut().find(|k| k.kernel == kernel) {
                Some(k) => {
                    k.dispatches += 1;
                    k.seconds += seconds;
                }
                None => kernels.push(KernelTime { kernel, dispatches: 1, seconds }),
            }
        }
        kernels.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        Ok(KernelProfile { kernels, untimed_dispatches: recorded.untimed })
    }
}
