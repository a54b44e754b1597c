package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/store"
)

const postsuperFatal = 1

// postsuperQueues maps postsuper's queue names to holdfast states; the
// names without messages here (maildrop, defer, bounce, flush) are
// accepted and select nothing.
var postsuperQueues = map[string]string{
	"incoming": "incoming", "active": "active", "deferred": "deferred", "hold": "hold",
	"maildrop": "", "defer": "", "bounce": "", "flush": "", "corrupt": "", "trace": "",
}

type postsuperOp struct {
	verb string
	ids  []string
	all  bool
}

// runPostsuper is postsuper(1) -d/-h/-H/-r (id, "-" for stdin, or ALL),
// repeatable, followed by queue names; -c FILE.
func runPostsuper(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, ops, rest, msg := parsePostsuper(args, stdin)
	if msg != "" {
		fmt.Fprintf(stderr, "postsuper: fatal: %s\n", msg)
		return postsuperFatal
	}
	states, nothing, bad := postsuperStates(rest)
	if bad != "" {
		fmt.Fprintf(stderr, "postsuper: fatal: invalid directory name: %s\n", bad)
		return postsuperFatal
	}
	cl, _, _ := clientFor(cfg, "postsuper", stderr)
	if cl == nil {
		return postsuperFatal
	}
	for _, op := range ops {
		if nothing {
			break // only queues that hold no messages here were named
		}
		if code := postsuperRun(cl, op, states, stderr); code != 0 {
			return code
		}
	}
	return 0
}

// parsePostsuper reads postsuper's options as getopt does: the
// configuration file, the operations in order (an ID "-" reads IDs from
// stdin), and the queue names after them; msg is the fatal error.
func parsePostsuper(args []string, stdin io.Reader) (cfg string, ops []*postsuperOp, rest []string, msg string) {
	cfg = defaultConfigPath
	verbs := map[byte]string{'d': "delete", 'h': "hold", 'H': "release", 'r': "requeue"}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		opt, val := a[1], a[2:]
		verb, isOp := verbs[opt]
		switch {
		case opt == 'v' || opt == 's' || opt == 'p' || opt == 'S':
			continue
		case opt != 'c' && !isOp:
			return "", nil, nil, "usage: postsuper [-c config_dir] [-d queue_id (delete)] [-h queue_id (hold)] [-H queue_id (un-hold)] [-r queue_id (requeue)] [-v (verbose)] [queue...]"
		}
		val, ok := optValue(args, &i, val)
		if !ok {
			return "", nil, nil, fmt.Sprintf("option -%c requires an argument", opt)
		}
		if opt == 'c' {
			cfg = val
			continue
		}
		op := lastOp(&ops, verb)
		switch val {
		case "ALL":
			op.all = true
		case "-":
			sc := bufio.NewScanner(stdin)
			for sc.Scan() {
				op.ids = append(op.ids, strings.Fields(sc.Text())...)
			}
		default:
			op.ids = append(op.ids, val)
		}
	}
	return cfg, ops, args[i:], ""
}

// postsuperStates maps queue names to states; nothing is set when every
// name is a queue without messages here; bad is an unknown name.
func postsuperStates(names []string) (states []string, nothing bool, bad string) {
	for _, q := range names {
		st, ok := postsuperQueues[q]
		if !ok {
			return nil, false, q
		}
		if st != "" {
			states = append(states, st)
		}
	}
	return states, len(names) > 0 && len(states) == 0, ""
}

// lastOp returns the pending operation for verb, merging repeated options
// of one kind as postsuper does.
func lastOp(ops *[]*postsuperOp, verb string) *postsuperOp {
	for _, op := range *ops {
		if op.verb == verb {
			return op
		}
	}
	op := &postsuperOp{verb: verb}
	*ops = append(*ops, op)
	return op
}

func postsuperRun(cl *control.Client, op *postsuperOp, states []string, stderr io.Writer) int {
	var ids []string
	for _, id := range op.ids {
		if _, err := store.ParseID(id); err != nil {
			fmt.Fprintf(stderr, "postsuper: warning: invalid mail queue id: %s\n", id)
			continue
		}
		ids = append(ids, id)
	}
	total := 0
	for _, req := range []control.OpRequest{
		{IDs: ids, Filter: control.Filter{States: states}},
		{All: op.all, Filter: control.Filter{States: states}},
	} {
		if len(req.IDs) == 0 && !req.All {
			continue
		}
		p, err := cl.Operate(context.Background(), op.verb, req, nil)
		if err != nil {
			var ae *control.Error
			if errors.As(err, &ae) && ae.Code == control.CodeForbidden {
				fmt.Fprintln(stderr, "postsuper: fatal: use of this command is reserved for the superuser")
			} else {
				fmt.Fprintf(stderr, "postsuper: fatal: %v\n", err)
			}
			return postsuperFatal
		}
		total += p.Done
	}
	if total > 0 {
		fmt.Fprintf(stderr, "postsuper: %s: %d %s\n", opWords[op.verb], total, plural(total))
	}
	return 0
}
