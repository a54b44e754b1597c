package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/cluster"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/internal/listener"
	"github.com/holdfast-mta/holdfast/metrics"
	"github.com/holdfast-mta/holdfast/odmr"
	"github.com/holdfast-mta/holdfast/smtpd"
	"github.com/holdfast-mta/holdfast/store"
)

func init() {
	register("serve", "run the relay in the foreground (postfix start-fg)", runServe)
}

// queueDBName is the queue file inside queue_directory.
const queueDBName = "queue.db"

// lockTimeout is how long serve waits for the queue lock held by another
// process.
const lockTimeout = 2 * time.Second

func runServe(args []string, stdout, stderr io.Writer) int {
	path, overrides, code, ok := serveFlags(args, stderr)
	if !ok {
		return code
	}
	c, code := loadConfig(path, stderr)
	if c == nil {
		return code
	}
	if code := overrides.apply(c, stderr); code != 0 {
		return code
	}
	log, logCloser, err := newLogger(c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "holdfast serve: %v\n", err)
		return exConfig
	}
	if logCloser != nil {
		defer logCloser.Close()
	}
	watchTables(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP reloads (reload.go); caught from here on, so that one sent
	// during the start does not kill the process. Room for one: a storm
	// makes one reload more, not one each.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	raiseNoFile(c, log)
	d, err := startDaemon(c, log)
	if err != nil {
		msg, code := startError(err, path)
		fmt.Fprintf(stderr, "holdfast serve: %s\n", msg)
		return code
	}
	log.Info().Str("queue_directory", d.queueDir).Strs("smtpd_listen", d.smtpAddrs()).
		Int("pid", os.Getpid()).Msg("daemon started")
	rl := &reloader{d: d, path: path, overrides: overrides, cur: c}
	d.reloader.Store(rl)
	if err := d.run(ctx, stop, hup); err != nil {
		fmt.Fprintf(stderr, "holdfast serve: %v\n", err)
		return exSoftware
	}
	log.Info().Msg("daemon stopped")
	return 0
}

// serveFlags parses serve's command line: the configuration file and
// the -o overrides. When ok is false the command ends with code.
func serveFlags(args []string, stderr io.Writer) (path string, overrides overrideFlag, code int, ok bool) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&path, "c", defaultConfigPath, "configuration `file`")
	fs.Var(&overrides, "o", "override a parameter of the file: `name=value` (repeatable), as Postfix's -o")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", nil, 0, false
		}
		return "", nil, exUsage, false
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "holdfast serve: unexpected argument %q\n", fs.Arg(0))
		return "", nil, exUsage, false
	}
	return path, overrides, 0, true
}

// run serves until a signal ends ctx (stop then lets a second signal end
// the process at once) or a part fails, reloading on each SIGHUP, and
// then shuts the daemon down. The error is the failure that ended it, or
// else the shutdown's.
func (d *daemon) run(ctx context.Context, stop func(), hup <-chan os.Signal) error {
	stopHUP := make(chan struct{})
	go d.reloader.Load().watchHUP(hup, stopHUP)
	notify(d.log, sdnotify.SdNotifyReady)
	var failed error
	select {
	case <-ctx.Done():
		stop() // a second signal ends the process at once
		d.log.Info().Msg("signal received, shutting down")
	case failed = <-d.failed:
		d.log.Error().Err(failed).Msg("fatal error, shutting down")
	}
	close(stopHUP)
	notify(d.log, sdnotify.SdNotifyStopping)
	if err := d.shutdown(); err != nil {
		d.log.Error().Err(err).Msg("shutdown")
		if failed == nil {
			failed = err
		}
	}
	return failed
}

// startError turns a start-up failure into one line for the operator and
// an exit status.
func startError(err error, cfgPath string) (string, int) {
	var le *lockedError
	switch {
	case errors.As(err, &le):
		if le.pid > 0 {
			return fmt.Sprintf("queue %s is in use by pid %d", le.path, le.pid), exTempFail
		}
		return fmt.Sprintf("queue %s is in use by another process", le.path), exTempFail
	case errors.Is(err, store.ErrCorrupt):
		return fmt.Sprintf("%v; run `holdfast db check -c %s`, and `holdfast db salvage -c %s` to copy what can be read into a new file",
			err, cfgPath, cfgPath), exDataErr
	case errors.Is(err, store.ErrSchemaTooNew):
		return fmt.Sprintf("%v; this holdfast is older than the queue file", err), exConfig
	case errors.Is(err, os.ErrPermission):
		return err.Error(), exNoPerm
	case errors.Is(err, errConfig):
		return err.Error(), exConfig
	case errors.Is(err, errListen):
		return err.Error(), exUnavailable
	}
	return err.Error(), exIOErr
}

