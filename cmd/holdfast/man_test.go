package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/holdfast-mta/holdfast/config"
)

// TestManPages checks that holdfast(8) documents every subcommand, that
// holdfast.cf(5) lists every parameter, and that groff formats both
// without a warning.
func TestManPages(t *testing.T) {
	page8, err := os.ReadFile("../../docs/man/holdfast.8")
	if err != nil {
		t.Fatal(err)
	}
	for name := range commands {
		if !bytes.Contains(page8, []byte("\n.B "+name)) {
			t.Errorf("holdfast.8 does not document the %s command", name)
		}
	}
	var page5 bytes.Buffer
	writeConfigMan(&page5)
	for _, e := range config.ManEntries() {
		if !strings.Contains(page5.String(), "\n.B "+roff(e.Name)+"\n") {
			t.Errorf("holdfast.cf.5 lacks %s", e.Name)
		}
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Skip("groff is not installed (.ci/deps installs it)")
	}
	for name, page := range map[string][]byte{"holdfast.8": page8, "holdfast.cf.5": page5.Bytes()} {
		cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = bytes.NewReader(page)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff %s: %v\n%s", name, err, out)
		}
	}
}
