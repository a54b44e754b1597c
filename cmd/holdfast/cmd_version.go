package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func init() {
	register("version", "print the version and the VCS revision it was built from", runVersion)
}

// runVersion is `holdfast version` and `holdfast --version`: the module
// version (a release tag, or "(devel)" for a build from a checkout), the
// VCS revision and time the binary was built from, and the Go release.
func runVersion(_ []string, stdout, _ io.Writer) int {
	fmt.Fprintln(stdout, versionLine())
	return 0
}

// versionLine reads the build information the Go toolchain stamps into
// every binary built with module support.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "holdfast (no build information) " + runtime.Version()
	}
	line := "holdfast " + bi.Main.Version
	var rev, at, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+modified"
			}
		}
	}
	if rev != "" {
		line += " revision " + rev + dirty
		if at != "" {
			line += " (" + at + ")"
		}
	}
	return line + " " + bi.GoVersion
}
