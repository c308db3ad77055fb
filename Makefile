# The two commands of the README:
#   make run   - one node on the in-memory backplane serving the chat demo at http://127.0.0.1:5000
#   make test  - every test: Rust unit and integration tests, then the official-client Node tests
# Both install what they need (the wasm32-wasip2 target, npm packages) first,
# and so does every other target: each works on a fresh clone, in any order.

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
GUESTS := $(TARGET_DIR)/wasm32-wasip2/guest
# Compiled components, so restarts (and test processes) do not recompile.
CACHE := $(TARGET_DIR)/hubhost-cache
PY_TOOLS := $(TARGET_DIR)/guest-tools/python
COMPONENTIZE_PY := $(PY_TOOLS)/bin/componentize-py
LISTEN ?= 127.0.0.1:5000
# The development operator key of `make run`; set your own for anything else.
ADMIN_KEY ?= dev-operator-key-0123456789

# npm's record of an install (node_modules/.package-lock.json), one per
# package.json: installed again when its package-lock.json changes.
NPM_DIRS := tests examples/demo examples/chat-js tests/load/socketio
NPM_INSTALLED := $(addsuffix /node_modules/.package-lock.json,$(NPM_DIRS))

.PHONY: setup wasm-target browser guests build run test lint bench compare docs fuzz fuzz-smoke fuzz-tools clean

setup: wasm-target $(NPM_INSTALLED)

# Idempotent and quick once installed; not a file, so a toolchain that changed
# underneath gets the target again.
wasm-target:
	rustup target add wasm32-wasip2

# Debian's Chromium, for the dashboard's browser test (tests/node/dashboard.test.mjs).
browser:
	@test -x /usr/bin/chromium || apt-get install -y --no-install-recommends chromium \
		|| (apt-get update && apt-get install -y --no-install-recommends chromium)

%/node_modules/.package-lock.json: %/package-lock.json %/package.json
	npm ci --prefix $* --no-audit --no-fund
	touch $@

# Hub components: the Rust examples and the misbehaving test hubs, and the chat
# hub in Python and in JavaScript.
guests: wasm-target $(GUESTS)/chat-python.wasm $(GUESTS)/chat-js.wasm
	cargo build --profile guest --target wasm32-wasip2 -p chat -p greeter -p faulty -p greedy -p versioned-v1 -p versioned-v2

$(COMPONENTIZE_PY): examples/chat-python/requirements.txt
	python3 -m venv $(PY_TOOLS)
	$(PY_TOOLS)/bin/pip install --quiet --disable-pip-version-check -r examples/chat-python/requirements.txt
	touch $@

$(GUESTS)/chat-python.wasm: examples/chat-python/app.py wit/0.2.0/hub.wit $(COMPONENTIZE_PY)
	mkdir -p $(GUESTS)
	$(COMPONENTIZE_PY) -d wit/0.2.0 -w hub-component componentize -p examples/chat-python app --stub-wasi -o $@

$(GUESTS)/chat-js.wasm: examples/chat-js/hub.js wit/0.2.0/hub.wit examples/chat-js/node_modules/.package-lock.json
	mkdir -p $(GUESTS)
	cd examples/chat-js && OUT=$(abspath $@) npm run --silent build

build: guests
	cargo build -p hubhost

run: setup build
	$(TARGET_DIR)/debug/hubhost serve --listen $(LISTEN) --cache-dir $(CACHE) \
		--hub demo/chat=$(GUESTS)/chat.wasm --static-dir examples/demo \
		--data-dir $(TARGET_DIR)/hubhost-data --admin-key $(ADMIN_KEY)

# `cargo test --benches --no-run` compiles every benchmark (test profile, not
# release) without running it, so a benchmark that no longer builds fails here.
test: setup build browser
	cargo test
	cargo test --benches --no-run
	npm test --prefix tests

