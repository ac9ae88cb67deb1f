#!/usr/bin/env python3
"""The PyTorch baseline of the plasticity engine: the same network, written the way the field writes it.

The model is the paper's decay rule (Miconi et al., "Differentiable plasticity", 2018). N neurons,
batch B, T steps; parameters w (N, N), alpha (N, N) and the scalar eta, where w[i][j] connects
pre-synaptic neuron i to post-synaptic neuron j. With x(0) = 0 and Hebb(1) = 0, for t = 1..T:

    a_j(t)      = sum_i (w_ij + alpha_ij * H_ij(t)) * x_i(t-1) + u_j(t)
    x_j(t)      = tanh(a_j(t))
    H_ij(t+1)   = (1 - eta) * H_ij(t) + eta * x_i(t-1) * x_j(t)

and the loss is the sum over the loss steps s, batch b and neuron j of (x_j(t_s) - y_j(s))^2
(summed, not averaged: the engine's loss_scale is 1), so that gradients are summed over the batch.

As in the paper's code, the episode is a Python loop over steps of ordinary tensor operations and
autograd keeps every step's intermediate tensors (the trace) for the backward pass.

Subcommands:
    bench   time training episodes (forward, loss, backward, Adam step) and measure peak memory
    check   recompute the loss and gradients of an episode exported by our engine, in float64,
            and compare them with the engine's
    train   train on the pattern-memorisation task and record each episode's loss, bit error rate
            (the fraction of the last step's bits whose sign is wrong) and eta, as a reference
            learning curve for the engine's; --variant balanced is the task as the paper's code
            sets it up (balanced patterns, exactly half the test bits zeroed, a bias neuron)
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path

try:
    import torch
except ImportError:
    sys.exit("error: PyTorch is not installed; install it with `pip install torch safetensors numpy`")

# The check fails when a difference, relative to the largest magnitude of the tensor it belongs to,
# exceeds this.
CHECK_TOLERANCE = 1e-3


class PlasticNet(torch.nn.Module):
    """Fully recurrent tanh network with plastic connections (decay rule)."""

    def __init__(self, w, alpha, eta):
        super().__init__()
        self.w = torch.nn.Parameter(w)
        self.alpha = torch.nn.Parameter(alpha)
        self.eta = torch.nn.Parameter(eta.reshape(1))

    @classmethod
    def random(cls, neurons, device, dtype=torch.float32, eta=0.01, init_std=0.01):
        """The paper's initialisation: w and alpha are 0.01 * normal, eta starts at 0.01."""
        w = init_std * torch.randn(neurons, neurons, device=device, dtype=dtype)
        alpha = init_std * torch.randn(neurons, neurons, device=device, dtype=dtype)
        return cls(w, alpha, torch.full((1,), eta, device=device, dtype=dtype))

    def step(self, x_prev, hebb, u):
        """One step: x_prev (B, N) = x(t-1), hebb (B, N, N) = H(t), u (B, N) = u(t); returns x(t), H(t+1)."""
        # a(t) = x(t-1) (w + alpha * H(t)) + u(t), one row-vector-matrix product per batch element.
        a = torch.bmm(x_prev.unsqueeze(1), self.w + self.alpha * hebb).squeeze(1) + u
        x = torch.tanh(a)
        # H(t+1) = (1 - eta) H(t) + eta x(t-1)^T x(t): the outer product of pre- and post-synaptic activity.
        hebb = (1 - self.eta) * hebb + self.eta * torch.bmm(x_prev.unsqueeze(2), x.unsqueeze(1))
        return x, hebb


def episode_activations(net, inputs, loss_steps):
    """Runs a whole episode and returns {t: x(t)} for the 1-based steps t in loss_steps.

    inputs (T, B, N): u(t) for t = 1..T.
    """
    steps, batch, neurons = inputs.shape
    wanted = {int(s) for s in loss_steps}
    x = inputs.new_zeros(batch, neurons)
    hebb = inputs.new_zeros(batch, neurons, neurons)
    activations = {}
    for t in range(1, steps + 1):
        x, hebb = net.step(x, hebb, inputs[t - 1])
        if t in wanted:
            activations[t] = x
    return activations


