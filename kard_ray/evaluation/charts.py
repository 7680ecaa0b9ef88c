"""PNG charts of a report: accuracy per method (with the bootstrap interval) and recall@k curves."""

from __future__ import annotations

import io
import os


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def accuracy_chart(report: dict, path: str) -> str:
    plt = _pyplot()
    methods = list(report["methods"])
    acc = [report["methods"][m]["accuracy"] for m in methods]
    err = [[a - report["methods"][m]["ci_low"] for m, a in zip(methods, acc)],
           [report["methods"][m]["ci_high"] - a for m, a in zip(methods, acc)]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(methods, acc, yerr=err, capsize=4, color="#4c72b0")
    if report.get("chance") is not None:
        ax.axhline(report["chance"], ls="--", color="grey", lw=1, label="chance")
        ax.legend(loc="upper left")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(f"{report['questions']} {report['split']} questions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recall_chart(report: dict, path: str) -> str | None:
    curves = {name: vals for name, vals in report.get("retrieval", {}).items()
              if any(v is not None for v in vals.values())}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, vals in curves.items():
        ks = [int(k.split("@")[1]) for k, v in vals.items() if v is not None]
        ax.plot(ks, [v for v in vals.values() if v is not None], marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("recall of needed facts")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_charts(report: dict, folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = [accuracy_chart(report, os.path.join(folder, "accuracy.png")),
             recall_chart(report, os.path.join(folder, "recall.png"))]
    return [p for p in paths if p]


def loss_chart_png(history: list[dict], title: str) -> bytes:
    """Training loss (and learning rate, right axis) against optimizer steps, as PNG bytes for any filesystem."""
    plt = _pyplot()
    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, [r["loss"] for r in history], color="#4c72b0", lw=1, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (rank 0)")
    lr_axis = ax.twinx()
    lr_axis.plot(steps, [r["lr"] for r in history], color="grey", ls="--", lw=1, label="learning rate")
    lr_axis.set_ylabel("learning rate")
    ax.set_title(title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return out.getvalue()
