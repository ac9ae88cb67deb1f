#!/usr/bin/env python3
"""Where lavapipe's compiled shaders spend their time: maps `perf` samples to the modules and
instructions that tools/lavapipe_jit_dump.c wrote, and counts what gallivm made of each shader.

    lavapipe_jit_report.py DIR [--module N] [--top K]

DIR holds NNNN.ll, NNNN.o and `addresses` from the shim and `perf.data` from tools/lavapipe_profile.sh.
Per module that ran: its share of all samples, the size of its IR, and counts that explain lavapipe's
costs: `loop_begin` blocks are gallivm's loops over the SIMD lanes (every storage access that is not
provably uniform, and every access to scratch, is one), `bgnloop` the shader's own loops that NIR left
rolled, `alloca` beyond the coroutine's two are local arrays kept in memory (an array indexed by a
rolled loop's counter: every access a gather or scatter over the lanes). Then the hottest
instructions of one module (the busiest, or --module N) with the instructions before each: a sample
lands on the instruction after one waiting for memory.
"""
import argparse
import collections
import os
import re
import subprocess
import sys


def module_extent(obj):
    """Bytes from the module's first function to the end of its last (its .text as loaded)."""
    out = subprocess.run(["nm", "-S", obj], capture_output=True, text=True, check=True).stdout
    end = 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2].lower() == "t":
            end = max(end, int(fields[0], 16) + int(fields[1], 16))
    return end


def ir_counts(path):
    text = open(path).read()
    return {
        "KiB": len(text) // 1024,
        "lane_loops": len(re.findall(r"^loop_begin\d*:", text, re.M)),
        "shader_loops": len(re.findall(r"^bgnloop\d*:", text, re.M)),
        "arrays_in_memory": max(0, len(re.findall(r"= alloca ", text)) - 2),
        "fdiv": len(re.findall(r" fdiv ", text)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("--module", type=int, help="module whose hottest instructions to list (default: the busiest)")
    parser.add_argument("--top", type=int, default=12, help="instructions to list")
    args = parser.parse_args()

    starts = {}
    for line in open(os.path.join(args.dir, "addresses")):
        module, _name, address = line.split()
        # The first function of a module (its entry) is placed at the start of its code.
        starts.setdefault(int(module), int(address, 16))
    extents = {}
    for module in starts:
        obj = os.path.join(args.dir, "%04d.o" % module)
        if not os.path.exists(obj):
            sys.exit("lavapipe_jit_report: %s is missing: run the shim with LAVAPIPE_JIT_OBJECTS=1" % obj)
        extents[module] = module_extent(obj)

    perf = subprocess.run(["perf", "script", "-i", os.path.join(args.dir, "perf.data"), "-F", "ip"],
                          capture_output=True, text=True)
    if perf.returncode != 0:
        sys.exit("lavapipe_jit_report: perf script failed: " + perf.stderr.strip())
    total = 0
    per_module = collections.Counter()
    per_offset = collections.defaultdict(collections.Counter)
    for line in perf.stdout.splitlines():
        try:
            ip = int(line.strip(), 16)
        except ValueError:
            continue
        total += 1
        for module, start in starts.items():
            if start <= ip < start + extents[module]:
                per_module[module] += 1
                per_offset[module][ip - start] += 1
                break
    if total == 0:
        sys.exit("lavapipe_jit_report: no samples in perf.data")

    print("%d samples, %.1f%% in compiled shaders" % (total, 100.0 * sum(per_module.values()) / total))
    print("module  samples   share   IR KiB  lane loops  shader loops  arrays in memory  fdiv")
    for module, samples in per_module.most_common():
        c = ir_counts(os.path.join(args.dir, "%04d.ll" % module))
        print("%6d %8d %6.1f%% %8d %11d %13d %17d %5d" % (module, samples, 100.0 * samples / total, c["KiB"],
              c["lane_loops"], c["shader_loops"], c["arrays_in_memory"], c["fdiv"]))

    module = args.module if args.module is not None else per_module.most_common(1)[0][0]
    disassembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", os.path.join(args.dir, "%04d.o" % module)],
                                 capture_output=True, text=True, check=True).stdout
    instructions = []
    for line in disassembly.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if m:
            instructions.append((int(m.group(1), 16), m.group(2).strip()))
    index = {address: k for k, (address, _) in enumerate(instructions)}
    samples = per_offset[module]
    in_module = sum(samples.values())
    print("\nmodule %d: hottest instructions (share of the module's samples), each after the two before it" % module)
    for offset, count in samples.most_common(args.top):
        k = index.get(offset)
        print("%5.1f%%  %x" % (100.0 * count / in_module, offset))
        if k is None:
            continue
        for address, text in instructions[max(0, k - 2):k + 1]:
            print("          %6x  %s" % (address, text))


if __name__ == "__main__":
    main()