def episode_loss(net, inputs, targets, loss_steps):
    """Runs a whole episode and returns its loss.

    inputs (T, B, N): u(t) for t = 1..T; targets (L, B, N): y(s); loss_steps: L 1-based step numbers.
    """
    activations = episode_activations(net, inputs, loss_steps)
    return sum(((activations[int(s)] - targets[k]) ** 2).sum() for k, s in enumerate(loss_steps))


PAPER_RULE = {"rule": "decay", "clip": None, "alpha": "per-connection", "eta": "scalar", "modulation": "none",
              "retroactive": False, "plastic_self": True}


def rule_update(rule, r, h, pre, post):
    """U_r(H) of the engine's rules (crates/plasticity-kernels/src/plasticity.rs), elementwise with
    broadcasting: h (B, N, N), pre = x_i(t-1) as (B, N, 1), post = x_j(t) as (B, 1, N), r (B or 1, 1, N)."""
    if rule == "decay":
        return (1 - r) * h + r * pre * post
    if rule == "oja":
        return h + r * post * (pre - post * h)
    if rule == "additive":
        return h + r * pre * post
    raise ValueError(f"unknown rule {rule!r}")


class RuleNet(torch.nn.Module):
    """Every rule the engine has, written from its documented equations (not from its code), for
    `check`: the decay, Oja and additive rules, a trace clip, alpha per connection, per
    post-synaptic neuron or one, eta scalar or per neuron, no plastic self-connections, and
    Backpropamine's neuromodulation M_b(t) = tanh(mod_w . x_b(t) + mod_b) as the rate (simple) or
    fanned out to u_j M_b(t) + c_j (per neuron), directly or through an eligibility trace:

        E(t+1) = U_eta(E(t)),   H(t+1) = clip(H(t) + rate_bj(t) E(t))      (retroactive)
        H(t+1) = clip(U_rate(H(t)))                                          (otherwise)

    with pre = x_i(t-1) and post = x_j(t). Parameters are named as in the engine's checkpoints.
    """

    def __init__(self, spec, tensors):
        super().__init__()
        self.spec = {**PAPER_RULE, **spec}
        self.params = torch.nn.ParameterDict({name: torch.nn.Parameter(t) for name, t in tensors.items()})

    def alpha_eff(self, neurons):
        alpha = self.params["alpha"]
        shape = self.spec["alpha"]
        if shape == "per-connection":
            a = alpha
        elif shape == "per-neuron":
            a = alpha.reshape(1, neurons).expand(neurons, neurons)
        else:
            a = alpha.reshape(1, 1).expand(neurons, neurons)
        if not self.spec["plastic_self"]:
            a = a * (1 - torch.eye(neurons, dtype=a.dtype, device=a.device))
        return a

    def step(self, x_prev, hebb, elig, u):
        """x_prev (B, N) = x(t-1), hebb (B, N, N) = H(t), elig = E(t) or None, u (B, N) = u(t);
        returns x(t), H(t+1), E(t+1)."""
        neurons = x_prev.shape[1]
        p, spec = self.params, self.spec
        a = torch.bmm(x_prev.unsqueeze(1), p["w"] + self.alpha_eff(neurons) * hebb).squeeze(1) + u
        x = torch.tanh(a)
        eta = p["eta"].reshape(1, 1, -1)  # (1, 1, 1) or (1, 1, N)
        if spec["modulation"] == "none":
            rate = eta
        else:
            m = torch.tanh(x @ p["mod_w"] + p["mod_b"]).reshape(-1, 1, 1)  # M_b(t), (B, 1, 1)
            rate = m if spec["modulation"] == "simple" else p["mod_u"].reshape(1, 1, -1) * m + p["mod_c"].reshape(1, 1, -1)
        pre, post = x_prev.unsqueeze(2), x.unsqueeze(1)
        if spec["retroactive"]:
            hebb_next = hebb + rate * elig
            elig = rule_update(spec["rule"], eta, elig, pre, post)
        else:
            hebb_next = rule_update(spec["rule"], rate, hebb, pre, post)
        if spec["clip"] is not None:
            hebb_next = torch.clamp(hebb_next, -spec["clip"], spec["clip"])
        return x, hebb_next, elig

    def episode_loss(self, inputs, targets, loss_steps):
        """The summed squared error over the loss steps, as episode_loss; inputs (T, B, N)."""
        steps, batch, neurons = inputs.shape
        x = inputs.new_zeros(batch, neurons)
        hebb = inputs.new_zeros(batch, neurons, neurons)
        elig = inputs.new_zeros(batch, neurons, neurons) if self.spec["retroactive"] else None
        wanted = {int(s): k for k, s in enumerate(loss_steps)}
        loss = inputs.new_zeros(())
        for t in range(1, steps + 1):
            x, hebb, elig = self.step(x, hebb, elig, inputs[t - 1])
            if t in wanted:
                loss = loss + ((x - targets[wanted[t]]) ** 2).sum()
        return loss


