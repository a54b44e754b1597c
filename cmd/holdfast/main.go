// Command holdfast is a mail relay with a fast ETRN service: one binary,
// one embedded database file.
//
//	holdfast serve -c FILE              run the daemon (postfix start-fg)
//	holdfast config [-n|-d|-x] [NAME]   show parameters (postconf)
//	holdfast queue list|show|delete|hold|release|requeue ...
//	holdfast flush DOMAIN | --all       (postqueue -s / -f)
//	holdfast db check|backup|compact|salvage
//
// Invoked as sendmail, mailq, postqueue or postsuper (argv[0], e.g. through
// the links that make install creates) it accepts those programs' flags.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	// Its init gives the threads of `holdfast serve` a short scheduler
	// slice.
	_ "github.com/holdfast-mta/holdfast/internal/schedslice"
	// Its init starts `holdfast serve` again with a longer timer slack.
	_ "github.com/holdfast-mta/holdfast/internal/timerslack"
)

// command is one holdfast subcommand. run gets the arguments after the
// subcommand name and returns the process exit status.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands is filled by the register calls in each cmd_*.go file's init.
var commands = map[string]command{}

// compat maps argv[0] names to Postfix-compatible front ends.
var compat = map[string]func(args []string, stdin io.Reader, stdout, stderr io.Writer) int{}

func register(name, summary string, run func(args []string, stdout, stderr io.Writer) int) {
	commands[name] = command{summary: summary, run: run}
}

func registerCompat(name string, run func(args []string, stdin io.Reader, stdout, stderr io.Writer) int) {
	compat[name] = run
}

func main() {
	os.Exit(dispatch(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

func dispatch(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if f, ok := compat[filepath.Base(argv[0])]; ok {
		return f(argv[1:], stdin, stdout, stderr)
	}
	if len(argv) < 2 || argv[1] == "-h" || argv[1] == "--help" || argv[1] == "help" {
		usage(stderr)
		if len(argv) < 2 {
			return exUsage
		}
		return 0
	}
	if argv[1] == "--version" || argv[1] == "-V" {
		return runVersion(nil, stdout, stderr)
	}
	c, ok := commands[argv[1]]
	if !ok {
		fmt.Fprintf(stderr, "holdfast: unknown command %q\n", argv[1])
		usage(stderr)
		return exUsage
	}
	return c.run(argv[2:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: holdfast COMMAND [-c FILE] [ARGS]")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
}

// sysexits(3) codes used by the holdfast subcommands.
const (
	exUsage       = 64 // EX_USAGE
	exDataErr     = 65 // EX_DATAERR
	exNoInput     = 66 // EX_NOINPUT
	exUnavailable = 69 // EX_UNAVAILABLE
	exSoftware    = 70 // EX_SOFTWARE
	exCantCreat   = 73 // EX_CANTCREAT
	exIOErr       = 74 // EX_IOERR
	exTempFail    = 75 // EX_TEMPFAIL
	exNoPerm      = 77 // EX_NOPERM
	exConfig      = 78 // EX_CONFIG
)
