# Every target sets itself up on a fresh machine: venv, CPU torch, the package, Debian's stockfish.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/default.yaml
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup stockfish train test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

stockfish:
	@if [ -n "$$STOCKFISH_PATH" ] || command -v stockfish >/dev/null 2>&1 || [ -x /usr/games/stockfish ]; then \
		echo "stockfish: found"; \
	else \
		echo "stockfish: installing Debian's package"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq stockfish; \
	fi

setup: $(BIN)/.installed stockfish

train: setup
	$(BIN)/grpo-chess train --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks.env_throughput

clean:
	rm -rf $(VENV) *.egg-info
