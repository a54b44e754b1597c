package main

import (
	"fmt"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
)

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit, so that the
// daemon can hold as many sessions and deliveries as the system lets it.
// Go's syscall package already does this in its init on Unix systems
// (since Go 1.19, still so in Go 1.26: when the soft limit is below the
// hard one minus one; child processes get the original back), so
// soft_before in the log is usually the raised value. holdfast does not
// depend on it: it asks again, logs the limit it runs with, and warns when the
// limit is below what the connection limits may need (one descriptor per
// SMTP session and per delivery, plus the queue, the listeners, the
// control and metrics connections). Running out is survived (listeners
// retry, see internal/listener), but sessions then wait.
func raiseNoFile(c *config.Config, log zerolog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn().Err(err).Msg("cannot read the open files limit (RLIMIT_NOFILE)")
		return
	}
	soft := lim.Cur
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn().Err(err).Uint64("soft", soft).Uint64("hard", lim.Max).
				Msg("cannot raise the open files limit (RLIMIT_NOFILE) to the hard limit")
			lim.Cur = soft
		}
	}
	ev := log.Info()
	need := uint64(fdReserve)
	for _, p := range []string{"smtpd_connection_limit", "delivery_concurrency_limit"} {
		if n, err := c.Int(p); err == nil && n > 0 {
			need += uint64(n)
		}
	}
	if lim.Cur < need {
		ev = log.Warn().Str("hint", fmt.Sprintf("smtpd_connection_limit + delivery_concurrency_limit need about %d; raise the hard limit (LimitNOFILE= in systemd)", need))
	}
	ev.Uint64("soft", lim.Cur).Uint64("hard", lim.Max).Uint64("soft_before", soft).Msg("open files limit (RLIMIT_NOFILE)")
}

// fdReserve is the descriptors the daemon uses besides SMTP sessions and
// deliveries: queue file, listeners, control and metrics connections
// (metricsConnLimit), logs, DNS.
const fdReserve = 128
