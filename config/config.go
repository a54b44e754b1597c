// Package config reads holdfast's configuration file, which uses Postfix's
// main.cf syntax and Postfix's parameter names and defaults, so that a
// Postfix operator's lines work unchanged.
//
// Syntax (postconf(5)): `name = value`; a line whose first non-blank
// character is `#` is a comment; a line that starts with white space
// continues the previous logical line; blank lines are ignored. `#` in the
// middle of a value is part of the value, as in Postfix.
//
// Values are kept raw and expanded when read: `$name`, `${name}` and
// `$(name)` are replaced by that parameter's expanded value, recursively,
// so `fast_flush_domains = $relay_domains` follows later changes of
// relay_domains. `${name?text}` gives text when name is not empty and
// `${name:text}` when it is empty. A loop or an undefined name is an error.
//
// Every parameter holdfast knows is in one defaults table (params.go). An
// unknown parameter in the file is a warning (Warnings), not an error; a
// bad value is an *Error naming file, line and parameter. No parameter is
// quietly ignored (compat.go): each one in the table has its effect or is
// listed as accepted for compatibility only, and setting such a one is a
// warning; a setting whose ignoring would weaken security or send mail
// elsewhere (content_filter, header_checks, virtual_alias_maps, ...) is
// an error.
//
// A Config is not safe for concurrent Set calls; once loaded, reads from
// several goroutines are safe.
package config

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// Error is a configuration error: the file and line where the parameter
// was set (empty and 0 for a default or a Set value), the parameter, and
// what is wrong with it.
type Error struct {
	File  string
	Line  int
	Param string
	Msg   string
}

// Error formats the error as "FILE:LINE: PARAM: MSG", leaving out the
// parts that are not known.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Param != "" {
		b.WriteString(e.Param)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// setting is one parameter value given in the file or through Set.
type setting struct {
	value string
	file  string // "" for Set
	line  int
}

// Config is a set of parameter values on top of the defaults table.
type Config struct {
	file     string
	set      map[string]setting
	warnings []string
}

// Default returns a configuration with every parameter at its default.
func Default() *Config {
	return &Config{set: map[string]setting{}}
}

// FromDefaults is what read makes of the defaults table alone (Default):
// a package's DefaultOptions, which its tests start from. It panics if
// the table does not load, which is a bug in params.go; pkg names the
// package in the panic.
func FromDefaults[T any](pkg string, read func(*Config) (T, error)) T {
	v, err := read(Default())
	if err != nil {
		panic(fmt.Sprintf("%s: the defaults table does not load: %v", pkg, err))
	}
	return v
}

