//! `train`, `eval` and `export-episode`: the paper's experiments from the command line.
//!
//! A run directory holds `config.json` (everything needed to repeat the run), `metrics.csv` (one
//! row per episode), `loss.png`, and `checkpoint.safetensors` (parameters, Adam state and the run
//! config, written atomically every `--checkpoint-every` episodes and at the end). Episode `e`'s data
//! depends only on the seed and `e`, so `--resume` continues exactly where an uninterrupted run would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use plasticity_runtime::checkpoint::{TensorData, save_tensors};
use plasticity_runtime::{
    AdamConfig, Checkpoint, EpisodeData, GpuContext, ImageEpisode, ImageTask, Network, NetworkConfig, PatternTask, Trainer, TrainerConfig,
    bench,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{images, plot};

/// The experiment a run trains on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskConfig {
    Pattern(PatternTask),
    Image {
        #[serde(flatten)]
        task: ImageTask,
        /// The directory the images were loaded from.
        images: PathBuf,
    },
}

/// A task with its data loaded.
pub struct Task {
    pub config: TaskConfig,
    /// The image pool (empty for the pattern task).
    pub pool: Vec<Vec<f32>>,
}

impl Task {
    pub fn load(config: &TaskConfig) -> anyhow::Result<Self> {
        let pool = match config {
            TaskConfig::Pattern(_) => Vec::new(),
            TaskConfig::Image { task, images } => {
                let pool = images::load_images(images, task.side)?;
                ensure!(
                    pool.len() >= task.images_per_episode as usize,
                    "{} holds {} usable images, but each episode shows {} different ones",
                    images.display(),
                    pool.len(),
                    task.images_per_episode
                );
                pool
            }
        };
        Ok(Self { config: config.clone(), pool })
    }

    /// The data of episode `stream`: a pure function of the seed and the stream.
    pub fn episode(&self, batch: u32, seed: u64, stream: u64) -> anyhow::Result<(EpisodeData, Option<ImageEpisode>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Ok(match &self.config {
            TaskConfig::Pattern(t) => (t.generate(batch, &mut rng)?, None),
            TaskConfig::Image { task, .. } => {
                let (data, shown) = task.generate(&self.pool, batch, &mut rng)?;
                (data, Some(shown))
            }
        })
    }

    fn steps(&self) -> u32 {
        match &self.config {
            TaskConfig::Pattern(t) => t.steps(),
            TaskConfig::Image { task, .. } => task.steps(),
        }
    }

    /// What makes this task's episodes shorter, for the fix of a size the device refuses.
    fn shorter_episodes(&self) -> String {
        let (size, options) = match &self.config {
            TaskConfig::Pattern(_) => ("--neurons", "--patterns, --presentations"),
            TaskConfig::Image { .. } => ("--side", "--images-per-episode, --cycles"),
        };
        format!("a smaller --batch or {size} fits, and so do shorter episodes: fewer {options}, --show-steps, --gap-steps or --test-steps")
    }

    /// Refuses, before any episode is built, a batch or episode length past the device's limits
    /// (the host would build the (T, B, N) inputs first, which a size far past them could exhaust).
    fn check_fits(&self, ctx: &GpuContext, network: &NetworkConfig, batch: u32, fix: &str) -> anyhow::Result<()> {
        let steps = self.steps();
        plasticity_runtime::check_episode_fits(ctx, network, batch, steps, 1)
            .with_context(|| format!("episodes of {steps} steps at batch {batch} do not fit this device ({fix})"))
    }

