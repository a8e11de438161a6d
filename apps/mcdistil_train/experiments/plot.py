#!/usr/bin/env python3
"""Plots of an experiment run by run_experiment.py, from every
OUT/<dataset>/<grid tag>/seed<k>/metrics.jsonl (matplotlib, Agg backend):

  PLOTS/<dataset>/<grid tag>/accuracy.png      one panel per student: test accuracy (solid)
      and validation accuracy (dashed) against epoch for every method, mean over seeds with a
      band of one standard deviation; the teacher's test accuracy dotted when known.
  PLOTS/<dataset>/<grid tag>/cnet_weights.png  MC-Distil only, one column per student, alpha
      above beta: the distribution of the C-Net's weights in each epoch, as a heat map of the
      fraction of samples per bin when the records carry alpha_hist/beta_hist (20 bins of 0.05
      over [0, 1) and one for >= 1, summed over seeds), else the mean with a band of one
      within-epoch standard deviation (alpha_mean/alpha_std, averaged over seeds).

Usage: plot.py OUT_DIR [--out PLOTS_DIR]   (default PLOTS_DIR: OUT_DIR/plots)

Records of the teacher and of the warm start are not plotted; chain methods (takd, dgkd) run
one stage per student, so records are grouped by method and student architecture, not stage."""
import argparse
import json
import pathlib
import statistics
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
except ImportError:
    sys.exit("plot.py needs matplotlib: apt-get install python3-matplotlib")

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import results  # noqa: E402  (run directories and method order)

HIST_BINS = 21  # 20 bins of width 0.05 over [0, 1), then >= 1
WEIGHTS = ("alpha", "beta")


