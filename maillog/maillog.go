// Package maillog writes the daemon's log as Postfix's maillog: one line
// per event in Postfix's words ("QUEUEID: to=<u@d>, relay=..., status=sent
// (...)", "NOQUEUE: reject: RCPT from ..."), tagged "syslog_name/program[pid]",
// to syslog or to a file (maillog_file), so that pflogsumm, fail2ban's
// postfix filter and an operator's grep habits keep working.
//
// The daemon logs structured zerolog events; a Writer is the zerolog
// output that renders each event. Writing never blocks the daemon on a
// broken log: a missing /dev/log falls back to standard error, and a
// failed write (a full file system) is counted and dropped.
package maillog

import (
	"encoding/json"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options choose where the lines go.
type Options struct {
	// Name is syslog_name: the part before "/program" in every line.
	Name string
	// File is maillog_file: write there instead of syslog ("" = syslog).
	// "/dev/stdout" and "/dev/stderr" are allowed, as in Postfix.
	File string
	// Facility is syslog_facility (mail, local0 ... local7, ...).
	Facility string
	// Fallback receives the lines when syslog cannot be reached (and the
	// warning that says so); default os.Stderr.
	Fallback io.Writer
	// Now is the clock of file lines; nil means time.Now.
	Now func() time.Time
}

// Writer renders zerolog events as maillog lines. It is safe for
// concurrent use.
type Writer struct {
	o       Options
	pid     int
	host    string
	mu      sync.Mutex
	out     sink
	r       *renderer
	dropped atomic.Int64
}

// sink is where rendered lines go: syslog or a file.
type sink interface {
	write(prog, text string) error
	close() error
}

// New opens the destination.
func New(o Options) (*Writer, error) {
	if o.Name == "" {
		o.Name = "holdfast"
	}
	if o.Fallback == nil {
		o.Fallback = os.Stderr
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	host, _ := os.Hostname()
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	w := &Writer{o: o, pid: os.Getpid(), host: host, r: newRenderer()}
	if o.File != "" {
		f, err := openFile(o.File, w.format)
		if err != nil {
			return nil, fmt.Errorf("maillog_file: %w", err)
		}
		w.out = f
		return w, nil
	}
	pri, err := facility(o.Facility)
	if err != nil {
		return nil, err
	}
	fallback := func(prog, text string) error { return w.format(o.Fallback, prog, text) }
	w.out = &syslogSink{name: o.Name, pri: pri, fallback: fallback, writers: map[string]*syslog.Writer{}}
	return w, nil
}

// Write renders one zerolog event (one JSON object) and writes its
// lines. It always reports success to zerolog: a line that cannot be
// written is counted (Dropped), never an error that stops the daemon.
func (w *Writer) Write(p []byte) (int, error) {
	var e event
	if err := json.Unmarshal(p, &e); err != nil {
		e = event{"message": strings.TrimSpace(string(p)), "level": "warn"}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.r.render(e) {
		if err := w.out.write(l.prog, l.text); err != nil {
			w.dropped.Add(1)
		}
	}
	return len(p), nil
}

// Dropped is how many lines could not be written.
func (w *Writer) Dropped() int64 { return w.dropped.Load() }

// Close closes the destination.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.close()
}

// format writes a line in the syslog file format: "Mmm dd hh:mm:ss
// host name/prog[pid]: text".
func (w *Writer) format(out io.Writer, prog, text string) error {
	_, err := fmt.Fprintf(out, "%s %s %s/%s[%d]: %s\n", w.o.Now().Format(time.Stamp), w.host, w.o.Name, prog, w.pid, text)
	return err
}

// facility maps syslog_facility to a priority (at level info).
func facility(name string) (syslog.Priority, error) {
	f := map[string]syslog.Priority{
		"": syslog.LOG_MAIL, "mail": syslog.LOG_MAIL, "daemon": syslog.LOG_DAEMON, "user": syslog.LOG_USER,
		"local0": syslog.LOG_LOCAL0, "local1": syslog.LOG_LOCAL1, "local2": syslog.LOG_LOCAL2,
		"local3": syslog.LOG_LOCAL3, "local4": syslog.LOG_LOCAL4, "local5": syslog.LOG_LOCAL5,
		"local6": syslog.LOG_LOCAL6, "local7": syslog.LOG_LOCAL7,
	}
	p, ok := f[strings.ToLower(name)]
	if !ok {
		return 0, fmt.Errorf("syslog_facility: unknown facility %q", name)
	}
	return p | syslog.LOG_INFO, nil
}
