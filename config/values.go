package config

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Read reads each parameter named in dst with read (c.Int, c.Bool,
// c.Time, c.List, ...) into the variable it points to, in the order of
// the names; the first error ends it.
func Read[T any](read func(name string) (T, error), dst map[string]*T) error {
	for _, name := range slices.Sorted(maps.Keys(dst)) {
		v, err := read(name)
		if err != nil {
			return err
		}
		*dst[name] = v
	}
	return nil
}

// Bool reads a yes/no parameter (case does not matter, as in Postfix).
func (c *Config) Bool(name string) (bool, error) {
	v, err := c.Expand(name)
	if err != nil {
		return false, err
	}
	switch strings.ToLower(v) {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, c.errorf(name, "bad boolean value %q (want yes or no)", v)
}

// Int reads a non-negative decimal integer, at least the parameter's
// minimum in the defaults table.
func (c *Config) Int(name string) (int, error) {
	v, err := c.Expand(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if low := minimum(name); err != nil || int64(n) < low || strings.HasPrefix(v, "+") {
		return 0, c.errorf(name, "bad integer value %q (want a number >= %d)", v, low)
	}
	return n, nil
}

// Size reads a size in bytes. Postfix takes a bare number of bytes; holdfast
// also accepts the suffixes k, m and g (powers of 1024).
func (c *Config) Size(name string) (int64, error) {
	v, err := c.Expand(name)
	if err != nil {
		return 0, err
	}
	n, ok := parseSize(v)
	if !ok {
		return 0, c.errorf(name, "bad size value %q (want bytes, optionally with k, m or g)", v)
	}
	if low := minimum(name); n < low {
		return 0, c.errorf(name, "bad size value %q (want at least %d bytes)", v, low)
	}
	return n, nil
}

func parseSize(v string) (int64, bool) {
	mult := int64(1)
	if v != "" {
		switch v[len(v)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			v = v[:len(v)-1]
		}
	}
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, false
	}
	return n * mult, true
}

// timeUnits are Postfix's time suffixes (conv_time).
var timeUnits = map[byte]time.Duration{
	's': time.Second,
	'm': time.Minute,
	'h': time.Hour,
	'd': 24 * time.Hour,
	'w': 7 * 24 * time.Hour,
}

// Time reads a time value: a number with one of the units s, m, h, d or w;
// a bare number is read in the unit of the parameter's default, so
// `maximal_queue_lifetime = 3` means 3 days (reference spec 5.2).
func (c *Config) Time(name string) (time.Duration, error) {
	v, err := c.Expand(name)
	if err != nil {
		return 0, err
	}
	d, ok := parseTime(v, defaultUnit(name))
	if !ok {
		return 0, c.errorf(name, "bad time value %q (want a number with unit s, m, h, d or w)", v)
	}
	if low := time.Duration(minimum(name)) * time.Second; d < low {
		return 0, c.errorf(name, "bad time value %q (want at least %v)", v, low)
	}
	return d, nil
}

// defaultUnit is the unit letter of a time parameter's default, 's' when
// the default has none.
func defaultUnit(name string) byte {
	if p, ok := params[name]; ok && p.def != "" {
		if u := p.def[len(p.def)-1]; timeUnits[u] != 0 {
			return u
		}
	}
	return 's'
}

func parseTime(v string, unit byte) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if u := strings.ToLower(v[len(v)-1:])[0]; timeUnits[u] != 0 {
		unit, v = u, v[:len(v)-1]
	}
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	per := timeUnits[unit]
	if err != nil || n > int64(math.MaxInt64/per) {
		return 0, false
	}
	return time.Duration(n) * per, true
}

// List reads a list: words separated by commas and/or white space. Text in
// braces is one word (Postfix: `inline:{ a=b, c=d }`, `{ text }`).
func (c *Config) List(name string) ([]string, error) {
	v, err := c.Expand(name)
	if err != nil {
		return nil, err
	}
	words, ok := splitList(v)
	if !ok {
		return nil, c.errorf(name, "unbalanced braces in %q", v)
	}
	return words, nil
}

// splitList splits on commas and white space outside braces. ok is false
// when braces do not balance.
func splitList(s string) ([]string, bool) {
	var out []string
	depth, start := 0, -1
	for i := 0; i < len(s); i++ {
		ch := s[i]
		sep := ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'
		switch {
		case ch == '{':
			depth++
		case ch == '}':
			depth--
			if depth < 0 {
				return nil, false
			}
		case sep && depth == 0:
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	if depth != 0 {
		return nil, false
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out, true
}

// ParentMatchesSubdomains reports whether name is listed in
// parent_domain_matches_subdomains: then a pattern `example.com` in that
// parameter also matches sub-domains, and table lookups try parent names
// without a leading dot (Postfix match_parent_style).
func (c *Config) ParentMatchesSubdomains(name string) bool {
	list, err := c.List("parent_domain_matches_subdomains")
	if err != nil {
		return false
	}
	for _, n := range list {
		if n == name {
			return true
		}
	}
	return false
}
