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
	err := listQueue(context.Background(), cl, control.Filter{}, asJSON, stdout)
	if err == nil {
		return 0
	}
	var de *control.DownError
	var ae *control.Error
	switch {
	case errors.As(err, &de):
		fmt.Fprintf(stderr, "%s: fatal: Queue report unavailable - mail system is down\n", prog)
	case errors.As(err, &ae) && ae.Code == control.CodeForbidden:
		fmt.Fprintf(stderr, "%s: fatal: %s\n", prog, ae.Msg)
	default:
		fmt.Fprintf(stderr, "%s: fatal: %v\n", prog, err)
	}
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
	_, err := cl.Flush(context.Background(), req, nil)
	if err == nil {
		return 0
	}
	var de *control.DownError
	var ae *control.Error
	switch {
	case errors.As(err, &de):
		if req.ID != "" {
			return fatal("Cannot flush queue ID - mail system is down")
		}
		return fatal("Cannot flush mail queue - mail system is down")
	case errors.As(err, &ae):
		return fatal("%s", ae.Msg)
	}
	return fatal("%v", err)
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