def pattern_episode(neurons, batch, steps, generator, device, patterns=5, presentations=2, show_steps=6,
                    gap_steps=4, test_steps=6, input_gain=20.0, degrade_prob=0.5):
    """A batch of the paper's pattern-memorisation episodes, each with its own random +-1 patterns.

    Each cycle shows every pattern, in a fresh random order, for show_steps steps (input =
    input_gain * pattern) followed by gap_steps silent steps; then one stored pattern, each bit
    zeroed with probability degrade_prob, is shown for the last test_steps steps. The defaults give
    106 steps; a longer episode has a longer silence before the test. The loss is on the last step
    against the full pattern. Returns inputs (T, B, N), targets (1, B, N) and loss_steps [T].
    """
    study_steps = patterns * presentations * (show_steps + gap_steps)
    if steps < study_steps + test_steps:
        raise ValueError(f"the pattern task needs at least {study_steps + test_steps} steps (got {steps})")
    stored = torch.randint(0, 2, (batch, patterns, neurons), generator=generator).float() * 2 - 1
    inputs = torch.zeros(steps, batch, neurons)
    targets = torch.zeros(1, batch, neurons)
    for b in range(batch):
        t = 0
        for _ in range(presentations):
            for k in torch.randperm(patterns, generator=generator).tolist():
                inputs[t:t + show_steps, b] = input_gain * stored[b, k]
                t += show_steps + gap_steps
        test = stored[b, int(torch.randint(0, patterns, (1,), generator=generator))]
        kept = (torch.rand(neurons, generator=generator) >= degrade_prob).float()
        inputs[steps - test_steps:, b] = input_gain * test * kept
        targets[0, b] = test
    return inputs.to(device), targets.to(device), [steps]