    fn describe(&self) -> String {
        match &self.config {
            TaskConfig::Pattern(t) => format!("pattern memorisation: {} patterns of {} bits, {} steps", t.patterns, t.neurons, t.steps()),
            TaskConfig::Image { task, images } => format!(
                "image completion: {} images of {}x{} from {} ({} usable), {} steps, {} neurons{}",
                task.images_per_episode,
                task.side,
                task.side,
                images.display(),
                self.pool.len(),
                task.steps(),
                task.model_neurons(),
                match task.spare_neurons {
                    0 => String::new(),
                    k => format!(" and {k} spare ones held at 0"),
                }
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskKind {
    /// Binary pattern memorisation (the paper's first experiment).
    Pattern,
    /// Natural-image completion from a directory of PNG or JPEG files (the paper's second).
    Image,
}

/// Everything a run depends on; saved as `config.json` and in every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub task: TaskConfig,
    pub network: NetworkConfig,
    pub adam: AdamConfig,
    pub batch: u32,
    pub episodes: u64,
    pub checkpoint_every: u64,
    pub error_window: usize,
    pub seed: u64,
}

/// The options that define a run, fixed once it started: `--resume` refuses them rather than
/// ignore them (the run's own are in its config.json).
const RUN_OPTIONS: [&str; 22] = [
    "run_dir",
    "task",
    "neurons",
    "images",
    "side",
    "images_per_episode",
    "cycles",
    "patterns",
    "presentations",
    "show_steps",
    "gap_steps",
    "test_steps",
    "input_gain",
    "degrade_prob",
    "batch",
    "eta",
    "fixed_eta",
    "baseline",
    "RuleArgs",
    "seed",
    "checkpoint_every",
    "error_window",
];

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The experiment.
    #[arg(long, value_enum, default_value_t = TaskKind::Pattern)]
    task: TaskKind,
    /// Neurons N for the pattern task (the pattern size) [default: 1000]; the image task uses side^2 + 1,
    /// and up to 3 spare neurons held at 0 that make N a multiple of 4, where the vec4 kernels run.
    #[arg(long)]
    neurons: Option<u32>,
    /// Image task: directory of PNG or JPEG images (any size or colour; converted to grey, cropped and resized).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Image task: side of the square images, in pixels [default: 32].
    #[arg(long)]
    side: Option<u32>,
    /// Image task: images shown per episode [default: 3].
    #[arg(long)]
    images_per_episode: Option<u32>,
    /// Image task: presentation cycles [default: 3].
    #[arg(long)]
    cycles: Option<u32>,
    /// Pattern task: patterns stored per episode [default: 5].
    #[arg(long)]
    patterns: Option<u32>,
    /// Pattern task: presentation cycles; the order is reshuffled each cycle [default: 2].
    #[arg(long)]
    presentations: Option<u32>,
    /// Steps each pattern or image is shown [default: 6 patterns, 20 images].
    #[arg(long)]
    show_steps: Option<u32>,
    /// Silent (free) steps after each [default: 4 patterns, 2 images].
    #[arg(long)]
    gap_steps: Option<u32>,
    /// Steps the degraded pattern or half image is shown [default: 6 patterns, 3 images].
    #[arg(long)]
    test_steps: Option<u32>,
    /// Pattern task: input gain; inputs are added to the recurrent drive times this [default: 20].
    #[arg(long)]
    input_gain: Option<f32>,
    /// Pattern task: probability that each bit of the test pattern is zeroed [default: 0.5].
    #[arg(long)]
    degrade_prob: Option<f32>,
    /// Episodes per batch, run in parallel.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Training episodes (batches) [default: 1000; with --resume: the run's own count].
    #[arg(long)]
    episodes: Option<u64>,
    /// Adam learning rate [default: 0.0003]; with --resume, replaces the run's from its last checkpoint on.
    #[arg(long)]
    lr: Option<f32>,
    /// Clip the global gradient norm to this value (Backpropamine uses 4); off by default. With
    /// --resume, replaces the run's.
    #[arg(long)]
    clip: Option<f32>,
    /// Initial plasticity rate eta.
    #[arg(long, default_value_t = 0.01)]
    eta: f32,
    /// Keep eta fixed instead of learning it.
    #[arg(long)]
    fixed_eta: bool,
    /// Train the non-plastic baseline (alpha fixed at zero) to see what plasticity buys; it has no
    /// plasticity rule, so it takes no rule options.
    #[arg(long, conflicts_with = "RuleArgs")]
    baseline: bool,
    #[command(flatten)]
    rule: crate::rule_args::RuleArgs,
    /// Seed of the initial weights and of every episode; the same seed repeats a run on the same device.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory (default: `runs/<task>-seed<seed>-<unix time>`).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Write a checkpoint every this many episodes (and at the end).
    #[arg(long, default_value_t = 50)]
    checkpoint_every: u64,
    /// Episodes over which the reported bit error rate is averaged.
    #[arg(long, default_value_t = 50)]
    error_window: usize,
    /// Continue the run in this directory from its last checkpoint (its config is used; --episodes may
    /// extend it, --lr and --clip replace the optimizer's; the run's other options cannot change).
    #[arg(long, conflicts_with_all = RUN_OPTIONS)]
    resume: Option<PathBuf>,
    /// No progress bar; print a line per checkpoint instead.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    kernels: crate::kernel_args::KernelArgs,
}

impl TrainArgs {
    fn config(&self) -> anyhow::Result<RunConfig> {
        let (task, neurons) = match self.task {
            TaskKind::Pattern => {
                // The other task's options would be ignored: refused instead.
                refuse_options_of(
                    "--task image",
                    [
                        ("--images", self.images.is_some()),
                        ("--side", self.side.is_some()),
                        ("--images-per-episode", self.images_per_episode.is_some()),
                        ("--cycles", self.cycles.is_some()),
                    ],
                )?;
                let neurons = self.neurons.unwrap_or(1000);
                let default = PatternTask::default();
                let task = PatternTask {
                    neurons,
                    patterns: self.patterns.unwrap_or(default.patterns),
                    presentations: self.presentations.unwrap_or(default.presentations),
                    show_steps: self.show_steps.unwrap_or(default.show_steps),
                    gap_steps: self.gap_steps.unwrap_or(default.gap_steps),
                    test_steps: self.test_steps.unwrap_or(default.test_steps),
                    input_gain: self.input_gain.unwrap_or(default.input_gain),
                    degrade_prob: self.degrade_prob.unwrap_or(default.degrade_prob),
                };
                (TaskConfig::Pattern(task), neurons)
            }
            TaskKind::Image => {
                refuse_options_of(
                    "--task pattern",
                    [
                        ("--patterns", self.patterns.is_some()),
                        ("--presentations", self.presentations.is_some()),
                        ("--input-gain", self.input_gain.is_some()),
                        ("--degrade-prob", self.degrade_prob.is_some()),
                    ],
                )?;
                let images = self.images.clone().context("--task image needs --images DIR, a directory of PNG or JPEG files")?;
                let paper = ImageTask::with_side(self.side.unwrap_or(32));
                let task = ImageTask {
                    images_per_episode: self.images_per_episode.unwrap_or(paper.images_per_episode),
                    cycles: self.cycles.unwrap_or(paper.cycles),
                    show_steps: self.show_steps.unwrap_or(paper.show_steps),
                    gap_steps: self.gap_steps.unwrap_or(paper.gap_steps),
                    test_steps: self.test_steps.unwrap_or(paper.test_steps),
                    ..paper
                };
                task.validate()?;
                if let Some(n) = self.neurons {
                    // Either count names the same network: the model's neurons or those with the spares.
                    ensure!(
                        n == task.model_neurons() || n == task.neurons(),
                        "--neurons {n} contradicts --side {}: the image task uses side^2 + 1 = {} neurons (with {} spare ones held at 0 so \
                         that N is a multiple of 4: {}); leave --neurons out",
                        task.side,
                        task.model_neurons(),
                        task.spare_neurons,
                        task.neurons()
                    );
                }
                let neurons = task.neurons();
                (TaskConfig::Image { task, images }, neurons)
            }
        };
        let plasticity = self.rule.plasticity()?;
        // A modulated rate does not read eta, unless an eligibility trace uses it as its own rate.
        ensure!(
            !(self.fixed_eta && plasticity.modulated() && !plasticity.retroactive),
            "--fixed-eta has no effect with --modulation: the modulator sets the rate (eta is only the eligibility trace's rate, with \
             --retroactive)"
        );
        let network = NetworkConfig {
            neurons,
            eta: self.eta,
            learn_eta: !self.fixed_eta,
            plastic: !self.baseline,
            seed: self.seed,
            plasticity,
            ..Default::default()
        };
        let adam = AdamConfig { lr: self.lr.unwrap_or(AdamConfig::default().lr), clip_norm: self.clip, ..Default::default() };
        let config = RunConfig {
            task,
            network,
            adam,
            batch: self.batch,
            episodes: self.episodes.unwrap_or(1000),
            checkpoint_every: self.checkpoint_every,
            error_window: self.error_window,
            seed: self.seed,
        };
        validate(&config)?;
        Ok(config)
    }
}

/// A learned eta where the decay (or Oja's) rule is no longer a stable decay, [0, 1), is not refused
/// (training can drift there, and the run may still be worth reading) but said: such a checkpoint
/// is corrupt or from a run about to diverge (the reversed sweep divides by 1 - eta).
fn warn_if_eta_unstable(path: &Path, checkpoint: &Checkpoint) {
    let spec = checkpoint.network.plasticity;
    // A modulated rate reads no eta, unless an eligibility trace takes it as its own rate.
    let eta_is_a_rate = !spec.modulated() || spec.retroactive;
    if spec.rule == plasticity_runtime::Rule::Additive || !eta_is_a_rate || !checkpoint.network.plastic {
        return;
    }
    if let Some(eta) = checkpoint.parameters.etas().iter().find(|e| !(0.0..1.0).contains(*e)) {
        eprintln!(
            "warning: {}: eta = {eta} is outside [0, 1), where the {:?} rule is a stable decay; the file is corrupt or its run \
             was about to diverge",
            path.display(),
            spec.rule
        );
    }
}

/// The other task's options would be ignored: each one given is refused instead.
fn refuse_options_of(task: &str, options: [(&str, bool); 4]) -> anyhow::Result<()> {
    for (option, given) in options {
        ensure!(!given, "{option} belongs to {task}");
    }
    Ok(())
}

fn validate(c: &RunConfig) -> anyhow::Result<()> {
    match &c.task {
        TaskConfig::Pattern(t) => {
            t.validate()?;
            ensure!(t.neurons == c.network.neurons, "the pattern size must equal the number of neurons");
        }
        TaskConfig::Image { task, .. } => {
            task.validate()?;
            ensure!(
                task.neurons() == c.network.neurons,
                "the image task needs side^2 + 1 + spare_neurons = {} neurons, but the network has {}",
                task.neurons(),
                c.network.neurons
            );
        }
    }
    c.network.validate()?;
    c.adam.validate()?;
    ensure!(c.batch >= 1, "--batch must be at least 1 (got {})", c.batch);
    ensure!(c.episodes >= 1, "--episodes must be at least 1 (got {})", c.episodes);
    ensure!(c.checkpoint_every >= 1, "--checkpoint-every must be at least 1 (got {})", c.checkpoint_every);
    ensure!(c.error_window >= 1, "--error-window must be at least 1 (got {})", c.error_window);
    Ok(())
}

/// Evaluation episodes draw from streams training never uses.
const EVAL_STREAMS: u64 = 1 << 40;

/// What the step kernels ran with in the trainer's last episode, in `bench`'s terms (its columns W,
/// S, Q, G, Z, bk): the adapter's defaults, or the kernel options given; `None` before an episode.
fn kernel_summary(trainer: &Trainer) -> Option<String> {
    let (splits, groups) = trainer.work_split()?;
    let width = trainer.kernel_width()?;
    let forward = match trainer.forward_column_quads()? {
        0 => "one neuron per invocation".to_string(),
        quads => format!(
            "{quads} column quad(s) per invocation{}",
            if trainer.forward_subgroups()? { ", history shared by subgroup shuffles" } else { "" }
        ),
    };
    let trace = match trainer.trace_stripe()? {
        0 => "rows whole".to_string(),
        stripe => format!("columns in stripes of {stripe} (ts)"),
    };
    Some(format!(
        "kernels: {} (W {width}); trace: {trace}; forward: {splits} chunk(s) of the sum (S), {forward}; backward: {groups} batch group(s) (Z), \
         blocks of side {} (bk), {} column lane(s), workgroups of {}{}",
        if width == 4 { "vec4" } else { "scalar" },
        trainer.backward_tile()?,
        trainer.backward_column_lanes()?,
        trainer.backward_workgroup()?,
        if trainer.backward_hoist_columns()? { ", column values loaded once per pass" } else { "" },
    ))
}

/// Resident memory of this process, for soak runs (Linux; elsewhere "n/a").
fn host_memory() -> String {
    let pages = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
    pages.map_or("n/a".into(), |p| format!("{:.1} MiB", (p * 4096) as f64 / (1024.0 * 1024.0)))
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const METRICS: &str = "metrics.csv";
const METRICS_HEADER: &str = "episode,loss,bit_error_rate,eta,grad_norm,elapsed_s";

fn save_checkpoint(trainer: &Trainer, ctx: &GpuContext, dir: &Path, config: &RunConfig, episodes_done: u64) -> anyhow::Result<()> {
    let mut checkpoint = trainer.checkpoint(ctx)?;
    checkpoint.metadata.insert("run".into(), serde_json::to_string(config)?);
    checkpoint.metadata.insert("episodes_done".into(), episodes_done.to_string());
    checkpoint.save(&dir.join(CHECKPOINT))?;
    Ok(())
}

/// Keeps the header and the first `rows` data rows of metrics.csv (rows past a checkpoint are
/// redone on resume), rewriting it atomically.
fn truncate_metrics(path: &Path, rows: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let kept: Vec<&str> = text.lines().take(rows as usize + 1).collect();
    ensure!(kept.first() == Some(&METRICS_HEADER), "{} does not start with the expected header", path.display());
    ensure!(
        kept.len() as u64 == rows + 1,
        "{} holds fewer rows ({}) than the checkpoint's {rows} episodes",
        path.display(),
        kept.len() - 1
    );
    // What train writes: the episode's number, then five finite numbers (a diverged episode stops
    // the run before its row). Anything else was edited or damaged, and would feed the reported
    // error rate and the loss plot.
    for (episode, row) in (1u64..).zip(&kept[1..]) {
        let fields: Vec<&str> = row.split(',').collect();
        let well_formed = fields.len() == 6
            && fields[0].parse::<u64>().ok() == Some(episode)
            && fields[1..].iter().all(|f| f.parse::<f64>().is_ok_and(f64::is_finite));
        ensure!(
            well_formed,
            "{} row {episode} ('{row}') is not a metrics row (episode {episode}, then five finite numbers); the file was edited or \
             damaged: restore it, or start the run again in a new --run-dir",
            path.display()
        );
    }
    write_file(path, (kept.join("\n") + "\n").as_bytes())
}

/// [`plasticity_runtime::checkpoint::write_atomically`], with the path in its error.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    plasticity_runtime::checkpoint::write_atomically(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Opens the lock file at `path`, creating it, never truncating it (another process may hold it).
fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)
}

/// Holds an exclusive lock on `dir` for as long as the returned file lives, so that two runs never
/// write one run directory at once (their checkpoints and metrics rows would interleave).
fn lock_run_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(".lock");
    let file = open_lock_file(&path).with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("{} is in use by another train run; wait for it to end or choose another --run-dir", dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let tuning = args.kernels.tuning()?;
    let (config, dir, start, resumed) = match &args.resume {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join("config.json"))
                .with_context(|| format!("{} is not a run directory (no readable config.json)", dir.display()))?;
            let mut config: RunConfig =
                serde_json::from_str(&text).with_context(|| format!("{}/config.json is malformed", dir.display()))?;
            ensure!(
                dir.join(CHECKPOINT).exists(),
                "{} holds no checkpoint yet (the run stopped before its first one); start it again with --run-dir {0}",
                dir.display()
            );
            let checkpoint = Checkpoint::load(&dir.join(CHECKPOINT))?;
            warn_if_eta_unstable(&dir.join(CHECKPOINT), &checkpoint);
            let done: u64 = checkpoint
                .metadata
                .get("episodes_done")
                .and_then(|v| v.parse().ok())
                .context("the checkpoint does not say how many episodes it holds")?;
            if let Some(episodes) = args.episodes {
                config.episodes = episodes; // extend the run
            }
            // The optimizer's settings may change from the checkpoint on (after a divergence, say).
            if let Some(lr) = args.lr {
                println!("learning rate {lr} from here on (the run had {})", config.adam.lr);
                config.adam.lr = lr;
            }
            if let Some(clip) = args.clip {
                println!("gradient norm clipped to {clip} from here on (the run had {:?})", config.adam.clip_norm);
                config.adam.clip_norm = Some(clip);
            }
            ensure!(config.episodes >= done, "--episodes {} is fewer than the {done} the checkpoint already holds", config.episodes);
            validate(&config)?;
            (config, dir.clone(), done, Some(checkpoint))
        }
        None => {
            let config = args.config()?;
            let dir = args.run_dir.clone().unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let kind = if matches!(config.task, TaskConfig::Pattern(_)) { "pattern" } else { "image" };
                PathBuf::from(format!("runs/{kind}-seed{}-{now}", config.seed))
            });
            ensure!(!dir.exists() || dir.is_dir(), "--run-dir {} is a file; give a directory (it is created if missing)", dir.display());
            if dir.join("config.json").exists() {
                ensure!(
                    !dir.join(CHECKPOINT).exists(),
                    "{} already holds a run; continue it with --resume {0} or choose another --run-dir",
                    dir.display()
                );
                // A run that stopped before its first checkpoint cannot be resumed: start it afresh.
                println!("note: {} held a run that stopped before its first checkpoint; starting again there", dir.display());
            }
            (config, dir, 0, None)
        }
    };
    // Load the data and build the trainer before touching the run directory, so a bad image
    // directory, or a size past the device's limits, leaves nothing behind.
    let task = Task::load(&config.task)?;
    let ctx = args.kernels.context_with(tuning)?;
    task.check_fits(&ctx, &config.network, config.batch, &task.shorter_episodes())?;
    let trainer_config = TrainerConfig { adam: config.adam, ..Default::default() };
    let mut trainer = match &resumed {
        Some(checkpoint) => {
            let network = Network::from_parameters(&ctx, &config.network, &checkpoint.parameters).with_context(|| {
                format!("{} does not match the network of {}", dir.join(CHECKPOINT).display(), dir.join("config.json").display())
            })?;
            let mut trainer = Trainer::new(&ctx, network, trainer_config)?;
            let optimizer = checkpoint
                .optimizer
                .as_ref()
                .with_context(|| format!("{} holds no optimizer state to resume from", dir.join(CHECKPOINT).display()))?;
            trainer.write_optimizer_state(&ctx, optimizer)?;
            truncate_metrics(&dir.join(METRICS), start)?;
            trainer
        }
        None => Trainer::new(&ctx, Network::new(&ctx, &config.network)?, trainer_config)?,
    };
    // The first episode's data, built once: it sizes the GPU buffers here and is trained on first.
    let first = task.episode(config.batch, config.seed, start)?.0;
    trainer.reserve(&ctx, &first)?;
    let mut first_data = Some(first);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock_run_dir(&dir)?;
    // The run directory is locked, so no live writer owns a temporary file there.
    plasticity_runtime::checkpoint::remove_stale_temporaries(&dir);
    write_file(&dir.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    let metrics_path = dir.join(METRICS);
    if start == 0 {
        write_file(&metrics_path, format!("{METRICS_HEADER}\n").as_bytes())?;
    }
    let mut csv =
        std::fs::OpenOptions::new().append(true).open(&metrics_path).with_context(|| format!("opening {}", metrics_path.display()))?;

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // Ctrl-C, and SIGTERM or SIGHUP (`timeout`, `kill`, a service manager, a closed terminal).
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    }
    println!("run directory: {}", dir.display());
    println!("adapter: {}", ctx.adapter);
    println!(
        "task: {}; batch {}; {} episodes{}",
        task.describe(),
        config.batch,
        config.episodes,
        if start > 0 { format!(", resuming after episode {start}") } else { String::new() }
    );
    if trainer.kernel_width() == Some(1) {
        let n = config.network.neurons;
        println!(
            "note: N = {n} is not a multiple of 4, so the scalar rule kernels run (about 2x slower than the vec4 ones on lavapipe; \
             N = {} would run those)",
            n + plasticity_runtime::spare_neurons_for_quads(n)
        );
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(config.episodes);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} episodes  {per_sec}  ETA {eta}  {msg}").expect("valid template"));
        bar.set_position(start);
        bar
    };
    let started = Instant::now();
    // The reported error rate averages the last episodes, including those before a resume.
    let mut recent_errors: std::collections::VecDeque<f32> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(2)?.parse().ok())
        .collect();
    while recent_errors.len() > config.error_window {
        recent_errors.pop_front();
    }
    let mut last_checkpoint = start;
    for e in start..config.episodes {
        if interrupted.load(Ordering::SeqCst) {
            bar.abandon();
            save_checkpoint(&trainer, &ctx, &dir, &config, e)?;
            plot::write_loss_plot(&metrics_path, &dir.join("loss.png"))?;
            bail!("interrupted after episode {e}; checkpoint saved; continue with --resume {}", dir.display());
        }
        let data = match first_data.take() {
            Some(data) => data,
            None => task.episode(config.batch, config.seed, e)?.0,
        };
        let m = trainer.train_step(&ctx, &data)?;
        if !(m.loss.is_finite() && m.eta.is_finite() && m.grad_norm.is_finite()) {
            bar.abandon();
            let kept = if dir.join(CHECKPOINT).exists() {
                format!(
                    "the last good checkpoint (episode {last_checkpoint}) in {0} is kept (--resume {0} --lr L --clip 4 continues \
                     from it with new optimizer settings)",
                    dir.display()
                )
            } else {
                format!("no checkpoint had been written yet (a new run with --run-dir {} starts it again)", dir.display())
            };
            bail!(
                "episode {}: training diverged (loss {}, eta {}, gradient norm {}) and stopped; {kept}. \
                 Try a lower --lr (now {}), a smaller --eta, or --clip 4",
                e + 1,
                m.loss,
                m.eta,
                m.grad_norm,
                config.adam.lr
            );
        }
        recent_errors.push_back(m.sign_error_rate());
        if recent_errors.len() > config.error_window {
            recent_errors.pop_front();
        }
        let mean_error = recent_errors.iter().sum::<f32>() / recent_errors.len() as f32;
        writeln!(csv, "{},{},{},{},{},{:.3}", e + 1, m.loss, m.sign_error_rate(), m.eta, m.grad_norm, started.elapsed().as_secs_f64())?;
        bar.set_message(format!(
            "loss {:.3}  bit error {:.2}% (last {})  eta {:.4}",
            m.loss,
            100.0 * mean_error,
            recent_errors.len(),
            m.eta
        ));
        bar.inc(1);
        let done = e + 1;
        if done % config.checkpoint_every == 0 || done == config.episodes {
            csv.flush()?;
            save_checkpoint(&trainer, &ctx, &dir, &config, done)?;
            plot::write_loss_plot(&metrics_path, &dir.join("loss.png"))?;
            last_checkpoint = done;
            if args.quiet {
                println!(
                    "episode {done}: loss {:.4}, sign error {:.2}% over the last {}; memory: host {}, GPU {:.2} MiB",
                    m.loss,
                    100.0 * mean_error,
                    recent_errors.len(),
                    host_memory(),
                    trainer.allocated_bytes() as f64 / (1024.0 * 1024.0)
                );
            }
        }
    }
    bar.finish();
    if let Some(kernels) = kernel_summary(&trainer) {
        println!("{kernels}");
    }
    let seconds = started.elapsed().as_secs_f64();
    let run_episodes = config.episodes - start;
    println!(
        "done: {} episodes in {:.1} s ({:.2} episodes/s, batch {}); final sign (bit) error {:.2}% over the last {}; wrote {}",
        run_episodes,
        seconds,
        run_episodes as f64 * config.batch as f64 / seconds,
        config.batch,
        100.0 * recent_errors.iter().sum::<f32>() / recent_errors.len().max(1) as f32,
        recent_errors.len(),
        dir.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint file, or a run directory holding checkpoint.safetensors.
    checkpoint: PathBuf,
    /// Fresh episodes (batches) to evaluate on.
    #[arg(long, default_value_t = 20)]
    episodes: u64,
    /// Batch size (default: the run's).
    #[arg(long)]
    batch: Option<u32>,
    /// Image task: load the images from here instead of the run's directory.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Image task: where to write the completion figure [default: completion.png beside the checkpoint].
    #[arg(long)]
    figure: Option<PathBuf>,
    #[command(flatten)]
    kernels: crate::kernel_args::KernelArgs,
}

pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let tuning = args.kernels.tuning()?;
    let path = if args.checkpoint.is_dir() { args.checkpoint.join(CHECKPOINT) } else { args.checkpoint.clone() };
    let checkpoint = Checkpoint::load(&path)?;
    warn_if_eta_unstable(&path, &checkpoint);
    let run = checkpoint.metadata.get("run").with_context(|| {
        format!(
            "{} holds no run config: eval takes a checkpoint that `train` wrote (its run directory or checkpoint.safetensors)",
            path.display()
        )
    })?;
    let mut config: RunConfig = serde_json::from_str(run).with_context(|| format!("the run config in {} is malformed", path.display()))?;
    if let Some(b) = args.batch {
        config.batch = b;
    }
    ensure!(args.episodes >= 1, "--episodes must be at least 1");
    match &mut config.task {
        TaskConfig::Image { images, .. } => {
            if let Some(dir) = &args.images {
                *images = dir.clone();
            }
        }
        TaskConfig::Pattern(_) => {
            ensure!(
                args.images.is_none() && args.figure.is_none(),
                "--images and --figure are for image-task runs; {} is a pattern run",
                path.display()
            )
        }
    }
    // Checked before the evaluation, so that its result is not lost to a bad figure path.
    let figure = args.figure.clone().unwrap_or_else(|| path.with_file_name("completion.png"));
    if matches!(config.task, TaskConfig::Image { .. }) {
        let parent = figure.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        ensure!(parent.is_dir(), "cannot write the figure {}: {} is not a directory", figure.display(), parent.display());
        ensure!(
            figure.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")),
            "the figure is written as PNG; give --figure a .png path (got {})",
            figure.display()
        );
    }
    validate(&config).with_context(|| format!("the run config in {}", path.display()))?;
    let task = Task::load(&config.task)?;
    let ctx = args.kernels.context_with(tuning)?;
    task.check_fits(&ctx, &checkpoint.network, config.batch, "eval runs the run's own episodes; a smaller --batch fits")?;
    let network = Network::from_parameters(&ctx, &checkpoint.network, &checkpoint.parameters)?;
    let mut trainer = Trainer::new(&ctx, network, TrainerConfig::default())?;
    let (mut loss, mut errors, mut bits) = (0.0f64, 0u64, 0u64);
    for e in 0..args.episodes {
        let (data, shown) = task.episode(config.batch, config.seed, EVAL_STREAMS + e)?;
        let m = trainer.evaluate(&ctx, &data)?;
        loss += m.loss as f64;
        errors += m.sign_errors as u64;
        bits += m.sign_count as u64;
        if let (0, Some(shown), TaskConfig::Image { task: image_task, .. }) = (e, &shown, &task.config) {
            let activations = trainer.read_activations(&ctx)?;
            images::completion_figure(&figure, &task.pool, shown, &activations, image_task, config.batch)?;
            println!("wrote {} (stored images, cue, completion, original)", figure.display());
        }
    }
    println!(
        "{}: {} fresh episodes of batch {}: mean loss {:.4} per batch, bit error rate {:.3}% ({errors} of {bits} bits), eta {:.5}",
        path.display(),
        args.episodes,
        config.batch,
        loss / args.episodes as f64,
        100.0 * errors as f64 / bits.max(1) as f64,
        checkpoint.parameters.eta()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long, default_value_t = 64)]
    neurons: u32,
    #[arg(long, default_value_t = 3)]
    batch: u32,
    #[arg(long, default_value_t = 20)]
    steps: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for params.safetensors, episode.safetensors and gradients.safetensors.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    rule: crate::rule_args::RuleArgs,
    #[command(flatten)]
    kernels: crate::kernel_args::KernelArgs,
}

