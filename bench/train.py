"""Benchmark the refiner: refine stamps/s and training images/s, next to plain baselines.

    python bench/train.py [--device auto|cpu|cuda] [--size 64] [--batch 256] [--repeat 5]

Everything is measured in one process, interleaved, so the ratios hold on a shared machine:

- ``matmul``: a plain fp32 (N x N) @ (N x N) matmul (N = 4096 on CPU, 8192 on CUDA), GFLOP/s;
- ``refine_plain``: the default R eager, NCHW, fp32, autograd on (no inference mode);
- ``refine``: what ``refinegan refine`` runs (CPU: jit-frozen MKLDNN R + moment projection in
  inference mode, channels_last; CUDA: bf16 autocast, channels_last, optional torch.compile),
  stamps resident on the device;
- ``train_plain`` / ``train``: adversarial steps (k_g R updates + k_d D updates, history buffer) of
  the default config, eager fp32 NCHW vs the default device path (CUDA: bf16 + channels_last
  [+ compile]); images/s counts the sim stamps R trains on.

FLOPs per stamp are R's convolutions (``Refiner.flops_per_pixel() * H * W``). Prints one JSON
object and a Markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from refinegan.config import load_config
from refinegan.refiner.model import build_refiner
from refinegan.refiner.refine import fast_refiner
from refinegan.refiner.settings import TrainSettings
from refinegan.refiner.trainer import Trainer


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn, device, repeat):
    fn()  # warm-up (kernel selection, jit)
    _sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def bench_matmul(device, repeat):
    n = 8192 if device.type == "cuda" else 4096
    a = torch.randn(n, n, device=device)
    t = _best(lambda: a @ a, device, repeat)
    return 2 * n**3 / t / 1e9


def bench_refine(device, size, batch, repeat, arch, compile_=False):
    module = build_refiner(arch, seed=1).to(device)
    z = torch.randn(batch, 1, size, size, device=device)
    flop = module.refiner.flops_per_pixel() * size * size
    plain_net = module.refiner

    def plain():
        return module.project(z, plain_net(z))  # eager, NCHW, fp32, autograd on

    zc = z.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        module.to(memory_format=torch.channels_last)
        run = torch.compile(module) if compile_ else module
    else:
        run = fast_refiner(module, device, (size, size))

    @torch.inference_mode()
    def fast():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return run(zc)

    out = {}
    for name, fn in (("refine_plain", plain), ("refine", fast), ("refine_plain", plain), ("refine", fast)):
        t = _best(fn, device, repeat)
        out[name] = max(out.get(name, 0.0), batch / t)
    return {k: {"stamps_per_s": v, "gflops": v * flop / 1e9} for k, v in out.items()}, flop


def bench_train(device, size, steps, batch, plain):
    over = [f"stamp.size={size}", f"train.batch_size={batch}", "train.pretrain_r_steps=0",
            "train.pretrain_d_steps=0", f"train.device={device.type}"]
    if plain:
        over += ["train.cuda_bf16=false", "train.cuda_channels_last=false"]
    s = TrainSettings.from_config(load_config(None, over))
    t = Trainer(s, 1, (size, size), device)
    g = torch.Generator(device="cpu").manual_seed(0)
    sim = torch.asinh(torch.randn(4 * batch, 1, size, size, generator=g)).to(device)
    real = torch.asinh(torch.randn(4 * batch, 1, size, size, generator=g)).to(device)
    if device.type == "cuda" and not plain:
        sim, real = (x.contiguous(memory_format=torch.channels_last) for x in (sim, real))
    for _ in range(3):
        t.one_step(sim, real)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        t.one_step(sim, real)
    _sync(device)
    return steps * batch * s.k_g / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--size", type=int, default=64, help="stamp side in pixels")
    p.add_argument("--batch", type=int, default=None, help="refine batch (default 256 CPU, 8192 CUDA)")
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="CUDA: torch.compile the refiner")
    a = p.parse_args(argv)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    batch = a.batch or (8192 if device.type == "cuda" else 256)
    steps = a.train_steps or (50 if device.type == "cuda" else 5)
    cfg = load_config(None, [])["train"]
    arch = {"channels": cfg["refiner_channels"], "blocks": cfg["refiner_blocks"],
            "moment_weights_px": cfg["moment_weights_px"], "moment_order": cfg["moment_order"]}
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
           f"cpu ({torch.get_num_threads()} threads)", "size": a.size, "arch": arch,
           "torch": torch.__version__}
    res["matmul_gflops"] = bench_matmul(device, a.repeat)
    ref, flop = bench_refine(device, a.size, batch, a.repeat, arch, a.compile)
    res["flop_per_stamp"] = flop
    res |= ref
    res["matmul_gflops_after"] = bench_matmul(device, a.repeat)
    res["train_plain_images_per_s"] = bench_train(device, a.size, steps, a.train_batch, plain=True)
    res["train_images_per_s"] = bench_train(device, a.size, steps, a.train_batch, plain=False)
    mm = np.mean([res["matmul_gflops"], res["matmul_gflops_after"]])
    res["refine_vs_matmul"] = res["refine"]["gflops"] / mm
    res["refine_vs_plain"] = res["refine"]["stamps_per_s"] / res["refine_plain"]["stamps_per_s"]
    print(json.dumps(res, indent=1))
    print(f"\n| device | matmul GFLOP/s | refine plain stamps/s | refine stamps/s (GFLOP/s) | "
          f"refine / matmul | refine / plain | train plain img/s | train img/s |\n|---|---|---|---|---|---|---|---|\n"
          f"| {res['device']} | {mm:.0f} | {res['refine_plain']['stamps_per_s']:.0f} | "
          f"{res['refine']['stamps_per_s']:.0f} ({res['refine']['gflops']:.0f}) | "
          f"{res['refine_vs_matmul']:.2f} | {res['refine_vs_plain']:.2f} | "
          f"{res['train_plain_images_per_s']:.0f} | {res['train_images_per_s']:.0f} |")
    return res


if __name__ == "__main__":
    main()
