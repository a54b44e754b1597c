package metrics

import (
	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/odmr"
	"github.com/holdfast-mta/holdfast/smtpd"
)

// *Set is the hook of the scheduler, the SMTP server, the acceptance
// path and the flush service (cmd wires it as delivery.Options.Events,
// smtpd.Options.Events, control.Options.Events and flush.Service.SetEvents).
var (
	_ delivery.Events    = (*Set)(nil)
	_ delivery.TLSEvents = (*Set)(nil)
	_ smtpd.Events       = (*Set)(nil)
	_ smtpd.LimitEvents  = (*Set)(nil)
	_ smtpd.AuthEvents   = (*Set)(nil)
	_ accept.Events      = (*Set)(nil)
	_ flush.Events       = (*Set)(nil)
	_ odmr.Events        = (*Set)(nil)
)
