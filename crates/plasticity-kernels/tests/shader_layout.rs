//! CPU-only: every shader parses and validates with naga, and its entry point, bindings, uniform
//! struct layout, workgroup size and shared constants agree with the Rust descriptor.

use plasticity_kernels::{ALL_KERNELS, BindingKind, KernelDescriptor, metrics};
use wgpu::naga;

/// The capabilities the runtime gives the kernel: naga's defaults, plus subgroup operations for a
/// kernel that needs `wgpu::Features::SUBGROUP` and 64-bit integers for one that needs
/// `wgpu::Features::SHADER_INT64`.
fn capabilities(kernel: &KernelDescriptor) -> naga::valid::Capabilities {
    let mut capabilities = naga::valid::Capabilities::default();
    capabilities.set(naga::valid::Capabilities::SUBGROUP, kernel.subgroups);
    capabilities.set(naga::valid::Capabilities::SHADER_INT64, kernel.int64);
    capabilities
}

fn validator(kernel: &KernelDescriptor) -> naga::valid::Validator {
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities(kernel))
}

fn parse_and_validate(kernel: &KernelDescriptor) -> naga::Module {
    let module = naga::front::wgsl::parse_str(kernel.source)
        .unwrap_or_else(|e| panic!("{}.wgsl does not parse:\n{}", kernel.name, e.emit_to_string(kernel.source)));
    validator(kernel)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}.wgsl does not validate:\n{}", kernel.name, e.emit_to_string(kernel.source)));
    module
}

fn literal_u32(module: &naga::Module, expr: naga::Handle<naga::Expression>) -> u32 {
    match module.global_expressions[expr] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        naga::Expression::Literal(naga::Literal::AbstractInt(v)) => v as u32,
        ref other => panic!("expected a u32 literal, found {other:?}"),
    }
}

#[test]
fn every_shader_file_has_a_descriptor() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders");
    let mut files: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|f| f.ends_with(".wgsl")).collect();
    files.sort();
    let mut names: Vec<String> = ALL_KERNELS.iter().map(|k| format!("{}.wgsl", k.name)).collect();
    names.sort();
    assert_eq!(files, names, "shaders/ and ALL_KERNELS disagree");
    for kernel in ALL_KERNELS {
        let on_disk = std::fs::read_to_string(format!("{dir}/{}.wgsl", kernel.name)).unwrap();
        assert_eq!(on_disk, kernel.source, "{} embeds a stale source", kernel.name);
    }
}

#[test]
fn shaders_match_their_descriptors() {
    for kernel in ALL_KERNELS {
        let module = parse_and_validate(kernel);
        let ctx = kernel.name;

        // One compute entry point, named like the file.
        assert_eq!(module.entry_points.len(), 1, "{ctx}: one entry point per file");
        let entry = &module.entry_points[0];
        assert_eq!(entry.name, kernel.name, "{ctx}: entry point name");
        assert_eq!(entry.stage, naga::ShaderStage::Compute, "{ctx}: stage");
        let mut size = entry.workgroup_size;
        if let Some(overrides) = entry.workgroup_size_overrides {
            for (axis, o) in overrides.iter().enumerate() {
                if let Some(expr) = o {
                    // `@workgroup_size(WORKGROUP_SIZE)`: the override's default is what the runtime uses.
                    let naga::Expression::Override(h) = module.global_expressions[*expr] else {
                        panic!("{ctx}: workgroup size axis {axis} is not a plain override")
                    };
                    size[axis] = literal_u32(&module, module.overrides[h].init.expect("override default"));
                }
            }
        }
        assert_eq!(size, kernel.workgroup_size, "{ctx}: workgroup size");

        // Bindings: group 0, binding k, in the descriptor's order and access.
        let mut found: Vec<(u32, String, BindingKind, naga::Handle<naga::Type>)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let rb = g.binding.as_ref()?;
                assert_eq!(rb.group, 0, "{ctx}: everything is in group 0");
                let kind = match g.space {
                    naga::AddressSpace::Uniform => BindingKind::Uniform,
                    naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => BindingKind::StorageReadWrite,
                    naga::AddressSpace::Storage { .. } => BindingKind::StorageRead,
                    other => panic!("{ctx}: unexpected address space {other:?}"),
                };
                Some((rb.binding, g.name.clone().unwrap_or_default(), kind, g.ty))
            })
            .collect();
        found.sort_by_key(|f| f.0);
        assert_eq!(found.len(), kernel.bindings.len(), "{ctx}: binding count");
        for (k, (binding, name, kind, _)) in found.iter().enumerate() {
            let want = &kernel.bindings[k];
            assert_eq!(*binding as usize, k, "{ctx}: bindings must be dense from 0");
            assert_eq!((name.as_str(), *kind), (want.name, want.kind), "{ctx}: binding {k}");
        }
        assert!(kernel.storage_binding_count() <= 8, "{ctx}: more storage buffers than wgpu's default limit of 8");

        // The params struct at binding 0: same name, member names, offsets and size as the Rust one.
        let (_, _, kind, ty) = &found[0];
        assert_eq!(*kind, BindingKind::StorageRead, "{ctx}: params are read-only storage (see plasticity_kernels::params)");
        let ty = &module.types[*ty];
        assert_eq!(ty.name.as_deref(), Some(kernel.params_struct), "{ctx}: params struct name");
        let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("{ctx}: params are not a struct") };
        let wgsl: Vec<(&str, usize)> = members.iter().map(|m| (m.name.as_deref().unwrap(), m.offset as usize)).collect();
        assert_eq!(wgsl, kernel.params_layout.to_vec(), "{ctx}: params layout");
        assert_eq!(*span as usize, kernel.params_size, "{ctx}: params size");
    }
}