def read_records(path):
    """The records of one metrics.jsonl; a torn last line (a run killed mid-write) is dropped."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def student_records(records):
    """{(method, arch): {epoch: record}} for the distillation stages; the last record of an
    epoch wins (a resumed run may repeat the epoch it was interrupted in)."""
    out = {}
    for r in records:
        if r.get("role") != "student" or r.get("stage") == "warmstart":
            continue
        out.setdefault((r["method"], r["arch"]), {})[r["epoch"]] = r
    return out


def load_groups(out):
    """{(dataset, tag): {"runs": [{(method, arch): {epoch: record}}], "archs": [...],
    "methods": [...], "teacher": [test accuracies]}}"""
    groups = {}
    for dataset, tag, _seed, path in results.run_dirs(out):
        metrics = path / "metrics.jsonl"
        if not metrics.is_file():
            continue
        g = groups.setdefault((dataset, tag), {"runs": [], "archs": [], "methods": [], "teacher": []})
        by_key = student_records(read_records(metrics))
        g["runs"].append(by_key)
        for method, arch in sorted(by_key, key=lambda k: min(r.get("student", 0) for r in by_key[k].values())):
            if arch not in g["archs"]:
                g["archs"].append(arch)
            if method not in g["methods"]:
                g["methods"].append(method)
        summary = path / "summary.json"
        if summary.is_file():
            for m in results.load_json(summary).get("models", []):
                if m.get("role") == "teacher":
                    g["teacher"].append(m["test_acc_best"])
        g["methods"] = results.ordered_methods(g["methods"])
    return groups


def per_epoch(runs, method, arch, field):
    """epochs, means, stds of `field` over the seeds that recorded it."""
    values = {}
    for by_key in runs:
        for epoch, r in by_key.get((method, arch), {}).items():
            if r.get(field) is not None:
                values.setdefault(epoch, []).append(r[field])
    epochs = sorted(values)
    means = [statistics.mean(values[e]) for e in epochs]
    stds = [statistics.stdev(values[e]) if len(values[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


def band(ax, epochs, means, stds, scale, alpha, **line):
    y = [m * scale for m in means]
    ax.plot(epochs, y, **line)
    lo = [(m - s) * scale for m, s in zip(means, stds)]
    hi = [(m + s) * scale for m, s in zip(means, stds)]
    ax.fill_between(epochs, lo, hi, color=line.get("color"), alpha=alpha, linewidth=0)


def plot_accuracy(g, title, path):
    archs = g["archs"]
    fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 3.8), squeeze=False)
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(g["methods"])}
    for ax, arch in zip(axes[0], archs):
        for method in g["methods"]:
            for field, style, shade in (("test_acc", "-", 0.2), ("val_acc", "--", 0.08)):
                epochs, means, stds = per_epoch(g["runs"], method, arch, field)
                if epochs:
                    label = method if field == "test_acc" else None
                    band(ax, epochs, means, stds, 100, shade, color=colors[method],
                         linestyle=style, marker="o", markersize=3, label=label)
        if g["teacher"]:
            ax.axhline(100 * statistics.mean(g["teacher"]), color="grey", linestyle=":",
                       label="teacher (test)")
        ax.set_title(arch)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="test solid, validation dashed", title_fontsize=7)
    fig.suptitle(f"{title}: accuracy, mean ± std over {len(g['runs'])} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def histograms(runs, arch, weight):
    """{epoch: counts summed over seeds}, or None when a record lacks the histogram."""
    out = {}
    for by_key in runs:
        for epoch, r in by_key.get(("mcdistil", arch), {}).items():
            counts = r.get(f"{weight}_hist")
            if not isinstance(counts, list) or len(counts) != HIST_BINS:
                return None
            total = out.setdefault(epoch, [0] * HIST_BINS)
            for i, c in enumerate(counts):
                total[i] += c
    return out or None


def heat_map(fig, ax, hist, runs, arch, weight):
    epochs = sorted(hist)
    columns = []
    for e in epochs:
        n = sum(hist[e]) or 1
        columns.append([c / n for c in hist[e]])
    grid = [[col[b] for col in columns] for b in range(HIST_BINS)]  # (bins, epochs)
    x_edges = [epochs[0] - 0.5] + [e + 0.5 for e in epochs]
    y_edges = [0.05 * b for b in range(HIST_BINS + 1)]
    mesh = ax.pcolormesh(x_edges, y_edges, grid, cmap="viridis", vmin=0.0, shading="flat")
    fig.colorbar(mesh, ax=ax, label="fraction of samples")
    epochs_m, means, _ = per_epoch(runs, "mcdistil", arch, f"{weight}_mean")
    # The mean of an unbounded (official-head) weight may lie above the drawn range.
    ax.plot(epochs_m, [min(m, 1.05) for m in means], color="white", linewidth=1.2, label="mean")
    ax.set_ylim(0.0, 1.05)
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.025])
    ax.set_yticklabels(["0", "0.25", "0.5", "0.75", "≥1"])


def plot_cnet_weights(g, title, path):
    archs = [a for a in g["archs"] if any(("mcdistil", a) in run for run in g["runs"])]
    if not archs:
        return False
    fig, axes = plt.subplots(2, len(archs), figsize=(4.4 * len(archs), 6.4), squeeze=False)
    for col, arch in enumerate(archs):
        for row, weight in enumerate(WEIGHTS):
            ax = axes[row][col]
            hist = histograms(g["runs"], arch, weight)
            if hist:
                heat_map(fig, ax, hist, g["runs"], arch, weight)
            else:
                epochs, means, _ = per_epoch(g["runs"], "mcdistil", arch, f"{weight}_mean")
                _, spreads, _ = per_epoch(g["runs"], "mcdistil", arch, f"{weight}_std")
                band(ax, epochs, means, spreads, 1, 0.25, color="C0", marker="o", markersize=3,
                     label="mean ± within-epoch std")
                ax.grid(alpha=0.3)
            ax.set_title(f"{arch}: {weight}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(weight)
    fig.suptitle(f"{title}: MC-Distil C-Net weights per epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_all(out, plots):
    written = []
    for (dataset, tag), g in load_groups(out).items():
        if not g["archs"]:
            continue
        folder = pathlib.Path(plots) / dataset / tag
        folder.mkdir(parents=True, exist_ok=True)
        title = f"{dataset}, {tag}"
        plot_accuracy(g, title, folder / "accuracy.png")
        written.append(folder / "accuracy.png")
        if plot_cnet_weights(g, title, folder / "cnet_weights.png"):
            written.append(folder / "cnet_weights.png")
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description="Accuracy curves and C-Net weight plots of an experiment.")
    p.add_argument("out", help="the experiment's output directory (run_experiment.py --out)")
    p.add_argument("--out", dest="plots", help="where the PNGs go (default: OUT/plots)")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    if not out.is_dir():
        print(f"error: {out}: not a directory", file=sys.stderr)
        return 2
    written = plot_all(out, args.plots or out / "plots")
    for path in written:
        print(path)
    if not written:
        print(f"no metrics.jsonl with student records under {out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
