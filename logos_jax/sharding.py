"""Device mesh and the logical-axis rules that map parameter/activation axes onto it.

Every parameter carries logical axis names (``("layers", "mlp", "embed")``, declared in the parameter
table ``logos_jax.params``); one short rules table maps
them onto the mesh axes ``data`` / ``fsdp`` / ``tensor``. A dimension whose size the mesh axes do not
divide is left replicated rather than failing, so odd vocabularies still load.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from logos_jax.errors import LogosError
from logos_jax.validate import check_fields, check_ranges

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None = replicated).
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    ("head_dim", None),
    ("seq", None),
    ("cache_len", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape; one axis may be ``-1`` (the rest of the devices). Also the ``mesh`` section of the
    train config (``mesh.fsdp=4``), checked there by ``check``."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    num_devices: int = 0  # use only the first N devices (0: all)

    def check(self, where: str) -> None:
        """LogosError ``<where>: mesh.<axis>=...`` for a field of the wrong type or out of range."""
        check_fields(self, where, "mesh.")
        axes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        check_ranges(
            where,
            [
                *[(v == -1 or v >= 1, f"mesh.{k}={v} must be >= 1 or -1") for k, v in axes.items()],
                (
                    list(axes.values()).count(-1) <= 1,
                    " and ".join(f"mesh.{k}=-1" for k, v in axes.items() if v == -1)
                    + ": at most one mesh axis may be -1",
                ),
                (self.num_devices >= 0, f"mesh.num_devices={self.num_devices} must be >= 0"),
            ],
        )

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        if sizes.count(-1) > 1:
            raise LogosError(f"mesh {sizes}: at most one axis may be -1")
        if any(s == 0 or s < -1 for s in sizes):
            raise LogosError(f"mesh {sizes}: sizes must be positive or -1")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise LogosError(
                    f"mesh data={self.data} fsdp={self.fsdp} tensor={self.tensor}: {num_devices} "
                    f"devices are not divisible by {known}"
                )
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise LogosError(
                f"mesh data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]} needs {math.prod(sizes)} "
                f"devices but {num_devices} are available; set one axis to -1 to use the rest"
            )
        return sizes[0], sizes[1], sizes[2]


def make_mesh(config: MeshConfig | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all; the first ``num_devices`` of
    them when the config names a number), with Auto axis types."""
    config = config or MeshConfig()
    devices = list(jax.devices() if devices is None else devices)[: config.num_devices or None]
    shape = config.resolve(len(devices))
    grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(
    logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules
) -> PartitionSpec:
    """PartitionSpec for one array; mesh axes that do not divide a dimension (or are reused) drop out."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(logical_axes, shape, strict=True):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        kept = []
        for axis in axes:
            n = mesh.shape[axis]
            if axis in used or n == 1 or size % (math.prod(mesh.shape[a] for a in kept) * n):
                continue
            kept.append(axis)
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def constrain(
    x: jax.Array, axes: Sequence[str | None], mesh: Mesh | None, rules: Rules = DEFAULT_RULES
) -> jax.Array:
    """``x`` constrained to the sharding of its logical ``axes`` on ``mesh`` (no-op without one):
    the one sharding-constraint helper of the model, the train step and the decode engine."""
    if mesh is None:
        return x
    spec = logical_to_spec(axes, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def tree_shardings(logical_tree: Any, shape_tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """NamedShardings for a tree of arrays, given a matching tree of logical-axis tuples."""
    return jax.tree.map(
        lambda axes, arr: NamedSharding(mesh, logical_to_spec(axes, arr.shape, mesh, rules)),
        logical_tree,
        shape_tree,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(a, str | None) for a in x),
    )


def batch_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES, ndim: int = 2) -> NamedSharding:
    """Sharding of a ``[batch, ...]`` input: batch over the data-parallel axes, the rest replicated."""
    target = dict(rules)["batch"]
    axes = tuple(a for a in ((target,) if isinstance(target, str) else target) if mesh.shape[a] > 1)
    first = None if not axes else axes[0] if len(axes) == 1 else axes
    return NamedSharding(mesh, PartitionSpec(first, *([None] * (ndim - 1))))


def batch_shards(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """How many ways the batch dimension is split (global batch must be a multiple)."""
    spec = batch_sharding(mesh, rules).spec[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else spec
    return math.prod(mesh.shape[a] for a in axes)
