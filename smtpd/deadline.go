package smtpd

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// deadlines sits between the session's buffers and its connection and
// sets the connection's deadline before every read and write, as
// Postfix's vstream does (smtp_stream_setup):
//
//   - smtpd_per_request_deadline = no: smtpd_timeout limits each read
//     and each write.
//   - yes: smtpd_timeout is a budget for a whole request, charged with the
//     time spent waiting in reads and writes; begin recharges it at each
//     command and at the start of DATA or BDAT content. While content is
//     read, every n bytes earn n/smtpd_min_data_rate seconds, up to
//     smtpd_timeout.
//   - smtpd_transaction_deadline (ours) also ends every read of a mail
//     transaction at txEnd.
//
// The limits are the server's current ones (normal or stress): a read
// woken by kick (stress began) re-evaluates them and goes on waiting
// under the new deadline.
type deadlines struct {
	s       *session
	lim     *Limits
	content bool          // reading DATA/BDAT content: earn MinDataRate
	budget  time.Duration // left of the request, with PerRequestDeadline
	txEnd   time.Time     // end of the mail transaction; zero outside one
	// why is set when a read timed out: "timeout" or "transaction
	// deadline" (the disconnect log's reason).
	why     string
	reading atomic.Bool // a read is in progress (kick wakes only those)
	// rset and wset are the read and write deadlines set on the
	// connection by Read and Write (zero: not known, set the next one).
	// A deadline is set up to slack later than needed, so that most
	// reads and writes find one in place that ends no earlier than
	// theirs and at most slack later, and leave it: setting one costs a
	// runtime timer update, twice per command.
	rset, wset time.Time
	// stale: another goroutine set the read deadline (kick, Shutdown's
	// interruptIdle); the next Read sets its own.
	stale atomic.Bool
}

// slack is how much later than needed Read and Write may leave a
// deadline: 1/64 of the timeout (under 5 s of smtpd_timeout's 300 s).
func (d *deadlines) slack() time.Duration { return d.lim.Timeout / 64 }

// forget makes the next Read and Write set their deadlines: the TLS
// handshake set the connection's.
func (d *deadlines) forget() { d.rset, d.wset = time.Time{}, time.Time{} }

// deadline returns the deadline to set for a read or write that must
// end by dl and, if end is not zero, by end (a read in a transaction:
// dl is end or earlier), or ok = false when set, the one in place, will
// do: it ends no earlier than dl, at most slack later and not after end.
// A deadline set is slack later than dl, but not after end.
func (d *deadlines) deadline(set, dl, end time.Time) (next time.Time, ok bool) {
	if !set.IsZero() && !set.Before(dl) && set.Sub(dl) <= d.slack() && (end.IsZero() || !set.After(end)) {
		return set, false
	}
	next = dl.Add(d.slack())
	if !end.IsZero() && next.After(end) {
		next = end
	}
	return next, true
}

// errDeadline is returned without a read once the budget is spent.
var errDeadline net.Error = deadlineErr{}

type deadlineErr struct{}

func (deadlineErr) Error() string   { return "smtpd: request deadline exceeded" }
func (deadlineErr) Timeout() bool   { return true }
func (deadlineErr) Temporary() bool { return true }

// begin starts a request (content = false) or the content of DATA or
// BDAT (true) under the limits in force now.
func (d *deadlines) begin(content bool) {
	d.lim = d.s.limits()
	d.budget = d.lim.Timeout
	d.content = content
	d.why = ""
}

// refresh takes the stress limits when stress began during the request:
// the budget shrinks to the stress timeout.
func (d *deadlines) refresh() {
	if l := d.s.limits(); l != d.lim {
		d.lim = l
		d.budget = min(d.budget, l.Timeout)
	}
}

// kick wakes a read in progress so that it re-evaluates its deadline.
// It runs on another goroutine: it touches only the TCP connection (a
// TLS connection's read deadline is its TCP connection's) and atomics.
func (d *deadlines) kick() {
	if d.reading.Load() {
		d.stale.Store(true)
		d.s.raw.SetReadDeadline(time.Now())
	}
}

