# holdfast — build, run and test. `make run` and `make test` are the two
# set-up commands the README promises on a fresh machine with Go installed.

GO      ?= go
BIN     := bin/holdfast
PREFIX  ?= /usr/local
DESTDIR ?=
FUZZTIME ?= 30s

.PHONY: all build run test deb man tools test-short vet staticcheck funcsize fmt fmt-check bench bench-compare bench-postfix-1m bench-ci bench-go fuzz soak install clean

all: build

# -buildvcs=auto stamps the VCS revision into the binary (holdfast
# --version) even where the environment's GOFLAGS turns it off.
build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/holdfast

# Starts holdfast on 127.0.0.1:$(PORT) (default 2525) with the example
# configuration; the queue lives under ./var.
PORT ?= 2525
run: build
	mkdir -p var
	./$(BIN) serve -c examples/holdfast.cf -o smtpd_listen=127.0.0.1:$(PORT)

vet:
	$(GO) vet ./...

# staticcheck at a pinned version, fetched through the module proxy and
# cached by go run (nothing is installed, go.mod is not touched).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
staticcheck:
	$(GO) run $(STATICCHECK) ./...

# No function outside tests longer than 60 lines (a table's rows not
# counted) or above cyclomatic complexity 20 (gocyclo's count).
funcsize:
	$(GO) run ./internal/funcsize -lines 60 -cyclo 20 .

test: vet fmt-check staticcheck funcsize tools
	$(GO) test -race -shuffle=on -timeout 20m ./...

# Installs the real peers of the interoperability tests (swaks, dovecot,
# fetchmail...) when missing and possible; see .ci/deps.
tools:
	@bash .ci/deps

test-short:
	$(GO) test -short ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Benchmarks with Postfix's smtp-source/smtp-sink on loopback (installs
# Debian's postfix when they are missing; see docs/benchmarks.md).
# BENCHFLAGS passes harness flags, e.g. BENCHFLAGS='-runs 3 -sizes 10k,100k'.
bench: build
	$(GO) build -o bin/holdfast-bench ./cmd/holdfast-bench
	./bin/holdfast-bench -holdfast $(BIN) $(BENCHFLAGS)

# The same side by side with a private Postfix instance, run by run.
bench-compare: build
	$(GO) build -o bin/holdfast-bench ./cmd/holdfast-bench
	./bin/holdfast-bench -holdfast $(BIN) -compare $(BENCHFLAGS)

# ETRN at a million queued, holdfast and Postfix side by side (root).
# Postfix's queue is not filled over SMTP (20-30 minutes) but cloned from
# real deferred messages Postfix wrote (-postfix-fill clone, see
# docs/benchmarks.md); about 12 GB of disk under BENCH_WORK (default
# $$TMPDIR) while it runs, removed at the end. Not part of make test.
bench-postfix-1m: build
	$(GO) build -o bin/holdfast-bench ./cmd/holdfast-bench
	./bin/holdfast-bench -holdfast $(BIN) -compare -skip accept,relay -sizes 1M -postfix-sizes 1M -postfix-fill clone $(BENCHFLAGS)

# The Go benchmarks of the paths the performance work changed (a lone
# Enqueue, the ETRN reply and a cold ETRN round, relay at TLS level may,
# delivery over a slow link), a few iterations each: CI runs them
# (.ci/run) so that they keep working. Their figures are not
# measurements (docs/benchmarks.md).
bench-ci:
	$(GO) test -run '^$$' -bench 'Enqueue$$/writers=1/|SpoolEnqueue$$' -benchtime 20x ./store
	$(GO) test -run '^$$' -bench 'AcceptSessionCPU' -benchtime 50x ./smtpd
	$(GO) test -run '^$$' -bench 'RelayTLSMay|RelayRTT|SMTPRelay$$' -benchtime 50x ./delivery
	$(GO) test -run '^$$' -bench 'ETRN$$/queued=10000$$|ETRNCold' -benchtime 2x ./cmd/holdfast