def balanced_pattern_episode(neurons, batch, steps, generator, device, patterns=5, presentations=2, show_steps=6,
                             gap_steps=4, test_steps=6, input_gain=20.0):
    """The pattern task as the paper's code sets it up: like pattern_episode, but every pattern has
    exactly neurons/2 bits +1 and neurons/2 bits -1 (a random permutation), exactly neurons/2 of the
    test pattern's bits (a random choice of positions) are zeroed, and there is one more neuron, the
    last, a bias whose input is input_gain * 1 at every step. Returns inputs (T, B, neurons + 1),
    targets (1, B, neurons) for the first neurons neurons (the bias is in neither loss nor error)
    and loss_steps [T].
    """
    if neurons % 2:
        raise ValueError(f"the balanced pattern task needs an even neuron count (got {neurons})")
    study_steps = patterns * presentations * (show_steps + gap_steps)
    if steps < study_steps + test_steps:
        raise ValueError(f"the pattern task needs at least {study_steps + test_steps} steps (got {steps})")
    half = neurons // 2
    inputs = torch.zeros(steps, batch, neurons + 1)
    inputs[:, :, neurons] = input_gain
    targets = torch.zeros(1, batch, neurons)
    for b in range(batch):
        stored = torch.stack([torch.where(torch.randperm(neurons, generator=generator) < half, 1.0, -1.0)
                              for _ in range(patterns)])
        t = 0
        for _ in range(presentations):
            for k in torch.randperm(patterns, generator=generator).tolist():
                inputs[t:t + show_steps, b, :neurons] = input_gain * stored[k]
                t += show_steps + gap_steps
        test = stored[int(torch.randint(0, patterns, (1,), generator=generator))]
        kept = torch.ones(neurons)
        kept[torch.randperm(neurons, generator=generator)[:half]] = 0
        inputs[steps - test_steps:, b, :neurons] = input_gain * test * kept
        targets[0, b] = test
    return inputs.to(device), targets.to(device), [steps]

# --- bench ---------------------------------------------------------------------------------------

CPU_MEMORY_METHOD = ("growth of the peak resident set (getrusage ru_maxrss) over the first training step, "
                     "in a fresh process per case, above the resident set after the model, optimizer and "
                     "episode were created (so Adam state and gradients are included, parameters are not; "
                     "memory the allocator freed but did not reuse is counted, as the system sees it)")
CUDA_MEMORY_METHOD = ("torch.cuda.max_memory_allocated over the first training step (parameters, episode, "
                      "Adam state and gradients included)")


def train_step(net, optimizer, episode):
    """One training episode: forward over the episode, loss, backward, Adam step."""
    optimizer.zero_grad(set_to_none=True)
    loss = episode_loss(net, *episode)
    loss.backward()
    optimizer.step()


