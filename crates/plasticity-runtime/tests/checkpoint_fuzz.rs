//! The checkpoint loader against hostile files: valid ones round-trip; truncated, bit-flipped,
//! spliced and random files are refused with a message, never a panic. CPU only.

use plasticity_runtime::checkpoint::{Checkpoint, OptimizerState};
use plasticity_runtime::{HostParameters, NetworkConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn valid(neurons: u32, with_optimizer: bool) -> Checkpoint {
    let config = NetworkConfig { neurons, seed: 3, ..Default::default() };
    let parameters = HostParameters::init(&config).unwrap();
    let count = parameters.values.len();
    let optimizer = with_optimizer.then(|| OptimizerState { adam_m: vec![0.5; count], adam_v: vec![0.25; count], steps: 7 });
    Checkpoint { network: config, parameters, optimizer, metadata: [("run".to_string(), "{}".to_string())].into() }
}

fn bytes_of(c: &Checkpoint) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("fuzz-{}-{}.safetensors", std::process::id(), c.network.neurons));
    c.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

#[test]
fn valid_checkpoints_round_trip() {
    for (n, opt) in [(1, false), (5, true), (33, true)] {
        let c = valid(n, opt);
        assert_eq!(Checkpoint::from_bytes(&bytes_of(&c)).unwrap(), c);
    }
}

#[test]
fn broken_checkpoints_are_refused_with_a_reason() {
    let good = bytes_of(&valid(5, true));
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let mut refused = 0usize;
    let mut accepted = 0usize;
    const INPUTS: usize = 30_000;
    for k in 0..INPUTS {
        let mut bytes = good.clone();
        match k % 5 {
            0 => bytes.truncate(rng.random_range(0..good.len())),
            1 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
            }
            2 => {
                // Corrupt the JSON header, where shapes, dtypes and offsets live.
                let header = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
                let at = rng.random_range(8..8 + header);
                bytes[at] = rng.random();
            }
            3 => bytes = (0..rng.random_range(0..256)).map(|_| rng.random()).collect(),
            _ => {
                let cut = rng.random_range(0..bytes.len());
                let other = bytes_of(&valid(3, false));
                bytes.truncate(cut);
                bytes.extend_from_slice(&other[rng.random_range(0..other.len())..]);
            }
        }
        match Checkpoint::from_bytes(&bytes) {
            Err(message) => {
                assert!(!message.is_empty());
                refused += 1;
            }
            // A flip inside a tensor's payload can leave a valid checkpoint with other (finite) values.
            Ok(c) => {
                assert!(c.parameters.values.iter().all(|v| v.is_finite()));
                accepted += 1;
            }
        }
    }
    eprintln!("checkpoint fuzz: {INPUTS} inputs, {refused} refused, {accepted} still valid");
    assert!(refused > INPUTS / 2);
}

#[test]
fn specific_faults_get_specific_messages() {
    let c = valid(4, false);
    let good = bytes_of(&c);
    let err = Checkpoint::from_bytes(&good[..good.len() - 4]).unwrap_err();
    assert!(err.contains("truncated"), "{err}");
    assert!(Checkpoint::from_bytes(b"hello").unwrap_err().contains("not a safetensors file"));
    // A checkpoint whose config says 5 neurons but whose tensors are 4 x 4 (the config is a JSON
    // string inside the JSON header, hence the escaped quotes).
    let err = Checkpoint::from_bytes(&replace(&good, br#"\"neurons\":4"#, br#"\"neurons\":5"#)).unwrap_err();
    assert!(err.contains("shape [4, 4], expected [5, 5]"), "{err}");
    let err = Checkpoint::from_bytes(&replace(&good, b"plasticity-checkpoint-v1", b"plasticity-checkpoint-v9")).unwrap_err();
    assert!(err.contains("is not plasticity-checkpoint-v1"), "{err}");
    let err = Checkpoint::from_bytes(&replace(&good, br#""alpha""#, br#""alphb""#)).unwrap_err();
    assert!(err.contains("tensor 'alpha' is missing"), "{err}");
    let err = Checkpoint::from_bytes(&replace(&good, br#""dtype":"F32","shape":[1]"#, br#""dtype":"I32","shape":[1]"#)).unwrap_err();
    assert!(err.contains("is I32, expected F32"), "{err}");
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap_or_else(|| panic!("{} not found", String::from_utf8_lossy(from)));
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}