#[test]
fn shared_constants_agree() {
    let expected: &[(&str, u32)] = &[
        ("METRIC_LOSS", metrics::LOSS as u32),
        ("METRIC_SIGN_ERRORS", metrics::SIGN_ERRORS as u32),
        ("METRIC_SIGN_COUNT", metrics::SIGN_COUNT as u32),
        ("METRIC_GRAD_NORM_SQ", metrics::GRAD_NORM_SQ as u32),
        ("TILE_MAX", plasticity_kernels::TRACE_TILE_MAX),
        ("TILE_QUADS_MAX", plasticity_kernels::TRACE_TILE_MAX / 4),
        ("CHUNK", plasticity_kernels::backward_trace::CHUNK),
        ("MAX_COLUMN_QUADS", plasticity_kernels::forward_step::MAX_COLUMN_QUADS),
        ("LANES", plasticity_kernels::TRACE_LANES),
        ("BATCH_TILE", plasticity_kernels::forward_step::BATCH_TILE),
        ("LOSS_NONE", plasticity_kernels::backward_activation::LOSS_NONE),
    ];
    // Override defaults the Rust side names as its own defaults.
    let expected_overrides: &[(&str, u32)] = &[
        (plasticity_kernels::backward_trace::TILE, plasticity_kernels::TRACE_TILE),
        (plasticity_kernels::backward_trace::COLUMN_LANES, plasticity_kernels::TRACE_LANES),
        (plasticity_kernels::forward_step::COLUMN_QUADS, 1),
    ];
    let (mut seen, mut seen_overrides) = (0, 0);
    for kernel in ALL_KERNELS {
        let module = parse_and_validate(kernel);
        for (_, c) in module.constants.iter() {
            let Some(name) = c.name.as_deref() else { continue };
            if let Some((_, want)) = expected.iter().find(|(n, _)| *n == name) {
                assert_eq!(literal_u32(&module, c.init), *want, "{}: const {name}", kernel.name);
                seen += 1;
            }
        }
        for (_, o) in module.overrides.iter() {
            let Some(name) = o.name.as_deref() else { continue };
            if let Some((_, want)) = expected_overrides.iter().find(|(n, _)| *n == name) {
                assert_eq!(literal_u32(&module, o.init.expect("override default")), *want, "{}: override {name}", kernel.name);
                seen_overrides += 1;
            }
        }
    }
    assert!(seen >= expected.len(), "each shared constant is declared in at least one shader");
    assert!(seen_overrides >= expected_overrides.len(), "each shared override is declared in at least one shader");
}

#[test]
fn example_shaders_parse_and_validate() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let source = std::fs::read_to_string(&path).unwrap();
            let module = naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{} does not parse:\n{}", path.display(), e.emit_to_string(&source)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{} does not validate:\n{}", path.display(), e.emit_to_string(&source)));
            let stem = path.file_stem().unwrap().to_str().unwrap();
            assert!(
                module.entry_points.len() == 1 && module.entry_points[0].name == stem,
                "{}: one entry point named like the file",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "the host-application example's shaders");
}

/// The text between the shared-function markers of a rule kernel.
fn shared_functions(kernel: &KernelDescriptor) -> &'static str {
    shared_block(kernel, "// ---- shared by every rule kernel", "// ---- end of shared functions ----")
}

