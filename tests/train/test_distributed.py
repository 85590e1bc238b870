"""prodrec.train.distributed on 2 CPU processes (gloo over loopback): launch environment, context, collectives."""
import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist

from prodrec.train import LaunchEnv, init_distributed, read_launch_env

WORLD = 2


class _Done(Exception):
    """Raised inside the distributed block to check that the process group is destroyed on errors."""


def collectives(ctx, folder) -> dict:
    rank = ctx.rank
    rows = 5 if rank == 0 else 2
    shard = np.arange(rank * 100, rank * 100 + rows * 3, dtype=np.float32).reshape(rows, 3)
    out = {
        "to_0": ctx.gather_rows(shard, dst=0),
        "to_all_chunked": ctx.gather_rows(torch.from_numpy(shard), dst=None, chunk_rows=2),
        "to_1_with_empty": ctx.gather_rows(shard[:0] if rank == 1 else shard, dst=1),
        "labels": ctx.gather_rows(torch.arange(rows) + 10 * rank, dst=None),
        "any_on_rank_1": ctx.any_rank(rank == 1),
        "any_none": ctx.any_rank(False),
        "mean": ctx.mean({"loss": float(rank), "images": 4.0 + rank}),
        "broadcast": ctx.broadcast({"from": rank}),
        "main_only": ctx.main_only(lambda: "ran"),
        "shard": ctx.shard(7),
    }
    try:
        ctx.gather_rows(np.zeros((2, 3 + rank), dtype=np.float32))
    except ValueError as error:
        out["mismatch"] = str(error)
    flag = folder / "main_first.txt"
    with ctx.main_first():
        if ctx.is_main:
            time.sleep(0.5)  # without main_first's barrier, rank 1 would look before the file exists
            flag.write_text("written by rank 0")
        out["main_first_saw"] = flag.read_text() if flag.exists() else None
    return out


def worker(rank: int, port: int, folder) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    results = {}
    try:
        with init_distributed("cpu", timeout=timedelta(seconds=60)) as ctx:
            results["ctx"] = (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device.type, ctx.backend, ctx.is_main)
            results["collectives"] = collectives(ctx, folder)
            results["initialized_inside"] = dist.is_initialized()
            raise _Done
    except _Done:
        results["initialized_after_error"] = dist.is_initialized()
    torch.save(results, folder / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, spawn_ranks):
    """What each of 2 spawned gloo processes computed."""
    return spawn_ranks(worker, tmp_path_factory.mktemp("ranks"), WORLD)


def test_context_and_cleanup_on_error(ranks):
    assert [r["ctx"] for r in ranks] == [(0, 2, 0, "cpu", "gloo", True), (1, 2, 1, "cpu", "gloo", False)]
    assert all(r["initialized_inside"] and not r["initialized_after_error"] for r in ranks)


def test_gather_rows_unequal_shards_in_rank_order(ranks):
    full = np.concatenate([np.arange(15, dtype=np.float32).reshape(5, 3),
                           np.arange(100, 106, dtype=np.float32).reshape(2, 3)])
    first, second = (r["collectives"] for r in ranks)
    assert isinstance(first["to_0"], np.ndarray) and second["to_0"] is None
    np.testing.assert_array_equal(first["to_0"], full)
    for out in (first, second):
        assert isinstance(out["to_all_chunked"], torch.Tensor)
        np.testing.assert_array_equal(out["to_all_chunked"].numpy(), full)
        assert out["labels"].tolist() == [0, 1, 2, 3, 4, 10, 11]
    assert first["to_1_with_empty"] is None
    np.testing.assert_array_equal(second["to_1_with_empty"], full[:5])
    for out in (first, second):
        assert "share dtype and trailing shape" in out["mismatch"] and "(3,)" in out["mismatch"]


def test_collectives_and_main_process_helpers(ranks):
    first, second = (r["collectives"] for r in ranks)
    for out in (first, second):
        assert out["any_on_rank_1"] is True and out["any_none"] is False
        assert out["mean"] == {"images": 4.5, "loss": 0.5}
        assert out["broadcast"] == {"from": 0}
        assert out["main_first_saw"] == "written by rank 0"
    assert (first["main_only"], second["main_only"]) == ("ran", None)
    assert (first["shard"], second["shard"]) == (range(0, 3), range(3, 7))


def test_read_launch_env():
    assert read_launch_env({}) is None
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    assert read_launch_env(env) == LaunchEnv(rank=3, world_size=4, local_rank=1)
    assert read_launch_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) == LaunchEnv(0, 1, 0)


@pytest.mark.parametrize("env, problems", [
    ({"RANK": "x", "WORLD_SIZE": "2"}, ["LOCAL_RANK is not set", "RANK='x' is not an integer"]),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, ["got RANK=2 WORLD_SIZE=2 LOCAL_RANK=0"]),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, ["MASTER_ADDR is not set", "MASTER_PORT is not set"]),
])
def test_read_launch_env_reports_every_problem(env, problems):
    with pytest.raises(ValueError, match="torchrun") as error:
        read_launch_env(env)
    assert all(problem in str(error.value) for problem in problems)


def test_single_process_context_is_a_no_op(no_launch):
    rows = np.ones((3, 2), dtype=np.float32)
    with init_distributed("cpu") as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.backend, ctx.device) == (0, 1, True, None,
                                                                                  torch.device("cpu"))
        assert not dist.is_initialized()
        assert ctx.gather_rows(rows) is rows and ctx.gather_rows(rows, dst=None) is rows
        assert ctx.any_rank(True) and not ctx.any_rank(False)
        assert ctx.mean({"loss": 2.0}) == {"loss": 2.0} and ctx.broadcast([1]) == [1]
        assert ctx.shard(5) == range(5) and ctx.main_only(lambda: 1) == 1
        ctx.barrier()
        with ctx.main_first():
            pass
        with pytest.raises(ValueError, match="dst"):
            ctx.gather_rows(rows, dst=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without a GPU")
def test_gpu_device_without_gpu_is_an_error(no_launch):
    with pytest.raises(ValueError, match="asks for a GPU but no CUDA GPU is available"):
        with init_distributed("cuda"):
            pass


def test_torchrun_launch(tmp_path, torchrun_env):
    """``python -m torch.distributed.run --nproc_per_node=2 -m MODULE`` reaches init_distributed in both ranks."""
    (tmp_path / "ddp_probe.py").write_text(
        "import json, sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from prodrec.train import init_distributed\n"
        "with init_distributed('cpu') as ctx:\n"
        "    rows = ctx.gather_rows(np.full((ctx.rank + 1, 2), ctx.rank, dtype=np.float32), dst=None)\n"
        "    Path(sys.argv[1], f'rank{ctx.rank}.json').write_text(json.dumps(\n"
        "        {'world': ctx.world_size, 'backend': ctx.backend, 'rows': rows.tolist()}))\n")
    env = {**torchrun_env, "PYTHONPATH": os.pathsep.join([str(tmp_path), torchrun_env["PYTHONPATH"]])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               "-m", "ddp_probe", str(tmp_path)]
    launched = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    # The ranks' own results decide: the launcher has been seen to abort at teardown after both ranks finished.
    written = sorted(tmp_path.glob("rank*.json"))
    assert len(written) == WORLD, f"exit {launched.returncode}\n{launched.stderr[-3000:]}"
    for path in written:
        assert json.loads(path.read_text()) == {"world": 2, "backend": "gloo", "rows": [[0, 0], [1, 1], [1, 1]]}