// Load reads and parses the file at path. A file that cannot be read is an
// error; see Parse for the rest.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses data in main.cf syntax; file names it in errors and
// warnings. Every known parameter is then checked (expansion and type); the
// first problem, in file order, is returned as an *Error.
func Parse(file string, data []byte) (*Config, error) {
	c := Default()
	c.file = file
	if err := c.parse(data); err != nil {
		return nil, err
	}
	c.warnUnknown()
	c.warnings = append(c.warnings, c.compatWarnings()...)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// File returns the name of the file the configuration was read from, "" for
// Default.
func (c *Config) File() string { return c.file }

// Set overrides a parameter's raw value (tests, the config builder). The
// value is expanded when read; Set does not validate, Validate does.
func (c *Config) Set(name, value string) {
	c.set[name] = setting{value: value}
}

// Warnings returns the warnings found while parsing, each with FILE:LINE.
func (c *Config) Warnings() []string {
	return append([]string(nil), c.warnings...)
}

// Raw returns the unexpanded value of a parameter: the value set in the
// file or by Set, else the default. ok is false for a name that is neither
// known nor set.
func (c *Config) Raw(name string) (value string, ok bool) {
	if s, ok := c.set[name]; ok {
		return s.value, true
	}
	p, ok := params[name]
	if !ok {
		return "", false
	}
	return p.defaultValue(c), true
}

// DefaultValue returns the raw default of a known parameter. Computed
// defaults (myhostname, mydomain, mynetworks) are computed against c, so
// that mydomain follows the configured myhostname, as in Postfix.
func (c *Config) DefaultValue(name string) (string, bool) {
	p, ok := params[name]
	if !ok {
		return "", false
	}
	return p.defaultValue(c), true
}

// IsSet reports whether a parameter was set in the file or by Set.
func (c *Config) IsSet(name string) bool {
	_, ok := c.set[name]
	return ok
}

// Known reports whether name is a parameter of the defaults table.
func Known(name string) bool {
	_, ok := params[name]
	return ok
}

// Names returns every known parameter plus any other name set in the file,
// sorted.
func (c *Config) Names() []string {
	names := make([]string, 0, len(params)+len(c.set))
	for n := range params {
		names = append(names, n)
	}
	for n := range c.set {
		if _, ok := params[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Explicit returns the names set in the file or by Set, sorted (postconf -n).
func (c *Config) Explicit() []string {
	names := make([]string, 0, len(c.set))
	for n := range c.set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// errorf builds an *Error located where name was set.
func (c *Config) errorf(name, format string, args ...any) *Error {
	s := c.set[name]
	return &Error{File: s.file, Line: s.line, Param: name, Msg: fmt.Sprintf(format, args...)}
}

// Validate expands and type-checks every known parameter and returns the
// first problem: parameters set in the file first, in line order, then the
// others in name order.
func (c *Config) Validate() error {
	if err := c.checkRefused(); err != nil {
		return err
	}
	names := c.Names()
	sort.SliceStable(names, func(i, j int) bool {
		si, iok := c.set[names[i]]
		sj, jok := c.set[names[j]]
		if iok != jok {
			return iok
		}
		if !iok {
			return false
		}
		if si.file != sj.file {
			return si.file < sj.file
		}
		return si.line < sj.line
	})
	for _, name := range names {
		p, ok := params[name]
		if !ok {
			continue
		}
		if err := c.check(name, p); err != nil {
			return err
		}
	}
	return nil
}

// valid reports read's error for parameter name, its value unused.
func valid[T any](read func(string) (T, error), name string) error {
	_, err := read(name)
	return err
}

// check validates one parameter's value against its kind without opening
// any file, so that `holdfast config` works where table files are absent.
func (c *Config) check(name string, p *param) error {
	switch p.kind {
	case kindBool:
		return valid(c.Bool, name)
	case kindInt:
		return valid(c.Int, name)
	case kindSize:
		return valid(c.Size, name)
	case kindTime:
		return valid(c.Time, name)
	case kindEnum:
		v, err := c.Expand(name)
		if err != nil {
			return err
		}
		for _, e := range p.enum {
			if v == e {
				return nil
			}
		}
		return c.errorf(name, "bad value %q (want %s)", v, strings.Join(p.enum, " or "))
	case kindDomains:
		_, err := c.domainPatterns(name, false)
		return err
	case kindNetworks:
		_, err := c.netPatterns(name, false)
		return err
	case kindMaps:
		specs, err := c.List(name)
		if err != nil {
			return err
		}
		for _, s := range specs {
			if _, _, err := splitTableSpec(s); err != nil {
				return c.errorf(name, "%v", err)
			}
		}
		return nil
	case kindUsers:
		return c.checkUsers(name)
	case kindTemplate:
		return nil
	case kindList:
		return valid(c.List, name)
	default:
		return valid(c.Expand, name)
	}
}

// checkUsers checks a Postfix user list (authorized_*_users): user names,
// "!" before any element, "/file" whose lines are more names (read when
// the list is used), and "type:table" (the name is looked up as a key).
// Only the table syntax can be wrong at load time.
func (c *Config) checkUsers(name string) error {
	items, err := c.List(name)
	if err != nil {
		return err
	}
	for _, it := range items {
		it = strings.TrimSpace(strings.TrimPrefix(it, "!"))
		if it == "" {
			return c.errorf(name, "empty element after '!'")
		}
		if strings.HasPrefix(it, "/") || !strings.Contains(it, ":") {
			continue
		}
		if _, _, err := splitTableSpec(it); err != nil {
			return c.errorf(name, "%v", err)
		}
	}
	return nil
}

// Where says where a parameter was set: "FILE:LINE", or "default" for a
// parameter left at its default (and "" file for a Set value).
func (c *Config) Where(name string) string {
	s, ok := c.set[name]
	switch {
	case !ok:
		return "default"
	case s.file == "":
		return name
	case s.line == 0:
		return s.file
	}
	return fmt.Sprintf("%s:%d", s.file, s.line)
}

// Stressed returns a copy of c in which the parameter stress is "yes", as
// Postfix's master(8) sets it (-o stress=yes) for a service that has
// reached its process limit: values written `${stress?{x}:{y}}` then give
// their overload value x. When stress is set in the file (or by Set), the
// copy is c itself: "stress = yes" forces the overload values always and
// "stress =" never, as `-o stress=yes` and `-o stress=` do in master.cf.
func (c *Config) Stressed() *Config {
	if c.IsSet("stress") {
		return c
	}
	cp := &Config{file: c.file, set: make(map[string]setting, len(c.set)+1), warnings: c.warnings}
	for k, v := range c.set {
		cp.set[k] = v
	}
	cp.set["stress"] = setting{value: "yes"}
	return cp
}
