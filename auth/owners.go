package auth

import (
	"slices"
	"strings"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// Table is a lookup table (config.Table satisfies it).
type Table interface {
	Lookup(key string) (value string, found bool, err error)
}

// Owners is etrn_login_maps: a destination maps to the logins that own
// it ("customer.example alice, bob"). A key "@customer.example" covers
// the domain and its sub-domains; the most specific entry decides
// (customer.example, then @customer.example, then @example).
type Owners struct {
	t Table
}

// NewOwners returns the ownership map over t; nil t gives nil (no map).
func NewOwners(t Table) *Owners {
	if t == nil {
		return nil
	}
	return &Owners{t: t}
}

// Lookup returns the logins that own site; listed is false when no entry
// covers it.
func (o *Owners) Lookup(site string) (logins []string, listed bool, err error) {
	site = addr.Fold(site)
	keys := []string{site}
	if !strings.HasPrefix(site, "[") {
		for d := site; d != ""; {
			keys = append(keys, "@"+d)
			i := strings.IndexByte(d, '.')
			if i < 0 {
				break
			}
			d = d[i+1:]
		}
	}
	for _, k := range keys {
		v, found, err := o.t.Lookup(k)
		if err != nil {
			return nil, false, err
		}
		if found {
			return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }), true, nil
		}
	}
	return nil, false, nil
}

// Owns reports whether login owns site, and whether site is listed.
func (o *Owners) Owns(login, site string) (owned, listed bool, err error) {
	logins, listed, err := o.Lookup(site)
	if err != nil || !listed {
		return false, listed, err
	}
	return login != "" && slices.Contains(logins, login), true, nil
}

// Domains lists the destinations login owns (ATRN without an argument):
// every key whose entry names it, "@domain" keys as their domain. Tables
// that cannot list their keys contribute none.
func (o *Owners) Domains(login string) ([]string, error) {
	l, ok := o.t.(interface{ Keys() []string })
	if !ok {
		return nil, nil
	}
	var out []string
	for _, k := range l.Keys() {
		site := strings.TrimPrefix(k, "@")
		if owned, _, err := o.Owns(login, site); err != nil {
			return nil, err
		} else if owned && !slices.Contains(out, site) {
			out = append(out, site)
		}
	}
	slices.Sort(out)
	return out, nil
}
