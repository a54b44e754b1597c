// Package listener keeps a server accepting connections through resource
// exhaustion. When the process runs out of file descriptors (EMFILE), the
// system does (ENFILE), or the kernel is short of buffers, accept(2) fails
// for a while; a server that treats that as fatal lets one flood of
// connections kill the daemon. A Listener retries instead, as net/http's
// Server.Serve does: it sleeps 5 ms, doubling to at most 1 s, until accept
// succeeds again, and logs at most one line per LogInterval.
//
// Group is the rest that the SMTP and ODMR servers share: the accept
// loop that hands connections to their handlers, the sessions in
// progress, and the shutdown that waits for them and cuts them when its
// time is up.
//
// Caveats: while accept fails, new connections wait in the kernel's listen
// backlog (or are refused once it is full); the sessions already open go on.
package listener

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Backoff bounds, as net/http's Server.Serve.
const (
	MinDelay = 5 * time.Millisecond
	MaxDelay = time.Second
)

// LogInterval is the shortest time between two log lines about failing
// accepts on one listener.
const LogInterval = 10 * time.Second

// Listener is a net.Listener whose Accept retries temporary failures.
type Listener struct {
	net.Listener
	name string
	log  zerolog.Logger

	closed    chan struct{}
	closeOnce sync.Once

	mu        sync.Mutex
	lastLog   time.Time
	failures  int // since lastLog
	retrySeen bool
}

// New wraps l; name says which listener it is in the log ("smtpd
// 127.0.0.1:25").
func New(l net.Listener, name string, log zerolog.Logger) *Listener {
	return &Listener{Listener: l, name: name, log: log, closed: make(chan struct{})}
}

// Accept waits for the next connection. A temporary failure is retried
// after a delay (5 ms doubling to 1 s); Close ends the wait.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if delay > 0 {
				l.recovered()
			}
			return c, nil
		}
		if !Temporary(err) {
			return nil, err
		}
		select {
		case <-l.closed:
			return nil, err
		default:
		}
		delay = min(max(2*delay, MinDelay), MaxDelay)
		l.failed(err, delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

// Close closes the listener and ends a retry in progress.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// failed logs the first failure, then at most one line per LogInterval
// with the number of failures in between.
func (l *Listener) failed(err error, delay time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures++
	now := time.Now()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < LogInterval {
		return
	}
	l.log.Warn().Str("listener", l.name).Err(err).Int("failures", l.failures).
		Dur("retry_in", delay).Msg("accept failed; retrying")
	l.lastLog, l.failures, l.retrySeen = now, 0, true
}

// recovered logs once that accept works again after failures.
func (l *Listener) recovered() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.retrySeen {
		return
	}
	l.log.Info().Str("listener", l.name).Int("failures", l.failures).Msg("accept works again")
	l.retrySeen, l.failures = false, 0
}

// Temporary reports whether an accept error is worth retrying: a timeout,
// or a shortage of descriptors, buffers or memory, or a connection that
// went away before it was accepted.
func Temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
