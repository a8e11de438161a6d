#!/usr/bin/env python3
"""PyTorch peer of bench_fused_loss_cuda: the multi-student distillation loss composed from
PyTorch ops (cross_entropy, log_softmax, kl terms with temperature, per-sample weights, mean)
and its backward to the K students' logits, timed on the GPU with CUDA events exactly like the
C++ benchmark (medians over batches of back-to-back calls after warm-up, inputs rotated across
copies so the L2 cache does not flatter small shapes).

Usage: torch_fused_loss_peer.py [--quick] [--json PATH]
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F

TAU = 2.0


def make_set(k, b, v, gen):
    dev = "cuda"
    logits = [((torch.rand(b, v, generator=gen, device=dev) * 6 - 3)).requires_grad_(True)
              for _ in range(k)]
    teacher = torch.rand(b, v, generator=gen, device=dev) * 6 - 3
    qt = torch.softmax(teacher / TAU, dim=1)
    lqt = torch.log_softmax(teacher / TAU, dim=1)
    labels = torch.randint(0, v, (b,), generator=gen, device=dev)
    alpha = torch.rand(k, b, generator=gen, device=dev)
    beta = torch.rand(k, b, generator=gen, device=dev)
    return logits, qt, lqt, labels, alpha, beta


def loss_and_grad(logits, qt, lqt, labels, alpha, beta):
    """sum_k mean_i(alpha_ki ce_ki + tau^2 beta_ki kl_ki) and d/dz_k, as DESIGN.md section 3."""
    total = 0.0
    for k, z in enumerate(logits):
        ce = F.cross_entropy(z, labels, reduction="none")
        kl = (qt * (lqt - F.log_softmax(z / TAU, dim=1))).sum(dim=1)
        total = total + (alpha[k] * ce + TAU * TAU * beta[k] * kl).mean()
    return torch.autograd.grad(total, logits)


def median_us(fn, batches, per_batch):
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    for i in range(max(3, per_batch // 4)):
        fn(i)
    times = []
    call = 0
    for _ in range(batches):
        start.record()
        for _ in range(per_batch):
            fn(call)
            call += 1
        stop.record()
        stop.synchronize()
        times.append(1e3 * start.elapsed_time(stop) / per_batch)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        return 77
    batches = 7 if args.quick else 21
    gen = torch.Generator(device="cuda").manual_seed(0)
    results = []
    for k, b, v, copies, per_batch in [(5, 400, 100, 32, 50), (1, 16384, 32768, 1, 3)]:
        sets = [make_set(k, b, v, gen) for _ in range(copies)]
        us = median_us(lambda i: loss_and_grad(*sets[i % copies]), batches, per_batch)
        results.append({"name": "torch_distill_loss_fwd_bwd", "shape": f"B={b} V={v} K={k}",
                        "median_us": us, "bound_bytes": 4.0 * b * v * (1 + 2 * k)})
        del sets
        torch.cuda.empty_cache()
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "tau": TAU,
           "results": results}
    text = json.dumps(out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    print(f"\n{out['device']}, PyTorch {torch.__version__}")
    print(f"{'op':<28} {'shape':<24} {'median us':>10}")
    for r in results:
        print(f"{r['name']:<28} {r['shape']:<24} {r['median_us']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
