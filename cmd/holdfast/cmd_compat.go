package main

// The Postfix-compatible front ends, chosen by argv[0]: postqueue
// (cmd_postqueue.go), mailq (cmd_mailq.go, with the listing formats
// postqueue -p and -j share), postsuper (cmd_postsuper.go) and sendmail
// (cmd_sendmail.go). Their messages and exit codes are Postfix's
// (reference spec §4): every postqueue fatal error exits 69, every
// sendmail fatal error 75, postsuper's 1.
func init() {
	registerCompat("sendmail", runSendmail)
	registerCompat("mailq", runMailq)
	registerCompat("postqueue", runPostqueue)
	registerCompat("postsuper", runPostsuper)
}

// optValue returns an option's value as getopt does: the rest of the
// argument (-sSITE), or else the next argument (-s SITE), advancing *i.
// ok is false when neither is there.
func optValue(args []string, i *int, rest string) (string, bool) {
	if rest != "" {
		return rest, true
	}
	if *i+1 >= len(args) {
		return "", false
	}
	*i++
	return args[*i], true
}
