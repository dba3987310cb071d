"""The checkpoint files hf2jax writes without Orbax: byte-for-byte what Orbax writes, and restorable."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from logos_jax.checkpoint import load_model, restore_params
from logos_jax.config import load_model_config
from logos_jax.convert.hf2jax import hf_to_jax
from logos_jax.convert.orbax_format import ArrayFile, CheckpointWriter, aligned_buffer, crc32c
from logos_jax.convert.safetensors_io import write_safetensors
from logos_jax.errors import LogosError
from logos_jax.model import abstract_params
from logos_jax.params import get_path, hf_tensors, hf_view, param_table
from logos_jax.sharding import MeshConfig, make_mesh


def _tree():
    rng = np.random.default_rng(0)
    return {
        "embed_tokens": {"embedding": rng.standard_normal((8, 4)).astype(ml_dtypes.bfloat16)},
        "layers": {"mlp": {"kernel": rng.standard_normal((2, 4, 8)).astype(np.float32)}},
    }


def _write_ours(path, tree, per_layer=False):
    writer = CheckpointWriter(path)
    for key, value in (
        (("embed_tokens", "embedding"), tree["embed_tokens"]["embedding"]),
        (("layers", "mlp", "kernel"), tree["layers"]["mlp"]["kernel"]),
    ):
        out = writer.array(key, value.shape, value.dtype, per_layer and key[0] == "layers")
        half = value.nbytes // 2  # two writes at offsets, as hf2jax fills layers
        out.write(value.reshape(-1).view(np.uint8)[:half], 0)
        out.write(value.reshape(-1).view(np.uint8)[half:], half)
        out.close()
    writer.finish()


def test_crc32c_reference_vector():
    assert crc32c(b"123456789") == 0xE3069283


def test_files_equal_what_orbax_writes(tmp_path):
    tree = _tree()
    handler = ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_zarr3=True, use_compression=False)
    with ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save((tmp_path / "orbax").absolute(), args=ocp.args.PyTreeSave(tree))
    _write_ours(tmp_path / "ours", tree)
    meta = json.loads((tmp_path / "ours" / "_METADATA").read_text())
    assert meta == json.loads((tmp_path / "orbax" / "_METADATA").read_text())
    for name in ("embed_tokens.embedding", "layers.mlp.kernel"):
        ours, theirs = tmp_path / "ours" / name, tmp_path / "orbax" / name
        assert json.loads((ours / "zarr.json").read_text()) == json.loads(
            (theirs / "zarr.json").read_text()
        )
        shard = [p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file()]
        assert sorted(shard) == sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
        for file in (f for f in shard if f.name != "zarr.json"):  # the shard: data, index, CRC
            assert (ours / file).read_bytes() == (theirs / file).read_bytes(), file


def test_per_layer_chunks_restore_sharded_on_8_devices(tmp_path):
    tree = _tree()
    _write_ours(tmp_path / "ckpt", tree, per_layer=True)
    mesh = make_mesh(MeshConfig(1, 4, 2))
    spec = {
        "embed_tokens": {"embedding": PartitionSpec("fsdp", "tensor")},
        "layers": {"mlp": {"kernel": PartitionSpec(None, "tensor", "fsdp")}},
    }
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(mesh, s)),
        tree,
        spec,
    )
    restored = restore_params(tmp_path / "ckpt", target)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(tree), strict=True):
        assert len(got.sharding.device_set) == 8
        np.testing.assert_array_equal(np.asarray(got), want)


def _write_mixed(path, direct, monkeypatch=None):
    """Aligned blocks from an aligned buffer (O_DIRECT-able) and unaligned pieces, out of order."""
    data = np.arange(3 * 4096 + 100, dtype=np.uint8)
    block = aligned_buffer(8192)
    block[...] = data[4096 : 3 * 4096]
    writer = CheckpointWriter(path)
    out = writer.array(("w",), (data.size // 2,), np.float16, direct=direct)
    if monkeypatch is not None:  # a file system that opens O_DIRECT but refuses the writes
        write = os.pwrite

        def refuse_direct(fd, view, offset):
            if fd == out._direct_fd:
                raise OSError(errno.EINVAL, "Invalid argument")
            return write(fd, view, offset)

        monkeypatch.setattr("os.pwrite", refuse_direct)
    out.write(block, 4096)
    out.write(data[3 * 4096 :], 3 * 4096)
    out.write(data[:4096].tobytes(), 0)
    out.close()
    return (path / "w" / "c" / "0").read_bytes()[: data.size], data.tobytes()


def test_direct_and_buffered_writes_agree(tmp_path, monkeypatch):
    direct, want = _write_mixed(tmp_path / "direct", True)
    assert direct == want
    assert _write_mixed(tmp_path / "buffered", False)[0] == want
    assert _write_mixed(tmp_path / "refused", True, monkeypatch)[0] == want


@pytest.mark.parametrize("preset", ["tiny", "logos-8b"])
def test_config_shapes_match_the_model(preset):
    """The table derives parameter shapes from the config alone; they must be the model's."""
    config = load_model_config(preset)
    shapes = abstract_params(config)
    for info in param_table(config).values():
        stacked = info.stacked_shape(config.num_layers)
        assert stacked == get_path(shapes, info.path).shape, info.hf_name


def _synthetic_hf(folder, stored):
    """The tiny preset as an HF folder (bf16 config.json, tensors stored as ``stored``)."""
    config = load_model_config("tiny").replace(param_dtype="bfloat16")
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_hf()))
    rng = np.random.default_rng(1)
    tensors = {
        name: rng.standard_normal(info.shape).astype(stored) for name, info, _ in hf_tensors(config)
    }
    write_safetensors(folder / "model.safetensors", list(tensors.items()))
    return config, tensors


@pytest.mark.parametrize("direct_io", [False, True])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, direct_io):
    """A full disk mid-conversion: a clear error, no output folder, no temporary folder left."""
    _synthetic_hf(tmp_path / "hf", ml_dtypes.bfloat16)
    calls = []

    def filling(method):
        def fill_disk(self, *args):
            calls.append(args)
            if len(calls) == 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            method(self, *args)

        return fill_disk

    monkeypatch.setattr(ArrayFile, "write", filling(ArrayFile.write))
    monkeypatch.setattr(ArrayFile, "copy_from", filling(ArrayFile.copy_from))
    with pytest.raises(LogosError, match="cannot write the checkpoint .*No space left"):
        hf_to_jax(tmp_path / "hf", tmp_path / "jax", progress=False, direct_io=direct_io)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


@pytest.mark.parametrize("stored", [ml_dtypes.bfloat16, np.float32])
def test_hf2jax_runs_without_jax_and_loads(stored, tmp_path):
    """A torch-free synthetic HF folder converts in a process that never imports JAX; tensors
    stored in another dtype than config.json's are cast on the way (fp32 files, bf16 config)."""
    config, tensors = _synthetic_hf(tmp_path / "hf", stored)
    script = (
        "import sys; from logos_jax.convert.hf2jax import hf_to_jax; "
        f"hf_to_jax({str(tmp_path / 'hf')!r}, {str(tmp_path / 'jax')!r}, progress=False); "
        "assert 'jax' not in sys.modules, 'hf2jax imported jax'"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    loaded_config, params = load_model(tmp_path / "jax")
    assert loaded_config.param_dtype == "bfloat16"
    for name, entry, layer in hf_tensors(config):
        want = tensors[name].astype(ml_dtypes.bfloat16)
        np.testing.assert_array_equal(hf_view(params, entry, layer), want)
