package main

import (
	"io"
	"os"
	"time"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// newLogger returns the daemon's logger writing to w: JSON lines by
// default, zerolog's human-readable console format when log_format =
// console or w is a terminal. Every event has a timestamp; the level comes
// from log_level. Field names are DESIGN.md's (queue_id, from, to, relay,
// delay, dsn, status, queue, event).
func newLogger(c *config.Config, w io.Writer) zerolog.Logger {
	out := w
	if c.String("log_format") == "console" || logTTY(w) {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !logTTY(w)}
	}
	level, err := zerolog.ParseLevel(c.String("log_level"))
	if err != nil || level == zerolog.NoLevel {
		level = zerolog.InfoLevel
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

// logTTY reports whether w is a terminal.
func logTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}