def resident_bytes():
    """The current resident set of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def limit_address_space_to_available_memory():
    """Lets this process grow by at most 90% of the memory now available, so that a case that
    does not fit fails with an allocation error instead of waking the kernel's OOM killer."""
    with open("/proc/self/status") as f:
        virtual = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    limit = virtual + int(0.9 * available)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def bench_case(neurons, batch, steps, reps, device, seed, threads):
    """Measures one configuration; runs in a fresh process so that its peak memory is its own."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    cuda = device == "cuda"
    net = PlasticNet.random(neurons, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8)
    episodes = [pattern_episode(neurons, batch, steps, generator, device) for _ in range(reps + 1)]
    case = {"neurons": neurons, "batch": batch, "steps": steps}
    if not cuda:
        limit_address_space_to_available_memory()

    # The first episode is the untimed warm-up; it measures peak memory and, through a
    # saved-tensors hook, the bytes autograd keeps for the backward pass (distinct storages).
    saved = {}

    def keep(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            baseline = resident_bytes()
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            train_step(net, optimizer, episodes[0])
        if cuda:
            torch.cuda.synchronize()
            case["peak_bytes"] = torch.cuda.max_memory_allocated()
        else:
            case["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
        case["autograd_saved_bytes"] = sum(saved.values())

        times = []
        for episode in episodes[1:]:
            start = time.perf_counter()
            train_step(net, optimizer, episode)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    except (RuntimeError, MemoryError) as e:
        return {**case, "fits": False, "error": str(e).splitlines()[0]}
    seconds = statistics.median(times)
    return {**case, "fits": True, "train_s_per_episode": seconds, "train_ms_per_episode": seconds * 1e3,
            "episodes_per_s": batch / seconds}


def bench(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    method = CUDA_MEMORY_METHOD if args.device == "cuda" else CPU_MEMORY_METHOD
    threads = args.threads or torch.get_num_threads()
    load = os.getloadavg()[0]
    print(f"pytorch {torch.__version__} on {device_name}, {threads} threads, "
          f"{os.cpu_count()} cores, load average {load:.2f} (other work on the machine slows these figures)")
    print(f"time: median wall clock of {args.reps} training episodes after one untimed episode")
    print(f"peak memory: {method}")
    print(f"{'N':>6} {'B':>5} {'T':>5} | {'s/episode':>10} {'episodes/s':>11} | {'peak MiB':>10} {'autograd MiB':>13}")
    spawn = multiprocessing.get_context("spawn")
    cases = []
    for neurons in args.neurons:
        for batch in args.batch:
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                job = pool.submit(bench_case, neurons, batch, args.steps, args.reps, args.device, args.seed,
                                  threads)
                try:
                    case = job.result()
                except concurrent.futures.process.BrokenProcessPool:
                    case = {"neurons": neurons, "batch": batch, "steps": args.steps, "fits": False,
                            "error": "the measuring process died (killed for memory?)"}
            cases.append(case)
            if case["fits"]:
                print(f"{neurons:>6} {batch:>5} {args.steps:>5} | {case['train_s_per_episode']:>10.3f} "
                      f"{case['episodes_per_s']:>11.3f} | {case['peak_bytes'] / 2**20:>10.1f} "
                      f"{case['autograd_saved_bytes'] / 2**20:>13.1f}")
            else:
                print(f"{neurons:>6} {batch:>5} {args.steps:>5} | does not fit: {case['error']}")
    if args.json:
        doc = {"framework": "pytorch", "torch": torch.__version__, "device": device_name,
               "threads": threads, "cores": os.cpu_count(), "load_average_at_start": load,
               "peak_memory": method,
               "autograd_saved": "bytes of the distinct storages autograd saved for backward in one episode",
               "timing": f"median wall clock of {args.reps} training episodes after one untimed episode",
               "config": {"steps": args.steps, "reps": args.reps, "seed": args.seed}, "cases": cases}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(case["fits"] for case in cases) else 1


# --- check ---------------------------------------------------------------------------------------

def check(args):
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        sys.exit("error: the safetensors package is not installed; install it with `pip install safetensors`")
    directory = Path(args.dir)
    metadata = {}
    for name in ["params", "episode", "gradients"]:
        path = directory / f"{name}.safetensors"
        if not path.is_file():
            sys.exit(f"error: {path} is missing; write the set with `plasticity export-episode --out {directory}`")
        with safe_open(path, "pt") as f:
            metadata[name] = f.metadata() or {}
    # export-episode names its set in each file: a run killed between its renames leaves a mixed one.
    sets = {name: meta.get("export_set") for name, meta in metadata.items()}
    if len(set(sets.values())) > 1:
        found = ", ".join(f"{name}: {value}" for name, value in sets.items())
        sys.exit(f"error: {directory} holds files of different export-episode runs ({found}); "
                 "run export-episode again into it")
    params = load_file(directory / "params.safetensors")
    network = json.loads(metadata["params"].get("network", "{}"))
    episode = load_file(directory / "episode.safetensors")
    ours = load_file(directory / "gradients.safetensors")

    spec = network.get("plasticity", PAPER_RULE)
    if not network.get("plastic", True) or network.get("input_width") or network.get("heads"):
        sys.exit("error: params.safetensors: `check` models the plastic recurrent network alone "
                 "(export a plastic network without an input layer or output heads)")
    f64 = torch.float64
    inputs, targets = episode["inputs"].to(f64), episode["targets"].to(f64)
    loss_steps = episode["loss_steps"].tolist()
    steps, batch, neurons = inputs.shape
    if targets.shape != (len(loss_steps), batch, neurons):
        sys.exit(f"error: targets have shape {tuple(targets.shape)}, expected {(len(loss_steps), batch, neurons)}")
    if not all(1 <= s <= steps for s in loss_steps):
        sys.exit(f"error: loss steps {loss_steps} are not all within 1..{steps}")
    n = neurons
    expected = {"w": (n, n),
                "alpha": {"per-connection": (n, n), "per-neuron": (n,), "scalar": (1,)}[spec["alpha"]],
                "eta": {"scalar": (1,), "per-neuron": (n,)}[spec["eta"]]}
    if spec["modulation"] != "none":
        expected.update({"mod_w": (n,), "mod_b": (1,)})
    if spec["modulation"] == "per-neuron":
        expected.update({"mod_u": (n,), "mod_c": (n,)})
    for tensors, what, names in [(params, "params", expected), (ours, "gradients", {**expected, "loss": (1,)})]:
        for name, shape in names.items():
            if name not in tensors or tuple(tensors[name].shape) != shape:
                found = tuple(tensors[name].shape) if name in tensors else "missing"
                sys.exit(f"error: {what}.safetensors: `{name}` should have shape {shape} (found {found})")
    net = RuleNet(spec, {name: params[name].to(f64) for name in expected})
    loss = net.episode_loss(inputs, targets, loss_steps)
    loss.backward()
    rule = ", ".join(f"{k} {v}" for k, v in spec.items() if PAPER_RULE.get(k) != v) or "the paper's"
    print(f"episode: N = {neurons}, B = {batch}, T = {steps}, loss steps {loss_steps}; rule: {rule}")

    # Relative difference: |ours - torch| / max |torch| over the tensor.
    failed = False
    print(f"{'':>6} {'max |torch|':>12} {'max |diff|':>12} {'relative':>10}")
    # A parameter the rule leaves unused (eta under direct modulation) has no autograd gradient: 0.
    grads = [(name, p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in net.params.items()]
    for name, reference in [("loss", loss.detach().reshape(1))] + grads:
        theirs = ours[name].to(f64)
        scale = reference.abs().max().item()
        diff = (theirs - reference).abs().max().item()
        relative = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        bad = not relative <= CHECK_TOLERANCE
        failed |= bad
        print(f"{name:>6} {scale:>12.4e} {diff:>12.4e} {relative:>10.2e}{'  FAIL' if bad else ''}")
    print(f"{'FAILED' if failed else 'passed'}: tolerance {CHECK_TOLERANCE:g} relative to max |torch| per tensor")
    return 1 if failed else 0


# --- train ---------------------------------------------------------------------------------------

TRAIN_STEPS = 106


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    device = args.device
    make_episode = balanced_pattern_episode if args.variant == "balanced" else pattern_episode
    total = args.neurons + (1 if args.variant == "balanced" else 0)
    net = PlasticNet.random(total, device)
    net.eta.requires_grad_(not args.fixed_eta)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=args.lr,
                                 betas=(0.9, 0.999), eps=1e-8)
    print(f"pytorch {torch.__version__} on {device}, {args.threads} threads; variant {args.variant}, "
          f"N = {args.neurons} ({total} neurons), B = {args.batch}, T = {TRAIN_STEPS}, lr {args.lr:g}, "
          f"eta {'fixed' if args.fixed_eta else 'learned'}, seed {args.seed}")
    rows, times = [], []
    csv = open(args.csv, "w") if args.csv else None
    if csv:
        csv.write("episode,loss,bit_error_rate,eta\n")
    try:
        for episode in range(1, args.episodes + 1):
            start = time.perf_counter()
            inputs, targets, loss_steps = make_episode(args.neurons, args.batch, TRAIN_STEPS, generator, device)
            optimizer.zero_grad(set_to_none=True)
            # The bias neuron, where there is one, is the last and has no target.
            x = episode_activations(net, inputs, loss_steps)[loss_steps[0]][:, :args.neurons]
            loss = ((x - targets[0]) ** 2).sum()
            loss.backward()
            optimizer.step()
            # A bit is wrong when the sign of x differs from the target (x == 0 counts as wrong).
            error = (torch.sign(x.detach()) != targets[0]).float().mean().item()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            eta = net.eta.item()
            rows.append((episode, loss.item(), error, eta))
            if csv:
                csv.write(f"{episode},{loss.item():.6g},{error:.6g},{eta:.6g}\n")
                csv.flush()
            if episode % args.report_every == 0:
                window = rows[-args.report_every:]
                print(f"episode {episode:>6}: mean loss {statistics.mean(r[1] for r in window):9.3f}, "
                      f"mean bit error {100 * statistics.mean(r[2] for r in window):6.2f}% over the last "
                      f"{len(window)}, eta {eta:.5f}, {statistics.mean(times[-len(window):]):.3f} s/episode",
                      flush=True)
    finally:
        if csv:
            csv.close()
    first = next((e for e in range(10, len(rows) + 1, 10)
                  if statistics.mean(r[2] for r in rows[e - 10:e]) < 0.01), None)
    print(f"{len(rows)} episodes in {sum(times):.1f} s ({statistics.mean(times):.3f} s/episode); first "
          f"10-episode window (ending at a multiple of 10) with mean bit error under 1%: "
          f"{'ends at episode ' + str(first) if first else 'none'}")
    if args.csv:
        print(f"wrote {args.csv}")
    return 0

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time training episodes and measure peak memory")
    b.add_argument("--neurons", type=lambda s: [int(v) for v in s.split(",")], default=[1000],
                   help="neuron counts, comma-separated (default 1000)")
    b.add_argument("--batch", type=lambda s: [int(v) for v in s.split(",")], default=[1],
                   help="batch sizes, comma-separated (default 1)")
    b.add_argument("--steps", type=int, default=106, help="steps per episode (the pattern task's 106)")
    b.add_argument("--reps", type=int, default=3, help="timed training episodes per case (the median is reported)")
    b.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, help="CPU threads (default: torch's, one per core); on a machine "
                   "busy with other work, fewer threads than cores avoids OpenMP threads waiting on each other")
    b.add_argument("--json", help="also write the figures to this JSON file")
    c = sub.add_parser("check", help="compare an exported episode's loss and gradients with torch's, in float64")
    c.add_argument("dir", help="directory with params.safetensors, episode.safetensors and gradients.safetensors")
    t = sub.add_parser("train", help="train on the pattern task and record loss, bit error rate and eta per episode")
    t.add_argument("--episodes", type=int, default=300, help="training episodes (default 300)")
    t.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the episodes (default 0)")
    t.add_argument("--neurons", type=int, default=1000, help="neurons N, not counting a bias neuron (default 1000)")
    t.add_argument("--batch", type=int, default=1, help="episodes per Adam step, losses summed (default 1)")
    t.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    t.add_argument("--fixed-eta", action="store_true", help="keep eta at its initial 0.01 instead of learning it")
    t.add_argument("--variant", choices=["ours", "balanced"], default="ours",
                   help="ours: the engine's task (iid +-1 bits, each test bit zeroed with probability 0.5); "
                   "balanced: as the paper's code sets it up (each pattern exactly half +1, exactly half the "
                   "test bits zeroed, and an extra bias neuron with constant input, excluded from loss and "
                   "error) (default ours)")
    t.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train (default cpu)")
    t.add_argument("--report-every", type=int, default=10,
                   help="print the mean loss and bit error of every this many episodes (default 10)")
    t.add_argument("--csv", help="write episode,loss,bit_error_rate,eta per episode to this CSV file")
    args = parser.parse_args()
    if args.command == "check":
        return check(args)
    if args.command == "train":
        if min(args.episodes, args.neurons, args.batch, args.threads, args.report_every) < 1:
            parser.error("--episodes, --neurons, --batch, --threads and --report-every must be at least 1")
        if args.variant == "balanced" and args.neurons % 2:
            parser.error("--variant balanced needs an even --neurons")
        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("error: --device cuda, but torch sees no CUDA device")
        return train(args)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    try:
        pattern_episode(1, 1, args.steps, torch.Generator(), "cpu")
    except ValueError as e:
        parser.error(str(e))
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
