package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/holdfast-mta/holdfast/config"
)

// configManHead is holdfast.cf(5) up to the parameter list.
const configManHead = `.TH HOLDFAST.CF 5 "" "holdfast" "File Formats Manual"
.SH NAME
holdfast.cf \- configuration of the holdfast mail relay
.SH SYNOPSIS
.B /etc/holdfast/holdfast.cf
.SH DESCRIPTION
The file has the syntax of Postfix's
.BR main.cf :
.I name " = " value
lines, lines starting with
.B #
are comments, a line that starts with white space continues the previous
one, and
.BI $ name
or
.BI ${ name }
expand to another parameter's value when the value is read (with
Postfix's
.B ${name?value}
and
.B ${name:value}
forms). Lists are separated by commas or white space.
Parameter names and defaults are Postfix's, so an operator's
.B main.cf
lines work unchanged; parameters marked
.I holdfast
are this program's own.
.PP
.B holdfast config
prints the parameters as
.BR postconf (1)
does:
.B \-n
those set in the file,
.B \-d
the defaults,
.B \-x
with expansion.
An unknown parameter is a warning; a bad value stops the daemon with the
file, line and parameter.
.SH PARAMETERS
`

// configManFoot is holdfast.cf(5) after the parameter list.
const configManFoot = `.SH FILES
.TP
.I /etc/holdfast/holdfast.cf
this file
.TP
.I $queue_directory/queue.db
the queue
.SH SEE ALSO
.BR holdfast (8),
.BR postconf (5)
`

// writeConfigMan writes holdfast.cf(5) in roff from the parameter table,
// so that the manual lists every parameter with its default and cannot
// drift from the code (`holdfast config --man`).
func writeConfigMan(w io.Writer) {
	fmt.Fprint(w, configManHead)
	for _, e := range config.ManEntries() {
		def := "(empty)"
		switch {
		case e.Computed:
			def = "computed from the host (see below)"
		case e.Default != "":
			def = e.Default
		}
		fmt.Fprintf(w, ".TP\n.B %s\nDefault: %s\n.br\n%s\n", roff(e.Name), roff(def), roff(e.Description))
	}
	fmt.Fprint(w, configManFoot)
}

// roff escapes text for a roff line: backslashes, and a leading dot or
// quote that would start a request.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
