#!/usr/bin/env python3
"""The PyTorch peer of bench_mcdistil_step: the same MC-Distil iteration written the way the
released MC-Distil code does it, eager mode, cudnn.benchmark on, the meta-gradient as the
create_graph double backward through a differentiable SGD lookahead (functional_call), then
the normal step with the C-Net's weights detached. Also a KD iteration (no C-Net) as the
baseline of the overhead, and optionally the plain iterations with torch.compile'd models.

Runs on CUDA when a GPU is present (CUDA events, torch.cuda.max_memory_allocated), otherwise
on the CPU (a functional check of the script; Debian's PyTorch 1.13 is enough there).
Same arguments and JSON keys as bench_mcdistil_step; prints one JSON object, then a table.

  python3 torch_mcdistil_peer.py                       # the reference configuration
  python3 torch_mcdistil_peer.py --batch 32 --teacher resnet10_s --students resnet10_xxxs \
      resnet10_xxs --cnet resnet10_xxs --interval 4 --classes 10    # a quick CPU check
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_cpu_peer import FAMILY, ResNet  # noqa: E402  (the same architectures as ours)

try:  # PyTorch 2.x
    from torch.func import functional_call
except ImportError:  # PyTorch 1.13
    from torch.nn.utils.stateless import functional_call


class CNet(nn.Module):
    """A headless ResNet backbone and a linear head with a sigmoid: columns 2k, 2k + 1 are
    student k's alpha and beta (our "image" input and "sigmoid" head)."""

    def __init__(self, arch, channels, num_students):
        super().__init__()
        widths, blocks = FAMILY[arch]
        self.backbone = ResNet(widths, blocks, channels, classes=1)
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(widths[3], 2 * num_students)

    def forward(self, x):
        return torch.sigmoid(self.head(self.backbone(x)))


def distill_loss(z, y, teacher_logits, alpha, beta, tau):
    ce = F.cross_entropy(z, y, reduction="none")
    log_qt = F.log_softmax(teacher_logits / tau, dim=1)
    kl = (log_qt.exp() * (log_qt - F.log_softmax(z / tau, dim=1))).sum(1)
    return (alpha * ce + tau**2 * beta * kl).mean()


def sgd_lookahead(p, g, buf, lr, momentum, weight_decay):
    d = g + weight_decay * p
    b = d if buf is None else buf * momentum + d
    return p - lr * b


