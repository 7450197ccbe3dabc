# weft — see README.md. Targets:
#   make setup   install the system packages the tests use (curl, ssh, sshd, and for the
#                namespace tests ip, ping, dig, iperf3, wg, nft, coturn, miniupnpd) and fetch
#                Go modules
#   make build   build bin/weft
#   make run     run a zero-setup node (creates a one-anchor network on first run)
#   make test    vet + all tests (end-to-end included; root-only tests skip without root)
#   make bench   throughput, memory and time-to-first-byte benchmarks, printed as a table
#   make fuzz    run every fuzz target briefly (FUZZTIME=10s each by default)
#   make sim     DHT and gossip simulator at N=10,000 (virtual time, churn, Byzantine nodes),
#                printed as a table; fails if a target is missed

GO        ?= go
BIN       := bin/weft
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
FUZZTIME  ?= 10s
RUNFLAGS  ?= --socks5 127.0.0.1:1080 --http-proxy 127.0.0.1:8118

.PHONY: setup build run test bench fuzz sim clean

setup:
	@if command -v apt-get >/dev/null 2>&1; then \
	  need=""; \
	  command -v curl >/dev/null 2>&1 || need="$$need curl"; \
	  [ -x /usr/sbin/sshd ] || need="$$need openssh-server"; \
	  command -v ssh >/dev/null 2>&1 || need="$$need openssh-client"; \
	  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need="$$need iproute2"; \
	  command -v ping >/dev/null 2>&1 || need="$$need iputils-ping"; \
	  command -v dig >/dev/null 2>&1 || need="$$need dnsutils"; \
	  command -v iperf3 >/dev/null 2>&1 || need="$$need iperf3"; \
	  command -v wg >/dev/null 2>&1 || need="$$need wireguard-tools"; \
	  command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need="$$need nftables"; \
	  command -v turnserver >/dev/null 2>&1 || [ -x /usr/bin/turnserver ] || need="$$need coturn"; \
	  command -v miniupnpd >/dev/null 2>&1 || [ -x /usr/sbin/miniupnpd ] || need="$$need miniupnpd-nftables"; \
	  if [ -n "$$need" ]; then \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$need; \
	  fi; \
	fi
	$(GO) mod download

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/weft

run: build
	./$(BIN) up $(RUNFLAGS)

test:
	$(GO) vet ./...
	$(GO) test -timeout 14m ./...
	$(GO) test -race -short -timeout 10m ./...

bench: build
	$(GO) run ./bench

fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

sim:
	$(GO) test ./internal/sim -run '^TestSimulate$$' -count=1 -v -timeout 30m -args -sim.full

clean:
	rm -rf bin
