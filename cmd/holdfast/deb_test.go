package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebianPackage builds the package with `make deb`, installs it with
// dpkg, checks the files, the user and the manual pages, and removes and
// purges it again, leaving none of its files behind. It changes the
// system, so it runs where that is wanted: in CI (CI=true) or with
// HOLDFAST_TEST_DPKG=1, as root, with no other MTA package installed.
func TestDebianPackage(t *testing.T) {
	if os.Getenv("CI") != "true" && os.Getenv("HOLDFAST_TEST_DPKG") != "1" {
		t.Skip("installs a package on this system: runs in CI, or with HOLDFAST_TEST_DPKG=1")
	}
	if os.Getuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "man", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Package} ${Status}\n").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasSuffix(line, " installed") &&
				(f[0] == "postfix" || f[0] == "exim4-daemon-light" || f[0] == "exim4-daemon-heavy" || f[0] == "sendmail-bin") {
				t.Skipf("another MTA (%s) is installed; holdfast's package conflicts with it", f[0])
			}
		}
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	run("make", "-s", "-C", "../..", "deb")
	debs, _ := filepath.Glob("../../bin/holdfast_*.deb")
	if len(debs) == 0 {
		t.Fatal("make deb made no package")
	}
	deb := debs[len(debs)-1]
	files := debFiles(t, deb)
	t.Cleanup(func() { exec.Command("dpkg", "-P", "holdfast").Run() })
	run("dpkg", "-i", deb)
	for _, f := range []string{"/usr/sbin/holdfast", "/usr/sbin/sendmail", "/usr/bin/mailq",
		"/usr/sbin/postqueue", "/usr/sbin/postsuper", "/lib/systemd/system/holdfast.service",
		"/etc/holdfast/holdfast.cf", "/usr/share/man/man8/holdfast.8.gz", "/usr/share/man/man5/holdfast.cf.5.gz"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed package lacks %s: %v", f, err)
		}
	}
	if out := run("/usr/sbin/holdfast", "--version"); !strings.HasPrefix(out, "holdfast ") {
		t.Errorf("installed holdfast --version: %q", out)
	}
	run("getent", "passwd", "holdfast")
	if fi, err := os.Stat("/var/spool/holdfast"); err != nil || !fi.IsDir() {
		t.Errorf("queue directory: %v", err)
	}
	for _, page := range []string{"holdfast", "holdfast.cf"} {
		if out := run("man", "-P", "cat", page); !strings.Contains(out, "holdfast") {
			t.Errorf("man %s: %q", page, out)
		}
	}
	run("dpkg", "-r", "holdfast")
	if _, err := os.Stat("/etc/holdfast/holdfast.cf"); err != nil {
		t.Errorf("dpkg -r removed the conffile: %v", err)
	}
	run("dpkg", "-P", "holdfast")
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil && !isSharedDir(f) {
			t.Errorf("%s is still there after dpkg -P", f)
		}
	}
	for _, d := range []string{"/etc/holdfast", "/var/spool/holdfast", "/usr/share/doc/holdfast"} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s is still there after dpkg -P", d)
		}
	}
}

// debFiles lists the paths a package installs.
func debFiles(t *testing.T, deb string) []string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	list := exec.Command("tar", "-t")
	list.Stdin = strings.NewReader(string(out))
	names, err := list.Output()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, n := range strings.Split(string(names), "\n") {
		if n = strings.TrimPrefix(n, "."); n != "" && n != "/" {
			files = append(files, strings.TrimSuffix(n, "/"))
		}
	}
	return files
}

// isSharedDir reports whether path is a directory other packages use
// too (/usr/sbin, /lib/systemd/system, ...), which dpkg keeps.
func isSharedDir(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		return false
	}
	return !strings.Contains(path, "holdfast")
}
