package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `package p

func small(a, b bool) int {
	if a && b || !a {
		return 1
	}
	for i := 0; i < 3; i++ {
		switch i {
		case 1:
		case 2:
		default:
		}
	}
	return 0
}

func table() []string {
	return []string{
		"a",
		"b",
		"c",
		"d",
		"e",
	}
}

func code() {
	f := []func(){
		func() {
			if true {
			}
		},
	}
	_ = f
}
`

// TestScan: the counts are gocyclo's, a table's rows are not lines of
// code, a function literal inside a literal still is, and _test.go
// files are not read.
func TestScan(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.go"), []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p_test.go"), []byte(strings.Replace(sample, "package p", "package p\n\nfunc other() {}", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	found, err := scan(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]int{}
	for _, f := range found {
		if strings.HasSuffix(f.pos.Filename, "_test.go") {
			t.Errorf("%s read", f.pos.Filename)
		}
		got[f.name] = [2]int{f.lines, f.cyclo}
	}
	want := map[string][2]int{
		"small": {13, 7}, // 1 + if + && + || + for + 2 cases
		"table": {3, 1},  // the 7 lines of the literal count as 1
		"code":  {9, 2},  // a literal holding code is not a table
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: lines, cyclomatic = %v, want %v", name, got[name], w)
		}
	}
}
