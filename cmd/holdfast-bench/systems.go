package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// system is one MTA under test, with its two sinks: the ETRN-only
// customers' server and the relay destination.
type system interface {
	Name() string
	Addr() string
	ETRNSink() sink
	RelaySink() sink
	// Start starts the MTA and returns how long it took until its port
	// gave a 220 greeting.
	Start(ctx context.Context) (time.Duration, error)
	Stop() error
	// QueueDir is where its queue lives (bytes on disk).
	QueueDir() string
}

// routing writes the transport table both MTAs share: the ETRN-only
// domains (etrn.test and below) to the etrn-only transport, relay.test to
// plain smtp, each to its sink.
func routing(path string, etrn, relay sink) error {
	t := fmt.Sprintf("etrn.test etrn-only:[%s]:%s\n.etrn.test etrn-only:[%s]:%s\nrelay.test smtp:[%s]:%s\n",
		host(etrn.Addr()), port(etrn.Addr()), host(etrn.Addr()), port(etrn.Addr()),
		host(relay.Addr()), port(relay.Addr()))
	return os.WriteFile(path, []byte(t), 0o644)
}

func host(addr string) string { h, _, _ := strings.Cut(addr, ":"); return h }
func port(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }

// commonCF is the part of main.cf both MTAs get: the seed's ETRN-only
// setup (ETRN_README) on loopback. The backoff is long so that no
// deferred mail comes due during a run: the only deliveries measured are
// the ones ETRN starts.
func commonCF(transport string) string {
	return `mynetworks = 127.0.0.0/8
relay_domains = etrn.test, relay.test
fast_flush_domains = $relay_domains
defer_transports = etrn-only
transport_maps = texthash:` + transport + `
minimal_backoff_time = 4000s
maximal_backoff_time = 4000s
`
}

// holdfast is the daemon under test: holdfast serve -c DIR/holdfast.cf.
type holdfast struct {
	bin, dir, cfg, addr string
	etrn, relay         sink
	cmd                 *exec.Cmd
	exited              chan struct{}
	log                 *os.File
	// next continues the filler round robin across incremental fills.
	next int
}

func newHoldfast(bin, dir string, etrn, relay sink) (*holdfast, error) {
	if err := os.MkdirAll(filepath.Join(dir, "queue"), 0o755); err != nil {
		return nil, err
	}
	p, err := freePort()
	if err != nil {
		return nil, err
	}
	h := &holdfast{bin: bin, dir: dir, cfg: filepath.Join(dir, "holdfast.cf"),
		addr: fmt.Sprintf("127.0.0.1:%d", p), etrn: etrn, relay: relay}
	transport := filepath.Join(dir, "transport")
	if err := routing(transport, etrn, relay); err != nil {
		return nil, err
	}
	cf := "# holdfast under benchmark (generated)\n" +
		"myhostname = hf.bench.test\n" +
		"smtpd_listen = " + h.addr + "\n" +
		"queue_directory = " + filepath.Join(dir, "queue") + "\n" +
		commonCF(transport)
	return h, os.WriteFile(h.cfg, []byte(cf), 0o644)
}

func (h *holdfast) Name() string     { return "holdfast" }
func (h *holdfast) Addr() string     { return h.addr }
func (h *holdfast) ETRNSink() sink   { return h.etrn }
func (h *holdfast) RelaySink() sink  { return h.relay }
func (h *holdfast) QueueDir() string { return filepath.Join(h.dir, "queue") }
func (h *holdfast) DB() string       { return dbFile(h.QueueDir()) }

func (h *holdfast) Start(ctx context.Context) (time.Duration, error) {
	if h.cmd != nil {
		return 0, errors.New("holdfast already running")
	}
	lf, err := os.OpenFile(filepath.Join(h.dir, "holdfast.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	h.log = lf
	h.cmd = exec.Command(h.bin, "serve", "-c", h.cfg)
	h.cmd.Stdout, h.cmd.Stderr = lf, lf
	h.exited = make(chan struct{})
	start := time.Now()
	if err := h.cmd.Start(); err != nil {
		h.cmd = nil
		return 0, fmt.Errorf("holdfast serve: %w", err)
	}
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(h.cmd, h.exited)
	alive := func() error {
		select {
		case <-h.exited:
			return fmt.Errorf("holdfast serve exited (%v); log: %s", h.cmd.ProcessState, h.logTail())
		default:
			return nil
		}
	}
	if err := awaitBanner(ctx, h.addr, 2*time.Minute, alive); err != nil {
		h.Stop()
		return 0, err
	}
	return time.Since(start), nil
}

func (h *holdfast) logTail() string {
	b, _ := os.ReadFile(filepath.Join(h.dir, "holdfast.log"))
	return tail(b, 1500)
}

// Stop sends SIGTERM and waits for a graceful exit (SIGKILL after 60 s).
func (h *holdfast) Stop() error {
	if h.cmd == nil {
		return nil
	}
	defer func() { h.cmd = nil; h.log.Close() }()
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(60 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
		return errors.New("holdfast did not stop within 60 s after SIGTERM; killed")
	}
	if st := h.cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("holdfast serve exited with %v; log: %s", st, h.logTail())
	}
	return nil
}

// memory is a process's resident set from /proc/PID/status.
type memory struct{ RSS, Anon, File int64 } // bytes

func (h *holdfast) Memory() (memory, error) {
	if h.cmd == nil {
		return memory{}, errors.New("holdfast not running")
	}
	return procMemory(h.cmd.Process.Pid)
}

func procMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fs[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n << 10
		case "RssAnon":
			m.Anon = n << 10
		case "RssFile":
			m.File = n << 10
		}
	}
	return m, sc.Err()
}

