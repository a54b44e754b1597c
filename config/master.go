package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Service is one entry of a Postfix master.cf file (master(5)): the
// service name and type, the private, unpriv, chroot, wakeup and maxproc
// columns as written ("-" for the default), the command and its
// arguments, with the `-o name=value` options taken out.
type Service struct {
	Name    string // service name: a transport name for type unix
	Type    string // inet, unix, unix-dgram, fifo, pass
	Private string
	Unpriv  string
	Chroot  string
	Wakeup  string
	MaxProc string
	Command string     // the daemon: smtp, lmtp, error, local, pipe, ...
	Args    []string   // command-line arguments other than -o
	Options []Override // -o name=value, in order
	File    string
	Line    int
}

// Override is one `-o name=value` of a master.cf entry.
type Override struct {
	Name, Value string
}

// Where is "FILE:LINE" of the entry, for messages.
func (s *Service) Where() string { return fmt.Sprintf("%s:%d", s.File, s.Line) }

// LoadMaster reads a master.cf file.
func LoadMaster(path string) ([]Service, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseMaster(path, data)
}

// ParseMaster parses master.cf text as Postfix's master does: comment and
// blank lines are skipped, a line starting with white space continues the
// previous entry, each entry has eight columns (name, type, private,
// unpriv, chroot, wakeup, maxproc, command) followed by the command's
// arguments. `-o name=value` and `-o { name = value with spaces }` set
// parameters for that service only. An entry with fewer columns, a bad
// type or a bad maxproc is an *Error naming the line; a service defined
// twice is too (Postfix refuses it as well).
func ParseMaster(file string, data []byte) ([]Service, error) {
	lines, err := logicalLines(file, data)
	if err != nil {
		return nil, err
	}
	var out []Service
	seen := map[string]int{}
	for _, l := range lines {
		s, err := parseService(file, l)
		if err != nil {
			return nil, err
		}
		key := s.Name + "/" + s.Type
		if prev, dup := seen[key]; dup {
			return nil, &Error{File: file, Line: l.line, Msg: fmt.Sprintf("duplicate service %s/%s (first defined at line %d)", s.Name, s.Type, prev)}
		}
		seen[key] = l.line
		out = append(out, s)
	}
	return out, nil
}

// parseService reads one logical master.cf line.
func parseService(file string, l logical) (Service, error) {
	bad := func(format string, args ...any) (Service, error) {
		return Service{}, &Error{File: file, Line: l.line, Msg: fmt.Sprintf(format, args...)}
	}
	words, ok := masterWords(l.text)
	if !ok {
		return bad("unbalanced '{' or '}'")
	}
	if len(words) < 8 {
		return bad("expected 8 or more fields (service type private unpriv chroot wakeup maxproc command), got %d", len(words))
	}
	s := Service{Name: words[0], Type: words[1], Private: words[2], Unpriv: words[3], Chroot: words[4],
		Wakeup: words[5], MaxProc: words[6], Command: words[7], File: file, Line: l.line}
	switch s.Type {
	case "inet", "unix", "unix-dgram", "fifo", "pass":
	default:
		return bad("service %s: bad transport type %q (want inet, unix, unix-dgram, fifo or pass)", s.Name, s.Type)
	}
	for _, col := range []struct{ name, v string }{{"private", s.Private}, {"unpriv", s.Unpriv}, {"chroot", s.Chroot}} {
		if col.v != "-" && col.v != "y" && col.v != "n" {
			return bad("service %s: bad %s field %q (want y, n or -)", s.Name, col.name, col.v)
		}
	}
	if s.MaxProc != "-" && !count(s.MaxProc) {
		return bad("service %s: bad maxproc field %q", s.Name, s.MaxProc)
	}
	if w := strings.TrimSuffix(s.Wakeup, "?"); w != "-" && !count(w) {
		return bad("service %s: bad wakeup field %q", s.Name, s.Wakeup)
	}
	args := words[8:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a != "-o" && !(strings.HasPrefix(a, "-o") && len(a) > 2) {
			s.Args = append(s.Args, a)
			continue
		}
		v := strings.TrimPrefix(a, "-o")
		if v == "" {
			if i+1 >= len(args) {
				return bad("service %s: -o without name=value", s.Name)
			}
			i++
			v = args[i]
		}
		name, value, ok := strings.Cut(unbrace(v), "=")
		name = strings.TrimSpace(name)
		if !ok || !validName(name) {
			return bad("service %s: bad -o option %q (want name=value)", s.Name, v)
		}
		s.Options = append(s.Options, Override{Name: name, Value: strings.TrimSpace(value)})
	}
	return s, nil
}

// masterWords splits a master.cf entry on white space, keeping a
// `{ ... }` group (Postfix 3.0 and later) as one word.
func masterWords(s string) ([]string, bool) {
	var out []string
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t':
			i++
		case c == '{':
			j := matchingBrace(s[i:])
			if j < 0 {
				return nil, false
			}
			out = append(out, s[i:i+j+1])
			i += j + 1
		default:
			j, depth := i, 0
			for ; j < len(s) && (depth > 0 || s[j] != ' ' && s[j] != '\t'); j++ {
				switch s[j] {
				case '{':
					depth++
				case '}':
					depth--
				}
			}
			if depth != 0 {
				return nil, false
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out, true
}

// count reports whether s is a process count or a number of seconds:
// digits only (Postfix checks maxproc and wakeup with alldig).
func count(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// With returns a copy of c in which the given parameters are set, as a
// master.cf entry's -o options override main.cf for that service only.
// Values are expanded against the copy, so "-o smtp_helo_name=$mydomain"
// works; errors about them name file and line (the master.cf entry).
func (c *Config) With(file string, line int, opts []Override) *Config {
	n := &Config{file: c.file, set: make(map[string]setting, len(c.set)+len(opts)), warnings: c.warnings}
	for k, v := range c.set {
		n.set[k] = v
	}
	for _, o := range opts {
		n.set[o.Name] = setting{value: o.Value, file: file, line: line}
	}
	return n
}
