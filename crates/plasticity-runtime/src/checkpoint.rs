//! Checkpoints as safetensors files, readable by PyTorch (`safetensors.torch.load_file`) and any
//! other safetensors reader: tensors `w` (N, N), `alpha` (N, N), (N) or (1) and `eta` (1) or (N), plus
//! `mod_w` (N), `mod_b` (1), `mod_u` (N), `mod_c` (N) for neuromodulated rules, all F32 (see
//! [`ParamLayout::tensors`]), plus the optimizer's `adam_m` and `adam_v` (the flat parameter layout)
//! when saved for resuming.
//! The metadata holds `format`, the network config as JSON under `network`, `adam_steps`, and any
//! entries the caller adds (the command line stores its task and training config there).
//! Files are written to a temporary file, synced, and renamed over the target, so a crash or kill
//! never leaves a half-written checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::SafeTensorError;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{PlasticityError, Result};
use crate::network::{HostParameters, NetworkConfig, ParamLayout};

pub const FORMAT: &str = "plasticity-checkpoint-v1";

/// Adam's moment estimates and step count, in the flat parameter layout.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub steps: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub network: NetworkConfig,
    pub parameters: HostParameters,
    pub optimizer: Option<OptimizerState>,
    /// Free-form entries stored in the safetensors metadata.
    pub metadata: BTreeMap<String, String>,
}

fn error(path: &Path, message: impl Into<String>) -> PlasticityError {
    PlasticityError::Checkpoint { path: path.display().to_string(), message: message.into() }
}

fn tensor_file_error(path: &Path, message: impl Into<String>) -> PlasticityError {
    PlasticityError::TensorFile { path: path.display().to_string(), message: message.into() }
}

impl Checkpoint {
    /// Writes the checkpoint atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let layout = self.parameters.layout;
        let as_bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
            self.parameters.tensors().into_iter().map(|(name, shape, values)| (name.to_string(), shape, as_bytes(values))).collect();
        let mut metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("network".into(), serde_json::to_string(&self.network).expect("config serialises"));
        if let Some(opt) = &self.optimizer {
            tensors.push(("adam_m".into(), vec![layout.count as usize], as_bytes(&opt.adam_m)));
            tensors.push(("adam_v".into(), vec![layout.count as usize], as_bytes(&opt.adam_v)));
            metadata.insert("adam_steps".into(), opt.steps.to_string());
        }
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(name, shape, data)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), data).expect("consistent tensor")))
            .collect();
        let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| error(path, e.to_string()))?;
        write_atomically(path, &bytes).map_err(|e| error(path, format!("cannot write it: {e}")))
    }

    pub fn load(path: &Path) -> Result<Self> {
        // A device or pipe (say /dev/zero) would be read without end.
        let meta = std::fs::metadata(path).map_err(|e| error(path, format!("cannot read it: {e}")))?;
        if !meta.is_file() {
            let kind = if meta.is_dir() { "a directory" } else { "not a regular file" };
            return Err(error(
                path,
                format!("cannot read it: {kind}; give a checkpoint.safetensors file or the run directory holding one"),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| error(path, format!("cannot read it: {e}")))?;
        Self::from_bytes(&bytes).map_err(|message| error(path, message))
    }

    /// Parses and validates a checkpoint; the error says what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| match e {
            SafeTensorError::MetadataIncompleteBuffer | SafeTensorError::InvalidHeaderLength => {
                format!("its length ({} bytes) does not match its header: truncated, padded, or not a safetensors file", bytes.len())
            }
            e => format!("not a safetensors file ({e})"),
        })?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a valid safetensors file ({e})"))?;
        let metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        match metadata.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => return Err(format!("format '{f}' is not {FORMAT}")),
            None => return Err(format!("no 'format' entry in its metadata; not a {FORMAT} file")),
        }
        let network: NetworkConfig = serde_json::from_str(metadata.get("network").ok_or("no 'network' config in its metadata")?)
            .map_err(|e| format!("its 'network' config is malformed: {e}"))?;
        network.validate().map_err(|e| format!("its network config is invalid: {e}"))?;
        let n = network.neurons as usize;
        let tensor = |name: &str, shape: &[usize]| -> std::result::Result<Vec<f32>, String> {
            let t = st.tensor(name).map_err(|_| format!("tensor '{name}' is missing"))?;
            if t.dtype() != Dtype::F32 {
                return Err(format!("tensor '{name}' is {:?}, expected F32", t.dtype()));
            }
            if t.shape() != shape {
                return Err(format!("tensor '{name}' has shape {:?}, expected {shape:?} for N = {n}", t.shape()));
            }
            let values: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if let Some(k) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!("tensor '{name}' holds a non-finite value at index {k}"));
            }
            Ok(values)
        };
        let layout = ParamLayout::of(&network);
        let mut values = Vec::with_capacity(layout.count as usize);
        for (name, _, shape) in layout.tensors() {
            values.extend(tensor(name, &shape)?);
        }
        let parameters = HostParameters { layout, values };
        let count = layout.count as usize;
        let optimizer = match (st.tensor("adam_m").is_ok(), st.tensor("adam_v").is_ok()) {
            (false, false) => None,
            (true, true) => {
                let steps = metadata
                    .get("adam_steps")
                    .ok_or("optimizer state without 'adam_steps' in its metadata")?
                    .parse()
                    .map_err(|e| format!("'adam_steps' is not a step count: {e}"))?;
                Some(OptimizerState { adam_m: tensor("adam_m", &[count])?, adam_v: tensor("adam_v", &[count])?, steps })
            }
            _ => return Err("holds only one of 'adam_m' and 'adam_v'".into()),
        };
        let metadata = metadata.into_iter().filter(|(k, _)| !matches!(k.as_str(), "format" | "network" | "adam_steps")).collect();
        Ok(Self { network, parameters, optimizer, metadata })
    }
}

/// A tensor to store with [`save_tensors`]: F32 or I32 data and its shape.
pub enum TensorData<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
}

/// Writes named tensors and metadata as one safetensors file, atomically.
pub fn save_tensors(path: &Path, tensors: &[(&str, Vec<usize>, TensorData<'_>)], metadata: HashMap<String, String>) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let (dtype, bytes): (Dtype, &[u8]) = match data {
                TensorData::F32(v) => (Dtype::F32, bytemuck::cast_slice(v)),
                TensorData::I32(v) => (Dtype::I32, bytemuck::cast_slice(v)),
            };
            TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| tensor_file_error(path, format!("tensor '{name}': {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| tensor_file_error(path, e.to_string()))?;
    write_atomically(path, &bytes).map_err(|e| tensor_file_error(path, format!("cannot write it: {e}")))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`: a
/// reader sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether `text` is a process id as the names of temporary files and directories carry it: decimal
/// digits, at least one (a name that merely shares their prefix is someone else's, and stays).
pub fn is_process_id(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit())
}

/// Removes the temporary files that writers killed inside [`write_atomically`] left in `dir`
/// (`.NAME.tmpPID`, its naming). Only for a directory no live writer uses (a caller's lock, say):
/// another process's file in the middle of its write would go too.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with('.') && name.rsplit_once(".tmp").is_some_and(|(_, pid)| is_process_id(pid));
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_process_id;

    #[test]
    fn process_ids_are_digits_only() {
        assert!(is_process_id("12345"));
        assert!(is_process_id("0"));
        for other in ["", "12a", "-1", " 12", "x", "12.3"] {
            assert!(!is_process_id(other), "{other:?} is not a process id");
        }
    }
}