var (
	// errConfig marks a parameter that config accepted but a package
	// could not use.
	errConfig = errors.New("configuration")
	// errListen marks a listener that could not be opened.
	errListen = errors.New("listen")
)

// lockedError reports the queue database locked by another process.
type lockedError struct {
	path string
	pid  int
}

func (e *lockedError) Error() string { return "queue " + e.path + " is locked" }
func (e *lockedError) Unwrap() error { return store.ErrLocked }

// corruptError reports a queue file that store.Open cannot read.
type corruptError struct {
	path  string
	cause error
}

func (e *corruptError) Error() string {
	return fmt.Sprintf("queue %s is damaged (%v)", e.path, e.cause)
}
func (e *corruptError) Unwrap() error { return store.ErrCorrupt }

// daemon is the running relay: the store, the flush service, the delivery
// scheduler and the SMTP listeners. startDaemon builds it; shutdown stops
// it in the reverse order.
type daemon struct {
	log      zerolog.Logger
	queueDir string
	store    *store.Store
	policy   *flush.Policy
	flush    *flush.Service
	sched    *delivery.Scheduler
	smtp     *smtpd.Server
	odmr     *odmr.Server // nil when odmr_listen is empty
	metrics  *metrics.Set
	// feed tells flush --wait (control) and the cluster's followers the
	// outcomes of the recipients they follow.
	feed    *follow.Feed
	control *control.Server
	cluster *cluster.Node // nil on a single host (serve_cluster.go)
	// listeners are the smtpd_listen sockets, in configuration order.
	listeners []net.Listener
	// odmrLns are the odmr_listen sockets.
	odmrLns []net.Listener
	// metricsLn is the metrics_listen socket, if any.
	metricsLn net.Listener
	// self is the addresses holdfast receives mail on (loop detection);
	// set once the listeners are bound, before the scheduler runs.
	self *self
	// stopTimeout is shutdown_timeout: how long a graceful stop waits for
	// SMTP sessions and deliveries in progress before it cuts them.
	stopTimeout time.Duration

	cancelSched context.CancelFunc
	schedDone   chan error
	serving     sync.WaitGroup
	// failed receives the first unexpected error of a serving goroutine.
	failed chan error
	// resolver answers every DNS question of smtpd and delivery.
	resolver *dnsr.Resolver
	// reloader re-reads the configuration (SIGHUP, holdfast reload); set
	// once the daemon runs.
	reloader atomic.Pointer[reloader]
}