// readDeadline returns the deadline of the next read; ok is false when
// the request's budget or the transaction's time is spent.
func (d *deadlines) readDeadline(now time.Time) (dl time.Time, ok bool) {
	if d.lim.PerRequestDeadline {
		if d.budget <= 0 {
			d.why = "timeout"
			return time.Time{}, false
		}
		dl = now.Add(d.budget)
	} else {
		dl = now.Add(d.lim.Timeout)
	}
	if !d.txEnd.IsZero() {
		if !now.Before(d.txEnd) {
			d.why = "transaction deadline"
			return time.Time{}, false
		}
		if d.txEnd.Before(dl) {
			dl = d.txEnd
		}
	}
	return dl, true
}

// Read reads from the connection under the deadline; it is the io.Reader
// under the session's bufio.Reader.
func (d *deadlines) Read(p []byte) (int, error) {
	s := d.s
	for {
		d.refresh()
		now := time.Now()
		dl, ok := d.readDeadline(now)
		if !ok {
			return 0, errDeadline
		}
		if d.stale.Swap(false) {
			d.forget()
		}
		d.reading.Store(true)
		if set, ok := d.deadline(d.rset, dl, d.txEnd); ok {
			d.rset = set
			s.conn.SetReadDeadline(set)
		}
		// Shutdown sets closing, and a new session its slot, before they
		// wake readers: checked after the deadline is set, a change is
		// never missed.
		if s.idle.Load() && s.srv.sessions.Closing() {
			d.reading.Store(false)
			return 0, errShutdown
		}
		if s.limits() != d.lim {
			d.reading.Store(false)
			continue
		}
		n, err := s.conn.Read(p)
		d.reading.Store(false)
		if !d.lim.PerRequestDeadline && err == nil {
			return n, nil
		}
		end := time.Now()
		d.charge(end.Sub(now), n)
		if n == 0 && isTimeout(err) {
			d.rset = time.Time{}
			// A read that ends before its deadline was woken by
			// another goroutine: kick, whose deadline may land after
			// the next read cleared its flag and stale (it ends then,
			// not the read it meant), or Shutdown. Unless closing,
			// re-evaluate and wait again.
			if end.Before(dl) && !s.srv.sessions.Closing() {
				continue
			}
			if d.why == "" {
				d.why = "timeout"
				if !d.txEnd.IsZero() && !end.Before(d.txEnd) {
					d.why = "transaction deadline"
				}
			}
		}
		return n, err
	}
}

// charge takes the time spent waiting off the budget and, while content
// is read, adds n/MinDataRate seconds, up to the timeout (Postfix's
// vstream deadline bookkeeping).
func (d *deadlines) charge(waited time.Duration, n int) {
	if !d.lim.PerRequestDeadline {
		return
	}
	d.budget -= waited
	if d.content && n > 0 && d.lim.MinDataRate > 0 {
		d.budget += time.Duration(n) * time.Second / time.Duration(d.lim.MinDataRate)
		d.budget = min(d.budget, d.lim.Timeout)
	}
}

// Write writes to the connection under the deadline; it is the io.Writer
// under the session's bufio.Writer. The transaction deadline does not
// apply: a reply, above all the one after a committed message, is sent
// within the request's time.
func (d *deadlines) Write(p []byte) (int, error) {
	s := d.s
	d.refresh()
	now := time.Now()
	dl := now.Add(d.lim.Timeout)
	if d.lim.PerRequestDeadline {
		if d.budget <= 0 {
			return 0, errDeadline
		}
		dl = now.Add(d.budget)
	}
	if set, ok := d.deadline(d.wset, dl, time.Time{}); ok {
		d.wset = set
		s.conn.SetWriteDeadline(set)
	}
	n, err := s.conn.Write(p)
	if err != nil {
		d.wset = time.Time{}
	}
	if d.lim.PerRequestDeadline {
		d.charge(time.Since(now), 0)
	}
	return n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
