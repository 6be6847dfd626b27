"""A step's predicted time on a topology, from its compiled (SPMD-partitioned) program.

Three terms, each per chip and per step, with every loop body counted once per
iteration (scanned layers, microbatches; trip counts as `compiled.collectives` finds
them):

- compute: FLOPs over the chip's peak bf16 rate. The FLOPs are the largest of the
  program's matmuls (each `dot`: 2 x result elements x contracted size), XLA's own
  count (which counts a loop body once) and, for a train step, the model's analytic
  count divided over the chips.
- memory: bytes the program's operations read and write in HBM over the HBM bandwidth.
  Each top-level operation (a fusion, a copy, a sort...) reads its operands and writes
  its result; an operand a fusion only slices is read as the slice, a buffer updated in
  place (dynamic-update-slice) moves only the update, and arrays the compiler placed in
  on-chip memory (a layout with memory space `S(1)`, TPU VMEM) move none.
- collectives: each collective's bytes over the bandwidth of the links its replica
  groups span. A group within one TPU slice runs on ICI, over 2 links per torus
  dimension it spans; a group across slices on DCN; a group of one GPU host on NVLink,
  across hosts on the network. The algorithm sets the bytes each chip sends: an
  all-gather (n-1)/n of its result, a reduce-scatter (n-1) x its shard, an all-reduce
  2 (n-1)/n of its array (a reduce-scatter then an all-gather), an all-to-all (n-1)/n, a
  collective-permute its array. A group that spans both ICI and DCN is priced at DCN's
  rate for all of it (an upper bound: hierarchical algorithms do better).

The predicted step time assumes perfect overlap (XLA runs collectives asynchronously
beside compute, and an operation's compute and memory traffic overlap): the largest
term. The no-overlap bound, the sum of the three, stands beside it. Both are
predictions from the compiled program, not measurements; a link whose bandwidth is not
public leaves its collectives out of the time, and the result says so.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from slt.performance import compiled as compiled_lib
from slt.performance import hardware

OVERLAP_ASSUMPTION = (
    "perfect overlap: collectives run beside compute, and each operation's compute and "
    "HBM traffic overlap, so the step takes its largest term; no_overlap_s adds the three"
)


@dataclasses.dataclass(frozen=True)
class DeviceLayout:
    """Where each partition of a compiled program runs: the mesh's axes and, per
    partition id (the position in the mesh's flattened devices), its slice, host and
    physical torus coordinates (empty for GPUs and CPUs)."""

    axis_names: tuple[str, ...]
    axis_sizes: tuple[int, ...]
    slices: tuple[int, ...]
    hosts: tuple[int, ...]
    coords: tuple[tuple[int, ...], ...]

    @classmethod
    def from_mesh(cls, mesh: Any) -> DeviceLayout:
        devices = list(mesh.devices.flat)
        return cls(
            tuple(mesh.axis_names),
            tuple(int(s) for s in mesh.devices.shape),
            tuple(int(getattr(d, "slice_index", None) or 0) for d in devices),
            tuple(int(getattr(d, "process_index", 0) or 0) for d in devices),
            tuple(tuple(getattr(d, "coords", None) or ()) for d in devices),
        )

    @property
    def num_partitions(self) -> int:
        return len(self.slices)


# --- the program's instructions -------------------------------------------------

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$")
_DTYPE = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[")


@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    type_text: str
    opcode: str
    operands: tuple[str, ...]
    arguments: str  # the text between the opcode's parentheses
    attributes: str
    root: bool


def parse_instruction(line: str) -> Instruction | None:
    match = _INSTRUCTION.match(line)
    if match is None:
        return None
    name, type_text, opcode, rest = match.groups()
    depth, end = 1, len(rest)
    for i, char in enumerate(rest):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                end = i
                break
    operands = tuple(re.findall(r"%([\w.\-]+)", rest[:end]))
    root = line.lstrip().startswith("ROOT")
    return Instruction(name, type_text, opcode, operands, rest[:end], rest[end + 1 :], root)


def _shape(type_text: str) -> tuple[int, ...]:
    match = re.search(r"\[([0-9,]*)\]", type_text)
    return tuple(int(d) for d in match.group(1).split(",") if d) if match else ()


_LAID_OUT = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\](\{[^}]*\})?")


def _hbm_bytes_of(type_text: str) -> int:
    """Bytes of the arrays of an HLO type that live in HBM: a layout with a memory space
    `S(n)`, n > 0, places the array in on-chip memory (TPU VMEM), which moves no HBM
    bytes."""
    total = 0
    for dtype, dims, layout in _LAID_OUT.findall(type_text):
        if layout and re.search(r"S\([1-9]", layout):
            continue
        total += compiled_lib._array_bytes(f"{dtype}[{dims}]")
    return total


def _dtype(type_text: str) -> str:
    match = _DTYPE.search(type_text)
    return match.group(1) if match else "?"


@dataclasses.dataclass
class _Program:
    computations: dict[str, list[Instruction]]
    multipliers: dict[str, int]  # runs per step of each computation reached from the entry
    fusion_bodies: set[str]  # computations that are fused into one operation
    applied: set[str]  # reduction computations (to_apply): no traffic of their own

    def types(self, computation: str) -> dict[str, str]:
        return {i.name: i.type_text for i in self.computations[computation]}


def _program(hlo_text: str) -> _Program:
    lines, entry = compiled_lib._computations(hlo_text)
    computations = {
        name: [i for i in map(parse_instruction, body) if i is not None]
        for name, body in lines.items()
    }
    multipliers: dict[str, int] = {}
    fusion_bodies: set[str] = set()
    applied: set[str] = set()

    def visit(name: str, times: int) -> None:
        multipliers[name] = multipliers.get(name, 0) + times
        for line in lines.get(name, ()):
            trips = compiled_lib._trip_count(line, lines)
            for field, names in compiled_lib._CALLED.findall(line):
                inner = times * (trips if field == "body" else 1)
                for called in names.strip("{}").split(","):
                    called = called.strip().lstrip("%")
                    if called not in lines:
                        continue
                    if field == "calls" and re.search(r"\sfusion\(", line):
                        fusion_bodies.add(called)
                    if field == "to_apply":
                        applied.add(called)
                    visit(called, inner)

    if entry is not None:
        visit(entry, 1)
    return _Program(computations, multipliers, fusion_bodies, applied)


def _contracted_size(inst: Instruction, types: Mapping[str, str]) -> int | None:
    """How many products sum into each element of a `dot`'s or `convolution`'s result
    (TPU programs write matmuls as convolutions of window 1: `dim_labels=0bf_io0->0bf`,
    where every kernel dimension but `o` is summed over); None when not counted here."""
    if inst.opcode == "dot" and inst.operands:
        lhs = _shape(types.get(inst.operands[0], ""))
        dims = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", inst.attributes)
        return math.prod(lhs[int(d)] for d in _ints(dims.group(1))) if dims else 1
    if inst.opcode == "convolution" and len(inst.operands) > 1:
        window = re.search(r"window=\{size=([0-9x]+)", inst.attributes)
        if window and any(int(w) > 1 for w in window.group(1).split("x")):
            # A batched matmul written with strided, dilated windows: many of its window
            # taps fall on holes. Left to XLA's count (`predict` takes the larger).
            return None
        kernel = _shape(types.get(inst.operands[1], ""))
        labels = re.search(r"dim_labels=[^_,]*_([^-,]*)->", inst.attributes)
        if labels is None or len(labels.group(1)) != len(kernel):
            return None
        size = math.prod(d for d, label in zip(kernel, labels.group(1)) if label != "o")
        groups = re.search(r"feature_group_count=(\d+)", inst.attributes)
        return size // int(groups.group(1)) if groups else size
    return None


def matmul_flops(hlo_text: str) -> float:
    """FLOPs per step of the program's matmuls (`dot`, and `convolution` as TPU programs
    write them), loop bodies once per iteration."""
    program = _program(hlo_text)
    total = 0.0
    for name, times in program.multipliers.items():
        types = program.types(name)
        for inst in program.computations[name]:
            contracted = _contracted_size(inst, types)
            if contracted:
                total += times * 2.0 * math.prod(_shape(inst.type_text)) * contracted
    return total


# Operations that move no HBM bytes of their own (or whose bytes another term holds).
_NO_TRAFFIC = {
    "parameter",
    "constant",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "while",
    "conditional",
    "call",
    "after-all",
    "partition-id",
    "replica-id",
    "opt-barrier",
    "copy-start",
    "copy-done",
    "send",
    "recv",
    "send-done",
    "recv-done",
}


def _fusion_operand_bytes(
    program: _Program, body: str, operand_types: Sequence[str], result_type: str
) -> tuple[list[int], int]:
    """Bytes a fusion reads of each operand and writes: an operand only sliced is read as
    its slices; an operand updated in place (an output that is a dynamic-update-slice of
    it, alone or in the root tuple of a multi-output fusion) is not read, and that output
    writes only the update."""
    instructions = program.computations.get(body, [])
    by_name = {i.name: i for i in instructions}
    types = {i.name: i.type_text for i in instructions}
    params = {
        i.name: int(i.arguments) for i in instructions if i.opcode == "parameter" and i.arguments
    }
    # Each user of a parameter, with the operand position the parameter takes.
    users: dict[str, list[tuple[Instruction, int]]] = {name: [] for name in params}
    root = next((i for i in instructions if i.root), None)
    for inst in instructions:
        for position, operand in enumerate(inst.operands):
            if operand in users:
                users[operand].append((inst, position))
    read = [_hbm_bytes_of(t) for t in operand_types]
    if root is None:
        return read, _hbm_bytes_of(result_type)
    tuple_root = root.opcode == "tuple"
    outputs = [by_name.get(o) for o in root.operands] if tuple_root else [root]
    result_parts = compiled_lib._tuple_elements(result_type) if tuple_root else [result_type]
    written, in_place = 0, set()
    for k, output in enumerate(outputs):
        part = result_parts[k] if k < len(result_parts) else ""
        while output is not None and output.opcode == "bitcast" and output.operands:
            output = by_name.get(output.operands[0])
        target = output.operands[0] if output is not None and output.operands else None
        if (
            output is not None
            and output.opcode == "dynamic-update-slice"
            and target in params
            and len(users[target]) == 1
        ):
            in_place.add(target)
            if _hbm_bytes_of(part) or not part:  # not when the output stays on chip
                written += _hbm_bytes_of(types.get(output.operands[1], ""))
        else:
            written += _hbm_bytes_of(part)
    for name, index in params.items():
        if index >= len(read):
            continue
        if name in in_place:
            read[index] = 0
        else:
            sliced = _sliced_read(program, users[name])
            if sliced is not None:
                read[index] = min(read[index], sliced)
    return read, written


def _sliced_read(program: _Program, users: Sequence[tuple[Instruction, int]]) -> int | None:
    """Bytes read of a fusion parameter whose every use takes a dynamic slice of it,
    directly or inside a nested fusion (a scanned layer reads its slice of the stacked
    activations that way); None when some use reads it whole."""
    if not users:
        return None
    total = 0
    for user, position in users:
        if user.opcode == "dynamic-slice" and position == 0:
            total += _hbm_bytes_of(user.type_text)
            continue
        body = (
            re.search(r"calls=%?([\w.\-]+)", user.attributes) if user.opcode == "fusion" else None
        )
        if body is None:
            return None
        instructions = program.computations.get(body.group(1), [])
        inner = [
            i for i in instructions if i.opcode == "parameter" and i.arguments == str(position)
        ]
        if not inner:
            return None
        inner_users = [
            (i, at) for i in instructions for at, o in enumerate(i.operands) if o == inner[0].name
        ]
        nested = _sliced_read(program, inner_users)
        if nested is None:
            return None
        total += nested
    return total


def hbm_bytes(hlo_text: str) -> float:
    """Bytes per step the program's top-level operations read and write in HBM."""
    program = _program(hlo_text)
    total = 0.0
    for name, times in program.multipliers.items():
        if name in program.fusion_bodies or name in program.applied:
            continue
        types = program.types(name)
        for inst in program.computations[name]:
            op = inst.opcode
            if op in _NO_TRAFFIC or op.endswith("-done") or op.endswith("-start"):
                continue
            if any(op == kind for kind in compiled_lib.COLLECTIVES):
                continue  # the collective term holds them
            operand_types = [types.get(o, "") for o in inst.operands]
            written = _hbm_bytes_of(inst.type_text)
            if op == "fusion":
                body = re.search(r"calls=%?([\w.\-]+)", inst.attributes)
                read, written = _fusion_operand_bytes(
                    program, body.group(1) if body else "", operand_types, inst.type_text
                )
            elif op == "dynamic-slice":
                read = [written]
            elif op == "dynamic-update-slice":
                update = _hbm_bytes_of((operand_types + ["", ""])[1])
                read, written = [update], update
            else:
                read = [_hbm_bytes_of(t) for t in operand_types]
            total += times * (sum(read) + written)
    return total


