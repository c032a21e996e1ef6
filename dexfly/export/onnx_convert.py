"""A small jaxpr -> ONNX converter, covering exactly the primitives of dexfly's exported policies.

    model = to_onnx(fn, [jax.ShapeDtypeStruct((b, H, D), jnp.float32), ...], input_names, output_names)

Why hand-written: the maintained converter for JAX, jax2onnx, is only available here as 0.17.1, which pins
`orbax-checkpoint<0.11.37` (dexfly needs 0.12.8) and pulls in netron, huggingface-hub, equinox and dm-pix; the
jax2tf + tf2onnx route fails on XlaCallModule. dexfly's policies use a few dozen primitives, so a converter
built on `onnx.helper` alone is small and has no dependency beyond `onnx` (docs/export.md).

How it works:
- `fn` is traced with `jax.make_jaxpr` on inputs whose leading (batch) dimension is symbolic
  (`jax.export.symbolic_shape`); the symbol becomes the ONNX `dim_param` of every input and output, and a
  shape that needs it at run time is built from `Shape(input)`.
- Call-like primitives (jit/pjit, custom_jvp_call, custom_vjp_call, closed_call, remat) are inlined.
- Constant folding: an equation whose inputs are all known constants (parameters, literals, iota, the
  diffusion schedule indexed by a timestep) and whose output shape is static is evaluated with JAX itself at
  conversion time. Results are memoised per (equation, input objects), so the weights that a loop body
  reshapes are folded once and stored once.
- `scan` (the DDIM loop) is unrolled: its length is static, and unrolling lets every timestep-dependent
  coefficient fold into a constant.
- Anything else raises `UnsupportedPrimitiveError` naming the primitive.

Parameters become ONNX initializers; float32 throughout, as in the JAX function.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import onnx
from jax.extend import core as jcore
from onnx import helper, numpy_helper

DEFAULT_OPSET = 18  # Reduce* ops take their axes as an input from opset 18 on
_IR_VERSION = 8  # the IR version of opset 18: readable by runtimes back to onnx 1.13 / onnxruntime 1.14
_INT64_MAX = np.iinfo(np.int64).max

# primitives whose one sub-jaxpr is simply called: inlined
_CALL_PRIMITIVES = {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
                    "remat", "checkpoint"}
_SUBJAXPR_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


class UnsupportedPrimitiveError(NotImplementedError):
    """The jaxpr uses a primitive (or a form of one) that this converter does not translate."""


def _is_static(shape) -> bool:
    return all(isinstance(d, (int, np.integer)) for d in shape)


def _onnx_dtype(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


@dataclass
class _Graph:
    """The ONNX graph being built, and the conversion's memo tables."""

    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    names: itertools.count = field(default_factory=itertools.count)
    const_names: dict = field(default_factory=dict)  # id(array) -> (array, initializer name)
    small_consts: dict = field(default_factory=dict)  # (dtype, shape, bytes) -> initializer name
    fold_cache: dict = field(default_factory=dict)  # (id(eqn), ids of inputs) -> (inputs, outputs)
    literal_cache: dict = field(default_factory=dict)  # id(Literal) -> (literal, array)
    dims: dict = field(default_factory=dict)  # symbolic dimension -> name of an int64 [1] tensor holding it
    avals: dict = field(default_factory=dict)  # tensor name -> the jaxpr aval it stands for (value_info)

    def fresh(self, hint: str = "t") -> str:
        return f"{hint}_{next(self.names)}"

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, **attrs))
        return outs

    def op(self, op: str, *inputs: str, **attrs) -> str:
        return self.node(op, inputs, 1, **attrs)[0]

    def const(self, array: np.ndarray) -> str:
        """The initializer holding `array` (one per array object: shared weights are stored once)."""
        hit = self.const_names.get(id(array))
        if hit is not None:
            return hit[1]
        array = np.asarray(array)
        # small constants (shapes, axes, scalars) are deduplicated by value, weights by object
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 16 else None
        name = self.small_consts.get(key) if key else None
        if name is None:
            name = self.fresh("c")
            # np.asarray, not np.ascontiguousarray: the latter turns a 0-d array into a 1-d one
            self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
            if key:
                self.small_consts[key] = name
        self.const_names[id(array)] = (array, name)
        return name

    def int64(self, values) -> str:
        return self.const(np.asarray(values, np.int64))

    def tensor(self, v) -> str:
        return v if isinstance(v, str) else self.const(v)

    def dim(self, d) -> str:
        """An int64 [1] tensor holding dimension `d` (static or symbolic)."""
        if isinstance(d, (int, np.integer)):
            return self.int64([int(d)])
        if d not in self.dims:
            raise UnsupportedPrimitiveError(f"dimension {d} is not an input dimension; only dimensions that an input has "
                                            f"(e.g. the batch) are supported in shapes")
        return self.dims[d]

    def shape(self, shape) -> str:
        """An int64 [rank] tensor holding `shape` (a constant when static, else a Concat of its pieces)."""
        if _is_static(shape):
            return self.int64([int(d) for d in shape])
        return self.op("Concat", *[self.dim(d) for d in shape], axis=0)


