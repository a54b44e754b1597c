package control

import (
	"context"
	"errors"
	"testing"

	"github.com/holdfast-mta/holdfast/config"
)

// POST /v1/reload runs the daemon's reload: its result, or its error as
// reload_failed; Reconfigure puts a configuration in force only when its
// commit runs, and refuses one it cannot use.
func TestReload(t *testing.T) {
	fail := true
	e := newEnv(t, nil, func(o *Options) {
		o.Reload = func() (ReloadResult, error) {
			if fail {
				return ReloadResult{}, errors.New("smtpd: unknown restriction \"x\"")
			}
			return ReloadResult{Restart: []string{"smtpd_listen"}}, nil
		}
	})
	ctx := context.Background()
	_, err := e.client.Reload(ctx)
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeReloadFailed || ae.Msg != `smtpd: unknown restriction "x"` {
		t.Fatalf("refused reload: %v", err)
	}
	fail = false
	res, err := e.client.Reload(ctx)
	if err != nil || len(res.Restart) != 1 || res.Restart[0] != "smtpd_listen" {
		t.Fatalf("reload: %+v %v", res, err)
	}

	c := config.Default()
	c.Set("myhostname", "new.relay.test")
	commit, err := e.srv.Reconfigure(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.client.Config(ctx, "myhostname"); got["myhostname"] != "relay.test" {
		t.Fatalf("before the commit: %v", got)
	}
	commit()
	if got, _ := e.client.Config(ctx, "myhostname"); got["myhostname"] != "new.relay.test" {
		t.Fatalf("after the commit: %v", got)
	}
	bad := config.Default()
	bad.Set("delay_warning_time", "soon")
	if _, err := e.srv.Reconfigure(bad); err == nil {
		t.Fatal("a bad delay_warning_time was accepted")
	}
}
