"""Rebuild the bundled example files from the installed StaICC package (sentence-level SST-2).

    python examples/build.py

Writes examples/sst2/pool.jsonl (300 rows, labels kept) and examples/sst2/queries.jsonl (40 rows,
text only), seeded, so the output is the same on every machine.
"""

from pathlib import Path

import numpy as np

from fewshot.data import write_jsonl
from fewshot.datasets import load_dataset

here = Path(__file__).parent / "sst2"
here.mkdir(exist_ok=True)
examples = load_dataset("sst2").examples
order = np.random.default_rng(0).permutation(len(examples))
pool = [examples[i] for i in order[:300]]
queries = [examples[i] for i in order[300:340]]
write_jsonl(here / "pool.jsonl", ({"id": e.id, "text": e.text, "label": e.label} for e in pool))
write_jsonl(here / "queries.jsonl", ({"id": e.id, "text": e.text} for e in queries))
write_jsonl(here / "queries_labeled.jsonl", ({"id": e.id, "text": e.text, "label": e.label} for e in queries))
print(f"wrote {len(pool)} pool rows and {len(queries)} queries to {here}")