/// The text between `start` (a marker line) and `end`.
fn shared_block(kernel: &KernelDescriptor, start: &str, end: &str) -> &'static str {
    let from = kernel.source.find(start).unwrap_or_else(|| panic!("{}: no block '{start}'", kernel.name));
    let to = kernel.source.find(end).unwrap_or_else(|| panic!("{}: unterminated block '{start}'", kernel.name));
    let block = &kernel.source[from..to];
    // The first line is the marker; the functions follow it.
    &block[block.find('\n').unwrap()..]
}

#[test]
fn vec4_rule_kernels_share_one_copy_of_the_vec4_update_functions() {
    let vec4: Vec<&KernelDescriptor> = ALL_KERNELS.iter().filter(|k| k.rule_constants && k.name.contains("_vec4")).collect();
    assert_eq!(vec4.len(), 4, "forward_step_vec4, forward_step_vec4_subgroup, backward_trace_vec4, trace_update_vec4");
    let block = |k| shared_block(k, "// ---- shared by every vec4 rule kernel", "// ---- end of shared vec4 functions ----");
    let first = block(vec4[0]);
    assert!(first.contains("fn rule_update_vec4") && first.contains("fn clip_trace_vec4"));
    for k in &vec4[1..] {
        assert_eq!(block(k), first, "{}: its copy of the vec4 functions differs from {}'s", k.name, vec4[0].name);
    }
}

/// The two vec4 forward kernels differ only in where the history comes from: the tile's setup, the
/// sum over a quad of rows and the writes of the sums are one copy.
#[test]
fn vec4_forward_kernels_share_one_copy_of_their_functions() {
    use plasticity_kernels::forward_step::{KERNEL_VEC4, KERNEL_VEC4_SUBGROUP};
    let block = |k| shared_block(k, "// ---- shared by the vec4 forward kernels", "// ---- end of shared vec4 forward functions ----");
    let first = block(&KERNEL_VEC4);
    assert!(first.contains("fn quad_tile") && first.contains("fn add_quad_of_rows") && first.contains("fn write_sums"));
    assert_eq!(block(&KERNEL_VEC4_SUBGROUP), first, "forward_step_vec4_subgroup: its copy of the forward functions differs");
}

/// Both backward trace kernels read the reversed sweep's flags through one copy of the same function.
#[test]
fn backward_trace_kernels_share_one_copy_of_their_flags() {
    use plasticity_kernels::backward_trace::{KERNEL, KERNEL_VEC4};
    let block = |k| {
        shared_block(k, "// ---- shared by the backward trace kernels", "// ---- end of the backward trace kernels' shared functions ----")
    };
    let first = block(&KERNEL);
    assert!(first.contains("fn reversal_flags"));
    assert_eq!(block(&KERNEL_VEC4), first, "backward_trace_vec4: its copy of the flags differs from backward_trace's");
}

#[test]
fn rule_kernels_share_one_copy_of_the_update_functions() {
    let rule_kernels: Vec<&KernelDescriptor> = ALL_KERNELS.iter().filter(|k| k.rule_constants).collect();
    let names: Vec<&str> = rule_kernels.iter().map(|k| k.name).collect();
    assert_eq!(
        names,
        [
            "forward_step",
            "forward_step_vec4",
            "forward_step_vec4_subgroup",
            "backward_trace",
            "backward_trace_vec4",
            "trace_update",
            "trace_update_vec4"
        ]
    );
    let first = shared_functions(rule_kernels[0]);
    assert!(first.contains("fn rule_update") && first.contains("fn plastic_rate") && first.contains("fn alpha_eff"));
    for k in &rule_kernels[1..] {
        assert_eq!(shared_functions(k), first, "{}: its copy of the shared functions differs from forward_step's", k.name);
    }
}

#[test]
fn rule_kernels_declare_every_rule_constant() {
    let spec = plasticity_kernels::Plasticity::default();
    for kernel in ALL_KERNELS {
        let module = parse_and_validate(kernel);
        let overrides: Vec<&str> = module.overrides.iter().filter_map(|(_, o)| o.name.as_deref()).collect();
        for (name, _) in spec.constants() {
            assert_eq!(overrides.contains(&name), kernel.rule_constants, "{}: override {name}", kernel.name);
        }
    }
}

