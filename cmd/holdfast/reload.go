package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/odmr"
	"github.com/holdfast-mta/holdfast/smtpd"
)

// restartOnly are the parameters a reload cannot apply to the running
// daemon: sockets it opened, the queue file and its store's limits, the
// logger, the shared DNS resolver and the sizes of the scheduler's and
// anvil's tables. A reload that changes one names it in the log (and in
// holdfast reload's output); the value in force stays until a restart.
var restartOnly = []string{
	"smtpd_listen", "odmr_listen", "control_socket", "metrics_listen",
	"queue_directory", "inflight_content_limit", "queue_size_limit",
	"shutdown_timeout", "dns_resolver",
	"qmgr_message_active_limit", "delivery_concurrency_limit",
	"anvil_rate_time_unit", "smtpd_client_ipv4_prefix_length", "smtpd_client_ipv6_prefix_length",
	"log_format", "log_level", "syslog_name", "syslog_facility", "maillog_file",
}

// reloader re-reads the configuration of a running daemon: on SIGHUP and
// on holdfast reload (control's POST /v1/reload). One reload runs at a
// time; signals that arrive meanwhile are coalesced into one more.
type reloader struct {
	d         *daemon
	path      string
	overrides overrideFlag

	mu  sync.Mutex
	cur *config.Config // the configuration in force
	// count is the reloads done (tests).
	count atomic.Int64
}

// errReload marks a configuration that was refused.
var errReload = errors.New("configuration not reloaded; the previous one stays in force")

// reload loads the file (with the serve -o overrides), builds every
// part's new settings, and only when all of them accept puts them in
// force: smtpd (new sessions), the scheduler (new deliveries and
// admission), ODMR, the control server and the flush policy (index
// rebuilt in the background when fast_flush_domains changed). Sessions
// and deliveries in flight keep what they started with. On error
// nothing changes.
func (r *reloader) reload(why string) (control.ReloadResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.d.log
	notify(log, reloadingState())
	defer notify(log, sdnotify.SdNotifyReady)
	start := time.Now()
	res, err := r.apply()
	if err != nil {
		log.Error().Err(err).Str("trigger", why).Msg(errReload.Error())
		return res, fmt.Errorf("%w: %v", errReload, err)
	}
	r.count.Add(1)
	ev := log.Info().Str("trigger", why).Dur("took", time.Since(start)).Bool("flush_index_rebuild", res.FlushIndexRebuild)
	if len(res.Restart) > 0 {
		ev = ev.Strs("restart_needed", res.Restart)
		log.Warn().Strs("restart_needed", res.Restart).
			Msgf("changed parameters that take effect only after a restart: %s", strings.Join(res.Restart, ", "))
	}
	ev.Msg("configuration reloaded")
	return res, nil
}

// reloadingState is RELOADING=1 with the MONOTONIC_USEC that systemd
// asks of Type=notify-reload services (sd_notify(3)); Type=notify takes
// it as well.
func reloadingState() string {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return "RELOADING=1"
	}
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}

// apply is reload's work under the lock: read, check every part's new
// settings, then put them in force.
func (r *reloader) apply() (control.ReloadResult, error) {
	var res control.ReloadResult
	c, err := readConfig(r.path, r.overrides)
	if err != nil {
		return res, err
	}
	for _, w := range c.Warnings() {
		r.d.log.Warn().Msg(w)
	}
	st, err := r.d.prepare(c)
	if err != nil {
		return res, err
	}
	if res.FlushIndexRebuild, err = r.d.commit(st); err != nil {
		return res, err
	}
	res.Restart = changed(r.cur, c, restartOnly)
	r.cur = c
	return res, nil
}

// staged is a new configuration checked by every part, not yet in force.
type staged struct {
	smtp    smtpd.Options
	sched   delivery.Options
	odmr    *odmr.Options // nil: ODMR keeps its settings (not running, or odmr_listen emptied)
	policy  *flush.Policy
	control func() // puts control's part in force
}

