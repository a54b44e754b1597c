package crashtest

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// The built binary under SIGHUP (what logrotate hooks and `systemctl
// reload` send): a storm of 100 signals neither kills it (the issue's exit
// 129) nor queues 100 reloads; a broken configuration is refused by
// `holdfast reload` (exit 78) while the relay goes on accepting mail under
// the old one; a good one is taken (exit 0); and every queued message is
// delivered.
func TestReloadBinary(t *testing.T) {
	sink := NewSink(t)
	d := crashConfig(t, sink, nil)
	d.Start()
	pid := d.PID()
	start := time.Now()
	for range 100 {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	if code, msg := sendOne(d, "after-storm", "u@sink.test", 1000); code != 250 {
		t.Fatalf("after the storm: %d %s\n%s", code, msg, d.LogTail(20))
	}
	if !d.Running() {
		t.Fatalf("the daemon died of SIGHUP:\n%s", d.LogTail(20))
	}
	// Let the last coalesced reload finish before counting.
	testutil.WaitFor(10*time.Second, func() bool { return strings.Contains(d.Log(), "configuration reloaded") })
	reloads := strings.Count(d.Log(), `"message":"configuration reloaded"`)
	if reloads == 0 || reloads >= 50 {
		t.Fatalf("100 SIGHUPs in %v: %d reloads", took, reloads)
	}
	t.Logf("100 SIGHUPs in %v: %d reloads", took, reloads)

	d.Params["smtpd_recipient_restrictions"] = "permit_mynetworks, reject_everything_unknown"
	d.WriteConfig()
	_, stderr, code := d.Command(20*time.Second, "reload")
	if code != 78 || !strings.Contains(stderr, "reject_everything_unknown") {
		t.Fatalf("holdfast reload of a broken configuration: exit %d, %q", code, stderr)
	}
	if !strings.Contains(d.Log(), "configuration not reloaded; the previous one stays in force") {
		t.Fatalf("the refusal is not logged:\n%s", d.LogTail(20))
	}
	if code, msg := sendOne(d, "after-refusal", "u@sink.test", 1000); code != 250 {
		t.Fatalf("after a refused reload: %d %s", code, msg)
	}
	delete(d.Params, "smtpd_recipient_restrictions")
	d.WriteConfig()
	if out, stderr, code := d.Command(20*time.Second, "reload"); code != 0 || !strings.Contains(out, "configuration reloaded") {
		t.Fatalf("holdfast reload: exit %d, %q %q", code, out, stderr)
	}
	sink.WaitFor(20*time.Second, func() bool {
		return sink.Count("after-storm", "u@sink.test") >= 1 && sink.Count("after-refusal", "u@sink.test") >= 1
	})
	for _, seq := range []string{"after-storm", "after-refusal"} {
		if n := sink.Count(seq, "u@sink.test"); n != 1 {
			t.Errorf("%s delivered %d times", seq, n)
		}
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.LogTail(20))
	}
}
