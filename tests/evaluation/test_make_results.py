"""evals/make_results.py: RESULTS.md comes from a run folder's files, nothing typed by hand."""

import importlib.util
import json
from pathlib import Path

from tests.evaluation.test_report import SHARED

ROOT = Path(__file__).resolve().parents[2]


def test_results_page_from_a_run_folder(tmp_path):
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "evals" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    records, predictions = SHARED
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions.values()))
    config = {"data": {"d": "x"}, "pool_size": 30, "test_size": 4, "model": "m", "api": "completions"}
    (tmp_path / "run.json").write_text(json.dumps({"configuration": config, "suite": {"seeds": 2, "k": [4], "label_budgets": []},
                                                   "references": {"shared": "random:s", "annotate": "random:s>knn:q", "full": "knn:q"}}))
    page = module.main(tmp_path, "fewshot eval --suite x")
    assert page.startswith("# Results") and "`fewshot eval --suite x`" in page
    # go:s beats random:s by 0.25 on both seeds (see test_report): the row carries that difference
    assert "| go:s | random:s | 4 | 4 | +0.250 |" in page and "## shared" in page