// startDaemon opens the queue and starts every part of the relay. On error
// whatever was started is stopped again.
func startDaemon(c *config.Config, log zerolog.Logger) (_ *daemon, err error) {
	d := &daemon{log: log, failed: make(chan error, 1), schedDone: make(chan error, 1)}
	defer func() {
		if err != nil {
			d.abort()
		}
	}()
	if d.stopTimeout, err = c.Time("shutdown_timeout"); err != nil {
		return nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	if err := d.openStore(c); err != nil {
		return nil, err
	}
	d.metrics = metrics.New(d.store.Stats)
	d.metrics.WatchAges(d.store.Ages, nil)
	d.feed = follow.NewFeed()
	if err := d.newDelivery(c); err != nil {
		return nil, err
	}
	if err := d.newCluster(c); err != nil {
		return nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	if err := d.startSMTP(c); err != nil {
		return nil, err
	}
	if err := d.startODMR(c); err != nil {
		return nil, err
	}
	if d.self, err = newSelf(c, d.listeners); err != nil {
		return nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	if err := d.startControl(c); err != nil {
		return nil, err
	}
	d.startServing()
	return d, nil
}

// newDelivery makes the resolver, the scheduler (not yet running) and
// the flush service over them.
func (d *daemon) newDelivery(c *config.Config) error {
	// One resolver (and cache) for every lookup: dns_resolver or the
	// servers of /etc/resolv.conf.
	var err error
	d.resolver, err = dnsr.New(dnsr.Options{Server: c.String("dns_resolver")})
	if err != nil {
		return fmt.Errorf("%w: dns_resolver: %v", errConfig, err)
	}
	dopts, err := delivery.OptionsFromConfig(c)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	dopts.Resolver = d.resolver
	dopts.Self = func(a netip.AddrPort) bool { return d.self.Is(a) }
	for _, w := range dopts.Warnings { // transports: reported, never silently ignored
		d.log.Warn().Msg(w)
	}
	dopts.Events = d.metrics // recipient outcomes: the metrics
	dopts.Feed = d.feed      // and flush --wait
	d.sched, err = delivery.New(dopts, d.store, d.log.With().Str("component", "delivery").Logger())
	if err != nil {
		return fmt.Errorf("delivery: %w", err)
	}
	d.flush = flush.NewService(d.policy, d.store, d.sched, d.log.With().Str("component", "flush").Logger())
	d.flush.SetEvents(d.metrics) // every request counted, by source (etrn, cli, cluster)
	return nil
}

// startServing runs the scheduler and the cluster session and serves
// SMTP on every listener, once everything is built.
func (d *daemon) startServing() {
	sctx, cancel := context.WithCancel(context.Background())
	d.cancelSched = cancel
	go func() { d.schedDone <- d.sched.Run(sctx) }()
	d.startCluster()
	for _, l := range d.listeners {
		d.serve("smtpd "+l.Addr().String(), func() error {
			err := d.smtp.Serve(l)
			if errors.Is(err, smtpd.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		})
	}
}

// startSMTP builds the SMTP server and opens every smtpd_listen address.
// New mail goes through the scheduler's Admit (defer_transports mail is
// deferred on arrival; mail due now wakes the scheduler), and is counted
// by the metrics from smtpd's acceptance events; ETRN goes to the flush
// service, which counts it.
func (d *daemon) startSMTP(c *config.Config) error {
	sopts, err := smtpd.OptionsFromConfig(c)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	sopts.Events = d.metrics
	sopts.Resolver = d.resolver // one cache for smtpd and delivery
	f := d.flush.As("etrn").Early()
	d.smtp, err = smtpd.New(sopts, d.sched.Admit(d.store), f, d.log.With().Str("component", "smtpd").Logger())
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	if len(sopts.Listen) == 0 {
		return fmt.Errorf("%w: smtpd_listen is empty", errConfig)
	}
	// No TCP keep-alive on SMTP connections, as in Postfix's smtpd:
	// smtpd_timeout ends a silent client, and Go's default (probes after
	// 15 s) costs four setsockopt calls per connection.
	lc := net.ListenConfig{KeepAlive: -1}
	for _, a := range sopts.Listen {
		l, err := lc.Listen(context.Background(), "tcp", a)
		if err != nil {
			return fmt.Errorf("%w: smtpd_listen %s: %v", errListen, a, err)
		}
		d.listeners = append(d.listeners, listener.New(l, "smtpd "+l.Addr().String(), d.log))
	}
	return nil
}

// startODMR starts the ODMR provider (RFC 2645) when odmr_listen is set:
// it leases from the store and delivers through the scheduler.
func (d *daemon) startODMR(c *config.Config) error {
	o, err := odmr.OptionsFromConfig(c)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	if len(o.Listen) == 0 {
		return nil
	}
	o.Events = d.metrics
	o.Publish = d.clusterPublish()
	srv, err := odmr.New(o, d.store, d.sched, d.log.With().Str("component", "odmr").Logger())
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	for _, a := range o.Listen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("%w: odmr_listen %s: %v", errListen, a, err)
		}
		d.odmrLns = append(d.odmrLns, listener.New(l, "odmr "+l.Addr().String(), d.log))
	}
	d.odmr = srv
	for _, l := range d.odmrLns {
		d.serve("odmr "+l.Addr().String(), func() error {
			if err := srv.Serve(l); !errors.Is(err, odmr.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	return nil
}

// startControl opens the control socket (control_socket; empty = none)
// and the Prometheus listener (metrics_listen; empty = none).
func (d *daemon) startControl(c *config.Config) error {
	if sock := c.String("control_socket"); sock != "" {
		srv, err := control.New(control.Options{
			Store: d.store, Flush: d.flush, Config: c, Events: d.metrics, Feed: d.feed, Wake: d.sched.Wake,
			Queue: d.sched.Admit(d.store), Reload: d.controlReload, Cluster: d.clusterView(),
			Log: d.log.With().Str("component", "control").Logger(),
		})
		if err != nil {
			return fmt.Errorf("%w: %v", errConfig, err)
		}
		l, err := control.Listen(sock)
		if err != nil {
			return fmt.Errorf("%w: control_socket: %v", errListen, err)
		}
		d.control = srv
		rl := listener.New(l, "control "+sock, d.log)
		d.serve("control "+sock, func() error { return srv.Serve(rl) })
	}
	if addr := c.String("metrics_listen"); addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%w: metrics_listen %s: %v", errListen, addr, err)
		}
		d.metricsLn = listener.New(l, "metrics "+l.Addr().String(), d.log)
		d.serve("metrics "+addr, func() error { return metrics.Serve(d.metricsLn, d.metrics) })
	}
	return nil
}

// serve runs fn in a goroutine; an error it returns stops the daemon.
func (d *daemon) serve(what string, fn func() error) {
	d.serving.Add(1)
	go func() {
		defer d.serving.Done()
		if err := fn(); err != nil {
			d.fail(fmt.Errorf("%s: %w", what, err))
		}
	}()
}

// openStore creates queue_directory and opens queue.db with the flush
// policy (index rebuilt at Open when fast_flush_domains changed).
func (d *daemon) openStore(c *config.Config) error {
	var err error
	d.policy, err = flush.New(c)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	d.queueDir = c.String("queue_directory")
	if d.queueDir == "" {
		return fmt.Errorf("%w: queue_directory is empty", errConfig)
	}
	if err := os.MkdirAll(d.queueDir, 0o700); err != nil {
		return fmt.Errorf("queue_directory: %w", err)
	}
	inflight, err := c.Size("inflight_content_limit")
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	setMemoryLimit(inflight, d.log)
	setGCFloor(d.log)
	maxSize, err := c.Size("queue_size_limit")
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	dbPath := filepath.Join(d.queueDir, queueDBName)
	opts := store.Options{
		Timeout: lockTimeout, Eligible: d.policy.Eligible, PolicyKey: d.policy.Key(),
		MaxSize: maxSize, ContentLimit: inflight,
	}
	d.storeHooks(&opts)
	d.store, err = store.Open(dbPath, opts)
	if errors.Is(err, store.ErrLocked) {
		// store.Open keeps the holder's pid next to the file.
		return &lockedError{path: dbPath, pid: readPid(dbPath + ".pid")}
	}
	if err != nil && damaged(err) {
		return &corruptError{path: dbPath, cause: err}
	}
	if err != nil {
		return fmt.Errorf("open queue %s: %w", dbPath, err)
	}
	d.logOpened(dbPath)
	return nil
}

// storeHooks sets the store's callbacks: the log and the metrics.
func (d *daemon) storeHooks(o *store.Options) {
	o.OnCorrupt = func(id store.ID, err error) {
		d.log.Error().Str("queue_id", string(id)).Err(err).
			Msg("corrupt queue record moved aside; run holdfast db check")
	}
	// Called once per message, from the store operation that met the
	// damage; d.metrics is set before any goroutine uses the store.
	o.OnDamaged = func(id store.ID, err error) {
		d.log.Error().Str("queue_id", string(id)).Err(err).
			Msg("message cannot be delivered: queue.db is damaged where it is kept; stop holdfast and run holdfast db salvage")
		d.metrics.Damaged()
	}
	// Every group commit: holdfast_store_commit_duration_seconds and
	// _batch_size. Open's own transactions are not group commits.
	o.OnCommit = func(took time.Duration, writers int) { d.metrics.ObserveCommit(took, writers) }
	// Acknowledged messages the journal could not hand to queue.db
	// (full disk, damage): kept in queue.db.journal, retried every
	// second; the queue cannot be read meanwhile.
	o.OnJournal = func(err error) {
		d.log.Error().Err(err).Msg("queue.db.journal cannot be applied to queue.db; retrying")
	}
	o.OnJournalCommit = func(took time.Duration, records int) { d.metrics.ObserveJournalCommit(took, records) }
}

// logOpened logs what store.Open did.
func (d *daemon) logOpened(dbPath string) {
	r := d.store.Report()
	if r.JournalErr != nil {
		d.log.Warn().Err(r.JournalErr).Msg("no queue journal: messages are committed to queue.db directly")
	}
	d.log.Info().Str("queue", dbPath).Int("schema_from", r.SchemaFrom).Int("schema", r.SchemaTo).
		Int("recovered_leases", r.Recovered).Bool("flush_index_rebuilt", r.Rebuilt).
		Int("quarantined", r.Quarantined).Int("journal_replayed", r.Replayed).Bool("fast_flush", d.policy.Enabled()).Msg("queue opened")
}

// damaged reports whether an Open error means the file is not a usable
// queue file.
func damaged(err error) bool {
	return errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrCorrupt)
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return n
}

// fail records the first fatal error of a serving goroutine.
func (d *daemon) fail(err error) {
	select {
	case d.failed <- err:
	default:
	}
}

// smtpAddrs lists the bound SMTP addresses (with the real port for ":0").
func (d *daemon) smtpAddrs() []string {
	var out []string
	for _, l := range d.listeners {
		out = append(out, l.Addr().String())
	}
	return out
}

// shutdown stops the daemon within shutdown_timeout: it stops accepting
// and, at the same time, lets SMTP sessions end their current command and
// stops the scheduler (in-flight deliveries finish). What is still busy at
// the deadline is cut: an SMTP transaction that had no 250 is not
// acknowledged, a delivery's message returns to the queue. Then the
// control and metrics servers close and the store. Cutting at the
// deadline is what shutdown_timeout asks for, so it is logged, not an
// error; an error is a part that failed (the store).
func (d *daemon) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), d.stopTimeout)
	defer cancel()
	d.cancelSched() // the scheduler bounds itself (ShutdownGrace)
	var errs []error
	if err := d.smtp.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		d.log.Warn().Dur("shutdown_timeout", d.stopTimeout).Msg("shutdown: SMTP sessions still busy at shutdown_timeout were cut")
	} else if err != nil {
		errs = append(errs, fmt.Errorf("smtpd shutdown: %w", err))
	}
	if d.odmr != nil {
		// A turnaround in progress commits its message in flight; the
		// rest stay queued.
		if err := d.odmr.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
			d.log.Warn().Msg("shutdown: ODMR sessions still busy at shutdown_timeout were cut")
		}
	}
	if err := <-d.schedDone; err != nil {
		errs = append(errs, fmt.Errorf("delivery: %w", err))
	}
	if d.control != nil {
		// Requests still running at the deadline (flush --wait, listings)
		// are cut; the CLI reports a lost connection.
		if err := d.control.Shutdown(ctx); err != nil {
			d.log.Warn().Err(err).Msg("shutdown: control requests in progress were cut")
		}
	}
	if d.metricsLn != nil {
		d.metricsLn.Close()
	}
	d.serving.Wait()
	d.stopCluster()
	// Flushes still going on in the background stop at their next chunk.
	d.flush.Close()
	if err := d.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store close: %w", err))
	}
	return errors.Join(errs...)
}