// prepare builds and checks every part's settings from c.
func (d *daemon) prepare(c *config.Config) (*staged, error) {
	st := &staged{control: func() {}}
	var err error
	if st.smtp, err = smtpd.OptionsFromConfig(c); err != nil {
		return nil, err
	}
	st.smtp.Events, st.smtp.Resolver = d.metrics, d.resolver
	if st.sched, err = delivery.OptionsFromConfig(c); err != nil {
		return nil, err
	}
	for _, w := range st.sched.Warnings {
		d.log.Warn().Msg(w)
	}
	st.sched.Resolver = d.resolver
	if st.policy, err = flush.New(c); err != nil {
		return nil, err
	}
	if d.odmr != nil {
		o, err := odmr.OptionsFromConfig(c)
		if err != nil {
			return nil, err
		}
		if o.Backend != nil {
			o.Events = d.metrics
			st.odmr = &o
		}
	}
	if d.control != nil {
		if st.control, err = d.control.Reconfigure(c); err != nil {
			return nil, err
		}
	}
	if _, err := c.Time("shutdown_timeout"); err != nil {
		return nil, err
	}
	return st, nil
}

// commit puts st in force. smtpd's Reload parses the restriction lists
// and may still refuse, so it goes first; the rest cannot fail.
// rebuilding: the flush index is being rebuilt for a new policy.
func (d *daemon) commit(st *staged) (rebuilding bool, err error) {
	if err := d.smtp.Reload(st.smtp); err != nil {
		return false, err
	}
	if st.odmr != nil {
		if err := d.odmr.Reload(*st.odmr); err != nil {
			d.log.Error().Err(err).Msg("odmr: new settings refused; ODMR keeps its previous ones")
		}
	}
	d.sched.Reload(st.sched)
	st.control()
	return d.flush.SetPolicy(st.policy), nil
}

// readConfig loads the file and applies the -o overrides, as serve did at
// start.
func readConfig(path string, overrides overrideFlag) (*config.Config, error) {
	c, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	var msg strings.Builder
	if code := overrides.apply(c, &msg); code != 0 {
		return nil, errors.New(strings.TrimSpace(msg.String()))
	}
	return c, nil
}

// changed names the params whose expanded value differs between a and b.
func changed(a, b *config.Config, params []string) []string {
	var out []string
	for _, p := range params {
		if !config.Known(p) {
			continue
		}
		va, ea := a.Expand(p)
		vb, eb := b.Expand(p)
		if va != vb || (ea == nil) != (eb == nil) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// watchHUP reloads on each SIGHUP from hup until stop is closed. hup has
// room for one signal: the signals of a storm that arrive during a reload
// make one more reload, never one each.
func (r *reloader) watchHUP(hup <-chan os.Signal, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-hup:
			r.reload("SIGHUP")
		}
	}
}

// controlReload is control's Reload: the daemon's reloader once serve set
// it.
func (d *daemon) controlReload() (control.ReloadResult, error) {
	r := d.reloader.Load()
	if r == nil {
		return control.ReloadResult{}, errors.New("the daemon is still starting")
	}
	return r.reload("holdfast reload")
}

// runReload is `holdfast reload [-c FILE]`: it asks the running daemon to
// re-read its configuration (postfix reload). Exit 0: the new
// configuration is in force (parameters that need a restart are listed);
// exConfig (78): it was refused and the old one stays in force;
// exUnavailable (69): no daemon answers; exNoPerm (77): not allowed.
func runReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("holdfast reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("c", defaultConfigPath, "configuration `file` (for control_socket)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "holdfast reload: unexpected argument %q\n", fs.Arg(0))
		return exUsage
	}
	cl, _, code := clientFor(*cfg, "holdfast reload", stderr)
	if cl == nil {
		return code
	}
	ctx, cancel := interruptible()
	defer cancel()
	res, err := cl.Reload(ctx)
	if err != nil {
		var ae *control.Error
		if errors.As(err, &ae) && ae.Code == control.CodeReloadFailed {
			fmt.Fprintf(stderr, "holdfast reload: %s\n", ae.Msg)
			return exConfig
		}
		return apiExit("holdfast reload", err, stderr)
	}
	fmt.Fprintln(stdout, "holdfast reload: configuration reloaded")
	if res.FlushIndexRebuild {
		fmt.Fprintln(stdout, "holdfast reload: fast_flush_domains changed: the flush index is being rebuilt in the background")
	}
	if len(res.Restart) > 0 {
		fmt.Fprintf(stdout, "holdfast reload: these changes take effect after a restart: %s\n", strings.Join(res.Restart, ", "))
	}
	return 0
}

func init() {
	register("reload", "re-read the configuration of the running daemon (postfix reload; SIGHUP does the same)", runReload)
}