/// Every combination the runtime can ask for specialises into a module that still validates.
#[test]
fn rule_kernels_validate_for_every_rule() {
    use plasticity_kernels::{AlphaShape, EtaShape, Modulation, Plasticity, Rule};
    let mut specs = Vec::new();
    for rule in [Rule::Decay, Rule::Oja, Rule::Additive] {
        for clip in [None, Some(1.0)] {
            for modulation in [Modulation::None, Modulation::Simple, Modulation::PerNeuron] {
                for retroactive in [false, true] {
                    let spec = Plasticity { rule, clip, modulation, retroactive, ..Plasticity::PAPER };
                    if spec.check().is_ok() {
                        specs.push(spec);
                    }
                }
            }
        }
    }
    specs.push(Plasticity { alpha: AlphaShape::Scalar, eta: EtaShape::PerNeuron, plastic_self: false, ..Plasticity::PAPER });
    for kernel in ALL_KERNELS.iter().filter(|k| k.rule_constants) {
        let module = parse_and_validate(kernel);
        let info = validator(kernel).validate(&module).unwrap();
        for spec in &specs {
            let mut constants: naga::back::PipelineConstants = spec.constants().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if kernel.name.starts_with("backward_trace") {
                constants.insert("REVERSE".into(), spec.reversible() as u32 as f64);
            }
            // Kernels that take the batch elements per pass (or the backward's hoisting) as a constant
            // too, at each value it takes.
            let takes = |name: &str| module.overrides.iter().any(|(_, o)| o.name.as_deref() == Some(name));
            let slots: &[Option<f64>] = if takes("BATCH_SLOTS") { &[Some(1.0), Some(2.0), Some(4.0)] } else { &[None] };
            let hoists: &[Option<f64>] = if takes("HOIST_COLUMNS") { &[Some(0.0), Some(1.0)] } else { &[None] };
            // The gradient's recovery compiled in or out (a loop of its own would double the cases;
            // it is out at two batch slots here, so both values meet every other constant).
            let tiles: Vec<Option<f64>> =
                if takes("TILE") { plasticity_kernels::TRACE_TILE_SIDES.iter().map(|&t| Some(t as f64)).collect() } else { vec![None] };
            // The rows whole and in stripes of 128 columns (a CPU adapter's layout).
            let stripes: &[Option<f64>] = if takes("TRACE_STRIPE") { &[Some(0.0), Some(128.0)] } else { &[None] };
            for (&s, &stripe) in slots.iter().flat_map(|s| stripes.iter().map(move |t| (s, t))) {
                for &h in hoists {
                    for &tile in &tiles {
                        let grad_ahead = takes("GRAD_AHEAD").then_some(if s == Some(2.0) { 0.0 } else { 1.0 });
                        // Contiguous columns (a CPU adapter's) at blocks of 8, interleaved otherwise.
                        let lanes = takes("COLUMN_LANES").then_some(if tile == Some(8.0) { 1.0 } else { 32.0 });
                        // The forward's column quads: one (a GPU's) and, at two batch slots, the most.
                        let quads = takes("COLUMN_QUADS").then_some(if s == Some(2.0) { 4.0 } else { 1.0 });
                        let named = [
                            ("BATCH_SLOTS", s),
                            ("HOIST_COLUMNS", h),
                            ("TILE", tile),
                            ("GRAD_AHEAD", grad_ahead),
                            ("COLUMN_LANES", lanes),
                            ("COLUMN_QUADS", quads),
                            ("TRACE_STRIPE", stripe),
                        ];
                        for (name, value) in named {
                            if let Some(v) = value {
                                constants.insert(name.into(), v);
                            }
                        }
                        naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants).unwrap_or_else(|e| {
                            panic!(
                                "{} with {spec:?}, BATCH_SLOTS {s:?}, HOIST_COLUMNS {h:?}, TILE {tile:?}, TRACE_STRIPE {stripe:?}: {e:?}",
                                kernel.name
                            )
                        });
                    }
                }
            }
        }
    }
}

