package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/flush"
)

const postqueueUsage = "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"

// runPostqueue is postqueue(1): -f, -s site, -i id, -p, -j; -c FILE.
func runPostqueue(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	cfg := defaultConfigPath
	mode, arg := byte(0), ""
	fatal := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "postqueue: fatal: "+format+"\n", a...)
		return exUnavailable
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			return fatal("%s", postqueueUsage)
		}
		for j := 1; j < len(a); j++ {
			opt := a[j]
			switch opt {
			case 'v':
				continue
			case 'f', 'j', 'p':
				if mode != 0 {
					return fatal("%s", postqueueUsage)
				}
				mode = opt
				continue
			case 'c', 'i', 's':
			default:
				return fatal("%s", postqueueUsage)
			}
			val, ok := optValue(args, &i, a[j+1:])
			if !ok {
				return fatal("%s", postqueueUsage)
			}
			if opt == 'c' {
				cfg = val
			} else {
				if mode != 0 {
					return fatal("%s", postqueueUsage)
				}
				mode, arg = opt, val
			}
			break
		}
	}
	switch mode {
	case 'p', 'j':
		return postqueueList(cfg, mode == 'j', "postqueue", stdout, stderr)
	case 'f':
		return postqueueFlush(cfg, control.FlushRequest{All: true}, "postqueue", stderr)
	case 's':
		return postqueueFlush(cfg, control.FlushRequest{Site: arg}, "postqueue", stderr)
	case 'i':
		return postqueueFlush(cfg, control.FlushRequest{ID: arg}, "postqueue", stderr)
	}
	return fatal("%s", postqueueUsage)
}

// postqueueList is postqueue -p / -j (and mailq, sendmail -bp).
func postqueueList(cfg string, asJSON bool, prog string, stdout, stderr io.Writer) int {
	cl, _, _ := clientFor(cfg, prog, stderr)
	if cl == nil {
		return exUnavailable
	}
	if err := listQueue(context.Background(), cl, control.Filter{}, asJSON, stdout); err != nil {
		return postqueueFailed(err, "Queue report unavailable - mail system is down", prog, stderr)
	}
	return 0
}

// postqueueFailed prints the fatal line of a request to the daemon that
// failed: down when the daemon cannot be reached, else the daemon's
// message.
func postqueueFailed(err error, down, prog string, stderr io.Writer) int {
	var de *control.DownError
	var ae *control.Error
	msg := err.Error()
	switch {
	case errors.As(err, &de):
		msg = down
	case errors.As(err, &ae):
		msg = ae.Msg
	}
	fmt.Fprintf(stderr, "%s: fatal: %s\n", prog, msg)
	return exUnavailable
}

// postqueueFlush is postqueue -f / -s / -i with Postfix's checks and
// messages (reference spec §4.2).
func postqueueFlush(cfg string, req control.FlushRequest, prog string, stderr io.Writer) int {
	fatal := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: fatal: "+format+"\n", append([]any{prog}, a...)...)
		return exUnavailable
	}
	switch {
	case req.Site != "" && !flush.ValidSite(req.Site):
		return fatal("Cannot flush mail queue - invalid destination: %q", cutSite(req.Site))
	case req.ID != "" && !validQueueName(req.ID):
		return fatal("Cannot flush queue ID - invalid name: %q", req.ID)
	}
	cl, _, _ := clientFor(cfg, prog, stderr)
	if cl == nil {
		return exUnavailable
	}
	if _, err := cl.Flush(context.Background(), req, nil); err != nil {
		down := "Cannot flush mail queue - mail system is down"
		if req.ID != "" {
			down = "Cannot flush queue ID - mail system is down"
		}
		return postqueueFailed(err, down, prog, stderr)
	}
	return 0
}

func cutSite(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// validQueueName is Postfix's mail_queue_id_ok: 1 to 255 characters of
// [A-Za-z0-9_].
func validQueueName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
