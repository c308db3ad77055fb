# The two commands of the README:
#   make run   - one node on the in-memory backplane serving the chat demo at http://127.0.0.1:5000
#   make test  - every test: Rust unit and integration tests, then the official-client Node tests
# Both install what they need (the wasm32-wasip2 target, npm packages) first.

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
GUESTS := $(TARGET_DIR)/wasm32-wasip2/guest
LISTEN ?= 127.0.0.1:5000

.PHONY: setup guests build run test bench clean

setup:
	rustup target add wasm32-wasip2
	npm ci --prefix tests --no-audit --no-fund
	npm ci --prefix examples/demo --no-audit --no-fund

# Hub components: the examples and the misbehaving test hub.
guests:
	cargo build --profile guest --target wasm32-wasip2 -p chat -p greeter -p faulty

build: guests
	cargo build -p hubhost

run: setup build
	$(TARGET_DIR)/debug/hubhost serve --listen $(LISTEN) \
		--hub demo/chat=$(GUESTS)/chat.wasm --static-dir examples/demo

test: setup build
	cargo test
	npm test --prefix tests

# Per-call cost of a trivial hub call next to the same dispatch without Wasm;
# broadcast fan-out on one node and on two nodes over Redis (needs Redis on 6379);
# one tenant's latency while another runs hostile hub code.
bench: setup guests
	cargo bench -p hubhost --bench invoke
	cargo bench -p hubhost-tests --bench fanout
	cargo bench -p hubhost-tests --bench isolation

clean:
	cargo clean