# The gates CI runs besides the tests: formatting, clippy's lints (the workspace's
# [workspace.lints] included) on every target, rustdoc with warnings denied.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Per-call cost of a trivial hub call next to the same dispatch without Wasm;
# broadcast fan-out on one node, over one Redis and over a Redis Cluster (its own servers);
# one tenant's latency while another runs hostile hub code; upload to serving
# on every node of a three-node cluster (each node compiling, then compiled once
# and shared); a long-polling round trip straight to
# the connection's node and through another node that passes it on; a node's
# memory while 64 connections that never read are sent all a hub may send; hub
# state per operation on memory and Redis next to a plain Redis client; timer
# lateness under 10,000 pending timers on two nodes; how fast a drain hands
# stateful connections to another node; stream items and client results
# next to Echo; 1,000 tenants on one
# node (a release hubhost process); what a rolling restart of three nodes
# loses (official clients, stateful and plain).
bench: setup guests
	cargo bench -p hubhost --bench invoke
	cargo bench -p hubhost-tests --bench fanout
	cargo bench -p hubhost-tests --bench isolation
	cargo bench -p hubhost-tests --bench deploy
	cargo bench -p hubhost-tests --bench forward
	cargo bench -p hubhost-tests --bench memory
	cargo bench -p hubhost-tests --bench state
	cargo bench -p hubhost-tests --bench timers
	cargo bench -p hubhost-tests --bench handover
	cargo bench -p hubhost-tests --bench streams
	cargo build --release -p hubhost
	cargo bench -p hubhost-tests --bench tenants
	cargo build -p hubhost
	cd tests && node --test node/rolling.test.mjs

# hubhost against Socket.IO 4 (Redis adapter) and a bare Rust relay over Redis:
# two nodes each, one load tool, one table with the ratios (needs Redis on 6379).
compare: setup guests
	cargo build --release -p hubhost -p hubhost-load
	$(TARGET_DIR)/release/hubhost-load compare --hubhost $(TARGET_DIR)/release/hubhost \
		--guest $(GUESTS)/chat.wasm --cache-dir $(CACHE)-release \
		--relay $(TARGET_DIR)/release/hubhost-relay --socketio tests/load/socketio

# The book (docs/) into target/book; then its Rust snippets compiled and run, and
# every relative link of the README and the book checked. mdbook is installed once
# per machine, pinned, beside cargo's own tools (Debian 12 has no package of it;
# building it takes a few minutes), so fresh clones reuse it.
MDBOOK_VERSION := 0.5.4
MDBOOK_ROOT := $(or $(CARGO_HOME),$(HOME)/.cargo)/tools/mdbook-$(MDBOOK_VERSION)
MDBOOK := $(MDBOOK_ROOT)/bin/mdbook

$(MDBOOK):
	cargo install mdbook --locked --version $(MDBOOK_VERSION) --no-default-features \
		--features search --root $(MDBOOK_ROOT)

docs: $(MDBOOK)
	$(MDBOOK) build docs -d $(abspath $(TARGET_DIR))/book
	$(MDBOOK) test docs
	bash docs/check-links.sh $(abspath $(TARGET_DIR))/book

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every parser that reads
# untrusted bytes: tests/fuzz/src/lib.rs has the targets. Each runs FUZZ_SECONDS;
# new inputs land in tests/fuzz/corpus, crashes in tests/fuzz/artifacts (copy a
# crash to tests/fuzz/regressions/TARGET/ once fixed: the tests replay them).
# cargo-fuzz needs the nightly toolchain; both are installed once per machine.
# FUZZ_RUNS (executions per target) replaces FUZZ_SECONDS when set. The
# instrumented build lives beside cargo's tools, so fresh clones reuse it (the
# first build of its dependencies takes ~12 min on 2 cores, later ones ~2).
FUZZ_SECONDS ?= 600
FUZZ_RUNS ?=
FUZZ_TARGETS := hub_json hub_msgpack handshake negotiate transcode admin_bodies guest_values
FUZZ_FLAGS := -malloc_limit_mb=512 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
FUZZ_LIMIT = $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS),-max_total_time=$(FUZZ_SECONDS))
FUZZ_TARGET_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)/hubhost-fuzz-target
FUZZ := cargo +nightly fuzz run --fuzz-dir tests/fuzz --target-dir $(FUZZ_TARGET_DIR) -O

fuzz-tools:
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

fuzz: fuzz-tools
	for target in $(FUZZ_TARGETS); do \
		$(FUZZ) $$target -- $(FUZZ_LIMIT) $(FUZZ_FLAGS) || exit 1; \
	done

# CI's brief run: every target for a few seconds, from its committed corpus.
fuzz-smoke: FUZZ_SECONDS = 5
fuzz-smoke: FUZZ_RUNS =
fuzz-smoke: fuzz

clean:
	cargo clean