// abort undoes a partial start (nothing is serving yet).
func (d *daemon) abort() {
	for _, l := range d.listeners {
		l.Close()
	}
	if d.odmr != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		d.odmr.Shutdown(ctx)
		cancel()
	}
	for _, l := range d.odmrLns {
		l.Close()
	}
	if d.metricsLn != nil {
		d.metricsLn.Close()
	}
	if d.control != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		d.control.Shutdown(ctx)
	}
	d.serving.Wait()
	d.stopCluster()
	if d.flush != nil {
		d.flush.Close()
	}
	if d.store != nil {
		d.store.Close()
	}
}

// notify tells systemd (Type=notify) about a change of state, when
// NOTIFY_SOCKET says it is listening; elsewhere it does nothing.
func notify(log zerolog.Logger, state string) {
	if _, err := sdnotify.SdNotify(false, state); err != nil {
		log.Warn().Err(err).Str("state", state).Msg("sd_notify failed")
	}
}

// watchTables logs each re-read of a lookup table whose file changed
// (config.TableEvents): the new contents in force, or why the old stay.
func watchTables(log zerolog.Logger) {
	fn := func(file string, err error) {
		if err != nil {
			log.Warn().Err(err).Str("table", file).Msg("lookup table not re-read; the previous contents stay in force")
			return
		}
		log.Info().Str("table", file).Msg("lookup table re-read")
	}
	config.TableEvents.Store(&fn)
}