# --- collectives and the links they run on -----------------------------------------


def _iota(base: Sequence[int], perm: Sequence[int] | None, shape: Sequence[int]) -> np.ndarray:
    ids = np.arange(math.prod(base)).reshape(base)
    if perm is not None:
        ids = ids.transpose(perm)
    return ids.reshape(shape)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def replica_groups(attributes: str, num_partitions: int) -> list[list[int]]:
    """The device groups of a collective, from any of XLA's three spellings:
    `replica_groups={{0,1},{2,3}}`, the iota form `replica_groups=[2,4]<=[4,2]T(1,0)`
    and the mesh form `replica_groups=mesh['a'=4,'b'=2], device_ids=([8]) {'a'}`. A
    collective-permute's `source_target_pairs` give one group per pair."""
    if match := re.search(r"source_target_pairs=\{(.*?)\}\}", attributes):
        return [_ints(p) for p in re.findall(r"\{([0-9,]+)", match.group(1) + "}")]
    if match := re.search(r"replica_groups=mesh\[([^\]]*)\]", attributes):
        axes = re.findall(r"'([^']+)'=(\d+)", match.group(1))
        sizes = [int(s) for _, s in axes]
        ids_text = re.search(r"device_ids=\(\[([0-9,]*)\](?:T\(([0-9,]*)\))?\)", attributes)
        base = _ints(ids_text.group(1)) if ids_text else [num_partitions]
        perm = _ints(ids_text.group(2)) if ids_text and ids_text.group(2) else None
        ids = _iota(base, perm, sizes)
        spanned = re.search(r"\)\s*\{([^}]*)\}", attributes[match.end() :])
        names = [n for n, _ in axes]
        over = re.findall(r"'([^']+)'", spanned.group(1)) if spanned else names
        group_axes = [names.index(n) for n in over]
        rest = [i for i in range(len(names)) if i not in group_axes]
        ids = ids.transpose(rest + group_axes).reshape(-1, math.prod(sizes[i] for i in group_axes))
        return ids.tolist()
    if match := re.search(
        r"replica_groups=\[([0-9,]+)\]<=\[([0-9,]+)\](?:T\(([0-9,]+)\))?", attributes
    ):
        shape, base = _ints(match.group(1)), _ints(match.group(2))
        perm = _ints(match.group(3)) if match.group(3) else None
        return _iota(base, perm, shape).tolist()
    if match := re.search(r"replica_groups=\{((?:\{[0-9,]*\},?)*)\}", attributes):
        groups = [_ints(g) for g in re.findall(r"\{([0-9,]*)\}", match.group(1))]
        groups = [g for g in groups if g]
        if groups:
            return groups
    return [list(range(num_partitions))]


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective operation of the program (per step: `times` runs)."""

    kind: str
    dtype: str
    bytes: int  # of its result (per run, per chip)
    group: tuple[int, ...]
    times: int


def program_collectives(hlo_text: str, num_partitions: int) -> list[Collective]:
    """Every collective of the program with its result's bytes and dtype, its first
    replica group and how often a step runs it."""
    program = _program(hlo_text)
    echoes = compiled_lib.collective_echoes(hlo_text)
    found = []
    for name, times in program.multipliers.items():
        if name in echoes:
            continue
        for inst in program.computations[name]:
            op = inst.opcode.removesuffix("-start")
            if op not in compiled_lib.COLLECTIVES:
                continue
            type_text = inst.type_text
            if inst.opcode.endswith("-start") and type_text.strip().startswith("("):
                parts = compiled_lib._tuple_elements(type_text)
                type_text = parts[1] if len(parts) > 1 else type_text
            groups = replica_groups(inst.attributes, num_partitions)
            found.append(
                Collective(
                    op,
                    _dtype(type_text),
                    compiled_lib._array_bytes(type_text),
                    tuple(groups[0]),
                    times,
                )
            )
    return found


def bytes_sent(kind: str, result_bytes: float, group_size: int) -> float:
    """Bytes one chip sends for a collective whose result is `result_bytes` per chip."""
    n = group_size
    if n <= 1:
        return 0.0
    return {
        "all-gather": result_bytes * (n - 1) / n,
        "reduce-scatter": result_bytes * (n - 1),
        "all-reduce": 2 * result_bytes * (n - 1) / n,
        "all-to-all": result_bytes * (n - 1) / n,
        "collective-permute": result_bytes,
    }[kind]


def link_of(group: Sequence[int], layout: DeviceLayout, rates: hardware.ChipRates) -> tuple:
    """(link name, bytes/s a chip sends over it or None, mesh axes the group spans)."""
    ids = [i for i in group if i < layout.num_partitions]
    positions = np.array([np.unravel_index(i, layout.axis_sizes) for i in ids])
    axes = tuple(
        name
        for k, name in enumerate(layout.axis_names)
        if len(ids) > 1 and len(set(positions[:, k])) > 1
    )
    slow = len({layout.slices[i] for i in ids}) > 1
    if rates.torus_dims == 0:  # GPUs: NVLink within a host, the network across hosts
        slow = len({layout.hosts[i] for i in ids}) > 1
    if slow:
        return rates.slow_link, rates.net_bandwidth, axes
    coords = np.array([layout.coords[i] for i in ids]) if layout.coords[0] else None
    dims = 0 if coords is None else sum(len(set(coords[:, k])) > 1 for k in range(coords.shape[1]))
    return rates.fast_link, rates.fast_send_bandwidth(dims), axes


def collective_terms(
    collectives: Sequence[Collective], layout: DeviceLayout, rates: hardware.ChipRates
) -> tuple[float, list[dict[str, Any]], list[str]]:
    """Seconds per step of the collectives, a table of them by (kind, dtype, link, mesh
    axes) and the links whose bandwidth is unknown (their collectives are not timed)."""
    rows: dict[tuple, dict[str, Any]] = {}
    unknown = []
    seconds = 0.0
    for c in collectives:
        link, bandwidth, axes = link_of(c.group, layout, rates)
        sent = c.times * bytes_sent(c.kind, c.bytes, len(c.group))
        key = (c.kind, c.dtype, link, axes)
        row = rows.setdefault(
            key,
            {
                "kind": c.kind,
                "dtype": c.dtype,
                "link": link,
                "mesh_axes": list(axes),
                "group_size": len(c.group),
                "count": 0,
                "bytes": 0,
                "bytes_sent": 0.0,
                "seconds": 0.0,
            },
        )
        row["count"] += c.times
        row["bytes"] += c.times * c.bytes
        row["bytes_sent"] += sent
        if bandwidth is None:
            row["seconds"] = None
            if sent and link not in unknown:
                unknown.append(link)
        elif row["seconds"] is not None:
            row["seconds"] += sent / bandwidth
            seconds += sent / bandwidth
    return seconds, sorted(rows.values(), key=lambda r: -r["bytes_sent"]), unknown


def predict(
    hlo_text: str,
    layout: DeviceLayout,
    rates: hardware.ChipRates,
    *,
    xla_flops_per_chip: float = 0.0,
    model_flops_total: float | None = None,
    tokens_per_step: float | None = None,
) -> dict[str, Any]:
    """The step-time prediction of a compiled program (`step_time` of a step report)."""
    chips = layout.num_partitions
    candidates = {"matmuls": matmul_flops(hlo_text), "xla": float(xla_flops_per_chip or 0.0)}
    if model_flops_total:
        candidates["model"] = model_flops_total / chips
    flops_source = max(candidates, key=candidates.get)
    flops = candidates[flops_source]
    memory = hbm_bytes(hlo_text)
    coll_s, table, unknown = collective_terms(program_collectives(hlo_text, chips), layout, rates)
    terms = {
        "compute_s": flops / rates.peak_flops,
        "memory_s": memory / rates.hbm_bandwidth,
        "collectives_s": coll_s,
    }
    predicted = max(terms.values())
    result: dict[str, Any] = {
        **terms,
        "predicted_s": predicted,
        "no_overlap_s": sum(terms.values()),
        "bound_by": max(terms, key=terms.get).removesuffix("_s"),
        "overlap_assumption": OVERLAP_ASSUMPTION,
        "flops_per_chip": flops,
        "flops_source": flops_source,
        "hbm_bytes_per_chip": memory,
        "collectives": table,
        "chip_rates": dataclasses.asdict(rates),
    }
    if unknown:
        result["collectives_not_timed"] = (
            f"no public bandwidth for {', '.join(unknown)} on {rates.name}: the collectives "
            "over it are left out of collectives_s (the step time is a lower bound)"
        )
    if tokens_per_step and predicted:
        result["predicted_tokens_per_s"] = tokens_per_step / predicted
    return result


def mfu(model_flops_total: float, seconds: float, chips: int, peak_flops: float) -> float | None:
    """Model FLOPs utilisation: the model's FLOPs over what the chips could do in `seconds`."""
    if not seconds or not peak_flops:
        return None
    return model_flops_total / (seconds * chips * peak_flops)


