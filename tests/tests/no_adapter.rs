//! Without a usable adapter the runtime returns one clear error that says how to fix it. (Its own
//! process: it sets WGPU_ADAPTER_NAME to a name no adapter has.)

use plasticity_runtime::{GpuContext, PlasticityError};

#[test]
fn no_matching_adapter_is_an_error_with_the_fix() {
    // SAFETY: this test binary has one test and no other threads read the environment meanwhile.
    unsafe { std::env::set_var("WGPU_ADAPTER_NAME", "no-such-adapter-anywhere") };
    let err = GpuContext::new().err().expect("no adapter is named like that");
    let message = err.to_string();
    assert!(matches!(err, PlasticityError::NoAdapter { .. }), "{err:?}");
    assert!(message.contains("WGPU_ADAPTER_NAME='no-such-adapter-anywhere'"), "{message}");
    assert!(message.contains("apt-get install mesa-vulkan-drivers libvulkan1"), "{message}");
}
