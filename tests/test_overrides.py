"""One ``key=value`` parser for every command, and config sections that live with their modules."""

import pytest

from logos_jax.config import parse_overrides
from logos_jax.distributed import DistributedConfig
from logos_jax.errors import LogosError
from logos_jax.sharding import MeshConfig, make_mesh
from logos_jax.train.config import SECTIONS, TrainConfig, load_train_config
from logos_jax.train.optim import OptimizerConfig


def test_parse_overrides_reads_yaml_scalars_in_order():
    pairs = ["steps=4", "flag=true", "lr=1e-4", "name=x=y", "empty=", "steps=5"]
    assert list(parse_overrides(pairs)) == [
        ("steps", 4),
        ("flag", True),
        ("lr", 1e-4),
        ("name", "x=y"),
        ("empty", None),
        ("steps", 5),
    ]
    with pytest.raises(LogosError, match=r"^override 'steps' is not key=value; see this$"):
        list(parse_overrides(["steps"], "; see this"))
    with pytest.raises(LogosError, match="'=1' is not key=value"):
        list(parse_overrides(["=1"]))


def test_both_commands_use_it(tmp_path, capsys):
    from logos_jax.cli import main

    assert main(["train", "--config", "tiny", "steps"]) != 0
    assert "override 'steps' is not key=value; valid keys: run_dir" in capsys.readouterr().err
    assert main(["data", "build", "--config", "mini", "--out", str(tmp_path / "o"), "x"]) != 0
    assert "override 'x' is not key=value (e.g. eval_fraction=0.1)" in capsys.readouterr().err


def test_the_mesh_section_is_shardings_mesh_config():
    assert SECTIONS["mesh"] is MeshConfig
    mesh = ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=-1", "mesh.num_devices=4"]
    config = load_train_config("tiny", ["run_dir=/tmp/x", *mesh])
    assert config.mesh == MeshConfig(data=1, fsdp=2, tensor=-1, num_devices=4)
    assert dict(make_mesh(config.mesh).shape) == {"data": 1, "fsdp": 2, "tensor": 2}
    with pytest.raises(LogosError, match=r"^invalid train config: mesh.fsdp=0 must be >= 1 or -1$"):
        TrainConfig(run_dir="/tmp/x", mesh=MeshConfig(fsdp=0))
    with pytest.raises(LogosError, match="at most one mesh axis may be -1"):
        load_train_config("tiny", ["run_dir=/tmp/x", "mesh.data=-1"])


def test_the_optimizer_and_distributed_sections_live_with_their_modules():
    assert {
        "optimizer": OptimizerConfig,
        "mesh": MeshConfig,
        "distributed": DistributedConfig,
    } == SECTIONS
    with pytest.raises(LogosError, match=r"^invalid train config: optimizer.lr=-1.0 must be > 0$"):
        load_train_config("tiny", ["run_dir=/tmp/x", "optimizer.lr=-1"])
    with pytest.raises(LogosError, match=r"^invalid train config: optimizer.b1=2.0 must be in"):
        TrainConfig(run_dir="/tmp/x", optimizer=OptimizerConfig(b1=2.0))
    with pytest.raises(
        LogosError, match=r"^invalid train config: distributed.timeout_s=0 must be > 0$"
    ):
        TrainConfig(run_dir="/tmp/x", distributed=DistributedConfig(timeout_s=0))
    with pytest.raises(LogosError, match=r"^invalid train config: optimizer.schedule='x' is not"):
        load_train_config("tiny", ["run_dir=/tmp/x", "optimizer.schedule=x"])