/// No kernel stores to a single component of a vector in storage memory. WGSL lets such a store
/// touch the whole vector, and some compilers do (HLSL: llvm/llvm-project#160208, a read-modify-write
/// of a uint4 racing across threads), so where invocations share a vec4 their sums could erase each
/// other; lavapipe does not, so only this check can catch one. Vec4 kernels write whole quads.
#[test]
fn no_kernel_stores_one_component_of_a_vector_in_storage() {
    fn stores(block: &naga::Block, out: &mut Vec<naga::Handle<naga::Expression>>) {
        for statement in block.iter() {
            match statement {
                naga::Statement::Store { pointer, .. } => out.push(*pointer),
                naga::Statement::Block(b) => stores(b, out),
                naga::Statement::If { accept, reject, .. } => {
                    stores(accept, out);
                    stores(reject, out);
                }
                naga::Statement::Switch { cases, .. } => cases.iter().for_each(|c| stores(&c.body, out)),
                naga::Statement::Loop { body, continuing, .. } => {
                    stores(body, out);
                    stores(continuing, out);
                }
                _ => {}
            }
        }
    }
    let mut checked = 0;
    for kernel in ALL_KERNELS {
        let module = parse_and_validate(kernel);
        let info = validator(kernel).validate(&module).unwrap();
        let functions = module.functions.iter().map(|(h, f)| (f, &info[h]));
        let entries = module.entry_points.iter().enumerate().map(|(k, e)| (&e.function, info.get_entry_point(k)));
        for (function, function_info) in functions.chain(entries) {
            let mut pointers = Vec::new();
            stores(&function.body, &mut pointers);
            for pointer in pointers {
                let base = match function.expressions[pointer] {
                    naga::Expression::Access { base, .. } | naga::Expression::AccessIndex { base, .. } => base,
                    _ => continue,
                };
                let component_of_storage_vector = match *function_info[base].ty.inner_with(&module.types) {
                    naga::TypeInner::Pointer { base, space } => {
                        matches!(module.types[base].inner, naga::TypeInner::Vector { .. })
                            && matches!(space, naga::AddressSpace::Storage { .. })
                    }
                    naga::TypeInner::ValuePointer { size: Some(_), space, .. } => matches!(space, naga::AddressSpace::Storage { .. }),
                    _ => false,
                };
                assert!(!component_of_storage_vector, "{}: a store to one component of a vector in storage", kernel.name);
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "the walk found the kernels' stores ({checked})");
}

/// The text after a member or index path (`.post[k].x`) at the start of `s`.
fn past_path(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('.') {
            s = rest.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
        } else if s.starts_with('[') {
            let mut depth = 0;
            let end = s.char_indices().find(|&(_, c)| {
                depth += (c == '[') as i32 - (c == ']') as i32;
                depth == 0
            });
            s = end.map_or("", |(k, _)| &s[k + 1..]);
        } else {
            return s;
        }
    }
}

/// Why a shader's loops are not all counted loops that must end (see `KernelDescriptor::counted_loops`),
/// or None when they are. Every loop must be a `for` whose counter, assigned nowhere in its body, either
/// goes up by 1 below a bound (`i < n` first in the condition: the counter stays below u32::MAX, so it
/// cannot wrap), goes up by `slots` (declared as `clamp(BATCH_SLOTS, 1u, ...)`, and bounded by a batch)
/// or halves while above 0; the bound's variables are assigned nowhere in the body either.
fn loops_not_counted(source: &str) -> Option<String> {
    let code: String = source.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).map(str::to_string).collect()
    };
    if let Some(w) = words(&code).into_iter().find(|w| w == "loop" || w == "while") {
        return Some(format!("a `{w}` loop"));
    }
    // The text from `open` (an opening bracket) to its matching closing one, exclusive.
    let inside = |from: usize, open: char, close: char| -> Option<(usize, usize)> {
        let start = from + code[from..].find(open)? + 1;
        let mut depth = 1;
        for (k, c) in code[start..].char_indices() {
            depth += (c == open) as i32 - (c == close) as i32;
            if depth == 0 {
                return Some((start, start + k));
            }
        }
        None
    };
    // Whether `body` assigns `name` or any part of it (`name.member[k] = ...`): `=`, a compound
    // assignment, `++` or `--`; not `==`, `<=`, ...
    let assigns = |body: &str, name: &str| {
        body.match_indices(name).any(|(at, _)| {
            let before = body[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
            let after = past_path(&body[at + name.len()..]);
            let word_ends = !body[at + name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
            let assignment =
                ["++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>="].iter().any(|op| after.starts_with(op))
                    || (after.starts_with('=') && !after.starts_with("=="));
            !before && word_ends && assignment
        })
    };
    let mut at = 0;
    while let Some(found) = code[at..].find("for (") {
        let header_at = at + found;
        let (Some((h0, h1)), Some((b0, b1))) = (inside(header_at, '(', ')'), inside(header_at, '{', '}')) else {
            return Some("a `for` without a header and a body in balanced brackets".into());
        };
        let (header, body) = (&code[h0..h1], &code[b0..b1]);
        at = h1;
        let parts: Vec<&str> = header.split(';').map(str::trim).collect();
        let [init, condition, update] = parts[..] else { return Some(format!("`for ({header})`: not three clauses")) };
        let Some(counter) = init.strip_prefix("var ").and_then(|s| s.split('=').next()).map(str::trim) else {
            return Some(format!("`for ({header})`: the counter is not declared in the loop"));
        };
        let first = condition.split("&&").next().unwrap_or("").trim();
        let bound = if update == format!("{counter}++") || update == format!("{counter} += slots") {
            if update.ends_with("slots") && !code.contains("let slots = clamp(BATCH_SLOTS, 1u, ") {
                return Some(format!("`for ({header})`: steps by `slots`, which is not clamped to at least 1"));
            }
            match first.strip_prefix(&format!("{counter} < ")) {
                Some(bound) => bound,
                None => return Some(format!("`for ({header})`: the condition does not start with `{counter} < bound`")),
            }
        } else if update == format!("{counter} = {counter} / 2u") && first == format!("{counter} > 0u") {
            ""
        } else {
            return Some(format!("`for ({header})`: the counter does not go up by 1 or by slots, or halve to 0"));
        };
        for name in std::iter::once(counter.to_string()).chain(words(bound)) {
            if assigns(body, &name) {
                return Some(format!("`for ({header})`: the body assigns `{name}`"));
            }
        }
    }
    None
}

/// `subgroups` and `int64` are set exactly where the shader needs naga's subgroup or 64-bit integer
/// capability, so the runtime never builds such a kernel on a device without the feature, nor holds
/// one back needlessly.
#[test]
fn kernels_that_need_a_feature_are_the_ones_marked() {
    type Marked = fn(&KernelDescriptor) -> bool;
    let flags: [(&str, naga::valid::Capabilities, Marked); 2] = [
        ("subgroups", naga::valid::Capabilities::SUBGROUP, |k| k.subgroups),
        ("int64", naga::valid::Capabilities::SHADER_INT64, |k| k.int64),
    ];
    for (flag, capability, marked) in flags {
        for kernel in ALL_KERNELS {
            let module = parse_and_validate(kernel);
            let without = capabilities(kernel) - capability;
            let plain = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), without).validate(&module);
            assert_eq!(
                plain.is_err(),
                marked(kernel),
                "{}: {flag} is {} but validation without it: {plain:?}",
                kernel.name,
                marked(kernel)
            );
        }
        assert!(ALL_KERNELS.iter().any(marked), "no kernel marked {flag} (forward_step_vec4_subgroup, stream_triad_wide)");
    }
}

