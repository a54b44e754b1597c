package control

import (
	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/smtpd"
)

// *Metrics is the hook of the scheduler and of the SMTP server (cmd wires
// it as delivery.Options.Events and smtpd.Options.Events).
var (
	_ delivery.Events = (*Metrics)(nil)
	_ smtpd.Events    = (*Metrics)(nil)
)
