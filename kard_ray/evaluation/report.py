"""The evaluation report as markdown and as a terminal table."""

from __future__ import annotations

METHOD_LABELS = {
    "ft": "fine-tuning, no rationale",
    "rd": "reasoning distillation, no knowledge",
    "kard_bm25": "KARD, BM25 passages",
    "kard_reranker": "KARD, reranked passages",
    "oracle": "KARD, oracle passages (teacher rationale)",
}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def questions_label(report: dict) -> str:
    """'60 unseen-entity test questions' (the synthetic world) or '150 held-out test questions' (real data)."""
    return f"{report['questions']} {report.get('question_kind', 'held-out')} {report['split']} questions"


def baselines(report: dict) -> str:
    """Chance and the majority class, beside every accuracy table."""
    parts = [f"chance {_pct(report['chance'])}%"] if report.get("chance") is not None else []
    if report.get("majority") is not None:
        parts.append(f"always answering the commonest gold option {_pct(report['majority'])}%")
    return "; ".join(parts)


def results_table(report: dict):
    from rich.table import Table

    table = Table("method", "accuracy %", "95% CI", "n", "parsed by option text", title=(
        f"KARD evaluation: {questions_label(report)} ({report['decoding']} decoding)"))
    for m, r in report["methods"].items():
        table.add_row(METHOD_LABELS.get(m, m), _pct(r["accuracy"]), f"{_pct(r['ci_low'])}-{_pct(r['ci_high'])}",
                      str(r["n"]), _pct(r.get("parsed_by", {}).get("option_text", 0) / max(r["n"], 1)))
    table.caption = f"baselines: {baselines(report)}; rationales from {report.get('rationales_from', 'the teacher')}"
    if report.get("retrieval"):
        cap = "; ".join(f"{name}: " + ", ".join(f"{k} {_pct(v)}" for k, v in vals.items())
                        for name, vals in report["retrieval"].items())
        table.caption += f"; recall of needed facts - {cap}"
    return table


def compute_floor_table(floor: dict):
    """A run's stages against their compute floor (``kard_ray.efficiency.floor_table``), its ratio as the caption."""
    from rich.table import Table

    from kard_ray.efficiency import floor_summary

    cols = ["stage", "wall_s", "loop_s", "tflop", "floor_s", "share_of_probe"]
    table = Table(*(c.replace("_", " ") for c in cols), title="Time against the machine's compute floor")
    for r in floor["rows"]:
        table.add_row(*("" if r.get(c) is None else str(r[c]) for c in cols))
    table.caption = floor_summary(floor)
    return table


def report_markdown(report: dict) -> str:
    lines = [f"# KARD evaluation: {questions_label(report)}", "",
             f"Run `{report['run_dir']}`, {report['decoding']} decoding, {report['passages']} passages per question; "
             f"rationales from {report.get('rationales_from', 'the teacher')}.",
             "", "| method | accuracy % | 95% CI | n |", "|---|---|---|---|"]
    for m, r in report["methods"].items():
        lines.append(f"| {METHOD_LABELS.get(m, m)} | {_pct(r['accuracy'])} | {_pct(r['ci_low'])}-{_pct(r['ci_high'])}"
                     f" | {r['n']} |")
    if baselines(report):
        lines += ["", f"Baselines: {baselines(report)}."]
    if report.get("retrieval"):
        ks = list(next(iter(report["retrieval"].values())))
        lines += ["", "## Retrieval: recall of the needed facts", "", "| retrieval | " + " | ".join(ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for name, vals in report["retrieval"].items():
            lines.append(f"| {name} | " + " | ".join(_pct(v) for v in vals.values()) + " |")
    split = {m: r["by_facts_given"] for m, r in report["methods"].items() if r.get("by_facts_given")}
    if split:
        groups = [g for g in ("all", "some", "none") if any(g in v for v in split.values())]
        lines += ["", "## Does the student use the knowledge it gets?", "",
                  "Accuracy % (n) by how many of the needed facts the passages stated.", "",
                  "| method | " + " | ".join(f"facts given: {g}" for g in groups) + " |",
                  "|---|" + "---|" * len(groups)]
        for m, v in split.items():
            cells = [f"{_pct(v[g]['accuracy'])} ({v[g]['n']})" if g in v else "-" for g in groups]
            lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    for m, r in report["methods"].items():
        if r.get("error_classes"):
            lines += ["", f"## Errors: {METHOD_LABELS.get(m, m)}", "",
                      ", ".join(f"{k}: {v}" for k, v in r["error_classes"].items())]
            for cls, examples in r.get("examples", {}).items():
                for e in examples:
                    lines.append(f"- *{cls}* `{e['qid']}`: {e['question']} -> predicted {e['predicted']!r}, "
                                 f"gold {e['gold']!r}")
    if report.get("training_curves"):
        lines += ["", "## Training curves", "", "Loss against optimizer steps (rank 0), learning rate dashed.", ""]
        lines += [f"![{name}]({path})" for name, path in report["training_curves"].items()]
    return "\n".join(lines) + "\n"
