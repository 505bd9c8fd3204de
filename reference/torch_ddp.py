"""The PyTorch reference as real data parallelism: ``DistributedDataParallel`` over gloo (CPU).

    torchrun --nproc-per-node=8 -m reference.torch_ddp <flags of python -m train>
    python -m reference.torch_ddp --nproc=8 <flags>      # the same, via torch.multiprocessing

Each of the ``N`` processes (ranks) builds what ``reference.torch_train`` builds (the same
transformers model with our initial weights, ``--optimizer``, scheduler, groups; see
:func:`reference.torch_train.setup`), takes **its slice of the global batch of step t**
(``train.data.Batcher``, a pure function of ``(seed, t)``: rows ``[r k, (r + 1) k)`` of the
``D`` device rows, ``k = D / N``, where ``D`` is ``--devices`` (default ``N``)), runs
``--grad-accum`` forward/backward passes (``model.no_sync()`` on all but the last, each loss
divided by the number of micro-batches), lets DDP average the gradients across ranks (allreduce),
clips (``clip_grad_norm_``) and steps the optimizer and scheduler on every rank. The logged loss
is the mean of the ranks' losses (``all_reduce``); rank 0 writes ``<metrics dir>/metrics.jsonl``
(``step``, ``loss``, ``lr``, ``grad_norm``) and prints the log. At the end every rank's weights
are compared (they must be identical: that is what DDP guarantees).

The math is that of the single-process reference (one forward over the whole global batch):
only the reduction order of the gradient differs (per-rank sums, then an allreduce), so the
losses agree to float32 rounding (``tests/train/test_alignment.py``). Never imported by the
packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from train.config import TrainConfig

__all__ = ["main", "run", "worker"]


def _mirrored_devices(cfg: TrainConfig, world: int) -> int:
    D = cfg.devices * (cfg.num_processes or 1) if cfg.devices is not None else world
    if D % world:
        raise ValueError(f"--devices={cfg.devices} is invalid: the {D} device rows of the global "
                         f"batch must split evenly over {world} DDP processes")
    return D


def worker(rank: int, world: int, cfg: TrainConfig, workdir: str,
           verbose: bool = True) -> list[dict[str, float]]:
    """One DDP rank (the process group must not exist yet; env:// rendezvous). Returns the
    metric records (the same on every rank)."""
    from torch.nn.parallel import DistributedDataParallel

    from reference.torch_train import setup

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        D = _mirrored_devices(cfg, world)
        su = setup(cfg, devices=D)
        cfg, opt, sched, all_params = su["cfg"], su["opt"], su["sched"], su["all_params"]
        model = DistributedDataParallel(su["model"])
        A, B, T, k = cfg.grad_accum, cfg.batch_size, cfg.seq_len, D // world
        path = os.path.join(cfg.metrics_dir or os.path.join(os.path.abspath(workdir), "metrics"),
                            "metrics.jsonl")
        primary = rank == 0
        if primary:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        if primary and verbose:
            print(f"reference (DDP): {world} processes (gloo, CPU), "
                  f"{type(su['model']).__name__} (eager, float32), {su['desc']}; global batch "
                  f"{D} x {A} x {B} x {T}, {k} device row(s) per rank; "
                  f"{type(opt).__name__}, {type(sched).__name__}; metrics {path}", flush=True)
        records = []
        t0 = time.perf_counter()
        with open(path, "w") if primary else contextlib.nullcontext() as f:
            for step in range(cfg.steps):
                local = su["batcher"].batch(step).reshape(D, A, B, T + 1)[rank * k:(rank + 1) * k]
                lr = float(opt.param_groups[0]["lr"])
                opt.zero_grad(set_to_none=True)
                loss = torch.zeros(())
                for a in range(A):
                    tokens = torch.from_numpy(local[:, a].reshape(-1, T + 1).astype(np.int64))
                    x, y = tokens[:, :-1], tokens[:, 1:]
                    sync = contextlib.nullcontext() if a == A - 1 else model.no_sync()
                    with sync:
                        logits = model(input_ids=x).logits.float()
                        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                              y.reshape(-1), reduction="none")
                        # per device row: mean over its tokens; mean over this rank's rows
                        part = nll.view(k, B * T).mean(-1).mean() / A
                        part.backward()  # DDP: allreduce-mean of the gradient on the last
                    loss += part.detach()
                dist.all_reduce(loss)  # sum over ranks -> the global mean below
                loss /= world
                if cfg.clip_norm > 0:
                    gnorm = torch.nn.utils.clip_grad_norm_(all_params, cfg.clip_norm)
                else:
                    gnorm = torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(p.grad) for p in all_params]))
                opt.step()
                sched.step()
                rec = {"step": step, "loss": float(loss), "lr": lr, "grad_norm": float(gnorm)}
                records.append(rec)
                if primary:
                    f.write(json.dumps(rec) + "\n")
                    if verbose and ((step + 1) % cfg.log_interval == 0 or step + 1 == cfg.steps):
                        print(f"step {step:6d}/{cfg.steps} | loss {rec['loss']:.6f} | "
                              f"lr {lr:.6e} | grad norm {rec['grad_norm']:.4f} | "
                              f"{time.perf_counter() - t0:.1f}s", flush=True)
        # DDP keeps the replicas identical: check it, bit for bit
        flat = torch.cat([p.detach().reshape(-1) for p in all_params])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            raise RuntimeError("DDP replicas diverged")
        if primary and verbose:
            print(f"reference (DDP): {world} replicas identical after {cfg.steps} steps",
                  flush=True)
        return records
    finally:
        dist.destroy_process_group()


def _spawned(rank: int, world: int, argv: list[str], port: int, verbose: bool) -> None:
    from train.__main__ import parse_config

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cfg, workdir = parse_config(argv)
    worker(rank, world, cfg, workdir, verbose)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv: Sequence[str], nproc: int, verbose: bool = True) -> None:
    """Spawn ``nproc`` DDP processes (``torch.multiprocessing``) on the flags ``argv``."""
    import torch.multiprocessing as mp

    from train.__main__ import parse_config

    cfg, _ = parse_config(list(argv))  # a bad flag fails here, once, before any process starts
    _mirrored_devices(cfg, nproc)
    mp.spawn(_spawned, args=(nproc, list(argv), _free_port(), verbose), nprocs=nproc, join=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set): this process is one rank. Otherwise
    ``--nproc=N`` (default: ``--devices``, else 1) processes are spawned."""
    from train.__main__ import parse_config

    args = list(sys.argv[1:] if argv is None else argv)
    nproc = None
    for a in list(args):
        if a.startswith("--nproc="):
            nproc = int(a.split("=", 1)[1])
            args.remove(a)
    try:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            cfg, workdir = parse_config(args)
            worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), cfg, workdir)
        else:
            cfg, _ = parse_config(args)
            run(args, nproc or cfg.devices or 1)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

