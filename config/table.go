package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// Table is a Postfix lookup table. Keys are matched without regard to case
// and with domains in their A-label form: table keys and the keys looked
// up both go through addr.Key.
type Table interface {
	// Lookup returns the value for key; found is false when there is none.
	Lookup(key string) (value string, found bool, err error)
}

// textTypes are the table types whose source is a text file of
// `key value` lines. Postfix compiles these with postmap; holdfast reads
// the text file itself, so there is no postmap step.
var textTypes = map[string]bool{
	"hash": true, "texthash": true, "btree": true, "lmdb": true, "cdb": true, "dbm": true, "sdbm": true,
}

// splitTableSpec splits "type:name" into its parts; a plain absolute path
// is a text table. The type must be one holdfast reads.
func splitTableSpec(spec string) (typ, name string, err error) {
	if strings.HasPrefix(spec, "/") {
		return "texthash", spec, nil
	}
	typ, name, ok := strings.Cut(spec, ":")
	if !ok || typ == "" || name == "" {
		return "", "", fmt.Errorf("bad table %q (want type:name or /path)", spec)
	}
	switch {
	case textTypes[typ], typ == "static":
	case typ == "inline":
		if !strings.HasPrefix(name, "{") || !strings.HasSuffix(name, "}") {
			return "", "", fmt.Errorf("bad table %q (want inline:{ key=value, ... })", spec)
		}
	default:
		return "", "", fmt.Errorf("unsupported table type %q in %q (holdfast reads hash, texthash, btree, lmdb, cdb, dbm, sdbm, inline, static)", typ, spec)
	}
	return typ, name, nil
}

// OpenTable opens a table given as Postfix does: `hash:/path`,
// `texthash:/path` (and the other indexed types) or a plain `/path` read
// the text file at path, and follow it: a changed file is read again by
// itself (fileTable); `inline:{ key=value, { key = text } }` and
// `static:value` are as in Postfix. A relative path is relative to the
// working directory.
func OpenTable(spec string) (Table, error) {
	typ, name, err := splitTableSpec(spec)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "static":
		return staticTable(unbrace(name)), nil
	case "inline":
		return parseInline(spec, name)
	}
	t, err := openFileTable(name)
	var pe *Error
	if errors.As(err, &pe) {
		return nil, err // names file and line already
	}
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", spec, err)
	}
	return t, nil
}

// mapTable is a table held in memory; it never returns an error.
type mapTable map[string]string

func (m mapTable) Lookup(key string) (string, bool, error) {
	v, ok := m[addr.Key(key)]
	return v, ok, nil
}

// Keys lists the keys (for etrn_login_maps: ATRN without an argument).
func (m mapTable) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// staticTable returns its value for every key.
type staticTable string

func (s staticTable) Lookup(string) (string, bool, error) { return string(s), true, nil }

