package config

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// logical is one logical line: a `name = value` entry with its
// continuation lines joined, and the line number where it started.
type logical struct {
	text string
	line int
}

// logicalLines splits data into logical lines as Postfix's readlline does:
// comment lines (first non-blank character `#`) and blank lines are
// skipped, and a line that starts with white space continues the previous
// logical line, even across comment and blank lines.
func logicalLines(file string, data []byte) ([]logical, error) {
	var out []logical
	for i, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimRight(string(raw), " \t\r\v\f")
		n := i + 1
		trimmed := strings.TrimLeft(line, " \t\r\v\f")
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if trimmed != line { // starts with white space: continuation
			if len(out) == 0 {
				return nil, &Error{File: file, Line: n, Msg: "continuation line without a preceding parameter"}
			}
			out[len(out)-1].text += " " + trimmed
			continue
		}
		out = append(out, logical{text: line, line: n})
	}
	return out, nil
}

// parse reads every `name = value` entry into c.set.
func (c *Config) parse(data []byte) error {
	lines, err := logicalLines(c.file, data)
	if err != nil {
		return err
	}
	for _, l := range lines {
		name, value, ok := strings.Cut(l.text, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return &Error{File: c.file, Line: l.line, Msg: fmt.Sprintf("missing '=' after parameter name %q", name)}
		}
		if !validName(name) {
			return &Error{File: c.file, Line: l.line, Msg: fmt.Sprintf("bad parameter name %q", name)}
		}
		if prev, dup := c.set[name]; dup {
			c.warnings = append(c.warnings, fmt.Sprintf("%s:%d: %s: overriding earlier entry at line %d", c.file, l.line, name, prev.line))
		}
		c.set[name] = setting{value: strings.TrimSpace(value), file: c.file, line: l.line}
	}
	return nil
}

// validName reports whether s is a parameter name: letters, digits and
// underscores (Postfix allows a leading digit: 2bounce_notice_recipient).
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

func isNameByte(b byte) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// warnUnknown adds a warning for every parameter set in the file that is
// neither known nor used in another parameter's value (Postfix lets an
// operator define parameters for use in $name expansions).
func (c *Config) warnUnknown() {
	used := map[string]bool{}
	for _, s := range c.set {
		for _, ref := range references(s.value) {
			used[ref] = true
		}
	}
	var unknown []string
	for _, name := range c.Explicit() {
		if !Known(name) && !used[name] {
			unknown = append(unknown, name)
		}
	}
	sort.SliceStable(unknown, func(i, j int) bool { return c.set[unknown[i]].line < c.set[unknown[j]].line })
	for _, name := range unknown {
		s := c.set[name]
		c.warnings = append(c.warnings, fmt.Sprintf("%s:%d: %s: unknown parameter", s.file, s.line, name))
	}
}