// postfix is a private Postfix instance: its own config, queue and data
// directories under dir, smtpd on a loopback port, started and stopped
// with postfix -c.
type postfix struct {
	dir, etc, addr string
	etrn, relay    sink
	running        bool
	// cloneMark is the size of the maillog when Postfix started on a
	// cloned queue; cloneProblems reads from there.
	cloneMark int64
}

// masterCF runs every service unchrooted (the queue is in a temporary
// directory) and adds the etrn-only transport, a copy of smtp.
const masterCF = `%s inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
etrn-only unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

func newPostfix(dir string, etrn, relay sink) (*postfix, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the Postfix side needs root (Postfix's master runs as root)")
	}
	p := &postfix{dir: dir, etc: filepath.Join(dir, "etc"), etrn: etrn, relay: relay}
	for _, d := range []string{p.etc, filepath.Join(dir, "queue"), filepath.Join(dir, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	u, err := user.Lookup("postfix")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	if err := os.Chown(filepath.Join(dir, "data"), uid, -1); err != nil {
		return nil, err
	}
	pt, err := freePort()
	if err != nil {
		return nil, err
	}
	p.addr = fmt.Sprintf("127.0.0.1:%d", pt)
	transport := filepath.Join(p.etc, "transport")
	if err := routing(transport, etrn, relay); err != nil {
		return nil, err
	}
	cf := "# private Postfix for the holdfast benchmark (generated)\n" +
		"compatibility_level = 3.6\n" +
		"queue_directory = " + filepath.Join(dir, "queue") + "\n" +
		"data_directory = " + filepath.Join(dir, "data") + "\n" +
		"meta_directory = /etc/postfix\n" +
		"mail_owner = postfix\nsetgid_group = postdrop\n" +
		"myhostname = pf.bench.test\nmydestination =\n" +
		"alias_maps =\nalias_database =\nlocal_recipient_maps =\n" +
		"inet_interfaces = loopback-only\ninet_protocols = ipv4\n" +
		"maillog_file = " + filepath.Join(dir, "maillog") + "\n" +
		"maillog_file_prefixes = " + dir + "\n" +
		commonCF(transport)
	if err := os.WriteFile(filepath.Join(p.etc, "main.cf"), []byte(cf), 0o644); err != nil {
		return nil, err
	}
	return p, os.WriteFile(filepath.Join(p.etc, "master.cf"), []byte(fmt.Sprintf(masterCF, p.addr)), 0o644)
}

func (p *postfix) Name() string     { return "postfix" }
func (p *postfix) Addr() string     { return p.addr }
func (p *postfix) ETRNSink() sink   { return p.etrn }
func (p *postfix) RelaySink() sink  { return p.relay }
func (p *postfix) QueueDir() string { return filepath.Join(p.dir, "queue") }

func (p *postfix) Start(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	out, err := exec.Command("postfix", "-c", p.etc, "start").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("postfix start: %w: %s%s", err, out, p.maillogTail())
	}
	p.running = true
	if err := awaitBanner(ctx, p.addr, time.Minute, func() error { return nil }); err != nil {
		return 0, fmt.Errorf("%w%s", err, p.maillogTail())
	}
	return time.Since(start), nil
}

func (p *postfix) maillogTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return "\nmaillog: " + tail(b, 1500)
}

// Stop runs postfix stop and waits for the master to exit.
func (p *postfix) Stop() error {
	if !p.running {
		return nil
	}
	p.running = false
	pid := readPid(filepath.Join(p.QueueDir(), "pid", "master.pid"))
	if out, err := exec.Command("postfix", "-c", p.etc, "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("postfix stop: %w: %s", err, out)
	}
	for deadline := time.Now().Add(30 * time.Second); pid > 0 && time.Now().Before(deadline); {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pid > 0 && syscall.Kill(pid, 0) == nil {
		return fmt.Errorf("postfix master %d still running 30 s after postfix stop", pid)
	}
	return nil
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// queueFiles counts the files in the given queue sub-directories.
func (p *postfix) queueFiles(queues ...string) (int, error) {
	n := 0
	for _, q := range queues {
		err := filepath.WalkDir(filepath.Join(p.QueueDir(), q), func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				n++
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

// settle waits until Postfix has moved every message out of maildrop,
// incoming and active, and returns the deferred count, once it is at
// least want (want 0: not counted, as that walks the whole deferred
// queue).
func (p *postfix) settle(ctx context.Context, want int, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		busy, err := p.queueFiles("maildrop", "incoming", "active")
		if err != nil {
			return 0, err
		}
		def := 0
		if want > 0 {
			if def, err = p.queueFiles("deferred"); err != nil {
				return 0, err
			}
		}
		if busy == 0 && def >= want {
			return def, nil
		}
		if time.Now().After(deadline) {
			return def, fmt.Errorf("postfix queue not settled after %s: %d in flight, %d deferred, want %d", limit, busy, def, want)
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// diskBytes is the space the files under dir take (allocated blocks).
func diskBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && !d.IsDir() {
			n += st.Blocks * 512
		}
		return nil
	})
	return n, err
}