# Go micro-benchmarks of the packages.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 -timeout 60m ./store/... ./smtpd/... ./delivery/... ./flush/...

# Runs each fuzz target for FUZZTIME.
fuzz:
	@for spec in $$($(GO) test -list '^Fuzz' ./... 2>/dev/null | awk '/^Fuzz/ {names[n++]=$$1} /^ok/ {for (i = 0; i < n; i++) print $$2":"names[i]; n = 0}'); do \
		pkg=$${spec%%:*}; fn=$${spec##*:}; \
		echo "== $$pkg $$fn"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

# Long form of the crash-safety test: 20 clients, the daemon SIGKILLed
# every few seconds for HOLDFAST_SOAK (default 10m), then everything must
# arrive. The short form runs in make test.
soak:
	HOLDFAST_SOAK=$${HOLDFAST_SOAK:-10m} $(GO) test -run '^TestCrashUnderLoad$$' -count=1 -timeout 60m -v ./test/crashtest/

# Installs the binary, the Postfix-compatible names (links to it), the
# systemd unit and sysusers entry, and the example configuration, under
# $(DESTDIR)$(PREFIX) (configuration under $(DESTDIR)$(SYSCONFDIR)). An
# existing holdfast.cf is never overwritten.
install: SYSCONFDIR ?= /etc
install: UNITDIR ?= $(PREFIX)/lib/systemd/system
install: SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
install: build
	install -d $(DESTDIR)$(PREFIX)/sbin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/sbin/holdfast
	for n in sendmail mailq postqueue postsuper; do \
		ln -sf holdfast $(DESTDIR)$(PREFIX)/sbin/$$n || exit 1; \
	done
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(SYSCONFDIR)/holdfast
	sed -e 's|@SBINDIR@|$(PREFIX)/sbin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		packaging/holdfast.service > $(DESTDIR)$(UNITDIR)/holdfast.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/holdfast.service
	install -m 0644 packaging/holdfast.sysusers $(DESTDIR)$(SYSUSERSDIR)/holdfast.conf
	install -m 0644 packaging/holdfast.cf $(DESTDIR)$(SYSCONFDIR)/holdfast/holdfast.cf.example
	test -e $(DESTDIR)$(SYSCONFDIR)/holdfast/holdfast.cf || \
		install -m 0644 packaging/holdfast.cf $(DESTDIR)$(SYSCONFDIR)/holdfast/holdfast.cf

# The manual pages: holdfast(8) as written, holdfast.cf(5) made from the
# parameter table by the binary itself.
man: build
	mkdir -p bin/pkg
	gzip -9n < docs/man/holdfast.8 > bin/pkg/holdfast.8.gz
	./$(BIN) config --man | gzip -9n > bin/pkg/holdfast.cf.5.gz

# A Debian package in bin/, built with nfpm (a Go module: go run fetches
# and caches it, nothing is installed). Version: the last tag, or
# 0.0.0~git<date>.<revision>.
NFPM ?= github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
deb: man
	sed -e 's|@SBINDIR@|/usr/sbin|g' -e 's|@SYSCONFDIR@|/etc|g' packaging/holdfast.service > bin/pkg/holdfast.service
	HOLDFAST_ARCH=$$($(GO) env GOARCH) \
	HOLDFAST_VERSION=$$(git describe --tags --abbrev=0 2>/dev/null | sed 's/^v//' || true) ; \
	[ -n "$$HOLDFAST_VERSION" ] || HOLDFAST_VERSION=0.0.0~git$$(git log -1 --format=%cd.%h --date=format:%Y%m%d 2>/dev/null || echo 0) ; \
	export HOLDFAST_ARCH HOLDFAST_VERSION ; \
	$(GO) run $(NFPM) package -f packaging/nfpm.yaml -p deb -t bin/

clean:
	rm -rf bin var
