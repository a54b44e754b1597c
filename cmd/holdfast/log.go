package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/maillog"
)

// newLogger returns the daemon's logger writing to w: JSON lines by
// default, zerolog's human-readable console format when log_format =
// console or w is a terminal, and Postfix's maillog lines (to syslog or
// maillog_file) when log_format = postfix. Every event has a timestamp;
// the level comes from log_level. Field names are Postfix's words
// (queue_id, from, to, relay, delay, dsn, status, queue, event), which
// the postfix format turns back into Postfix's lines. The returned
// closer ends the maillog destination (nil for the others).
func newLogger(c *config.Config, w io.Writer) (zerolog.Logger, io.Closer, error) {
	var out io.Writer = w
	var closer io.Closer
	switch {
	case c.String("log_format") == "postfix":
		ml, err := maillog.New(maillog.Options{Name: c.String("syslog_name"), File: c.String("maillog_file"),
			Facility: c.String("syslog_facility"), Fallback: w})
		if err != nil {
			return zerolog.Logger{}, nil, fmt.Errorf("%w: %v", errConfig, err)
		}
		out, closer = ml, ml
	case c.String("log_format") == "console" || logTTY(w):
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !logTTY(w)}
	}
	level, err := zerolog.ParseLevel(c.String("log_level"))
	if err != nil || level == zerolog.NoLevel {
		level = zerolog.InfoLevel
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger(), closer, nil
}

// logTTY reports whether w is a terminal.
func logTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}
