//! Buffer creation with limit checks up front, uploads, and readback of small results.

use crate::context::GpuContext;
use crate::error::{PlasticityError, Result};

/// A GPU buffer with the shape it holds, for error messages and memory accounting.
pub struct GpuBuffer {
    pub buffer: wgpu::Buffer,
    pub label: &'static str,
    /// The contents' size (the allocation is rounded up to 16 bytes, see `create`).
    pub bytes: u64,
}

impl std::ops::Deref for GpuBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

pub(crate) const STORAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST).union(wgpu::BufferUsages::COPY_SRC);

/// Refuses a storage binding larger than the device allows, before anything is allocated.
pub(crate) fn check_storage(ctx: &GpuContext, what: &str, bytes: u64, fix: impl FnOnce(u64) -> String) -> Result<()> {
    let limits = ctx.limits();
    for (limit, allowed) in
        [("max_storage_buffer_binding_size", limits.max_storage_buffer_binding_size), ("max_buffer_size", limits.max_buffer_size)]
    {
        if bytes > allowed {
            return Err(PlasticityError::LimitExceeded { what: what.to_string(), limit, needed: bytes, allowed, fix: fix(allowed) });
        }
    }
    Ok(())
}

/// Creates a zero-filled buffer; `bytes` is rounded up to 4 and to at least 4. The allocation is
/// rounded up to whole 16-byte quads (at least one): the vec4 kernels bind buffers as arrays of
/// vec4, which must cover the last float (the flat parameters' length, for one, need not be a
/// multiple of 4) and hold at least one element. `GpuBuffer::bytes` stays the contents' size.
pub(crate) fn create(ctx: &GpuContext, label: &'static str, bytes: u64, usage: wgpu::BufferUsages) -> Result<GpuBuffer> {
    let bytes = bytes.max(4).next_multiple_of(4);
    let allocated = bytes.next_multiple_of(16);
    let buffer = ctx.scoped(&format!("allocating {label} ({allocated} bytes)"), || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: allocated, usage, mapped_at_creation: false })
    })?;
    Ok(GpuBuffer { buffer, label, bytes })
}

pub(crate) fn storage(ctx: &GpuContext, label: &'static str, bytes: u64) -> Result<GpuBuffer> {
    check_storage(ctx, label, bytes, |_| "use a smaller size".into())?;
    create(ctx, label, bytes, STORAGE)
}

pub(crate) fn storage_from<T: bytemuck::Pod>(ctx: &GpuContext, label: &'static str, data: &[T]) -> Result<GpuBuffer> {
    let buffer = storage(ctx, label, std::mem::size_of_val(data) as u64)?;
    write(ctx, &buffer, 0, data)?;
    Ok(buffer)
}

pub(crate) fn write<T: bytemuck::Pod>(ctx: &GpuContext, buffer: &GpuBuffer, offset: u64, data: &[T]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    ctx.scoped(&format!("uploading {}", buffer.label), || ctx.queue.write_buffer(buffer, offset, bytemuck::cast_slice(data)))
}

/// Copies `bytes` from `buffer` at `offset` to the host. One submission, waited on.
pub fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, offset: u64, len: usize, what: &str) -> Result<Vec<f32>> {
    let bytes = (len * 4) as u64;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let staging = ctx.scoped(&format!("reading back {what}"), || {
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, bytes);
        (staging, encoder.finish())
    })?;
    ctx.submit_and_wait(&format!("reading back {what}"), staging.1)?;
    map_read(ctx, &staging.0, what)
}

pub(crate) fn map_read(ctx: &GpuContext, staging: &wgpu::Buffer, what: &str) -> Result<Vec<f32>> {
    Ok(bytemuck::cast_slice::<u8, f32>(&map_read_bytes(ctx, staging, what)?).to_vec())
}

/// The first `count` u64 of a mappable buffer (resolved timestamps).
pub(crate) fn map_read_u64(ctx: &GpuContext, staging: &wgpu::Buffer, count: usize, what: &str) -> Result<Vec<u64>> {
    let bytes = map_read_bytes(ctx, staging, what)?;
    Ok(bytes[..count * 8].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

fn map_read_bytes(ctx: &GpuContext, staging: &wgpu::Buffer, what: &str) -> Result<Vec<u8>> {
    let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        sender.send(r).ok();
    });
    ctx.wait(&format!("mapping {what}"), None)?;
    let mapped = pollster::block_on(receiver.receive())
        .ok_or_else(|| PlasticityError::Readback { what: what.into(), message: "the map callback never ran".into() })?;
    mapped.map_err(|e| PlasticityError::Readback { what: what.into(), message: e.to_string() })?;
    let values = {
        let view = staging.get_mapped_range(..).map_err(|e| PlasticityError::Readback { what: what.into(), message: e.to_string() })?;
        view.to_vec()
    };
    staging.unmap();
    Ok(values)
}