def _read(g: _Graph, env: dict, v) -> Any:
    if isinstance(v, jcore.Literal):
        hit = g.literal_cache.get(id(v))
        if hit is None:
            hit = (v, np.asarray(v.val, dtype=v.aval.dtype))
            g.literal_cache[id(v)] = hit
        return hit[1]
    return env[v]


def _subjaxpr(eqn) -> jcore.ClosedJaxpr:
    for key in _SUBJAXPR_KEYS:
        sub = eqn.params.get(key)
        if isinstance(sub, jcore.ClosedJaxpr):
            return sub
        if isinstance(sub, jcore.Jaxpr):
            return jcore.ClosedJaxpr(sub, ())
    raise UnsupportedPrimitiveError(f"primitive {eqn.primitive.name!r}: no sub-jaxpr found to inline")


def _fold(g: _Graph, eqn, ins: list) -> list:
    """Evaluate an equation on constant inputs with JAX (memoised on the equation and input objects)."""
    key = (id(eqn), tuple(id(x) for x in ins))
    hit = g.fold_cache.get(key)
    if hit is not None and hit[0] is eqn and all(a is b for a, b in zip(hit[1], ins)):
        return hit[2]
    out = eqn.primitive.bind(*ins, **eqn.params)
    outs = [np.asarray(o) for o in (out if eqn.primitive.multiple_results else [out])]
    g.fold_cache[key] = (eqn, list(ins), outs)  # keeps the inputs alive, so their ids stay unique
    return outs


