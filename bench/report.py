"""Results: one Row per (section, model, peer), rendered as markdown tables
(bench/results.md), JSON (bench/results.json) and a ratio chart
(bench/results.png, matplotlib when installed).

Ratios are ours / peer on the medians; each section has a target, checked
either on the ratio or, for memory, on our own value."""
import dataclasses
import json
import math
import os

from bench.measure import Stats

# section -> (title, unit, target value, what the target applies to: "ratio" or "ours", one-line description)
SECTIONS = {
    "convert": ("Conversion time, in process", "s", 0.5, "ratio",
                "irtool.trace + export_onnx to a file vs torch.onnx.export (dynamo=True / dynamo=False) "
                "and tf2onnx.convert.from_function; each repeat converts from the module again."),
    "process": ("Conversion time, whole process", "s", 0.5, "ratio",
                "`irtool convert model.pt2` vs `python -c` torch.export.load + torch.onnx.export(dynamo=True) "
                "of the same .pt2, time.perf_counter around subprocess.run (includes interpreter start and imports)."),
    "ort": ("onnxruntime latency of the exported files", "ms", 1.0, "ratio",
            "Same inputs and SessionOptions (intra_op_num_threads = the run's threads, inter_op_num_threads=1, "
            "default graph optimization); nodes = top-level nodes in the file."),
    "numpy_infer": ("numpy runtime inference vs eager framework", "ms", 1.5, "ratio",
                    "irtool.run(graph) vs torch eager under no_grad (torch.set_num_threads = the run's threads) "
                    "or Keras eager."),
    "numpy_train": ("numpy runtime training step vs eager framework", "ms", 2.0, "ratio",
                    "irtool.Trainer(backend='numpy', SGD(0.01)).step vs eager forward + backward + SGD step."),
    "ort_train": ("onnxruntime training step (exported training graph) vs eager framework", "ms", 1.0, "ratio",
                  "irtool.Trainer(backend='onnxruntime', SGD(0.01)).step vs eager forward + backward + SGD step."),
    "memory": ("Peak memory converting a large model", "x param bytes", 1.5, "ours",
               "(peak RSS - RSS after model creation) / parameter bytes, each converter in its own child "
               "process; peak from /usr/bin/time -v (Maximum resident set size)."),
}
ORDER = list(SECTIONS)
SHORT = {"torch.onnx.export(dynamo=True)": "dynamo", "torch.onnx.export(dynamo=False)": "torchscript",
         "tf2onnx.convert.from_function": "tf2onnx", "keras eager (TF)": "keras eager",
         "python -c torch.onnx.export(.pt2 program, dynamo=True)": "dynamo CLI script"}


@dataclasses.dataclass
class Row:
    section: str
    model: str
    peer: str
    ours: Stats | None = None
    theirs: Stats | None = None
    notes: str = ""
    scale: float = 1.0          # display factor (1000 for ms)

    @property
    def ratio(self):
        if self.ours is None or self.theirs is None or self.theirs.median == 0:
            return None
        return self.ours.median / self.theirs.median

    @property
    def ratio_of_minima(self):
        """ours.min / peer.min: steadier than the medians when other processes load the machine."""
        if self.ours is None or self.theirs is None or self.theirs.min == 0:
            return None
        return self.ours.min / self.theirs.min

    def meets_target(self):
        _, _, target, applies, _ = SECTIONS[self.section]
        value = self.ratio if applies == "ratio" else (self.ours.median if self.ours else None)
        return None if value is None else value <= target

    def to_json(self):
        return {"section": self.section, "model": self.model, "peer": self.peer,
                "ours": self.ours.to_json() if self.ours else None,
                "peer_stats": self.theirs.to_json() if self.theirs else None,
                "ratio": self.ratio, "ratio_of_minima": self.ratio_of_minima,
                "meets_target": self.meets_target(), "notes": self.notes,
                "unit": SECTIONS[self.section][1] if self.scale == 1 else "ms"}


def _fmt(stats, scale):
    if stats is None:
        return "—"
    m, lo, hi = stats.median * scale, stats.min * scale, stats.max * scale
    if stats.n == 1 or lo == hi:
        return _num(m)
    return f"{_num(m)} ({_num(lo)}–{_num(hi)})"


def _num(x):
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def section_table(section, rows):
    title, unit, target, applies, desc = SECTIONS[section]
    goal = f"target: ratio ≤ {target}" if applies == "ratio" else f"target: ours ≤ {target} {unit}"
    lines = [f"## {title}", "", f"{desc} Unit: {unit}; {goal}.", "",
             "| model | ours median (min–max) | peer | peer median (min–max) | ratio | ratio of minima "
             "| target | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
        rmin = "—" if r.ratio_of_minima is None or r.ours.n == 1 else f"{r.ratio_of_minima:.2f}"
        ok = {True: "✓", False: "✗", None: "—"}[r.meets_target()]
        lines.append(f"| {r.model} | {_fmt(r.ours, r.scale)} | {r.peer} | {_fmt(r.theirs, r.scale)} | "
                     f"{ratio} | {rmin} | {ok} | {r.notes} |")
    return "\n".join(lines)


def markdown(rows, header_lines, notes):
    parts = ["# irtool benchmark results", "", *header_lines, ""]
    for s in ORDER:
        srows = [r for r in rows if r.section == s]
        if srows:
            parts += [section_table(s, srows), ""]
    if notes:
        parts += ["## Not measured", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(parts)


def write_json(path, rows, header, notes):
    with open(path, "w") as f:
        json.dump({"header": header, "rows": [r.to_json() for r in rows], "notes": notes}, f, indent=1)


def write_chart(path, rows):
    """Horizontal bars of log2(ratio) per row, a tick at each section's
    target; returns None, or why no chart was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "results.png not written: matplotlib is not installed (pip install matplotlib)"
    items = []
    for s in ORDER:
        for r in rows:
            if r.section != s:
                continue
            _, unit, target, applies, _ = SECTIONS[s]
            value = r.ratio if applies == "ratio" else (r.ours.median if r.ours else None)
            if value is None or value <= 0:
                continue
            items.append((f"{s}: {r.model} vs {SHORT.get(r.peer, r.peer)}", value, target, r.meets_target()))
    if not items:
        return "results.png not written: no ratios measured"
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(items) + 1.5))
    ys = list(range(len(items)))[::-1]
    vals = [math.log2(v) for _, v, _, _ in items]
    colors = ["#3a7d44" if ok else "#c0392b" for *_, ok in items]
    ax.barh(ys, vals, color=colors, height=0.7)
    for y, (_, v, t, _) in zip(ys, items):
        ax.plot([math.log2(t)] * 2, [y - 0.4, y + 0.4], color="black", linewidth=1.5)
        ax.text(max(math.log2(v), 0) + 0.05, y, f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels([n for n, *_ in items], fontsize=7)
    ax.axvline(0, color="grey", linewidth=0.8)
    ticks = [-6, -4, -2, -1, 0, 1, 2, 4, 6]
    lo, hi = min(vals + [-1]), max(vals + [1])
    ticks = [t for t in ticks if lo - 1 <= t <= hi + 1]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{2 ** t}x" if t >= 0 else f"1/{2 ** -t}x" for t in ticks])
    ax.set_xlabel("ours / peer (log scale; memory: ours in x param bytes). Black tick: target. "
                  "Green meets it.", fontsize=8)
    ax.set_title("irtool vs peers", fontsize=10)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return None
