package maillog

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"time"
)

// syslogSink sends each program's lines through its own syslog writer
// (tag "name/program"), dialled on first use. While /dev/log cannot be
// reached the lines go to the fallback, and the dial is retried at most
// every redialEvery.
type syslogSink struct {
	name     string
	pri      syslog.Priority
	fallback func(prog, text string) error
	writers  map[string]*syslog.Writer
	down     time.Time // when a dial last failed
	warned   bool
}

const redialEvery = 10 * time.Second

func (s *syslogSink) write(prog, text string) error {
	sw, ok := s.writers[prog]
	if !ok {
		if time.Since(s.down) < redialEvery {
			return s.fallback(prog, text)
		}
		var err error
		if sw, err = syslog.New(s.pri, s.name+"/"+prog); err != nil {
			s.down = time.Now()
			if !s.warned {
				s.warned = true
				s.fallback("master", fmt.Sprintf("warning: syslog is not reachable (%v): logging to standard error", err))
			}
			return s.fallback(prog, text)
		}
		s.writers[prog] = sw
	}
	if err := sw.Info(text); err != nil {
		return s.fallback(prog, text)
	}
	return nil
}

func (s *syslogSink) close() error {
	for _, w := range s.writers {
		w.Close()
	}
	return nil
}

// fileSink appends lines to maillog_file. When the file is renamed or
// removed (logrotate), it is reopened by name, checked at most once a
// second.
type fileSink struct {
	path    string
	f       *os.File
	w       io.Writer
	format  func(out io.Writer, prog, text string) error
	checked time.Time
}

// openFile opens path for appending; /dev/stdout and /dev/stderr are the
// process's own streams.
func openFile(path string, format func(io.Writer, string, string) error) (*fileSink, error) {
	s := &fileSink{path: path, format: format}
	switch path {
	case "/dev/stdout":
		s.w = os.Stdout
	case "/dev/stderr":
		s.w = os.Stderr
	default:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, err
		}
		s.f, s.w = f, f
	}
	return s, nil
}

func (s *fileSink) write(prog, text string) error {
	s.reopenIfMoved()
	return s.format(s.w, prog, text)
}

// reopenIfMoved reopens the file when its name no longer leads to it.
func (s *fileSink) reopenIfMoved() {
	if s.f == nil || time.Since(s.checked) < time.Second {
		return
	}
	s.checked = time.Now()
	cur, err1 := s.f.Stat()
	now, err2 := os.Stat(s.path)
	if err1 == nil && err2 == nil && os.SameFile(cur, now) {
		return
	}
	if err2 != nil && !os.IsNotExist(err2) {
		return
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return // keep writing to the old file
	}
	s.f.Close()
	s.f, s.w = f, f
}

func (s *fileSink) close() error {
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
