"""Figures of distbench's results, drawn from the raw files of one run.

    python bench/plot.py --tsv WORK/route.tsv --raw WORK/raw.tsv --outdir bench/figures

route.tsv has one line per scenario and strategy (bench/report.c,
report_tsv: column 1 the scenario, 2 the strategy, 4 the follower share);
raw.tsv one line per first read after a write (scenario, strategy, ms from
the write's reply to the read's value).  Writes follower-share.png (per
strategy, one bar per scenario), read-after-write-cdf.png and
read-after-write-box.png (the latency scenario's reads after writes, or
every scenario's that has them).  Needs matplotlib (bench/latency.sh
installs it in a virtual environment).
"""

import argparse
import collections
import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

# names for the strategies' command-line spellings
LABELS = {
    "leader": "leader only",
    "naive": "random follower",
    "check": "token check",
    "check-pipe": "token check, pipelined",
    "gitlab": "GitLab-style",
}


def label(strategy):
    if strategy in LABELS:
        return LABELS[strategy]
    kind, _, ms = strategy.partition(":")
    return {
        "time": f"time window {int(ms) / 1000:g} s",
        "wait": f"token wait {ms} ms",
        "wait-fn": f"token wait (function) {ms} ms",
        "wait-pipe": f"token wait, pipelined {ms} ms",
        "wait-one": f"token wait, one message {ms} ms",
        "maxscale": f"MaxScale-universal-style {ms} ms",
        "waitfor": f"WAIT FOR-style {ms} ms",
    }.get(kind, strategy)


def read_tsv(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.reader(f, delimiter="\t"):
            if len(r) >= 4:
                rows.append(r)
    return rows


def follower_share(rows, outdir):
    """A grid: one row per strategy, one column per scenario, each cell the
    share of reads served by a follower (and the ideal share below it)."""
    scenarios = list(dict.fromkeys(r[0] for r in rows))
    strategies = list(dict.fromkeys(r[1] for r in rows))
    share = {(r[0], r[1]): (100 * float(r[3]), 100 * float(r[5])) for r in rows}
    grid = [[share.get((sc, st), (float("nan"), 0))[0] for sc in scenarios] for st in strategies]
    fig, ax = plt.subplots(figsize=(2.1 * len(scenarios) + 3.2, 0.42 * len(strategies) + 1.6))
    cmap = matplotlib.colormaps["RdYlGn"].copy()
    cmap.set_bad("#eeeeee")
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=100, aspect="auto", alpha=0.55)
    for i, st in enumerate(strategies):
        for j, sc in enumerate(scenarios):
            if (sc, st) in share:
                v, ideal = share[sc, st]
                ax.text(j, i, f"{v:.0f} %\n(ideal {ideal:.0f} %)", ha="center", va="center", fontsize=8)
            else:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=7, color="#888888")
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(strategies)))
    ax.set_yticklabels([label(s) for s in strategies])
    ax.set_title("Reads served by a follower, per strategy and scenario", pad=24)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "follower-share.png"), dpi=110)
    plt.close(fig)


def ms_axis(ax, lo, hi):
    """A log axis in ms with plain tick labels (1, 2, 5, 10, ...)."""
    ax.set_xscale("log")
    ax.set_xlim(max(lo * 0.8, 0.1), hi * 1.2)
    ticks = [t for t in (0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
             if lo * 0.8 <= t <= hi * 1.2]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def read_after_write(raw_path, outdir):
    data = collections.OrderedDict()
    with open(raw_path, newline="") as f:
        for sc, st, ms in csv.reader(f, delimiter="\t"):
            data.setdefault(sc, collections.OrderedDict()).setdefault(st, []).append(float(ms))
    if not data:
        return
    scenarios = list(data)
    lo = min(min(v) for d in data.values() for v in d.values())
    hi = max(max(v) for d in data.values() for v in d.values())

    fig, axes = plt.subplots(len(scenarios), 1, figsize=(10, 5.5 * len(scenarios)), squeeze=False)
    for ax, sc in zip(axes[:, 0], scenarios):
        for j, (st, v) in enumerate(data[sc].items()):
            v = sorted(v)
            n = len(v)
            ax.step(v, [(i + 1) / n for i in range(n)], where="post", label=f"{label(st)}, n={n}",
                    color=plt.cm.tab20((2 * j) % 20 + (2 * j) // 20), linestyle="-" if j < 10 else "--")
        ms_axis(ax, lo, hi)
        ax.set_xlabel("from the write's reply to the first read's value (ms, log scale)")
        ax.set_ylabel("share of reads after writes")
        ax.set_title(f"Read after write, cumulative distribution: {sc}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "read-after-write-cdf.png"), dpi=110)
    plt.close(fig)

    nmax = max(len(d) for d in data.values())
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(10, (0.4 * nmax + 1.2) * len(scenarios)),
                             squeeze=False)
    for ax, sc in zip(axes[:, 0], scenarios):
        keys = list(data[sc])
        vals = [data[sc][k] for k in keys]
        try:
            ax.boxplot(vals, orientation="horizontal", whis=(1, 99), showfliers=False)
        except TypeError:  # matplotlib before 3.10
            ax.boxplot(vals, vert=False, whis=(1, 99), showfliers=False)
        ax.set_yticks(range(1, len(keys) + 1))
        ax.set_yticklabels([label(k) for k in keys])
        ax.invert_yaxis()
        ms_axis(ax, lo, hi)
        ax.set_xlabel("read after write (ms, log scale); box: p25-p75, whiskers: p1-p99")
        ax.set_title(f"Read after write, per strategy: {sc}")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "read-after-write-box.png"), dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tsv", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--outdir", required=True)
    a = p.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    follower_share(read_tsv(a.tsv), a.outdir)
    read_after_write(a.raw, a.outdir)


if __name__ == "__main__":
    main()