class Peer:
    def __init__(self, args, device, mcdistil, compiled):
        torch.manual_seed(0)
        c, k = args.channels, len(args.students)
        self.args, self.device, self.mcdistil = args, device, mcdistil
        self.teacher = ResNet(*FAMILY[args.teacher], c, args.classes).to(device).eval()
        self.students = [ResNet(*FAMILY[a], c, args.classes).to(device).train() for a in args.students]
        self.opts = [torch.optim.SGD(s.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
                     for s in self.students]
        self.cnet = CNet(args.cnet, c, k).to(device).train()
        self.cnet_opt = torch.optim.Adam(self.cnet.parameters(), lr=1e-3)
        self.forward_teacher = torch.compile(self.teacher) if compiled else self.teacher
        self.forward_students = [torch.compile(s) if compiled else s for s in self.students]
        shape = (args.batch, c, args.image, args.image)
        # Several batches in rotation so that caches do not flatter the timings.
        self.batches = [(torch.randn(shape, device=device),
                         torch.randint(0, args.classes, (args.batch,), device=device)) for _ in range(4)]

    def meta_step(self, x, y, xv, yv, t_logits):
        a = self.args
        w = self.cnet(x)
        meta = 0.0
        for k, (s, opt) in enumerate(zip(self.students, self.opts)):
            params = dict(s.named_parameters())
            buffers = {n: b.clone() for n, b in s.named_buffers()}
            z = functional_call(s, {**params, **buffers}, (x,))
            loss = distill_loss(z, y, t_logits, w[:, 2 * k], w[:, 2 * k + 1], a.tau)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            ahead = {}
            for (n, p), g in zip(params.items(), grads):
                buf = opt.state.get(p, {}).get("momentum_buffer")
                ahead[n] = sgd_lookahead(p, g, buf, 0.05, 0.9, 5e-4)
            zv = functional_call(s, {**ahead, **buffers}, (xv,))
            meta = meta + F.cross_entropy(zv, yv)
        self.cnet_opt.zero_grad(set_to_none=True)
        meta.backward()
        self.cnet_opt.step()

    def iteration(self, it):
        a = self.args
        x, y = self.batches[it % len(self.batches)]
        xv, yv = self.batches[(it + 1) % len(self.batches)]
        with torch.no_grad():
            t_logits = self.forward_teacher(x)
        k = len(self.students)
        if self.mcdistil:
            if it % a.interval == 0:
                self.meta_step(x, y, xv, yv, t_logits)
            with torch.no_grad():
                w = self.cnet(x)
        else:
            w = torch.full((a.batch, 2 * k), 0.5, device=self.device)
        for j, (s, opt) in enumerate(zip(self.forward_students, self.opts)):
            loss = distill_loss(s(x), y, t_logits, w[:, 2 * j], w[:, 2 * j + 1], a.tau)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def timed(peer, its, device):
    """Seconds per iteration for each iteration index in `its`."""
    out = []
    for it in its:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            peer.iteration(it)
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            peer.iteration(it)
            out.append(time.perf_counter() - t0)
    return out


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else 0.0


def measure(args, device, mcdistil, compiled=False):
    peer = Peer(args, device, mcdistil, compiled)
    # Warm-up, untimed: plain iterations, then one with the meta step, so that compilation and
    # cudnn.benchmark's algorithm search for every shape (the double backward's too) are done.
    for it in range(1, 4 if compiled else 3):
        peer.iteration(it)
    if mcdistil:
        peer.iteration(args.interval)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    n = args.iterations or 2 * args.interval + 1
    its = list(range(1, n + 1))
    times = timed(peer, its, device)
    plain = [t for it, t in zip(its, times) if not (mcdistil and it % args.interval == 0)]
    meta = [t for it, t in zip(its, times) if mcdistil and it % args.interval == 0]
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return median(plain), median(meta), peak


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="resnet10")
    p.add_argument("--students", nargs="+",
                   default=["resnet10_xxxs", "resnet10_xxs", "resnet10_xs", "resnet10_s", "resnet10_m"])
    p.add_argument("--cnet", default="resnet10_s")
    p.add_argument("--batch", type=int, default=400)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--interval", type=int, default=20)
    p.add_argument("--iterations", type=int, default=0, help="timed iterations (0: 2L + 1)")
    p.add_argument("--tau", type=float, default=4.0)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd plain iterations")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tf32", choices=["default", "on", "off"], default="default",
                   help="TF32 in convolutions and matmuls: PyTorch's defaults (cuDNN on, "
                        "matmul off), both on, or both off (IEEE float32, as our default)")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    if args.tf32 != "default":
        torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"

    kd, _, kd_peak = measure(args, device, mcdistil=False)
    plain, meta, peak = measure(args, device, mcdistil=True)
    L = args.interval
    amortised = ((L - 1) * plain + meta) / L
    result = {
        "bench": "mcdistil_step_torch", "device": str(device), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "teacher": args.teacher, "students": args.students, "cnet": args.cnet, "batch": args.batch,
        "input": f"{args.channels}x{args.image}x{args.image}", "classes": args.classes,
        "interval": L, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "kd_iteration_ms": kd * 1e3, "plain_iteration_ms": plain * 1e3,
        "meta_iteration_ms": meta * 1e3, "amortised_iteration_ms": amortised * 1e3,
        "meta_step_in_plain_iterations": (meta - plain) / plain,
        "amortised_overhead_over_kd": amortised / kd - 1.0,
        "kd_peak_bytes": kd_peak, "mcdistil_peak_bytes": peak,
        "peak_bytes_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process max RSS",
    }
    if args.compile:
        try:
            cplain, _, _ = measure(args, device, mcdistil=False, compiled=True)
            result["compiled_kd_iteration_ms"] = cplain * 1e3
        except Exception as e:  # torch.compile is optional: report why it did not run
            result["compiled_error"] = f"{type(e).__name__}: {e}"[:300]
    print(json.dumps(result))
    print(f"\n{'MC-Distil iteration (PyTorch ' + str(device) + ')':<34} {'ms':>10}")
    for label, key in (("KD iteration", "kd_iteration_ms"), ("plain (C-Net weights)", "plain_iteration_ms"),
                       ("with meta step", "meta_iteration_ms"), (f"amortised, L = {L}", "amortised_iteration_ms"),
                       ("KD iteration, torch.compile", "compiled_kd_iteration_ms")):
        if key in result:
            print(f"{label:<34} {result[key]:>10.1f}")
    print(f"meta step = {result['meta_step_in_plain_iterations']:.2f} plain iterations; "
          f"amortised overhead over KD {100 * result['amortised_overhead_over_kd']:+.1f}%")


if __name__ == "__main__":
    main()