#[test]
fn counted_loops_end() {
    for kernel in ALL_KERNELS {
        let why = loops_not_counted(kernel.source);
        assert_eq!(why.is_none(), kernel.counted_loops, "{}: counted_loops is {} but: {why:?}", kernel.name, kernel.counted_loops);
    }
    // The check itself: shapes it must refuse.
    let refused = [
        ("loop { }", "a `loop` loop"),
        ("for (var i = 0u; i < n; i++) { i = 0u; }", "assigns `i`"),
        ("for (var i = 0u; i < n; i++) { n += 1u; }", "assigns `n`"),
        ("for (var i = 0u; i < t.n; i++) { t.n = 0u; }", "assigns `t`"),
        ("for (var i = 0u; i < t.n; i++) { t.a[i] += 1u; }", "assigns `t`"),
        ("for (var i = 0u; i < n; i += 2u) { }", "does not go up by 1"),
        ("for (var i = 0u; i < n; i += slots) { }", "not clamped"),
        ("for (var i = n; i > 0u; i--) { }", "does not go up by 1"),
        ("for (var i = 0u; n > i; i++) { }", "does not start with"),
        ("var i = 0u; for (; i < n; i++) { }", "not declared in the loop"),
        ("for (var i = 0u; i < n; i++) { x += 1u; ", "balanced brackets"),
    ];
    for (source, why) in refused {
        let found = loops_not_counted(source);
        assert!(found.as_deref().is_some_and(|f| f.contains(why)), "{source}: {found:?}");
    }
    let accepted = "for (var i = 0u; i < n && i < m; i++) { x[i] = i; let j = i; if (j == n) { y += 1u; } u.n = 1u; } \
                    for (var s = 64u; s > 0u; s = s / 2u) { a[s] = b; }";
    assert_eq!(loops_not_counted(accepted), None);
}
