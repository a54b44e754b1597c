package config

import (
	"fmt"
	"strings"
)

// Expand returns the value of name with every $name, ${name} and $(name)
// replaced, recursively. An undefined name or a loop is an *Error; a loop
// is reported where the parameter that closes it was set.
func (c *Config) Expand(name string) (string, error) {
	raw, ok := c.Raw(name)
	if !ok {
		return "", &Error{Param: name, Msg: "unknown parameter"}
	}
	return c.expandValue(name, raw, []string{name})
}

// String returns the expanded value of name, "" when it cannot be
// expanded. Use it for values that Validate checked at load time.
func (c *Config) String(name string) string {
	v, err := c.Expand(name)
	if err != nil {
		return ""
	}
	return v
}

// expandValue expands raw, the value of owner; stack holds the names being
// expanded, for loop detection.
func (c *Config) expandValue(owner, raw string, stack []string) (string, error) {
	if !strings.Contains(raw, "$") {
		return raw, nil
	}
	var b strings.Builder
	for i := 0; i < len(raw); {
		if raw[i] != '$' {
			b.WriteByte(raw[i])
			i++
			continue
		}
		if strings.HasPrefix(raw[i:], "$$") { // "$$" is a literal '$' (Postfix's mac_parse)
			b.WriteByte('$')
			i += 2
			continue
		}
		ref, n, err := parseRef(raw[i:])
		if err != nil {
			return "", c.errorf(owner, "%v", err)
		}
		if n == 0 { // a lone '$' is literal
			b.WriteByte('$')
			i++
			continue
		}
		i += n
		v, err := c.expandRef(owner, ref, stack)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
		if b.Len() > maxExpanded {
			return "", c.errorf(owner, "value longer than %d bytes after expansion", maxExpanded)
		}
	}
	return b.String(), nil
}

// maxExpanded bounds an expanded value, so that `a = $b$b`, `b = $c$c`, ...
// cannot grow without limit.
const maxExpanded = 1 << 20

// ref is one parsed $ reference.
type ref struct {
	name   string
	op     byte   // 0, '?' (text if name not empty) or ':' (text if empty)
	text   string // unexpanded text for op
	alt    string // ${name?{text}:{alt}}: unexpanded text if name is empty
	hasAlt bool
}

// parseRef parses the reference at the start of s (which starts with '$')
// and returns its length; 0 when '$' is not followed by a name or bracket.
func parseRef(s string) (ref, int, error) {
	if len(s) < 2 {
		return ref{}, 0, nil
	}
	open := s[1]
	if open != '{' && open != '(' {
		j := 1
		for j < len(s) && isNameByte(s[j]) {
			j++
		}
		if j == 1 {
			return ref{}, 0, nil
		}
		return ref{name: s[1:j]}, j, nil
	}
	closer := byte('}')
	if open == '(' {
		closer = ')'
	}
	depth := 0
	end := -1
	for j := 1; j < len(s); j++ {
		switch s[j] {
		case open:
			depth++
		case closer:
			depth--
		}
		if depth == 0 {
			end = j
			break
		}
	}
	if end < 0 {
		return ref{}, 0, fmt.Errorf("missing %q in %q", closer, s)
	}
	inner := s[2:end]
	j := 0
	for j < len(inner) && isNameByte(inner[j]) {
		j++
	}
	r := ref{name: inner[:j]}
	if r.name == "" {
		return ref{}, 0, fmt.Errorf("bad parameter name in %q", s[:end+1])
	}
	if j < len(inner) {
		if inner[j] != '?' && inner[j] != ':' {
			return ref{}, 0, fmt.Errorf("bad parameter name in %q", s[:end+1])
		}
		r.op, r.text = inner[j], inner[j+1:]
		if r.op == '?' {
			r.text, r.alt, r.hasAlt = splitAlternatives(r.text)
		} else {
			r.text, _, _ = splitAlternatives(r.text)
		}
	}
	return r, end + 1, nil
}

// splitAlternatives reads Postfix 3.0's `{text1}:{text2}` and `{text}`
// forms of a conditional's text; other text is returned unchanged.
func splitAlternatives(s string) (text, alt string, hasAlt bool) {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "{") {
		return s, "", false
	}
	end := matchingBrace(t)
	if end < 0 {
		return s, "", false
	}
	first, rest := t[1:end], strings.TrimSpace(t[end+1:])
	if rest == "" {
		return first, "", false
	}
	if r, ok := strings.CutPrefix(rest, ":"); ok {
		r = strings.TrimSpace(r)
		if strings.HasPrefix(r, "{") && matchingBrace(r) == len(r)-1 {
			return first, r[1 : len(r)-1], true
		}
	}
	return s, "", false
}

// matchingBrace returns the index of the '}' that closes the '{' at s[0],
// or -1.
func matchingBrace(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// expandRef expands one reference made in owner's value.
func (c *Config) expandRef(owner string, r ref, stack []string) (string, error) {
	for k, s := range stack {
		if s == r.name {
			loop := append(append([]string(nil), stack[k:]...), r.name)
			return "", c.errorf(r.name, "parameter loop: $%s", strings.Join(loop, " -> $"))
		}
	}
	raw, ok := c.Raw(r.name)
	if !ok && r.op == 0 {
		return "", c.errorf(owner, "undefined parameter $%s", r.name)
	}
	v := ""
	if ok {
		var err error
		v, err = c.expandValue(r.name, raw, append(stack, r.name))
		if err != nil {
			return "", err
		}
	}
	switch r.op {
	case '?':
		if v == "" {
			if r.hasAlt {
				return c.expandValue(owner, r.alt, stack)
			}
			return "", nil
		}
		return c.expandValue(owner, r.text, stack)
	case ':':
		if v != "" {
			return "", nil
		}
		return c.expandValue(owner, r.text, stack)
	}
	return v, nil
}

// references returns the parameter names a raw value refers to.
func references(raw string) []string {
	var out []string
	for i := 0; i < len(raw); i++ {
		if raw[i] != '$' {
			continue
		}
		if strings.HasPrefix(raw[i:], "$$") {
			i++
			continue
		}
		r, n, err := parseRef(raw[i:])
		if err != nil || n == 0 {
			continue
		}
		out = append(out, r.name)
		out = append(out, references(r.text)...)
		out = append(out, references(r.alt)...)
		i += n - 1
	}
	return out
}
