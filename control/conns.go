package control

import (
	"net/http"
	"time"
)

// Bounds of the control socket's HTTP server. Request bodies are bounded
// in size by each endpoint; these bound time and descriptors, so that
// idle or stalled clients cannot hold the daemon's descriptors.
const (
	// controlHeaderTimeout bounds reading a request's header.
	controlHeaderTimeout = 30 * time.Second
	// controlBodyTimeout bounds reading a request's body (a local
	// submission's message, a list of queue IDs): a per-request read
	// deadline, lifted once the body is read so that long replies
	// (flush --wait, listings) are not cut.
	controlBodyTimeout = 5 * time.Minute
	// controlIdleTimeout closes a keep-alive connection idle this long.
	controlIdleTimeout = 60 * time.Second
	// controlMaxConns caps the open connections (listener.ConnCap).
	controlMaxConns = 256
	// maxHeaderBytes bounds a request header.
	maxHeaderBytes = 64 << 10
)

// bodyRead lifts the per-request read deadline (controlBodyTimeout) once
// the handler has read the request body.
func bodyRead(w http.ResponseWriter) {
	http.NewResponseController(w).SetReadDeadline(time.Time{})
}
