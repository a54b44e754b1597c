package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/etcdtest"
	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// `holdfast flush DOMAIN --cluster --wait` at node A follows the flush on
// A, B and C and reports each node's outcomes and the total; the
// customer's server defers one recipient (held on every node).
func TestClusterFlushWait(t *testing.T) {
	etcd := etcdtest.Start(t)
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	mta.Rcpt("u0@customer.tld", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"})
	sockDir, err := os.MkdirTemp("", "hf-sock-") // a short path: sockets have a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "a.sock")
	dirA := t.TempDir()
	a := startRelay(t, dirA, mta, "cluster_etcd_endpoints = "+etcd.URL, "cluster_name = test",
		"cluster_node_name = a", "cluster_member_ttl = 2s", "cluster_summary_interval = 1s",
		"cluster_flush_max_age = 1m", "control_socket = "+sock)
	b := clusterNode(t, t.TempDir(), mta, etcd, "b")
	c := clusterNode(t, t.TempDir(), mta, etcd, "c")
	var subj []string // the delivered ones: all but each node's u0
	for _, h := range []struct {
		r    *relay
		name string
		n    int
	}{{a, "a", 30}, {b, "b", 20}, {c, "c", 10}} {
		subj = append(subj, h.r.hold(h.name, h.n)[1:]...)
		h.r.joined()
	}
	cf := filepath.Join(dirA, "cli.cf")
	if err := os.WriteFile(cf, []byte("control_socket = "+sock+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	start := time.Now()
	rc := runFlush([]string{"-c", cf, "--cluster", "--wait", "--timeout", "1m", "customer.tld"}, &out, &errOut)
	t.Logf("flush --cluster --wait: %v\n%s", time.Since(start), out.String())
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, errOut.String())
	}
	want := "a: customer.tld: 30 messages queued, delivered: 29, deferred again: 1, bounced: 0\n" +
		"b: customer.tld: 20 messages queued, delivered: 19, deferred again: 1, bounced: 0\n" +
		"c: customer.tld: 10 messages queued, delivered: 9, deferred again: 1, bounced: 0\n" +
		"total (3 nodes): 60 messages queued, delivered: 57, deferred again: 3, bounced: 0\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
	mta.Wait(57, time.Minute)
	onceEach(t, mta, subj)

	// --cluster alone is refused: a plain flush already reaches every node.
	if rc := runFlush([]string{"-c", cf, "--cluster", "customer.tld"}, &out, &errOut); rc != exUsage {
		t.Errorf("--cluster without --wait: exit %d", rc)
	}
}
