package main

import (
	"strings"
	"testing"
)

func TestVersionAndOverride(t *testing.T) {
	bin := buildHoldfast(t)
	dir := t.TempDir()
	for _, arg := range []string{"--version", "version"} {
		out, _, code := runHoldfast(t, bin, dir, arg)
		if code != 0 || !strings.HasPrefix(out, "holdfast ") || !strings.Contains(out, "go1.") {
			t.Errorf("holdfast %s: exit %d, %q", arg, code, out)
		}
	}
	cf := writeCF(t, "queue_directory = "+dir+"\n")
	for _, tc := range []struct{ o, want string }{
		{"nosuch=1", "-o nosuch: unknown parameter"},
		{"smtpd_timeout=five", "smtpd_timeout"},
		{"novalue", "want name=value"},
	} {
		_, stderr, code := runHoldfast(t, bin, dir, "serve", "-c", cf, "-o", tc.o)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("serve -o %s: exit %d, stderr %q, want %q", tc.o, code, stderr, tc.want)
		}
	}
}
