//! The one error type of the runtime. Every failure an embedder can meet comes back as a value.

use thiserror::Error;

/// What the user should do when no adapter is found.
pub const NO_ADAPTER_FIX: &str = "install a Vulkan driver (on Debian or Ubuntu without a GPU: \
`sudo apt-get install mesa-vulkan-drivers libvulkan1`, or run `tools/setup-gpu.sh`), or pick another \
adapter with WGPU_BACKEND (vulkan, metal, dx12, gl) and WGPU_ADAPTER_NAME";

#[derive(Debug, Error)]
pub enum PlasticityError {
    #[error("no usable GPU adapter was found{detail}; {fix}", fix = NO_ADAPTER_FIX)]
    NoAdapter { detail: String },

    #[error("could not open a device on adapter '{adapter}': {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    /// A buffer would pass one of the device's limits; nothing was allocated.
    #[error("{what} needs {needed} bytes, but this device's `{limit}` is {allowed} bytes; {fix}")]
    LimitExceeded { what: String, limit: &'static str, needed: u64, allowed: u64, fix: String },

    /// A dispatch would pass the device's workgroup count along one axis; nothing was recorded.
    #[error(
        "{what} needs {needed} workgroups along one axis, but this device's `max_compute_workgroups_per_dimension` is {allowed}; {fix}"
    )]
    WorkgroupsExceeded { what: String, needed: u64, allowed: u64, fix: String },

    #[error("invalid {what}: {message}")]
    InvalidConfig { what: &'static str, message: String },

    /// wgpu reported a validation or out-of-memory error while the runtime was working.
    #[error("the GPU rejected {during}: {message}")]
    Gpu { during: String, message: String },

    /// The device was lost, or a wait for the GPU ran past its timeout.
    #[error("the GPU did not finish {during}: {message}; the device may have been lost or reset")]
    DeviceLost { during: String, message: String },

    #[error("reading {what} back from the GPU failed: {message}")]
    Readback { what: String, message: String },

    /// A checkpoint that cannot be read or written; the message says what is wrong with it.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },

    /// Another safetensors file (`checkpoint::save_tensors`) that cannot be written.
    #[error("{path}: {message}")]
    TensorFile { path: String, message: String },
}

pub type Result<T, E = PlasticityError> = std::result::Result<T, E>;

pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> PlasticityError {
    PlasticityError::InvalidConfig { what, message: message.into() }
}
