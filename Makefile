# Two entry points, each safe to run twice on a fresh machine:
#   make demo   set up, then run the main job on the embedded default
#               (make demo VOICES=../shared/real-speech/librispeech: on real voices)
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml 2>/dev/null | cut -c1-8)
DEMO ?= demo
VOICES ?=

.PHONY: setup system-deps demo test bench clean

setup: system-deps $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

# torch 2.14.1 + torchaudio 2.11.0: the pair that imports together on these machines.
$(STAMP): pyproject.toml weighter/_ranking.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchaudio==2.11.0
	$(PY) -m pip install -q -e '.[test,resemblyzer,vad,serve,ray,train]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: setup
	$(PY) -m weighter.demo --out $(DEMO) $(if $(VOICES),--voices $(VOICES))

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/synth_speed.py

clean:
	rm -rf $(VENV) $(DEMO) *.egg-info .pytest_cache
