// Package etcdtest runs a real etcd server (the etcd binary, Debian's
// etcd-server package, installed by .ci/deps) on loopback for the tests
// of the cluster layer. A test whose machine has no etcd skips.
package etcdtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// Server is one etcd member on 127.0.0.1, its data in a test directory.
type Server struct {
	t testing.TB
	// URL is the client URL (cluster_etcd_endpoints).
	URL  string
	bin  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs etcd and waits until it answers /health; it is stopped at
// the end of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd not installed (Debian: etcd-server; make tools installs it)")
	}
	dir := t.TempDir()
	client, peer := freePort(t), freePort(t)
	s := &Server{t: t, bin: bin, URL: "http://" + client}
	s.args = []string{"--name", "t", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", s.URL, "--advertise-client-urls", s.URL,
		"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
		"--initial-cluster", "t=http://" + peer, "--logger", "zap", "--log-level", "error"}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// freePort returns a loopback address that was free a moment ago: etcd
// must be told its ports (it advertises them), so it cannot take :0.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Restart starts etcd again after Stop, on the same ports and data.
func (s *Server) Restart() {
	s.t.Helper()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("etcd: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	var err error
	exited := false
	healthy := testutil.WaitFor(30*time.Second, func() bool {
		select {
		case <-s.done:
			exited = true
			return true
		default:
		}
		var r *http.Response
		if r, err = http.Get(s.URL + "/health"); err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
	switch {
	case exited:
		s.t.Fatalf("etcd exited at start: %v", cmd.ProcessState)
	case !healthy:
		s.Stop()
		s.t.Fatal(fmt.Errorf("etcd not healthy after 30s: %v", err))
	}
}

// Stop kills etcd (SIGKILL: an outage, not a clean leave) and waits for
// it; later calls do nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}
