"""One truth, two paths: does a running answer service return what the evaluation stage predicted?

Every question of the evaluated split is sent to ``/v1/answer``; an answer matches when its passage ids
(in order) and its generated text equal the ``kard_reranker`` row of ``evaluate/predictions.parquet``.
Used by the parity test and by ``benchmarks/parity.py`` on a real run.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kard_ray.registry import output
from kard_ray.stages.data import read_split


def post_json(url: str, body: dict[str, Any], timeout: float = 300) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def evaluated_rows(run, method: str = "kard_reranker") -> list[dict[str, Any]]:
    """(question, options, passage ids, generation) of each evaluated question for ``method``."""
    import pyarrow.parquet as pq


    report = run.read_json(output("evaluate", "report_json"))
    with run.fs.open_input_file(run.path(output("evaluate", "predictions"))) as f:
        rows = {r["qid"]: r for r in pq.read_table(f).to_pylist() if r["method"] == method}
    return [{"qid": q.id, "question": q.question, "options": q.options,
             "passage_pids": list(rows[q.id]["passage_pids"]), "generation": rows[q.id]["generation"]}
            for q in read_split(run, report["split"]) if q.id in rows]


def parity(base_url: str, run, concurrency: int = 1) -> dict[str, Any]:
    """Counts of questions whose served passages and generation match the evaluation's, and the mismatches."""
    rows = evaluated_rows(run)

    def ask(row: dict[str, Any]) -> dict[str, Any]:
        status, body = post_json(f"{base_url}/v1/answer", {"question": row["question"], "options": row["options"]})
        if status != 200:
            return {"qid": row["qid"], "status": status, "detail": body.get("detail")}
        pids = [p["pid"] for p in body["passages"]]
        return {"qid": row["qid"], "status": status, "passages": pids == row["passage_pids"],
                "generation": body["rationale"] == row["generation"]}

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(ask, rows))
    same = [r for r in results if r.get("passages") and r.get("generation")]
    return {"questions": len(rows), "identical": len(same),
            "same_passages": sum(bool(r.get("passages")) for r in results),
            "same_generation": sum(bool(r.get("generation")) for r in results),
            "mismatches": [r for r in results if r not in same]}