def _convert_jaxpr(g: _Graph, jaxpr: jcore.Jaxpr, consts: Sequence, args: Sequence) -> list:
    env: dict = {}
    for var, val in zip(jaxpr.constvars, consts):
        env[var] = np.asarray(val) if not isinstance(val, (str, np.ndarray)) else val
    for var, val in zip(jaxpr.invars, args):
        env[var] = val
    for eqn in jaxpr.eqns:
        ins = [_read(g, env, v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _CALL_PRIMITIVES:
            sub = _subjaxpr(eqn)
            outs = _convert_jaxpr(g, sub.jaxpr, sub.consts, ins)
        elif all(isinstance(x, np.ndarray) for x in ins) and all(_is_static(v.aval.shape) for v in eqn.outvars):
            outs = _fold(g, eqn, ins)
        elif name == "scan":
            outs = _scan(g, eqn, ins)
        else:
            handler = _HANDLERS.get(name)
            if handler is None:
                raise UnsupportedPrimitiveError(f"jaxpr primitive {name!r} is not supported by dexfly's ONNX converter "
                                                f"(supported: {sorted(set(_HANDLERS) | _CALL_PRIMITIVES | {'scan'})})")
            outs = handler(g, eqn, ins)
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
            if isinstance(val, str):
                g.avals.setdefault(val, var.aval)
    return [_read(g, env, v) for v in jaxpr.outvars]


# ---------------------------------------------------------------- primitive handlers
# Each: (graph, eqn, inputs as constants or tensor names) -> list of outputs.

def _unary(op: str) -> Callable:
    return lambda g, eqn, ins: [g.op(op, g.tensor(ins[0]))]


def _binary(op: str) -> Callable:
    return lambda g, eqn, ins: [g.op(op, g.tensor(ins[0]), g.tensor(ins[1]))]


def _scalar_like(g: _Graph, value: float, dtype) -> str:
    return g.const(np.asarray(value, dtype=dtype))


def _rsqrt(g, eqn, ins):
    return [g.op("Reciprocal", g.op("Sqrt", g.tensor(ins[0])))]


def _log1p(g, eqn, ins):
    # Log(1 + x): for |x| < 1e-7 this loses relative (not absolute) accuracy; the policies only use log1p
    # inside softplus, where the absolute error (< 1e-7) is what matters
    return [g.op("Log", g.op("Add", g.tensor(ins[0]), _scalar_like(g, 1.0, eqn.invars[0].aval.dtype)))]


def _square(g, eqn, ins):
    x = g.tensor(ins[0])
    return [g.op("Mul", x, x)]


def _integer_pow(g, eqn, ins):
    y, x = int(eqn.params["y"]), g.tensor(ins[0])
    if y == 0:
        return [g.op("Expand", _scalar_like(g, 1.0, eqn.invars[0].aval.dtype), g.op("Shape", x))]
    acc = x
    for _ in range(abs(y) - 1):
        acc = g.op("Mul", acc, x)
    return [g.op("Reciprocal", acc) if y < 0 else acc]


def _ne(g, eqn, ins):
    return [g.op("Not", g.op("Equal", g.tensor(ins[0]), g.tensor(ins[1])))]


def _div(g, eqn, ins):
    if not np.issubdtype(eqn.invars[0].aval.dtype, np.floating):
        raise UnsupportedPrimitiveError("primitive 'div' on integers (rounding differs between lax and ONNX)")
    return [g.op("Div", g.tensor(ins[0]), g.tensor(ins[1]))]


def _select_n(g, eqn, ins):
    pred, cases = ins[0], [g.tensor(c) for c in ins[1:]]
    if len(cases) == 1:
        return [g.op("Identity", cases[0])]
    if eqn.invars[0].aval.dtype == np.bool_:
        return [g.op("Where", g.tensor(pred), cases[1], cases[0])]
    # integer predicate: case i where pred == i (the last case for anything larger, as lax clamps)
    p, out = g.tensor(pred), cases[-1]
    for i in range(len(cases) - 2, -1, -1):
        out = g.op("Where", g.op("Equal", p, g.const(np.asarray(i, eqn.invars[0].aval.dtype))), cases[i], out)
    return [out]


def _clamp(g, eqn, ins):
    lo, x, hi = (g.tensor(v) for v in ins)
    return [g.op("Min", g.op("Max", x, lo), hi)]


def _convert_element_type(g, eqn, ins):
    return [g.op("Cast", g.tensor(ins[0]), to=_onnx_dtype(eqn.params["new_dtype"]))]


def _identity(g, eqn, ins):
    return [g.op("Identity", g.tensor(ins[0]))]


def _broadcast_in_dim(g, eqn, ins):
    x = g.tensor(ins[0])
    in_shape = eqn.invars[0].aval.shape
    out_shape, bdims = eqn.params["shape"], tuple(eqn.params["broadcast_dimensions"])
    if list(bdims) != sorted(bdims):
        raise UnsupportedPrimitiveError(f"primitive 'broadcast_in_dim' with unsorted broadcast_dimensions {bdims}")
    missing = [i for i in range(len(out_shape)) if i not in bdims]
    if missing:
        x = g.op("Unsqueeze", x, g.int64(missing))
    # Expand broadcasts numpy-style: 1 keeps a dimension the operand already has (so the batch needs no runtime
    # shape when the operand carries it)
    target = [1 if (i in bdims and in_shape[bdims.index(i)] == d) else d for i, d in enumerate(out_shape)]
    if all(isinstance(d, (int, np.integer)) and d == 1 for d in target):
        return [x if missing else g.op("Identity", x)]
    return [g.op("Expand", x, g.shape(target))]


def _reshape(g, eqn, ins):
    if eqn.params.get("dimensions") is not None:
        raise UnsupportedPrimitiveError("primitive 'reshape' with dimensions (a transposing reshape)")
    sizes = eqn.params["new_sizes"]
    symbolic = [i for i, d in enumerate(sizes) if not isinstance(d, (int, np.integer))]
    if len(symbolic) == 1 and all(int(d) > 0 for i, d in enumerate(sizes) if i != symbolic[0]):
        # ONNX infers one -1 from the element count: a constant shape whatever the batch
        shape = g.int64([-1 if i == symbolic[0] else int(d) for i, d in enumerate(sizes)])
    else:
        shape = g.shape(sizes)
    return [g.op("Reshape", g.tensor(ins[0]), shape)]


def _squeeze(g, eqn, ins):
    dims = list(eqn.params["dimensions"])
    return [g.op("Squeeze", g.tensor(ins[0]), g.int64(dims))] if dims else [g.op("Identity", g.tensor(ins[0]))]


def _expand_dims(g, eqn, ins):
    return [g.op("Unsqueeze", g.tensor(ins[0]), g.int64(list(eqn.params["dimensions"])))]


def _transpose(g, eqn, ins):
    return [g.op("Transpose", g.tensor(ins[0]), perm=[int(p) for p in eqn.params["permutation"]])]


def _concatenate(g, eqn, ins):
    return [g.op("Concat", *[g.tensor(x) for x in ins], axis=int(eqn.params["dimension"]))]


def _stack(g, eqn, ins):
    axis = int(eqn.params["axis"])
    return [g.op("Concat", *[g.op("Unsqueeze", g.tensor(x), g.int64([axis])) for x in ins], axis=axis)]


def _split(g, eqn, ins):
    sizes = [int(s) for s in eqn.params["sizes"]]
    return g.node("Split", [g.tensor(ins[0]), g.int64(sizes)], len(sizes), axis=int(eqn.params["axis"]))


def _slice_tensor(g: _Graph, x: str, shape, starts, limits, strides=None) -> str:
    """ONNX Slice of x over every axis whose window is not the whole axis."""
    axes, st, en, sp = [], [], [], []
    for ax, (d, s, e) in enumerate(zip(shape, starts, limits)):
        step = 1 if strides is None else int(strides[ax])
        if not isinstance(s, (int, np.integer)):
            raise UnsupportedPrimitiveError(f"a slice starting at the symbolic index {s}")
        whole = (e is d) or (e == d)
        if int(s) == 0 and whole and step == 1:
            continue
        axes.append(ax)
        st.append(int(s))
        en.append(_INT64_MAX if whole else int(e))
        sp.append(step)
    if not axes:
        return g.op("Identity", x)
    return g.op("Slice", x, g.int64(st), g.int64(en), g.int64(axes), g.int64(sp))


def _slice(g, eqn, ins):
    p = eqn.params
    return [_slice_tensor(g, g.tensor(ins[0]), eqn.invars[0].aval.shape, p["start_indices"], p["limit_indices"], p["strides"])]


def _static_starts(name: str, values, shape, sizes) -> list[int]:
    """Constant start indices clamped into range as lax does (start in [0, dim - size])."""
    out = []
    for v, d, s in zip(values, shape, sizes):
        if not isinstance(v, np.ndarray):
            raise UnsupportedPrimitiveError(f"primitive {name!r} with a start index computed at run time")
        v = int(v)
        if isinstance(d, (int, np.integer)) and isinstance(s, (int, np.integer)):
            v = min(max(v, 0), int(d) - int(s))
        elif v != 0:
            raise UnsupportedPrimitiveError(f"primitive {name!r} starting at {v} on the symbolic dimension {d}")
        out.append(v)
    return out


def _dynamic_slice(g, eqn, ins):
    shape, sizes = eqn.invars[0].aval.shape, eqn.params["slice_sizes"]
    starts = _static_starts("dynamic_slice", ins[1:], shape, sizes)
    return [_slice_tensor(g, g.tensor(ins[0]), shape, starts, [s + z for s, z in zip(starts, sizes)])]


def _gather(g, eqn, ins):
    """The gathers that jnp indexing with constant indices produces, no batching dims:
    - one index point (indices [len(start_index_map)]): a Slice, then a Squeeze of the collapsed dims
      (x[..., 3:7], x[:, 2]);
    - many points along one axis (indices [..., 1], whole slices elsewhere): an ONNX Gather, then a Transpose into
      lax's order (x[:, ::2])."""
    operand, indices = ins
    dn, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
    shape = eqn.invars[0].aval.shape
    if not isinstance(indices, np.ndarray):
        raise UnsupportedPrimitiveError("primitive 'gather' with indices computed at run time")
    if dn.operand_batching_dims:
        raise UnsupportedPrimitiveError("primitive 'gather' with operand batching dims")
    kept = [d for d in range(len(shape)) if d not in dn.collapsed_slice_dims]
    if indices.shape == (len(dn.start_index_map),):
        if tuple(dn.offset_dims) != tuple(range(len(kept))):
            raise UnsupportedPrimitiveError(f"primitive 'gather' with offset_dims {dn.offset_dims}")
        per_axis = [np.asarray(0) for _ in shape]
        for k, ax in enumerate(dn.start_index_map):
            per_axis[ax] = np.asarray(indices[k])
        starts = _static_starts("gather", per_axis, shape, sizes)
        out = _slice_tensor(g, g.tensor(operand), shape, starts, [s + z for s, z in zip(starts, sizes)])
        if dn.collapsed_slice_dims:
            out = g.op("Squeeze", out, g.int64(list(dn.collapsed_slice_dims)))
        return [out]
    whole = all(sizes[d] is shape[d] or sizes[d] == shape[d] for d in kept)
    if not (len(dn.start_index_map) == 1 and tuple(dn.collapsed_slice_dims) == tuple(dn.start_index_map) and indices.shape[-1] == 1
            and int(sizes[dn.start_index_map[0]]) == 1 and whole):
        raise UnsupportedPrimitiveError(f"primitive 'gather' of this form (indices {indices.shape}, {dn}, slice_sizes {sizes})")
    ax = dn.start_index_map[0]
    dim = shape[ax]
    if not isinstance(dim, (int, np.integer)):
        raise UnsupportedPrimitiveError(f"primitive 'gather' along the symbolic dimension {dim}")
    idx = indices[..., 0].astype(np.int64)
    if np.any((idx < 0) | (idx >= dim)) and str(eqn.params["mode"]).endswith("FILL_OR_DROP"):
        raise UnsupportedPrimitiveError("primitive 'gather' with out-of-range indices in fill mode")
    out = g.op("Gather", g.tensor(operand), g.const(np.clip(idx, 0, int(dim) - 1)), axis=int(ax))
    # ONNX's order: operand dims before ax, index dims, operand dims after ax; lax's: offset_dims place the kept dims
    batch_labels = [("i", k) for k in range(idx.ndim)]
    onnx_labels = [("o", d) for d in range(ax)] + batch_labels + [("o", d) for d in range(ax + 1, len(shape))]
    rest = iter(batch_labels)
    lax_labels = [("o", kept[dn.offset_dims.index(p)]) if p in dn.offset_dims else next(rest) for p in range(len(onnx_labels))]
    perm = [onnx_labels.index(lab) for lab in lax_labels]
    return [out if perm == list(range(len(perm))) else g.op("Transpose", out, perm=perm)]


def _pad(g, eqn, ins):
    config = eqn.params["padding_config"]
    if any(int(i) for _, _, i in config):
        raise UnsupportedPrimitiveError("primitive 'pad' with interior padding")
    pads = [int(lo) for lo, _, _ in config] + [int(hi) for _, hi, _ in config]
    return [g.op("Pad", g.tensor(ins[0]), g.int64(pads), g.tensor(ins[1]), mode="constant")]


def _reduce(op: str) -> Callable:
    def handler(g, eqn, ins):
        axes = [int(a) for a in eqn.params["axes"]]
        if not axes:
            return [g.op("Identity", g.tensor(ins[0]))]
        return [g.op(op, g.tensor(ins[0]), g.int64(axes), keepdims=0)]
    return handler


def _dot_general(g, eqn, ins):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = (g.tensor(x) for x in ins)
    lr, rr = len(eqn.invars[0].aval.shape), len(eqn.invars[1].aval.shape)
    out_dtype = eqn.outvars[0].aval.dtype
    if eqn.invars[0].aval.dtype != out_dtype or eqn.invars[1].aval.dtype != out_dtype:
        raise UnsupportedPrimitiveError(f"primitive 'dot_general' with mixed dtypes {eqn.invars[0].aval.dtype}, "
                                        f"{eqn.invars[1].aval.dtype} -> {out_dtype}")
    if not lb and rr == 2 and tuple(lc) == (lr - 1,) and tuple(rc) == (0,):
        return [g.op("MatMul", lhs, rhs)]  # x [..., K] @ W [K, N]: the Dense and im2col-conv case
    # general case as an Einsum: batch dims, then lhs free dims, then rhs free dims (lax's output order)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    ls, rs = [None] * lr, [None] * rr
    for a, b in zip(lb, rb):
        ls[a] = rs[b] = next(letters)
    for a, b in zip(lc, rc):
        ls[a] = rs[b] = next(letters)
    for i in range(lr):
        ls[i] = ls[i] or next(letters)
    for i in range(rr):
        rs[i] = rs[i] or next(letters)
    out = [ls[a] for a in lb] + [ls[i] for i in range(lr) if i not in lb and i not in lc] + \
          [rs[i] for i in range(rr) if i not in rb and i not in rc]
    return [g.op("Einsum", lhs, rhs, equation=f"{''.join(ls)},{''.join(rs)}->{''.join(out)}")]


def _index_leading(g: _Graph, x, i: int):
    """x[i] along axis 0 (a constant stays a constant)."""
    if isinstance(x, np.ndarray):
        return np.asarray(x[i])  # x[i] of a 1-D array is a numpy scalar, not an ndarray
    return g.op("Gather", x, g.int64(i), axis=0)


def _scan(g, eqn, ins):
    """lax.scan, unrolled over its static length (dexfly's only scan is the DDIM loop: a handful of steps)."""
    p = eqn.params
    body: jcore.ClosedJaxpr = p["jaxpr"]
    nc, ncarry, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    consts, carry, xs = ins[:nc], list(ins[nc:nc + ncarry]), ins[nc + ncarry:]
    ys_steps: dict[int, list] = {}
    for i in (range(length - 1, -1, -1) if p["reverse"] else range(length)):
        outs = _convert_jaxpr(g, body.jaxpr, body.consts, [*consts, *carry, *[_index_leading(g, x, i) for x in xs]])
        carry, ys_steps[i] = outs[:ncarry], outs[ncarry:]
    ys = []
    for k in range(len(eqn.outvars) - ncarry):
        col = [ys_steps[i][k] for i in range(length)]
        if all(isinstance(c, np.ndarray) for c in col):
            ys.append(np.stack(col))
        else:
            ys.append(g.op("Concat", *[g.op("Unsqueeze", g.tensor(c), g.int64([0])) for c in col], axis=0))
    return carry + ys


_HANDLERS: dict[str, Callable] = {
    "neg": _unary("Neg"), "exp": _unary("Exp"), "log": _unary("Log"), "tanh": _unary("Tanh"), "sin": _unary("Sin"),
    "cos": _unary("Cos"), "sqrt": _unary("Sqrt"), "abs": _unary("Abs"), "logistic": _unary("Sigmoid"), "floor": _unary("Floor"),
    "ceil": _unary("Ceil"), "sign": _unary("Sign"), "erf": _unary("Erf"), "not": _unary("Not"),
    "rsqrt": _rsqrt, "log1p": _log1p, "square": _square, "integer_pow": _integer_pow,
    "add": _binary("Add"), "sub": _binary("Sub"), "mul": _binary("Mul"), "div": _div, "max": _binary("Max"),
    "min": _binary("Min"), "pow": _binary("Pow"), "eq": _binary("Equal"), "ne": _ne, "lt": _binary("Less"),
    "le": _binary("LessOrEqual"), "gt": _binary("Greater"), "ge": _binary("GreaterOrEqual"), "and": _binary("And"),
    "or": _binary("Or"),
    "select_n": _select_n, "clamp": _clamp, "convert_element_type": _convert_element_type, "copy": _identity,
    "copy_p": _identity, "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "squeeze": _squeeze,
    "expand_dims": _expand_dims, "transpose": _transpose, "concatenate": _concatenate, "stack": _stack, "split": _split,
    "slice": _slice, "dynamic_slice": _dynamic_slice, "gather": _gather, "pad": _pad,
    "reduce_sum": _reduce("ReduceSum"), "reduce_max": _reduce("ReduceMax"), "reduce_min": _reduce("ReduceMin"),
    "reduce_prod": _reduce("ReduceProd"), "dot_general": _dot_general,
}

SUPPORTED_PRIMITIVES = frozenset(_HANDLERS) | _CALL_PRIMITIVES | {"scan"}


def _value_info(name: str, aval) -> onnx.ValueInfoProto:
    dims = [int(d) if isinstance(d, (int, np.integer)) else str(d) for d in aval.shape]
    return helper.make_tensor_value_info(name, _onnx_dtype(aval.dtype), dims)


def jaxpr_to_onnx(closed: jcore.ClosedJaxpr, input_names: Sequence[str], output_names: Sequence[str], *,
                  graph_name: str = "dexfly", opset: int = DEFAULT_OPSET, doc: str = "") -> onnx.ModelProto:
    """An ONNX model computing `closed` (a traced function). Input and output dimensions that are symbolic in the
    jaxpr (the batch) become `dim_param`s named after their symbol."""
    jaxpr = closed.jaxpr
    if len(input_names) != len(jaxpr.invars) or len(output_names) != len(jaxpr.outvars):
        raise ValueError(f"{len(jaxpr.invars)} inputs and {len(jaxpr.outvars)} outputs, got names {list(input_names)} -> {list(output_names)}")
    g = _Graph()
    for name, var in zip(input_names, jaxpr.invars):
        for axis, d in enumerate(var.aval.shape):
            if not isinstance(d, (int, np.integer)) and d not in g.dims:
                g.dims[d] = g.op("Slice", g.op("Shape", name), g.int64([axis]), g.int64([axis + 1]))
    outs = _convert_jaxpr(g, jaxpr, closed.consts, list(input_names))
    for name, val in zip(output_names, outs):
        g.nodes.append(helper.make_node("Identity", [g.tensor(val)], [name]))
    graph = helper.make_graph(
        g.nodes, graph_name,
        [_value_info(n, v.aval) for n, v in zip(input_names, jaxpr.invars)],
        [_value_info(n, v.aval) for n, v in zip(output_names, jaxpr.outvars)],
        initializer=g.initializers, doc_string=doc,
        # every intermediate's shape as the jaxpr has it: documentation for viewers, and the checker's shape inference
        # below then rejects a handler whose output disagrees
        value_info=[_value_info(n, a) for n, a in g.avals.items() if n not in output_names],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="dexfly",
                              ir_version=_IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(fn: Callable, in_specs: Sequence[jax.ShapeDtypeStruct], input_names: Sequence[str], output_names: Sequence[str],
            **kwargs) -> onnx.ModelProto:
    """Trace `fn(*inputs)` on `in_specs` (shapes may hold symbolic dimensions) and convert it to ONNX."""
    closed = jax.make_jaxpr(fn)(*in_specs)
    return jaxpr_to_onnx(closed, input_names, output_names, **kwargs)


__all__ = ["DEFAULT_OPSET", "SUPPORTED_PRIMITIVES", "UnsupportedPrimitiveError", "jaxpr_to_onnx", "to_onnx"]
