# maddpg: the two set-up commands are `make install` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

scenario ?= simple_spread
num_agent ?=
episodes ?= 60000
seed ?= 0
explorers ?= 2
envs ?= 16
run_dir ?= runs/$(scenario)
args ?=

.PHONY: install test run evaluate bench bench-quick api clean

install: ## create .venv and install maddpg with its test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[test]"

test: ## run the whole test suite
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

clean:
	rm -rf $(VENV) *.egg-info build
