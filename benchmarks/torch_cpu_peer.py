#!/usr/bin/python3
"""PyTorch peer for bench_train_step: times the same ResNet training steps on the CPU with
PyTorch (Debian's python3-torch) and, in the same run, our bench_train_step binary, then
prints one JSON object per configuration and a table of time ratios (ours / PyTorch).

Usage: torch_cpu_peer.py BUILD_DIR/benchmarks/bench_train_step [--steps 5] [--batch 128]
PyTorch is a benchmark peer only; the engine never depends on it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FAMILY = {
    "resnet10_xxxs": ([4, 8, 8, 16], [1, 1, 1, 1]),
    "resnet10_xxs": ([8, 8, 16, 16], [1, 1, 1, 1]),
    "resnet10_xs": ([8, 16, 16, 32], [1, 1, 1, 1]),
    "resnet10_s": ([8, 16, 32, 64], [1, 1, 1, 1]),
    "resnet10_m": ([16, 32, 64, 128], [1, 1, 1, 1]),
    "resnet10_l": ([32, 64, 128, 256], [1, 1, 1, 1]),
    "resnet10": ([64, 128, 256, 512], [1, 1, 1, 1]),
    "resnet18": ([64, 128, 256, 512], [2, 2, 2, 2]),
}


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, widths, blocks, channels, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for stage, (w, n) in enumerate(zip(widths, blocks)):
            stage_blocks = []
            for b in range(n):
                stage_blocks.append(BasicBlock(cin, w, 2 if stage > 0 and b == 0 else 1))
                cin = w
            layers.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def time_torch(arch, c, h, w, batch, steps, classes):
    torch.manual_seed(0)
    widths, blocks = FAMILY[arch]
    model = ResNet(widths, blocks, c, classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, c, h, w)
    y = torch.randint(0, classes, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench_binary")
    ap.add_argument("--arch", nargs="+", default=["resnet10_s", "resnet10_m"])
    ap.add_argument("--input", nargs="+", default=["1x28x28", "3x32x32"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cmd = [args.bench_binary, "--batch", str(args.batch), "--steps", str(args.steps), "--classes",
           str(args.classes), "--threads", str(args.threads), "--arch", *args.arch, "--input", *args.input]
    ours = {}
    for line in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            ours[(r["arch"], r["input"])] = r

    rows = []
    for inp in args.input:
        c, h, w = (int(v) for v in inp.split("x"))
        for arch in args.arch:
            t = time_torch(arch, c, h, w, args.batch, args.steps, args.classes)
            o = ours[(arch, inp)]
            ratio = (o["ms_per_step"] / 1e3) / t
            rec = {"bench": "train_step_vs_torch", "arch": arch, "input": inp, "batch": args.batch,
                   "threads": args.threads, "torch_version": torch.__version__,
                   "torch_ms_per_step": t * 1e3, "ours_ms_per_step": o["ms_per_step"],
                   "ours_gflops": o["gflops"], "time_ratio_ours_over_torch": ratio}
            print(json.dumps(rec), flush=True)
            rows.append(rec)
    print(f"\n{'arch':<14} {'input':<9} {'torch ms':>9} {'ours ms':>9} {'ours/torch':>10}")
    for r in rows:
        print(f"{r['arch']:<14} {r['input']:<9} {r['torch_ms_per_step']:>9.1f} {r['ours_ms_per_step']:>9.1f} "
              f"{r['time_ratio_ours_over_torch']:>10.2f}")


if __name__ == "__main__":
    sys.exit(main())
