"""The wheel works on its own: built, installed outside the source tree, run from another folder.

Templates and suites live in the top-level prompts/ and evals/ folders; a wheel that forgot them
(or a lookup through source-tree paths) only shows up when the package runs away from the repo.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tests.conftest import EXAMPLES, ROOT

SOURCES = ["pyproject.toml", "README.md", "fewshot", "prompts", "evals"]


pytestmark = pytest.mark.slow  # builds and installs the wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the wheel from a copy of the sources (no build/ races with the checkout) and install it
    into a --target folder: (wheel path, site folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")],
                   check=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("fewshot-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True, cwd=tmp)
    return wheel, tmp / "site"


def run(site, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_wheel_ships_every_subpackage_and_only_toml_data(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "fewshot").rglob("__init__.py")}
    assert {p for p in packages if f"{p}/__init__.py" not in names} == set()
    bundled = {n for n in names if n.startswith(("fewshot/templates/", "fewshot/suites/"))}
    assert {n.split("/")[-1] for n in bundled} == {p.name for p in [*(ROOT / "prompts").glob("*.toml"),
                                                                     *(ROOT / "evals").glob("*.toml")]}


def test_installed_wheel_imports_from_site_and_finds_bundled_files(installed, tmp_path):
    _, site = installed
    probe = ("import json, sys, fewshot; from fewshot.prompts import load_template;"
             "from fewshot.evaluation.suites import load_suite; from fewshot.data import bundled_folder;"
             "print(json.dumps([fewshot.__file__, str(bundled_folder('fewshot.templates', 'prompts').joinpath('classification.toml')),"
             " load_template('classification').name, load_suite('quick').name]))")
    result = run(site, tmp_path, "-c", probe)
    assert result.returncode == 0, result.stderr
    module, templates, template, suite = json.loads(result.stdout)
    # an editable install of the checkout is also on sys.path: the wheel must win, or this tests nothing
    assert module.startswith(str(site)) and templates.startswith(str(site)), (module, templates)
    assert (template, suite) == ("classification", "quick")


def test_installed_cli_methods_and_select_render_from_another_folder(installed, tmp_path):
    _, site = installed
    pool = [json.loads(line) for line in (EXAMPLES / "pool.jsonl").read_text(encoding="utf-8").splitlines()][:20]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool), encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text('{"text": "a fine film"}\n{"text": "dull"}\n', encoding="utf-8")
    rng = np.random.default_rng(0)  # precomputed vectors: this tests packaging, not the embedding model
    np.save(tmp_path / "pool.npy", rng.normal(size=(20, 8)).astype(np.float32))
    np.save(tmp_path / "queries.npy", rng.normal(size=(2, 8)).astype(np.float32))

    methods = run(site, tmp_path, "-m", "fewshot.cli", "methods")
    assert methods.returncode == 0, methods.stderr
    assert "go" in methods.stdout
    select = run(site, tmp_path, "-m", "fewshot.cli", "select", "--pool", "pool.jsonl", "--queries", "queries.jsonl",
                 "--embeddings", "pool.npy", "--query-embeddings", "queries.npy", "--k", "4",
                 "--render", "classification", "--no-cache")
    assert select.returncode == 0, select.stderr
    assert "a fine film" in select.stdout and "template not found" not in select.stderr