def summary_line(
    step_time: Mapping[str, Any], mfu_value: float | None, mfu_no_overlap: float | None = None
) -> str:
    """`predicted step X ms (bound by B; compute C, memory M, collectives K; no overlap N)`."""

    def ms(s: float) -> str:
        return f"{s * 1e3:.1f} ms"

    line = (
        f"predicted {ms(step_time['predicted_s'])} per step, bound by "
        f"{step_time['bound_by']} (compute {ms(step_time['compute_s'])}, memory "
        f"{ms(step_time['memory_s'])}, collectives {ms(step_time['collectives_s'])}; "
        f"no overlap {ms(step_time['no_overlap_s'])})"
    )
    if mfu_value is not None:
        line += f", MFU {mfu_value:.0%}"
        if mfu_no_overlap is not None:
            line += f" ({mfu_no_overlap:.0%} with no overlap)"
    return line


def sharding_need(
    abstract_params: Any,
    params_sharding: Any,
    compute_itemsize: int,
    gradient_itemsize: int = 4,
    gather_axes: Sequence[str] = ("fsdp",),
) -> dict[str, float]:
    """The weight collectives a train step needs per chip under FSDP: each weight split
    over `gather_axes` gathered twice (forward, and again for the backward pass) in the
    compute dtype, and its gradient reduce-scattered once (result: the chip's shard, in
    the gradients' dtype). Bytes of the collectives' results, as `collectives` counts
    them; tensor parallelism's activation collectives are not included."""
    gathered = shards = 0
    for leaf, sharding in zip(jax.tree.leaves(abstract_params), jax.tree.leaves(params_sharding)):
        shard = math.prod(sharding.shard_shape(leaf.shape))
        mesh_shape = dict(sharding.mesh.shape)
        split = 1
        for entry in sharding.spec:
            for axis in entry if isinstance(entry, tuple) else (entry,):
                if axis in gather_axes:
                    split *= mesh_shape[axis]
        if split > 1:
            gathered += shard * split
            shards += shard
    return {
        "all-gather": 2.0 * gathered * compute_itemsize,
        "reduce-scatter": float(shards * gradient_itemsize),
    }
