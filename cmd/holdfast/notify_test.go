package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// serve tells systemd READY=1 once it serves and STOPPING=1 when a
// signal starts the graceful stop (Type=notify).
func TestServeNotifiesSystemd(t *testing.T) {
	path, _ := writeConfig(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	var out testutil.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- runServe([]string{"-c", path}, &out, &out) }()
	expectNotify(t, conn, "READY=1", &out)
	if !strings.Contains(out.String(), "daemon started") {
		t.Errorf("READY=1 before the daemon started: %s", out.String())
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectNotify(t, conn, "STOPPING=1", &out)
	var code int
	testutil.Eventually(t, 20*time.Second, "serve to exit", func() bool {
		select {
		case code = <-done:
			return true
		default:
			return false
		}
	})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}

func expectNotify(t *testing.T, conn *net.UnixConn, want string, out *testutil.SyncBuffer) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != want {
		t.Fatalf("notify: %q, %v; want %q; log:\n%s", buf[:n], err, want, out.String())
	}
}