/// Writes a random network of the chosen rule, a random episode and this engine's loss and
/// gradients for it, so that an independent implementation (tools/pytorch_baseline.py check) can
/// recompute them. The rule is in params.safetensors' `network` metadata; gradients.safetensors holds
/// one gradient per parameter tensor of params.safetensors, under the same name, and the loss.
pub fn export_episode(args: &ExportArgs) -> anyhow::Result<()> {
    ensure!(args.neurons >= 1 && args.batch >= 1 && args.steps >= 1, "--neurons, --batch and --steps must be at least 1");
    let tuning = args.kernels.tuning()?;
    ensure!(!args.out.exists() || args.out.is_dir(), "--out {} is a file; give a directory (it is created if missing)", args.out.display());
    let plasticity = args.rule.plasticity()?;
    let ctx = args.kernels.context_with(tuning)?;
    let scale = 1.0 / (args.neurons as f32).sqrt();
    let config = NetworkConfig {
        neurons: args.neurons,
        plasticity,
        eta: 0.1,
        seed: args.seed,
        w_init_std: scale,
        alpha_init_std: scale,
        ..Default::default()
    };
    plasticity_runtime::check_episode_fits(&ctx, &config, args.batch, args.steps, 1)?;
    let data =
        bench::random_episode(bench::BenchCase { neurons: args.neurons, batch: args.batch, steps: args.steps, plasticity }, args.seed);
    let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config)?, TrainerConfig::default())?;
    let metrics = trainer.compute_gradients(&ctx, &data)?;
    let grads = trainer.read_gradients(&ctx)?;
    let params = trainer.network.read_parameters(&ctx)?;
    // The three files are one set: they are written into a fresh directory inside --out and moved
    // out of it only when all three are there (renames within one file system, which a full disk
    // does not fail), so a failed write leaves the old set whole. A process killed between two
    // renames would leave a mixed set, so every file names its set (EXPORT_SET_KEY), which
    // `tools/pytorch_baseline.py check` compares.
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    remove_stale_export_staging(&args.out);
    let staging = args.out.join(format!("{EXPORT_STAGING_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let set = export_set_name();
    let moved = lock_export_staging(&staging).and_then(|_lock| {
        write_export(&staging, config, params, &data, metrics.loss, &grads, &set)?;
        for name in EXPORT_FILES {
            std::fs::rename(staging.join(name), args.out.join(name))
                .with_context(|| format!("moving {name} into {}", args.out.display()))?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&staging);
    moved?;
    println!("wrote {}/{{params,episode,gradients}}.safetensors (loss {})", args.out.display(), metrics.loss);
    Ok(())
}

/// The files `export-episode` writes, as one set.
const EXPORT_FILES: [&str; 3] = ["params.safetensors", "episode.safetensors", "gradients.safetensors"];
/// The metadata entry, in each of the three files, that names the set they were written in.
const EXPORT_SET_KEY: &str = "export_set";
/// `export-episode` stages its set in `--out/.export.tmpPID`.
const EXPORT_STAGING_PREFIX: &str = ".export.tmp";
/// The lock file inside a staging directory, held while its export lives.
const EXPORT_STAGING_LOCK: &str = ".lock";

/// A name for one export's set, different for every run: the process and the time.
fn export_set_name() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// Locks a staging directory for as long as the returned file lives, so that another export into
/// the same `--out` leaves it alone (see [`remove_stale_export_staging`]).
fn lock_export_staging(staging: &Path) -> anyhow::Result<std::fs::File> {
    let path = staging.join(EXPORT_STAGING_LOCK);
    let file = open_lock_file(&path).with_context(|| format!("creating {}", path.display()))?;
    file.try_lock().map_err(std::io::Error::from).with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// How old a staging directory without a lock file must be to count as a killed export's: one killed
/// between creating its directory and its lock, a moment no export lingers in.
const UNLOCKED_STAGING_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the staging directories of exports into `out` that were killed before they cleaned up:
/// those whose lock file no live process holds, and those without one that are older than
/// [`UNLOCKED_STAGING_STALE_AFTER`]. A young one without a lock file is a live export's between
/// creating its directory and locking it, and stays (the lock file is opened, never created, here).
fn remove_stale_export_staging(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.strip_prefix(EXPORT_STAGING_PREFIX).is_some_and(plasticity_runtime::checkpoint::is_process_id);
        if !ours || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let stale = match std::fs::OpenOptions::new().write(true).open(entry.path().join(EXPORT_STAGING_LOCK)) {
            Ok(lock) => lock.try_lock().is_ok(),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|created| created.elapsed().is_ok_and(|age| age > UNLOCKED_STAGING_STALE_AFTER)),
        };
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Writes the set into `dir`: the network, the episode (inputs (T, B, N), targets (L, B, N), loss
/// steps) and the loss with a gradient per parameter tensor.
fn write_export(
    dir: &Path,
    config: NetworkConfig,
    params: plasticity_runtime::HostParameters,
    data: &EpisodeData,
    loss: f32,
    grads: &plasticity_runtime::HostParameters,
    set: &str,
) -> anyhow::Result<()> {
    let (n, b, t, l) = (config.neurons as usize, data.batch as usize, data.steps as usize, data.loss_steps.len());
    // Every file's metadata names the set (a BTreeMap for the checkpoint, a HashMap for the others).
    let metadata = || [(EXPORT_SET_KEY.to_string(), set.to_string())];
    let saved = Checkpoint { network: config, parameters: params, optimizer: None, metadata: metadata().into() };
    saved.save(&dir.join(EXPORT_FILES[0]))?;
    let loss_steps: Vec<i32> = data.loss_steps.iter().map(|&s| s as i32).collect();
    save_tensors(
        &dir.join(EXPORT_FILES[1]),
        &[
            ("inputs", vec![t, b, n], TensorData::F32(&data.inputs)),
            ("targets", vec![l, b, n], TensorData::F32(&data.targets)),
            ("loss_steps", vec![l], TensorData::I32(&loss_steps)),
        ],
        metadata().into(),
    )?;
    let loss = [loss];
    let mut gradients: Vec<(&str, Vec<usize>, TensorData<'_>)> =
        grads.tensors().into_iter().map(|(name, shape, values)| (name, shape, TensorData::F32(values))).collect();
    gradients.push(("loss", vec![1], TensorData::F32(&loss)));
    save_tensors(&dir.join(EXPORT_FILES[2]), &gradients, metadata().into())?;
    Ok(())
}