// unbrace removes one pair of enclosing braces and the white space inside.
func unbrace(s string) string {
	if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
		return strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

// parseTableText reads a postmap(1) source file: `key value` per logical
// line, `#` comment lines, blank lines, and lines starting with white space
// continue the previous one. The first of duplicate keys wins, as postmap
// keeps it.
func parseTableText(file string, data []byte) (Table, error) {
	lines, err := logicalLines(file, data)
	if err != nil {
		return nil, err
	}
	t := mapTable{}
	for _, l := range lines {
		i := strings.IndexAny(l.text, " \t")
		if i < 0 {
			return nil, &Error{File: file, Line: l.line, Msg: fmt.Sprintf("expected format: key whitespace value, got %q", l.text)}
		}
		key := addr.Key(l.text[:i])
		if _, dup := t[key]; !dup {
			t[key] = strings.TrimSpace(l.text[i:])
		}
	}
	return t, nil
}

// parseInline reads inline:{ key=value, { key = text with spaces }, ... }.
func parseInline(spec, body string) (Table, error) {
	words, ok := splitList(unbrace(body))
	if !ok {
		return nil, fmt.Errorf("table %s: unbalanced braces", spec)
	}
	t := mapTable{}
	for _, w := range words {
		k, v, ok := strings.Cut(unbrace(w), "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("table %s: bad entry %q (want key=value)", spec, w)
		}
		k = addr.Key(k)
		if _, dup := t[k]; !dup {
			t[k] = strings.TrimSpace(v)
		}
	}
	return t, nil
}

// tables is an ordered list of tables (a *_maps parameter); a lookup asks
// each in turn and the first hit wins.
type tables []Table

func (ts tables) Lookup(key string) (string, bool, error) {
	for _, t := range ts {
		v, ok, err := t.Lookup(key)
		if err != nil || ok {
			return v, ok, err
		}
	}
	return "", false, nil
}

// Keys lists the keys of the tables that can list theirs.
func (ts tables) Keys() []string {
	var keys []string
	for _, t := range ts {
		if l, ok := t.(interface{ Keys() []string }); ok {
			keys = append(keys, l.Keys()...)
		}
	}
	return keys
}

// maps opens every table of a *_maps parameter.
func (c *Config) maps(name string) (tables, error) {
	specs, err := c.List(name)
	if err != nil {
		return nil, err
	}
	var ts tables
	for _, s := range specs {
		t, err := OpenTable(s)
		if err != nil {
			return nil, c.errorf(name, "%v", err)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// Table opens the tables of a maps parameter (e.g. transport_maps) as one
// table that asks them in order. It returns nil when the parameter is
// empty.
func (c *Config) Table(name string) (Table, error) {
	ts, err := c.maps(name)
	if err != nil || len(ts) == 0 {
		return nil, err
	}
	if len(ts) == 1 {
		return ts[0], nil
	}
	return ts, nil
}

// TransportMap looks recipients up in transport_maps with Postfix's search
// order (transport(5)).
type TransportMap struct {
	t         tables
	delim     string
	parentDot bool // parent lookups use ".domain" (false: "domain", parent style)
}

// Transport opens transport_maps. An empty transport_maps gives a map that
// finds nothing.
func (c *Config) Transport() (*TransportMap, error) {
	ts, err := c.maps("transport_maps")
	if err != nil {
		return nil, err
	}
	delim, err := c.Expand("recipient_delimiter")
	if err != nil {
		return nil, err
	}
	return &TransportMap{t: ts, delim: delim, parentDot: !c.ParentMatchesSubdomains("transport_maps")}, nil
}

// Lookup finds the transport entry for a recipient address, trying in
// order: the full address (without, then with a recipient_delimiter
// extension removed), the domain, each parent domain as `.parent` (or as
// `parent` when transport_maps is in parent_domain_matches_subdomains),
// then `*`. Every key is asked of all tables before the next key.
func (t *TransportMap) Lookup(rcpt string) (string, bool, error) {
	for _, key := range t.keys(addr.Key(rcpt)) {
		v, ok, err := t.t.Lookup(key)
		if err != nil || ok {
			return v, ok, err
		}
	}
	return "", false, nil
}

// keys lists the search keys for a recipient in order; a is its addr.Key
// form, so the domain keys are A-labels.
func (t *TransportMap) keys(a string) []string {
	keys := []string{a}
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return append(keys, "*")
	}
	local, domain := a[:at], addr.Fold(a[at+1:])
	if t.delim != "" {
		if i := strings.IndexAny(local, t.delim); i > 0 {
			keys = append(keys, local[:i]+"@"+domain)
		}
	}
	if domain != "" {
		keys = append(keys, domain)
		if !strings.HasPrefix(domain, "[") {
			for d := domain; ; {
				i := strings.IndexByte(d, '.')
				if i < 0 || i == len(d)-1 {
					break
				}
				d = d[i+1:]
				if t.parentDot {
					keys = append(keys, "."+d)
				} else {
					keys = append(keys, d)
				}
			}
		}
	}
	return append(keys, "*")
}

// readNames reads a /file/name list entry: words separated by commas or
// white space, `#` comment lines skipped.
func readNames(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		words, _ := splitList(s)
		out = append(out, words...)
	}
	return out, nil
}

// TableEntry is one entry of a lookup table and where it is written:
// File and Line of a text table's source line, or the table spec and 0
// for inline: and static: tables.
type TableEntry struct {
	File  string
	Line  int
	Key   string
	Value string
}

// Where is "FILE:LINE" (or the table spec) for messages.
func (e TableEntry) Where() string {
	if e.Line == 0 {
		return e.File
	}
	return fmt.Sprintf("%s:%d", e.File, e.Line)
}

// Entries lists every entry of the tables of a maps parameter (e.g.
// transport_maps), table by table in file order, so that start-up checks
// can name the line of a bad entry.
func (c *Config) Entries(name string) ([]TableEntry, error) {
	specs, err := c.List(name)
	if err != nil {
		return nil, err
	}
	var out []TableEntry
	for _, spec := range specs {
		typ, tname, err := splitTableSpec(spec)
		if err != nil {
			return nil, c.errorf(name, "%v", err)
		}
		switch typ {
		case "static":
			out = append(out, TableEntry{File: spec, Key: "*", Value: unbrace(tname)})
			continue
		case "inline":
			words, _ := splitList(unbrace(tname))
			for _, w := range words {
				k, v, _ := strings.Cut(unbrace(w), "=")
				out = append(out, TableEntry{File: spec, Key: addr.Key(strings.TrimSpace(k)), Value: strings.TrimSpace(v)})
			}
			continue
		}
		data, err := os.ReadFile(tname)
		if err != nil {
			return nil, c.errorf(name, "table %s: %v", spec, err)
		}
		lines, err := logicalLines(tname, data)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			k, v := l.text, ""
			if i := strings.IndexAny(l.text, " \t"); i >= 0 {
				k, v = l.text[:i], l.text[i:]
			}
			out = append(out, TableEntry{File: tname, Line: l.line, Key: addr.Key(k), Value: strings.TrimSpace(v)})
		}
	}
	return out, nil
}
