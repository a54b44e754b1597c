package main

import (
	"os"
	"runtime/debug"

	"github.com/rs/zerolog"
)

// memoryLimit is the Go runtime's soft memory limit that fits
// inflight_content_limit: content being received is held about 2.5 times
// (the session's chunk buffer, the chunk in the transaction and bbolt's
// copy of the pages it commits), and 32 MiB covers the rest of the daemon
// (a million queued messages take under 10 MiB of heap). Without a limit
// the runtime lets the heap grow to twice its live size before it
// collects (GOGC=100), so a burst of large messages could take twice the
// memory the content budget promises. 0 when there is no content budget.
func memoryLimit(inflight int64) int64 {
	if inflight <= 0 {
		return 0
	}
	return inflight*5/2 + 32<<20
}

// setMemoryLimit applies memoryLimit unless the operator set GOMEMLIMIT,
// which then wins, as the runtime's own setting always does.
func setMemoryLimit(inflight int64, log zerolog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if limit := memoryLimit(inflight); limit > 0 {
		debug.SetMemoryLimit(limit)
		log.Debug().Int64("bytes", limit).Msg("Go memory limit set from inflight_content_limit")
	}
}
