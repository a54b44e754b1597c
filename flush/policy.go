package flush

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/holdfast-mta/holdfast/config"
)

// Policy says which destinations the fast-flush service covers: those that
// match fast_flush_domains (reference spec §2.2). It is immutable and safe
// for concurrent use.
type Policy struct {
	// domains is the parsed fast_flush_domains list; nil or empty when
	// the service is off.
	domains *config.DomainList
	// key fingerprints the settings that decide eligibility.
	key string
}

// New reads fast_flush_domains (default $relay_domains) from c. Parent-
// domain matching follows parent_domain_matches_subdomains, which the
// config package applies in Domains.
func New(c *config.Config) (*Policy, error) {
	d, err := c.Domains("fast_flush_domains")
	if err != nil {
		return nil, fmt.Errorf("flush: fast_flush_domains: %w", err)
	}
	k, err := policyKey(c)
	if err != nil {
		return nil, err
	}
	return &Policy{domains: d, key: k}, nil
}

// Enabled reports whether fast_flush_domains is not empty. When it is
// empty nothing is indexed, ETRN is not announced in EHLO and every ETRN
// gets 459.
func (p *Policy) Enabled() bool {
	return p != nil && p.domains != nil && !p.domains.Empty()
}

// Match reports whether the normalised destination is eligible; the error
// is a lookup-table failure (Postfix's "fail", 458 for ETRN).
func (p *Policy) Match(dest string) (bool, error) {
	if !p.Enabled() || dest == "" {
		return false, nil
	}
	ok, err := p.domains.Match(dest)
	if err != nil {
		return false, fmt.Errorf("flush: fast_flush_domains lookup %s: %w", dest, err)
	}
	return ok, nil
}

// Eligible reports whether the destination gets flush-index entries. It is
// the store's Options.Eligible; a lookup error counts as not eligible.
func (p *Policy) Eligible(domain string) bool {
	ok, err := p.Match(domain)
	return err == nil && ok
}

// Key is a fingerprint of every setting that decides eligibility, for
// store.Options.PolicyKey: the store rebuilds the flush index at Open when
// it differs from the one the index was built with.
func (p *Policy) Key() string {
	if p == nil {
		return ""
	}
	return p.key
}

// policyKey hashes the expanded fast_flush_domains value, whether
// parent-domain matching applies to it, and the contents of the files and
// tables the value names (a changed table changes eligibility too).
func policyKey(c *config.Config) (string, error) {
	v, err := c.Expand("fast_flush_domains")
	if err != nil {
		return "", fmt.Errorf("flush: fast_flush_domains: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "fast_flush_domains=%s\nparent=%t\n", strings.TrimSpace(v),
		c.ParentMatchesSubdomains("fast_flush_domains"))
	items, err := c.List("fast_flush_domains")
	if err != nil {
		return "", fmt.Errorf("flush: fast_flush_domains: %w", err)
	}
	for _, it := range items {
		path := tablePath(it)
		if path == "" {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(h, "file %s: unreadable\n", path)
			continue
		}
		s := sha256.Sum256(b)
		fmt.Fprintf(h, "file %s: %x\n", path, s)
	}
	// v2: list patterns and destinations are compared in their A-label
	// form (internal/addr), which changes the eligibility of IDN names, so
	// an index built by v1 is rebuilt once.
	return "v2:" + hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// tablePath returns the file behind a list item "/path" or "type:/path",
// or "" for a plain domain pattern or a table without a file.
func tablePath(item string) string {
	item = strings.TrimPrefix(item, "!")
	if strings.HasPrefix(item, "/") {
		return item
	}
	if i := strings.IndexByte(item, ':'); i > 0 && strings.HasPrefix(item[i+1:], "/") {
		return item[i+1:]
	}
	return ""
}
