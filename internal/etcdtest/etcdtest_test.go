package etcdtest

import (
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
)

// etcd whose client port is held by someone else exits, and start says
// the port was taken: Start's retry with other ports rests on it.
func TestStartPortTaken(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd not installed")
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	client, peer := held.Addr().String(), freePort(t)
	s := &Server{t: t, bin: bin, URL: "http://" + client, args: []string{"--name", "t",
		"--data-dir", filepath.Join(t.TempDir(), "data"),
		"--listen-client-urls", "http://" + client, "--advertise-client-urls", "http://" + client,
		"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
		"--initial-cluster", "t=http://" + peer, "--log-level", "error"}}
	t.Cleanup(s.Stop)
	if err := s.start(); !errors.Is(err, errPortTaken) {
		t.Fatalf("start on a taken port: %v, want errPortTaken", err)
	}
	held.Close()
	s.Restart() // the same ports, now free
	if s.cmd == nil {
		t.Fatal("not running after Restart")
	}
}
