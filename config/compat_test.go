package config

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// repoLiterals returns every string literal in the module's non-test Go
// files, except the files that declare or describe parameters (params.go,
// compat.go, describe.go): a parameter is read by some code path when its
// name appears there.
func repoLiterals(t *testing.T) map[string]bool {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	skip := map[string]bool{}
	for _, f := range []string{"params.go", "compat.go", "describe.go"} {
		skip[filepath.Join(root, "config", f)] = true
	}
	lits := map[string]bool{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || skip[path] {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if bl, ok := n.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				if s, err := strconv.Unquote(bl.Value); err == nil {
					lits[s] = true
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return lits
}

// usedParams are the parameters of the table that code reads: named by a
// string literal, matched by a literal suffix such as
// "_destination_concurrency_limit" (read as transport + suffix), or
// referenced as $name by the default of a parameter that is read.
func usedParams(lits map[string]bool) map[string]bool {
	used := map[string]bool{}
	for name := range params {
		if lits[name] {
			used[name] = true
			continue
		}
		for l := range lits {
			if len(l) > 8 && strings.HasPrefix(l, "_") && strings.HasSuffix(name, l) {
				used[name] = true
				break
			}
		}
	}
	c := Default()
	for changed := true; changed; {
		changed = false
		for name := range used {
			def, _ := c.DefaultValue(name)
			for _, ref := range references(def) {
				if _, known := params[ref]; known && !used[ref] {
					used[ref], changed = true, true
				}
			}
		}
	}
	return used
}

// Every parameter holdfast accepts has its effect (some code reads it) or
// is listed as compatibility-only or refused in compat.go; a listed one
// that code now reads must leave the list.
func TestEveryParameterUsedOrListed(t *testing.T) {
	used := usedParams(repoLiterals(t))
	var names []string
	for name := range params {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		_, compat := compatOnly[name]
		_, ref := refused[name]
		switch {
		case !used[name] && !compat && !ref:
			t.Errorf("%s: no code reads it and config/compat.go does not list it: give it its effect, or list it as compatibility-only (a warning) or refused (an error)", name)
		case used[name] && compat:
			t.Errorf("%s: code reads it, but config/compat.go lists it as having no effect: remove it from compatOnly (and docs/compatibility.md)", name)
		case used[name] && ref:
			t.Errorf("%s: code reads it, but config/compat.go refuses it: remove it from refused (and docs/compatibility.md)", name)
		}
	}
	for name := range compatOnly {
		if _, ok := params[name]; !ok {
			t.Errorf("%s: listed as compatibility-only but not in the defaults table", name)
		}
	}
}

// docEntry matches "- `name`: reason" in docs/compatibility.md.
var docEntry = regexp.MustCompile("^- `([A-Za-z0-9_]+)`")

// docs/compatibility.md lists exactly the parameters of compat.go, in its
// two sections.
func TestCompatibilityDoc(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "compatibility.md"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]bool{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "## ") {
			section = strings.TrimPrefix(line, "## ")
			continue
		}
		if m := docEntry.FindStringSubmatch(line); m != nil {
			if got[section] == nil {
				got[section] = map[string]bool{}
			}
			got[section][m[1]] = true
		}
	}
	check := func(section string, want []string) {
		t.Helper()
		for _, n := range want {
			if !got[section][n] {
				t.Errorf("docs/compatibility.md, section %q: %s missing", section, n)
			}
			delete(got[section], n)
		}
		for n := range got[section] {
			t.Errorf("docs/compatibility.md, section %q: %s is not in config/compat.go", section, n)
		}
	}
	var compat, ref []string
	for n := range compatOnly {
		compat = append(compat, n)
	}
	for n := range refused {
		ref = append(ref, n)
	}
	check("Accepted for compatibility, no effect", compat)
	check("Refused", ref)
}

// Setting a compatibility-only parameter is a warning naming it; a refused
// setting is an error naming file and line.
func TestCompatWarningsAndRefusals(t *testing.T) {
	c, err := Parse("main.cf", []byte("queue_minfree = 100000000\nmydomain = example.net\nmyorigin = $mydomain\nsmtp_skip_5xx_greeting = yes\nheader_size_limit = 20000\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{"main.cf:1: queue_minfree: accepted for compatibility, no effect in holdfast: ", "main.cf:5: header_size_limit: accepted"} {
		if !strings.Contains(w, want) {
			t.Errorf("no warning %q in %q", want, w)
		}
	}
	// mydomain is used by myorigin; smtp_skip_5xx_greeting = yes is what
	// holdfast does anyway.
	if strings.Contains(w, "mydomain") || strings.Contains(w, "smtp_skip_5xx_greeting") {
		t.Errorf("spurious warning: %q", w)
	}
	for _, tc := range []struct{ text, want string }{
		{"myhostname = x.test\ncontent_filter = amavis:[127.0.0.1]:10024\n", "main.cf:2: content_filter: not supported by holdfast: content filters are not supported"},
		{"header_checks = regexp:/etc/postfix/header_checks\n", "main.cf:1: header_checks: not supported"},
		{"smtpd_discard_ehlo_keywords = etrn\n", "main.cf:1: smtpd_discard_ehlo_keywords: not supported"},
		{"smtp_sasl_auth_enable = yes\n", "main.cf:1: smtp_sasl_auth_enable: not supported"},
		{"enable_idna2003_compatibility = yes\n", "main.cf:1: enable_idna2003_compatibility: not supported by holdfast: only IDNA2008"},
	} {
		_, err := Parse("main.cf", []byte(tc.text))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
	for _, ok := range []string{"content_filter =\n", "smtp_sasl_auth_enable = no\n", "smtpd_discard_ehlo_keywords =\n", "enable_idna2003_compatibility = no\n"} {
		if _, err := Parse("main.cf", []byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}
