// Package etcdtest runs a real etcd server (the etcd binary, Debian's
// etcd-server package, installed by .ci/deps) on loopback for the tests
// of the cluster layer. A test whose machine has no etcd skips.
package etcdtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	dir  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
	// stderr holds what etcd wrote (also copied to the test's stderr);
	// read after done is closed.
	stderr *bytes.Buffer
}

// Start runs etcd and waits until it answers /health; it is stopped at
// the end of the test.
//
// etcd must be told its ports (it advertises them), so it cannot listen
// on :0: freePort finds ports that were free a moment ago. Until etcd
// binds them, any connection the machine opens can get one as its local
// port (on a loaded machine running other test packages, thousands a
// second), and etcd then exits with "address already in use". Start
// then tries again with other ports.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd not installed (Debian: etcd-server; make tools installs it)")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	for try := 1; ; try++ {
		client, peer := freePort(t), freePort(t)
		s.URL = "http://" + client
		s.args = []string{"--name", "t", "--data-dir", filepath.Join(s.dir, "data"),
			"--listen-client-urls", s.URL, "--advertise-client-urls", s.URL,
			"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
			"--initial-cluster", "t=http://" + peer, "--logger", "zap", "--log-level", "error"}
		if err := s.start(); err == nil {
			return s
		} else if !errors.Is(err, errPortTaken) || try == 5 {
			t.Fatal(err)
		}
		t.Logf("etcd: a port was taken before etcd bound it; trying others")
		os.RemoveAll(filepath.Join(s.dir, "data"))
	}
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// errPortTaken: etcd exited because one of its ports was in use.
var errPortTaken = errors.New("etcd: port taken")

// Restart starts etcd again after Stop, on the same ports and data (the
// relays know its URL). A port taken meanwhile by a connection's local
// end is waited for, up to 30 s: such connections end.
func (s *Server) Restart() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			s.t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// healthClient asks etcd's /health with a time limit: a port taken by
// another program's listener accepts the connection and may never answer.
var healthClient = &http.Client{Timeout: 2 * time.Second}

// start runs etcd with s.args and waits until it is healthy.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, s.args...)
	stderr := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = os.Stderr, io.MultiWriter(os.Stderr, stderr)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	s.cmd, s.done, s.stderr = cmd, make(chan struct{}), stderr
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
		if r, err = healthClient.Get(s.URL + "/health"); err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
	switch {
	case exited:
		s.cmd = nil
		if strings.Contains(stderr.String(), "address already in use") {
			return fmt.Errorf("%w: %v", errPortTaken, cmd.ProcessState)
		}
		return fmt.Errorf("etcd exited at start: %v", cmd.ProcessState)
	case !healthy:
		s.Stop()
		return fmt.Errorf("etcd not healthy after 30s: %v", err)
	}
	return nil
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
