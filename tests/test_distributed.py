"""A generated module trains under PyTorch's own distributed engine: the transformer of
`gallery/transformer.ncd`, compiled at small sizes, runs under `DistributedDataParallel` with
the gloo backend in two processes on this machine. DDP must average the gradients of the two
ranks exactly as a single process computes that average, and SGD steps must keep the two
replicas equal to each other and to single-process training on both ranks' batches. The same
processes then shard the module with FSDP (`fully_shard`) and check one step likewise."""

from __future__ import annotations

import copy
import os
import socket
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

import ncd

TRANSFORMER = Path(__file__).resolve().parent.parent / "gallery" / "transformer.ncd"
SIZES = {"m": 16, "h": 2}  # k = m / h = 8, f = 4 m = 64; six layers, as in the gallery
WORLD = 2
BATCH, LENGTH = 3, 5  # each rank's batch: three sequences of five positions
STEPS = 3
LR = 0.1


def build(seed: int) -> torch.nn.Module:
    """The generated module, built in the calling process from the .ncd file (a spawned
    process compiles it itself: nothing generated is pickled), its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return ncd.load(TRANSFORMER, sizes=SIZES).to_torch("transformer")


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s inputs and targets at step `step`: different on every rank and step, and
    the same whichever process makes them."""
    generator = torch.Generator().manual_seed(1000 * step + rank)
    X = torch.randn(BATCH, LENGTH, SIZES["m"], generator=generator)
    return X, torch.randn(BATCH, LENGTH, SIZES["m"], generator=generator)


def loss(module: torch.nn.Module, X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    return ((module(X) - T) ** 2).mean()


def gradients(module: torch.nn.Module, X: torch.Tensor, T: torch.Tensor) -> dict[str, torch.Tensor]:
    """One process's gradients of its own loss, without DDP."""
    module.zero_grad()
    loss(module, X, T).backward()
    return {name: p.grad.detach().clone() for name, p in module.named_parameters()
            if p.grad is not None}


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of `tensor`, in rank order."""
    every = [torch.empty_like(tensor) for _ in range(WORLD)]
    dist.all_gather(every, tensor)
    return every


def worker(rank: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo talks over loopback, not the hostname
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        # Each rank starts from its own random weights: DDP must broadcast rank 0's.
        replica = build(seed=rank)
        own = flat(replica)
        model = DistributedDataParallel(replica)
        start = flat(replica)
        initial = gathered(own)
        assert not torch.equal(initial[0], initial[1])
        for replica_start in gathered(start):
            assert torch.equal(replica_start, initial[0]), "every replica starts as rank 0"
        reference = copy.deepcopy(replica)  # a plain copy for single-process computations

        # One backward pass: each rank's gradient is the mean of the ranks' own gradients.
        local = [gradients(reference, *batch(r, 0)) for r in range(WORLD)]
        model.zero_grad()
        loss(model, *batch(rank, 0)).backward()
        parameters = dict(replica.named_parameters())
        assert set(local[0]) == set(parameters), "every parameter has a gradient"
        assert any(not torch.allclose(local[0][n], local[1][n]) for n in parameters), \
            "the two ranks' batches give different gradients"
        for name, parameter in parameters.items():
            assert parameter.grad is not None, name
            average = (local[0][name] + local[1][name]) / WORLD
            torch.testing.assert_close(parameter.grad, average, atol=1e-6, rtol=1e-5,
                                       msg=lambda m, n=name: f"rank {rank}, {n}: {m}")
        assert not all(torch.allclose(parameters[n].grad, local[rank][n]) for n in parameters)

        # A few SGD steps: the replicas stay equal, and equal to single-process training
        # on both batches with the averaged gradient.
        optimiser = torch.optim.SGD(model.parameters(), lr=LR)
        for step in range(STEPS):
            optimiser.zero_grad()
            loss(model, *batch(rank, step)).backward()
            optimiser.step()
            local = [gradients(reference, *batch(r, step)) for r in range(WORLD)]
            with torch.no_grad():
                for name, parameter in reference.named_parameters():
                    parameter -= LR * (local[0][name] + local[1][name]) / WORLD
            mine = flat(replica)
            for other in gathered(mine):
                assert torch.equal(other, mine), f"step {step}: the replicas differ"
            torch.testing.assert_close(mine, flat(reference), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(flat(replica), start), "training moved the weights"
        fsdp_step(rank)
    finally:
        dist.destroy_process_group()


def fsdp_step(rank: int) -> None:
    """One SGD step with the module sharded by FSDP: each rank holds half of every sharded
    parameter, and the step gives what single-process training on both batches gives."""
    sharded = build(seed=0)  # FSDP does not broadcast: every rank starts from the same seed
    reference = copy.deepcopy(sharded)
    mesh = init_device_mesh("cpu", (WORLD,))
    # The copies of the repeated block are an nn.ModuleList; the generated loop reads each
    # copy's parameters and calls its submodules, so the submodules are the units to shard.
    for layer in sharded.transformer_layer:
        fully_shard(layer.attention, mesh=mesh)
        fully_shard(layer.feedforward, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    parameters = list(sharded.parameters())
    assert all(isinstance(p, DTensor) for p in parameters)
    assert sum(p.to_local().numel() for p in parameters) * WORLD == \
        sum(p.numel() for p in reference.parameters())
    optimiser = torch.optim.SGD(parameters, lr=LR)
    loss(sharded, *batch(rank, STEPS)).backward()
    optimiser.step()
    local = [gradients(reference, *batch(r, STEPS)) for r in range(WORLD)]
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter -= LR * (local[0][name] + local[1][name]) / WORLD
    full = {name: value.full_tensor() for name, value in sharded.state_dict().items()}
    expected = reference.state_dict()
    assert full.keys() == expected.keys()
    for name, value in full.items():
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-5,
                                   msg=lambda m, n=name: f"FSDP, rank {rank}, {n}: {m}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_generated_transformer_trains_under_ddp_and_fsdp_in_two_processes() -> None:
    assert dist.is_available() and dist.is_gloo_available()
    mp.spawn(worker, args=(free_port(),), nprocs=WORLD, join=True)
